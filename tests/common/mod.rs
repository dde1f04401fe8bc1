//! Helpers shared by the end-to-end tests that drive the `scratchgpt` binary.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// A fresh, empty directory under the system temp dir, unique to this test process.
pub fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scratchgpt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `train` flags for the shape of a model small enough to train in milliseconds, for data
/// that names its own tokenizer (token shards).
pub const SMALL_SHAPE: &[&str] = &[
    "--context-length",
    "32",
    "--emb-dim",
    "32",
    "--n-heads",
    "2",
    "--n-layers",
    "1",
    "--batch-size",
    "4",
];

/// `train` flags for a model small enough to train in milliseconds: [`SMALL_SHAPE`] on the
/// bytes tokenizer, windows not overlapping.
pub fn small_model() -> Vec<&'static str> {
    let mut flags = vec!["--tokenizer", "bytes"];
    flags.extend_from_slice(SMALL_SHAPE);
    flags.extend_from_slice(&["--stride", "32"]);
    flags
}

/// The `scratchgpt` binary of this build.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scratchgpt"))
}

/// Asserts the command succeeded, showing what it printed if not.
#[track_caller]
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts the command failed with exactly one line on stderr, an `error:` containing
/// `needle`, and no panic.
#[track_caller]
pub fn assert_one_line_error(out: &Output, needle: &str) {
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

/// Sends SIGINT (what Ctrl-C sends) to a child process.
pub fn interrupt(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -INT {}", child.id());
}
