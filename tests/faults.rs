//! Faults during training, for real, with a child process: SIGKILL at random moments
//! (often in the middle of a checkpoint write) leaves the last complete checkpoint loadable
//! and resumable; Ctrl-C (SIGINT) stops cleanly after saving, and at once (writing nothing)
//! while a BPE vocabulary is being learned.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tensor::Rng;

fn tmp(name: &str) -> PathBuf {
    common::fresh_dir(&format!("faults-{name}"))
}

fn start_training(out: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_scratchgpt"))
        .args([
            "train",
            "--out",
            out.to_str().unwrap(),
            "--save-every",
            "1",
            "--max-steps",
            "100000",
        ])
        .args(common::small_model())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for_first_checkpoint(out: &Path) {
    let start = Instant::now();
    while !out.join("latest").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn saved_step(out: &Path) -> usize {
    let ctx = model::Context::new(0);
    train::checkpoint::load_for_resume(out, &ctx)
        .expect("the last checkpoint loads")
        .state
        .step
}

#[test]
fn sigkill_at_random_moments_keeps_a_resumable_checkpoint() {
    let mut rng = Rng::seed(31);
    for trial in 0..6 {
        let out = tmp(&format!("kill{trial}"));
        let mut child = start_training(&out, &["--quiet"]);
        wait_for_first_checkpoint(&out);
        std::thread::sleep(Duration::from_millis(rng.below(400) as u64));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let step = saved_step(&out);
        assert!(step >= 1);
        // and the run continues from there
        let target = (step + 2).to_string();
        let r = Command::new(env!("CARGO_BIN_EXE_scratchgpt"))
            .args([
                "train",
                "--resume",
                out.to_str().unwrap(),
                "--max-steps",
                &target,
                "--quiet",
            ])
            .output()
            .unwrap();
        assert!(
            r.status.success(),
            "resume failed: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        assert_eq!(saved_step(&out), step + 2);
        std::fs::remove_dir_all(&out).unwrap();
    }
}

#[test]
fn ctrl_c_stops_after_saving() {
    let out = tmp("sigint");
    let child = start_training(&out, &[]);
    wait_for_first_checkpoint(&out);
    std::thread::sleep(Duration::from_millis(100));
    common::interrupt(&child);
    let r = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert_eq!(
        r.status.code(),
        Some(130),
        "an interrupted run exits with 130: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("stopped at step"))
        .expect("a stop message");
    let step: usize = line
        .split_whitespace()
        .nth(3)
        .unwrap()
        .trim_end_matches(';')
        .parse()
        .unwrap();
    assert_eq!(
        saved_step(&out),
        step,
        "the checkpoint is the step it stopped at"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn ctrl_c_while_learning_a_vocabulary_stops_at_once() {
    // 4 MB of made-up words of one to five syllables, nearly all distinct: learning a
    // 50,000-token vocabulary from them took 13 s on an AMD EPYC (Zen 4), far longer than the
    // wait before the interrupt
    let dir = tmp("sigint-bpe");
    let data = dir.join("words.txt");
    let syllables: Vec<String> = "bcdfghjklmnpqrstvwxz"
        .chars()
        .flat_map(|c| "aeiou".chars().map(move |v| format!("{c}{v}")))
        .collect();
    let mut rng = Rng::seed(7);
    let mut text = String::new();
    while text.len() < 4 << 20 {
        for _ in 0..1 + rng.below(5) {
            text.push_str(&syllables[rng.below(syllables.len())]);
        }
        text.push(if rng.below(12) == 0 { '\n' } else { ' ' });
    }
    std::fs::write(&data, &text).unwrap();
    let out = dir.join("run");
    let child = Command::new(env!("CARGO_BIN_EXE_scratchgpt"))
        .args(["train", "--data", data.to_str().unwrap()])
        .args(["--out", out.to_str().unwrap(), "--tokenizer", "bpe:50000"])
        .args(common::SMALL_SHAPE)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let sent = Instant::now();
    common::interrupt(&child);
    let r = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted while learning the BPE vocabulary"),
        "{stderr}"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "stopped {:?} after Ctrl-C",
        sent.elapsed()
    );
    assert!(!out.join("checkpoints").exists(), "nothing was written");
    std::fs::remove_dir_all(&dir).unwrap();
}
