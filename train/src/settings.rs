//! Everything that defines a training run, with presets and validation.
//!
//! Settings come from a preset (`--preset`) and are overridden by individual flags. They are
//! saved in every checkpoint, so `--resume` continues with exactly the same run.

use model::GptConfig;
use serde::{Deserialize, Serialize};

/// Which tokenizer a run uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TokenizerSpec {
    /// GPT-2's 50,257-token BPE.
    Gpt2,
    /// A BPE of this vocabulary size learned from the training text.
    Bpe(usize),
    /// One id per byte.
    Bytes,
}

impl TokenizerSpec {
    /// Parses `gpt2`, `bytes` or `bpe:N`.
    pub fn parse(s: &str) -> Result<TokenizerSpec, String> {
        match s {
            "gpt2" => Ok(TokenizerSpec::Gpt2),
            "bytes" => Ok(TokenizerSpec::Bytes),
            _ => match s.strip_prefix("bpe:").map(str::parse::<usize>) {
                Some(Ok(n)) if (257..=1_000_000).contains(&n) => Ok(TokenizerSpec::Bpe(n)),
                Some(_) => Err(format!(
                    "bpe:N needs a vocabulary size N from 257 to 1000000, got {s:?}"
                )),
                None => Err(format!("unknown tokenizer {s:?}; use gpt2, bytes or bpe:N")),
            },
        }
    }
}

impl std::fmt::Display for TokenizerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenizerSpec::Gpt2 => write!(f, "gpt2"),
            TokenizerSpec::Bpe(n) => write!(f, "bpe:{n}"),
            TokenizerSpec::Bytes => write!(f, "bytes"),
        }
    }
}

/// A training run's settings (the model's vocabulary size comes from the tokenizer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    pub preset: String,
    pub tokenizer: TokenizerSpec,
    pub context_length: usize,
    pub emb_dim: usize,
    pub n_heads: usize,
    pub n_layers: usize,
    pub dropout: f32,
    pub qkv_bias: bool,
    pub tie_weights: bool,
    pub batch_size: usize,
    /// Distance between window starts (the book uses the context length: no overlap).
    pub stride: usize,
    pub epochs: usize,
    /// Stop after this many optimizer steps (whatever the epoch).
    pub max_steps: Option<usize>,
    pub lr: f32,
    /// With `cosine`, the learning rate decays to this.
    pub min_lr: f32,
    pub cosine: bool,
    pub warmup_steps: usize,
    pub weight_decay: f32,
    /// Clip the global gradient norm to this (appendix D); `None` = no clipping.
    pub grad_clip: Option<f32>,
    pub eval_freq: usize,
    pub eval_iter: usize,
    /// Also save a checkpoint every this many steps (besides each epoch's end and the run's end).
    pub save_every: Option<usize>,
    pub seed: u64,
    pub train_ratio: f64,
    /// The prompt of the sample printed after each epoch.
    pub start_context: String,
    pub sample_tokens: usize,
    /// Draw every random number as the book's PyTorch code does (MT19937, PyTorch's sampling
    /// rules, DataLoader shuffling and evaluation on freshly shuffled batches), so the run
    /// reproduces the book's numbers.
    #[serde(default)]
    pub book_compat: bool,
    /// Micro-batches per optimizer step: the batch of `batch_size` windows is computed in this
    /// many equal parts whose gradients add up before the step (gradient accumulation), so a
    /// large batch fits in the memory of a small one.
    #[serde(default = "one")]
    pub grad_accum: usize,
    /// The model's vocabulary size when it is to be larger than the tokenizer's: the token
    /// embedding and the output head get rows for ids the tokenizer never produces (nanoGPT
    /// pads GPT-2's 50,257 to 50,304, a multiple of 64). Those ids are never targets, so
    /// training pushes their logits down; generation never samples them. `None`: the
    /// tokenizer's size.
    #[serde(default)]
    pub vocab_size: Option<usize>,
}

fn one() -> usize {
    1
}

/// Names of the training presets, for help texts.
pub const TRAIN_PRESETS: [&str; 9] = [
    "quickstart",
    "book-ch5",
    "gpt2-small",
    "gpt2-medium",
    "gpt2-large",
    "gpt2-xl",
    "small",
    "tiny",
    "micro",
];

impl TrainSettings {
    /// A preset by name:
    /// - `quickstart` (the default): a 4-layer, 128-wide model with a 1,024-token BPE learned
    ///   from the data; learns visibly in a couple of minutes on two cores.
    /// - `book-ch5`: the book's chapter-5 run: GPT-2 small shape with context 256, GPT-2
    ///   tokenizer, batch 2, AdamW lr 4e-4, weight decay 0.1, 10 epochs, evaluation every 5 steps
    ///   on 5 batches, seed 123.
    /// - any model preset of `GptConfig::preset` (`gpt2-small`, …, `tiny`, `micro`), trained with
    ///   the quickstart's schedule.
    pub fn preset(name: &str) -> Result<TrainSettings, String> {
        let quick = TrainSettings {
            preset: "quickstart".into(),
            tokenizer: TokenizerSpec::Bpe(1024),
            context_length: 128,
            emb_dim: 128,
            n_heads: 4,
            n_layers: 4,
            dropout: 0.1,
            qkv_bias: false,
            tie_weights: false,
            batch_size: 8,
            stride: 32,
            epochs: 30,
            max_steps: None,
            lr: 1e-3,
            min_lr: 1e-4,
            cosine: true,
            warmup_steps: 20,
            weight_decay: 0.1,
            grad_clip: Some(1.0),
            eval_freq: 20,
            eval_iter: 5,
            save_every: None,
            seed: 123,
            train_ratio: 0.9,
            start_context: "Every effort moves you".into(),
            sample_tokens: 50,
            book_compat: false,
            grad_accum: 1,
            vocab_size: None,
        };
        match name {
            "quickstart" => Ok(quick),
            "book-ch5" => Ok(TrainSettings {
                preset: name.into(),
                tokenizer: TokenizerSpec::Gpt2,
                context_length: 256,
                emb_dim: 768,
                n_heads: 12,
                n_layers: 12,
                dropout: 0.1,
                batch_size: 2,
                stride: 256,
                epochs: 10,
                lr: 4e-4,
                min_lr: 4e-4,
                cosine: false,
                warmup_steps: 0,
                grad_clip: None,
                eval_freq: 5,
                eval_iter: 5,
                ..quick
            }),
            other => {
                let cfg = GptConfig::preset(other).map_err(|_| {
                    format!(
                        "unknown preset {other:?}; choose one of {}",
                        TRAIN_PRESETS.join(", ")
                    )
                })?;
                Ok(TrainSettings {
                    preset: name.into(),
                    context_length: cfg.context_length,
                    emb_dim: cfg.emb_dim,
                    n_heads: cfg.n_heads,
                    n_layers: cfg.n_layers,
                    dropout: cfg.drop_rate,
                    stride: cfg.context_length,
                    tokenizer: if other.starts_with("gpt2") {
                        TokenizerSpec::Gpt2
                    } else {
                        quick.tokenizer.clone()
                    },
                    ..quick
                })
            }
        }
    }

    /// The model configuration for a tokenizer of `vocab_size` ids.
    /// The model's shape for a tokenizer of `tokenizer_vocab` ids (the vocabulary is
    /// `--vocab-size` when given, see [`TrainSettings::check_vocab_size`]).
    pub fn model_config(&self, tokenizer_vocab: usize) -> GptConfig {
        GptConfig {
            vocab_size: self.vocab_size.unwrap_or(tokenizer_vocab),
            context_length: self.context_length,
            emb_dim: self.emb_dim,
            n_heads: self.n_heads,
            n_layers: self.n_layers,
            drop_rate: self.dropout,
            qkv_bias: self.qkv_bias,
            tie_weights: self.tie_weights,
        }
    }

    /// Checks `--vocab-size` against the tokenizer's vocabulary: it may pad it, never cut it
    /// (a model must be able to predict every id its tokenizer produces).
    pub fn check_vocab_size(&self, tokenizer_vocab: usize, tokenizer: &str) -> Result<(), String> {
        match self.vocab_size {
            Some(n) if n < tokenizer_vocab => Err(format!(
                "--vocab-size {n} is smaller than the {tokenizer_vocab} ids of the tokenizer {tokenizer}: the model needs a row for every id its tokenizer produces (--vocab-size can only pad the vocabulary, as nanoGPT's 50304 for GPT-2)"
            )),
            _ => Ok(()),
        }
    }

    /// Checks every value a user can set, naming the flag that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("--context-length", self.context_length),
            ("--emb-dim", self.emb_dim),
            ("--n-heads", self.n_heads),
            ("--n-layers", self.n_layers),
            ("--batch-size", self.batch_size),
            ("--stride", self.stride),
            ("--eval-freq", self.eval_freq),
            ("--eval-iter", self.eval_iter),
        ];
        for (flag, v) in positive {
            if v == 0 {
                return Err(format!("{flag} must be at least 1"));
            }
        }
        if self.epochs == 0 {
            return Err("--epochs must be at least 1".into());
        }
        if self.grad_accum == 0 || !self.batch_size.is_multiple_of(self.grad_accum) {
            return Err(format!(
                "--grad-accum {} must be at least 1 and divide --batch-size {} (the batch is split into that many equal micro-batches)",
                self.grad_accum, self.batch_size
            ));
        }
        if self.vocab_size == Some(0) {
            return Err("--vocab-size must be at least 1".into());
        }
        if self.vocab_size.is_some() && self.book_compat {
            return Err("--vocab-size cannot be combined with --book-compat: the book's model has exactly GPT-2's 50257 ids, and padding changes every random draw after the embedding".into());
        }
        if self.grad_accum > 1 && self.book_compat {
            return Err("--grad-accum cannot be used with --book-compat: the book takes one step per batch, drawing its dropout masks for the whole batch at once".into());
        }
        if self.max_steps == Some(0) {
            return Err("--max-steps must be at least 1".into());
        }
        if self.save_every == Some(0) {
            return Err("--save-every must be at least 1".into());
        }
        if !self.emb_dim.is_multiple_of(self.n_heads) {
            return Err(format!(
                "--emb-dim {} is not divisible by --n-heads {}",
                self.emb_dim, self.n_heads
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("--dropout must be in [0, 1), got {}", self.dropout));
        }
        for (flag, v) in [("--lr", self.lr), ("--min-lr", self.min_lr)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{flag} must be a positive number, got {v}"));
            }
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(format!(
                "--weight-decay must be 0 or positive, got {}",
                self.weight_decay
            ));
        }
        if let Some(c) = self.grad_clip {
            if !(c.is_finite() && c > 0.0) {
                return Err(format!(
                    "--grad-clip must be positive (0 turns clipping off), got {c}"
                ));
            }
        }
        if !(self.train_ratio > 0.0 && self.train_ratio < 1.0) {
            return Err(format!(
                "--train-ratio must be between 0 and 1, got {}",
                self.train_ratio
            ));
        }
        self.model_config(1).validate().map_err(|e| e.to_string())
    }

    /// The learning rate of optimizer step `step` (0-based) out of `total`: linear warm-up
    /// from lr/warmup to lr, then constant or cosine decay to `min_lr` (book appendix D).
    pub fn lr_at(&self, step: usize, total: usize) -> f32 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f32 / self.warmup_steps as f32;
        }
        if !self.cosine || total <= self.warmup_steps {
            return self.lr;
        }
        let progress =
            ((step - self.warmup_steps) as f64 / (total - self.warmup_steps) as f64).min(1.0);
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        (self.min_lr as f64 + (self.lr - self.min_lr) as f64 * cos) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_book_run_matches_the_book() {
        for p in TRAIN_PRESETS {
            TrainSettings::preset(p).unwrap().validate().unwrap();
        }
        let b = TrainSettings::preset("book-ch5").unwrap();
        assert_eq!(
            (
                b.context_length,
                b.emb_dim,
                b.n_layers,
                b.batch_size,
                b.epochs
            ),
            (256, 768, 12, 2, 10)
        );
        assert_eq!(
            (b.lr, b.weight_decay, b.eval_freq, b.eval_iter, b.seed),
            (4e-4, 0.1, 5, 5, 123)
        );
        assert!(TrainSettings::preset("huge")
            .unwrap_err()
            .contains("unknown preset"));
    }

    #[test]
    fn tokenizer_specs_parse() {
        assert_eq!(TokenizerSpec::parse("bpe:500"), Ok(TokenizerSpec::Bpe(500)));
        assert!(TokenizerSpec::parse("bpe:10").is_err());
        assert!(TokenizerSpec::parse("wordpiece")
            .unwrap_err()
            .contains("unknown tokenizer"));
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        let s = TrainSettings {
            lr: 1.0,
            min_lr: 0.1,
            warmup_steps: 10,
            cosine: true,
            ..TrainSettings::preset("quickstart").unwrap()
        };
        assert!((s.lr_at(0, 100) - 0.1).abs() < 1e-6);
        assert!((s.lr_at(9, 100) - 1.0).abs() < 1e-6);
        assert!((s.lr_at(10, 100) - 1.0).abs() < 1e-6);
        assert!((s.lr_at(100, 100) - 0.1).abs() < 1e-6);
        assert!(s.lr_at(55, 100) < 0.6 && s.lr_at(55, 100) > 0.5);
    }
}
