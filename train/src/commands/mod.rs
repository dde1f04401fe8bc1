//! The commands of the `scratchgpt` binary that have their own file (the older ones, `train`,
//! `generate`, `eval` and `bench`, still live in [`crate::cli`]).

pub mod classify;
pub mod finetune;
pub mod merge_lora;
