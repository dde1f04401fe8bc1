//! The commands of the `scratchgpt` binary, one file each; [`crate::cli`] parses the command
//! line and dispatches to them.

pub mod classify;
pub mod eval;
pub mod finetune;
pub mod generate;
pub mod instruct;
pub mod merge_lora;
pub mod train;
