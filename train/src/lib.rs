//! # Training
//!
//! Tokenizers, datasets, the training loop, checkpoints and the commands of the `scratchgpt`
//! binary.
//!
//! | book | idea | module |
//! |---|---|---|
//! | 2.2–2.5 | tokenizing: GPT-2 BPE, a BPE trainer, bytes | [`tokenizer`] |
//! | 2.6 | sliding windows, batches, the train/validation split | [`data`] |
//! | — | token shards (llm.c's format), corpora larger than memory | [`shards`] |
//! | — | `scratchgpt tokenize`: a corpus streamed into shards on all cores | [`tokenize`] |
//! | appendix E | LoRA flags and the adapters' files; `merge-lora` | [`lora`] |
//! | 5.2 | the training loop, evaluation, samples | [`trainer`] |
//! | appendix D | warm-up, cosine decay, gradient clipping | [`settings`], [`trainer`] |
//! | — | checkpoints and resuming | [`checkpoint`] |
//! | — | data-parallel training on several processes (MPI) | [`data_parallel`], [`collective`] |
//! | — | GPT-2 by name from the Hugging Face cache or hub | [`hub`] |
//! | — | run directories: runs never overwrite each other | [`run_dir`] |
//! | — | metrics and the loss plot | [`metrics`] |
//! | — | SVG figures and self-contained HTML pages | [`figures`] |
//! | 3, 4.2, 4.6 | seeing inside: attention maps, logit lens, layer-norm statistics (`inspect`) | [`commands::inspect`] |
//! | 3 | attention's time and memory against the context length (`bench context`) | [`context_bench`] |
//! | 5.2 | the run's report page (`index.html`: loss, samples, attention) | [`report`] |
//! | — | the `scratchgpt` command line | [`cli`] |

pub mod allocator;
pub mod bench;
pub mod checkpoint;
pub mod classification;
pub mod cli;
pub mod collective;
pub mod commands;
pub mod context_bench;
pub mod corpus;
pub mod data;
pub mod data_parallel;
pub mod error;
pub mod figures;
pub mod hub;
pub mod instruction;
pub mod lora;
pub mod memory;
pub mod metrics;
pub mod report;
pub mod run_dir;
pub mod settings;
pub mod shards;
pub mod token_data;
pub mod tokenize;
pub mod tokenizer;
pub mod trainer;

pub use error::TrainError;
pub use model;
pub use settings::{TokenizerSpec, TrainSettings};
pub use tokenizer::{Tokenizer, TokenizerError};

/// `1 window`, `2 windows`: a count and its noun (`one` or `many`), plural unless the count
/// is one.
pub(crate) fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
