//! # Training
//!
//! Tokenizers, datasets, the training loop, checkpoints and the commands of the `scratchgpt`
//! binary.

pub mod tokenizer;

pub use model;
pub use tokenizer::{Tokenizer, TokenizerError};
