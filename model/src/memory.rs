//! How much memory a model needs, from its shape alone, before anything is allocated: so a
//! command can say "this does not fit" in one line instead of being killed half-way through
//! an allocation.
//!
//! Training holds, at its peak (the start of the backward pass of a step):
//! - the weights, 4 bytes per parameter, their gradients (4 more) and AdamW's two moments (8);
//! - the activations every op saved for its backward pass. Per transformer block and token,
//!   about 21 vectors of the model's width C: layer norm outputs, Q/K/V (3), the attention
//!   output, the out-projection, the feed-forward's 4·C-wide hidden layer before and after
//!   GELU (8), dropout outputs and masks (one byte per value), the two residual sums.
//!   Attention also keeps its softmax weights P for the blocks of keys each query can see
//!   (about T²/2 floats per head and sequence) and, with dropout, its dropout mask (T² bytes
//!   per head and sequence). At the top, the logits (B·T·V) and, in backward, their gradient
//!   (B·T·V again);
//! - the token ids of the data and a fixed runtime overhead.
//!
//! Inference (generation) holds the weights, the KV cache (2·L·T·C per sequence) and one
//! forward pass's activations, which nothing keeps for a backward pass.
//!
//! The estimate is checked against the measured peak resident memory of real runs in the
//! command-line tests (within 25%).

use std::fmt;

use crate::config::GptConfig;

const F32: u64 = 4;
/// Floats of width C that one transformer block keeps per token for its backward pass.
const SAVED_VECTORS_PER_BLOCK: u64 = 21;
/// The runtime's own resident memory: the binary, thread stacks, allocator slack (measured:
/// about 9 MB for the smallest model).
pub const RUNTIME_OVERHEAD: u64 = 8 << 20;

/// Bytes of memory a run needs, by what they hold.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MemoryEstimate {
    pub weights: u64,
    pub gradients: u64,
    /// AdamW's first and second moments.
    pub optimizer: u64,
    /// Activations (and, in training, the logits' gradient) of one step or forward pass.
    pub activations: u64,
    /// The KV cache (generation only).
    pub kv_cache: u64,
    /// Token ids, text and the runtime's own overhead.
    pub other: u64,
    /// While a model file is read: the one tensor of it held besides the weights (see
    /// [`MemoryEstimate::inference`]). Not at the same time as the activations.
    pub loading: u64,
    /// Bytes of files mapped into the address space while loading: not memory, but counted
    /// against an address-space limit (`ulimit -v`).
    pub mapped: u64,
}

impl MemoryEstimate {
    /// One training step of `batch` sequences of the full context length, with AdamW.
    pub fn training(cfg: &GptConfig, batch: usize) -> MemoryEstimate {
        let p = cfg.num_parameters() as u64;
        let (b, t, c, l, v, nh) = dims(cfg, batch);
        // per block: the saved vectors, and attention's P for about half the T×T scores of
        // every head, plus its dropout mask over all T×T when there is dropout (one byte per
        // score: a quarter of a float)
        let mask = if cfg.drop_rate > 0.0 { t * t / 4 } else { 0 };
        let block = SAVED_VECTORS_PER_BLOCK * b * t * c + b * nh * (t * t / 2 + 32 * t + mask);
        // embeddings + dropout, final layer norm; logits and their gradient
        let ends = 4 * b * t * c + 2 * b * t * v;
        MemoryEstimate {
            weights: F32 * p,
            gradients: F32 * p,
            optimizer: 2 * F32 * p,
            activations: F32 * (l * block + ends),
            kv_cache: 0,
            other: RUNTIME_OVERHEAD,
            ..MemoryEstimate::default()
        }
    }

    /// Fine-tuning at `seq_len` tokens per example: the weights of `cfg`, gradients and AdamW
    /// moments only for the `trainable` parameters (frozen ones have neither), and the
    /// activations of a training step whose output has `outputs` logits per token (the
    /// vocabulary, or the classes of a classifier).
    pub fn fine_tuning(
        cfg: &GptConfig,
        batch: usize,
        seq_len: usize,
        trainable: u64,
        outputs: usize,
    ) -> MemoryEstimate {
        let step = GptConfig {
            context_length: seq_len,
            vocab_size: outputs,
            ..cfg.clone()
        };
        MemoryEstimate {
            weights: F32 * cfg.num_parameters() as u64,
            gradients: F32 * trainable,
            optimizer: 2 * F32 * trainable,
            activations: MemoryEstimate::training(&step, batch).activations,
            kv_cache: 0,
            other: RUNTIME_OVERHEAD,
            ..MemoryEstimate::default()
        }
    }

    /// Generating with the KV cache for `batch` sequences up to the context length, from a
    /// model read out of its file: loading maps the file (about the size of the weights) and
    /// holds one tensor of it at a time besides the weights, at most the embedding or the
    /// output head (V·C floats). Measured for GPT-2 small from its file (Intel Xeon,
    /// 2026-12-03): 813 MB peak resident, 812 MB estimated.
    pub fn inference(cfg: &GptConfig, batch: usize) -> MemoryEstimate {
        let p = cfg.num_parameters() as u64;
        let (b, t, c, _, v, nh) = dims(cfg, batch);
        // the prompt's forward pass: a few width-C and 4C-wide vectors per token, the scores
        // of one layer's heads, and the logits
        let activations = F32 * (12 * b * t * c + b * nh * t * t + b * t * v);
        let largest_tensor = F32 * v.max(4 * c).max(t) * c;
        MemoryEstimate {
            weights: F32 * p,
            activations,
            kv_cache: F32 * 2 * cfg.n_layers as u64 * b * t * c,
            other: RUNTIME_OVERHEAD,
            loading: largest_tensor,
            mapped: F32 * p,
            ..MemoryEstimate::default()
        }
    }

    /// Forward passes over `batch` whole windows without a KV cache (`eval`): as
    /// [`MemoryEstimate::inference`] for that batch, less the cache. Measured for GPT-2 small
    /// at context 256 (Intel Xeon, 2026-12-03): batch 1 813 MB peak resident, 812 MB estimated;
    /// batch 8 1.11 GB, 1.17 GB; batch 20 1.74 GB, 1.94 GB.
    pub fn evaluation(cfg: &GptConfig, batch: usize) -> MemoryEstimate {
        MemoryEstimate {
            kv_cache: 0,
            ..MemoryEstimate::inference(cfg, batch)
        }
    }

    /// Adds bytes of data held besides the model (token ids, text).
    pub fn with_data(self, bytes: u64) -> MemoryEstimate {
        MemoryEstimate {
            other: self.other + bytes,
            ..self
        }
    }

    /// The peak: what is always held, and the larger of a step's (or forward pass's)
    /// activations and KV cache and what loading holds.
    pub fn total(&self) -> u64 {
        self.weights
            + self.gradients
            + self.optimizer
            + self.other
            + (self.activations + self.kv_cache).max(self.loading)
    }
}

fn dims(cfg: &GptConfig, batch: usize) -> (u64, u64, u64, u64, u64, u64) {
    (
        batch as u64,
        cfg.context_length as u64,
        cfg.emb_dim as u64,
        cfg.n_layers as u64,
        cfg.vocab_size as u64,
        cfg.n_heads as u64,
    )
}

/// Bytes in a short human form: `512 KB`, `3.4 MB`, `1.25 GB` (powers of 1000).
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.0} KB", b / 1e3)
    }
}

impl fmt::Display for MemoryEstimate {
    /// `about 1.25 GB (weights 0.33 GB, gradients …, AdamW moments …, activations …, other …)`,
    /// naming only the parts that are not zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            ("weights", self.weights),
            ("gradients", self.gradients),
            ("AdamW moments", self.optimizer),
            ("activations", self.activations),
            ("KV cache", self.kv_cache),
            ("data and runtime", self.other),
            ("one tensor while loading", self.loading),
        ]
        .iter()
        .filter(|(_, b)| *b > 0)
        .map(|(what, b)| format!("{what} {}", human_bytes(*b)))
        .collect();
        write!(
            f,
            "about {} ({})",
            human_bytes(self.total()),
            parts.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_cost_sixteen_bytes_each_in_training() {
        let cfg = GptConfig::gpt2_small();
        let e = MemoryEstimate::training(&cfg, 2);
        let p = cfg.num_parameters() as u64;
        assert_eq!(e.weights + e.gradients + e.optimizer, 16 * p);
        // gpt2-small at context 1024, batch 2: the logits alone are 2·1024·50257 floats
        assert!(e.activations > 2 * 2 * 1024 * 50257 * 4);
        assert!(
            e.total() > 3_000_000_000 && e.total() < 10_000_000_000,
            "{e}"
        );
        let i = MemoryEstimate::inference(&cfg, 1);
        assert_eq!(i.gradients + i.optimizer, 0);
        assert!(i.total() < e.total());
        assert!(i.to_string().starts_with("about ") && i.to_string().contains("KV cache"));
        // loading holds the output head's V·C floats besides the weights, not at the same
        // time as a forward pass
        assert_eq!(i.loading, 4 * 50257 * 768);
        assert_eq!(
            i.total(),
            i.weights + i.other + (i.activations + i.kv_cache).max(i.loading)
        );
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(1_250_000_000), "1.25 GB");
        assert_eq!(human_bytes(3_400_000), "3.4 MB");
        assert_eq!(human_bytes(512_000), "512 KB");
    }
}
