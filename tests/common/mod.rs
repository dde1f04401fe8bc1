//! Helpers shared by the end-to-end tests that drive the `scratchgpt` binary.

#![allow(dead_code)]

use std::path::PathBuf;

/// A fresh, empty directory under the system temp dir, unique to this test process.
pub fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scratchgpt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `train` flags for a model small enough to train in milliseconds.
pub const SMALL_MODEL: &[&str] = &[
    "--tokenizer",
    "bytes",
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
    "--stride",
    "32",
];
