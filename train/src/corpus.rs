//! The built-in training corpus: a collection of short original stories written for this
//! project (no download, no license questions), used when `scratchgpt train` gets no `--data`.

/// About 20 KB of English prose.
pub const DEFAULT_CORPUS: &str = include_str!("../corpus/default.txt");
