//! Faults during training, for real, with a child process: SIGKILL at random moments
//! (often in the middle of a checkpoint write) leaves the last complete checkpoint loadable
//! and resumable; Ctrl-C (SIGINT) stops cleanly after saving.

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
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
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
