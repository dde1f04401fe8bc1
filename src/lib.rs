//! scratchgpt: a GPT built from first principles.
//!
//! This facade re-exports the three crates of the workspace:
//! - [`tensor`]: the engine (tensors, autodiff, SGEMM, optimizers),
//! - [`model`]: the GPT layers,
//! - [`train`]: tokenizers, data, training loop and CLI commands.
pub use model;
pub use tensor;
pub use train;
