//! Tokenizers, datasets, the training loop and the CLI commands (in progress: see issue 4).
pub use model;
