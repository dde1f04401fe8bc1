//! GPT layers built from `tensor` ops (in progress: see issue 3).
pub use tensor;
