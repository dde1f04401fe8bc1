//! The `scratchgpt` binary: the happy path (train → generate → eval), and every bad input a
//! user can give ending in one clear `error:` line, a non-zero exit, and no half-written output.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scratchgpt"))
}

fn tmp(name: &str) -> PathBuf {
    common::fresh_dir(&format!("cli-{name}"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

/// Asserts the command failed with exactly one line on stderr containing `needle`.
#[track_caller]
fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line expected, got: {stderr}"
    );
    assert!(stderr.starts_with("error"), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn train_generate_eval_happy_path() {
    let dir = tmp("happy");
    let out = dir.join("run");
    let out_s = out.to_str().unwrap();
    let mut args = vec!["train", "--out", out_s, "--max-steps", "3"];
    args.extend_from_slice(common::SMALL_MODEL);
    args.push("--quiet");
    let r = run(&args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(out.join("latest").is_file());
    let ckpt = out.join(std::fs::read_to_string(out.join("latest")).unwrap().trim());
    for f in [
        "config.json",
        "model.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
        "tokenizer.json",
    ] {
        assert!(ckpt.join(f).is_file(), "{f} missing");
    }
    let g = run(&[
        "generate",
        "--checkpoint",
        out_s,
        "--prompt",
        "Every effort",
        "--max-new-tokens",
        "10",
    ]);
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let text = String::from_utf8_lossy(&g.stdout);
    assert!(
        text.starts_with("Every effort") && text.len() > "Every effort".len(),
        "{text}"
    );
    let g2 = run(&[
        "generate",
        "--checkpoint",
        out_s,
        "--prompt",
        "Every",
        "--temperature",
        "1.0",
        "--top-k",
        "5",
        "--top-p",
        "0.9",
    ]);
    assert!(g2.status.success());
    let corpus = dir.join("eval.txt");
    std::fs::write(
        &corpus,
        "The road to the market ran for seven miles between the hills. ".repeat(4),
    )
    .unwrap();
    let e = run(&[
        "eval",
        "--checkpoint",
        out_s,
        "--data",
        corpus.to_str().unwrap(),
    ]);
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let line = String::from_utf8_lossy(&e.stdout);
    let parts: Vec<&str> = line.split_whitespace().collect();
    assert_eq!((parts[0], parts[2]), ("loss", "perplexity"), "{line}");
    let (loss, ppl): (f64, f64) = (parts[1].parse().unwrap(), parts[3].parse().unwrap());
    assert!((loss.exp() - ppl).abs() < 1e-2 * ppl, "{line}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_training_inputs_give_one_clear_line_and_write_nothing() {
    let dir = tmp("bad");
    let out = dir.join("run");
    let out_s = out.to_str().unwrap();
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let short = dir.join("short.txt");
    std::fs::write(&short, "too short").unwrap();
    let binary = dir.join("latin1.txt");
    std::fs::write(&binary, b"caf\xe9 au lait").unwrap();
    let p = |p: &Path| p.to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--data".into(), p(&dir.join("missing.txt"))],
            "missing.txt",
        ),
        (vec!["--data".into(), p(&dir)], "is a directory"),
        (vec!["--data".into(), p(&empty)], "empty"),
        (vec!["--data".into(), p(&short)], "too short"),
        (vec!["--data".into(), p(&binary)], "not valid UTF-8"),
        (vec!["--preset".into(), "gpt5".into()], "unknown preset"),
        (
            vec!["--tokenizer".into(), "wordpiece".into()],
            "unknown tokenizer",
        ),
        (vec!["--tokenizer".into(), "bpe:10".into()], "bpe:N"),
        (
            vec!["--batch-size".into(), "0".into()],
            "--batch-size must be at least 1",
        ),
        (vec!["--batch-size".into(), "-3".into()], "-3"),
        (
            vec![
                "--emb-dim".into(),
                "64".into(),
                "--n-heads".into(),
                "3".into(),
            ],
            "not divisible",
        ),
        (vec!["--dropout".into(), "1.5".into()], "--dropout"),
        (vec!["--lr".into(), "-1".into()], "--lr"),
        (vec!["--epochs".into(), "0".into()], "--epochs"),
        (
            vec!["--context-length".into(), "0".into()],
            "--context-length",
        ),
        (
            vec!["--resume".into(), p(&dir.join("nothing-here"))],
            "no such directory",
        ),
        (vec!["--bogus-flag".into()], "--bogus-flag"),
        (
            vec![
                "--resume".into(),
                p(&dir),
                "--context-length".into(),
                "999".into(),
            ],
            "cannot change when resuming",
        ),
        (
            vec![
                "--lr".into(),
                "1e30".into(),
                "--tokenizer".into(),
                "bytes".into(),
                "--grad-clip".into(),
                "0".into(),
            ],
            "NaN or infinite at step",
        ),
    ];
    for (extra, needle) in cases {
        let mut args: Vec<String> = vec![
            "train".into(),
            "--out".into(),
            out_s.into(),
            "--max-steps".into(),
            "2".into(),
        ];
        args.extend(extra.iter().cloned());
        let r = bin().args(&args).output().unwrap();
        assert_one_line_error(&r, needle);
        assert!(
            !out.join("latest").exists() && !out.join("checkpoints").exists(),
            "{extra:?} left a checkpoint"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_generate_and_eval_inputs_give_one_clear_line() {
    let dir = tmp("badgen");
    let missing = dir.join("missing");
    let m = missing.to_str().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("model/tests/fixtures/tiny-gpt2");
    let f = fixture.to_str().unwrap();
    assert_one_line_error(
        &run(&["generate", "--checkpoint", m, "--prompt", "hi"]),
        "no such directory",
    );
    assert_one_line_error(
        &run(&[
            "generate",
            "--checkpoint",
            f,
            "--prompt",
            "hi",
            "--temperature",
            "-1",
        ]),
        "temperature",
    );
    assert_one_line_error(
        &run(&[
            "generate",
            "--checkpoint",
            f,
            "--prompt",
            "hi",
            "--top-p",
            "1.5",
        ]),
        "top-p",
    );
    assert_one_line_error(
        &run(&[
            "generate",
            "--checkpoint",
            f,
            "--prompt",
            "hi",
            "--top-k",
            "0",
        ]),
        "top-k",
    );
    assert_one_line_error(
        &run(&["generate", "--checkpoint", f, "--prompt", ""]),
        "--prompt",
    );
    // the fixture is a GPT-2 directory whose 37-token vocabulary does not fit GPT-2's tokenizer
    assert_one_line_error(
        &run(&["generate", "--checkpoint", f, "--prompt", "hi"]),
        "vocabulary",
    );
    let short = dir.join("short.txt");
    std::fs::write(&short, "hi").unwrap();
    assert_one_line_error(
        &run(&["eval", "--checkpoint", m, "--data", short.to_str().unwrap()]),
        "no such directory",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
