//! # The GPT model
//!
//! Every layer of the book's GPT, built from differentiable `tensor` ops. Each module names
//! the book section it implements; the fast (fused) path and the textbook (composed) path are
//! both kept where they differ, and tests check they agree.
//!
//! | book | idea | module |
//! |---|---|---|
//! | 2.7–2.8 | token and positional embeddings | [`embedding`] |
//! | 3.3–3.6 | attention: simplified, trainable, causal, multi-head | [`attention`] |
//! | 3.5.2 | dropout | [`dropout`] |
//! | 4.1 | the configuration | [`config`] |
//! | 4.2 | layer normalization | [`layer_norm`] |
//! | 4.3 | GELU and the feed-forward network | [`gelu`], [`feed_forward`] |
//! | 4.4–4.5 | shortcut connections, the transformer block | [`block`] |
//! | 4.6 | the GPT model | [`gpt`] |
//! | 4.7, 5.3 | generating text: greedy, temperature, top-k, top-p, KV cache | [`generate`] |
//! | 5.1 | the loss: cross-entropy, perplexity | [`loss`] |
//! | 6 | classification fine-tuning: a new head, pooling, frozen layers | [`classifier`] |
//! | appendix E | LoRA: low-rank adapters on every linear layer, merging | [`lora`] |
//! | 3.5, 4.2, 4.6 | inside the model: attention weights, the logit lens, layer-norm statistics | [`inspect`] |
//! | 5.5 | GPT-2 weights (`.safetensors`, Hugging Face names) | [`weights`] |

pub mod attention;
pub mod block;
pub mod classifier;
pub mod config;
pub mod dropout;
pub mod embedding;
pub mod feed_forward;
pub mod gelu;
pub mod generate;
pub mod gpt;
pub mod inspect;
pub mod layer_norm;
pub mod linear;
pub mod lora;
pub mod loss;
pub mod memory;
pub mod module;
pub mod testing;
pub mod weights;

pub use config::{ConfigError, GptConfig};
pub use gpt::GptModel;
pub use module::{Context, Module};
pub use tensor;
