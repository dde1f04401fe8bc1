//! Model configuration (book section 4.1, `GPT_CONFIG_124M`) and presets.

use std::fmt;

/// The shape of a GPT model.
#[derive(Clone, Debug, PartialEq)]
pub struct GptConfig {
    /// Number of token ids (50,257 for GPT-2's tokenizer).
    pub vocab_size: usize,
    /// Longest input the positional embedding covers.
    pub context_length: usize,
    /// Embedding (and residual stream) width C.
    pub emb_dim: usize,
    /// Attention heads NH; `emb_dim` must be a multiple.
    pub n_heads: usize,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Dropout probability (embeddings, attention weights, shortcut branches).
    pub drop_rate: f32,
    /// Whether the query/key/value projections have a bias (GPT-2's weights do; the book
    /// trains without).
    pub qkv_bias: bool,
    /// Whether the output head shares the token embedding matrix (GPT-2 does).
    pub tie_weights: bool,
}

/// A configuration that cannot build a model.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid model configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Names of the built-in presets, for help texts and error messages.
pub const PRESET_NAMES: [&str; 7] = [
    "gpt2-small",
    "gpt2-medium",
    "gpt2-large",
    "gpt2-xl",
    "small",
    "tiny",
    "micro",
];

impl GptConfig {
    /// GPT-2 small, 124M parameters (the book's `GPT_CONFIG_124M`): vocab 50,257, context
    /// 1,024, width 768, 12 heads, 12 layers, dropout 0.1, no QKV bias, untied head.
    pub fn gpt2_small() -> GptConfig {
        GptConfig {
            vocab_size: 50_257,
            context_length: 1024,
            emb_dim: 768,
            n_heads: 12,
            n_layers: 12,
            drop_rate: 0.1,
            qkv_bias: false,
            tie_weights: false,
        }
    }

    /// A preset by name: `gpt2-small`, `gpt2-medium` (355M), `gpt2-large` (774M), `gpt2-xl`
    /// (1558M), and small shapes for fast experiments: `small` (width 256, 4 layers, context
    /// 256), `tiny` (128, 4 layers, context 128) and `micro` (64, 2 layers, context 64).
    pub fn preset(name: &str) -> Result<GptConfig, ConfigError> {
        let base = GptConfig::gpt2_small();
        let with = |emb_dim, n_layers, n_heads, context_length| GptConfig {
            emb_dim,
            n_layers,
            n_heads,
            context_length,
            ..base.clone()
        };
        Ok(match name {
            "gpt2-small" | "gpt2" | "124M" => base.clone(),
            "gpt2-medium" | "355M" => with(1024, 24, 16, 1024),
            "gpt2-large" | "774M" => with(1280, 36, 20, 1024),
            "gpt2-xl" | "1558M" => with(1600, 48, 25, 1024),
            "small" => with(256, 4, 4, 256),
            "tiny" => with(128, 4, 4, 128),
            "micro" => with(64, 2, 2, 64),
            other => {
                return Err(ConfigError(format!(
                    "unknown preset {other:?}; choose one of {}",
                    PRESET_NAMES.join(", ")
                )))
            }
        })
    }

    /// Number of parameters a model of this shape has (the head counted only when untied).
    /// Computed from the shapes, without building anything: for gpt2-small, 163,009,536.
    pub fn num_parameters(&self) -> u128 {
        let (v, t, c, l) = (
            self.vocab_size as u128,
            self.context_length as u128,
            self.emb_dim as u128,
            self.n_layers as u128,
        );
        let qkv = 3 * c * c + if self.qkv_bias { 3 * c } else { 0 };
        let block = qkv + (c * c + c) + (c * 4 * c + 4 * c) + (4 * c * c + c) + 4 * c;
        let head = if self.tie_weights { 0 } else { v * c };
        v * c + t * c + l * block + 2 * c + head
    }

    /// Width of one attention head, `emb_dim / n_heads`.
    pub fn head_dim(&self) -> usize {
        self.emb_dim / self.n_heads
    }

    /// Checks every field, naming the first that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("context_length", self.context_length),
            ("emb_dim", self.emb_dim),
            ("n_heads", self.n_heads),
            ("n_layers", self.n_layers),
        ] {
            if v == 0 {
                return err(format!("{name} must be at least 1"));
            }
        }
        if !self.emb_dim.is_multiple_of(self.n_heads) {
            return err(format!(
                "emb_dim {} is not divisible by n_heads {}",
                self.emb_dim, self.n_heads
            ));
        }
        if !(0.0..1.0).contains(&self.drop_rate) {
            return err(format!("drop_rate {} must be in [0, 1)", self.drop_rate));
        }
        // A sanity bound so a typo cannot ask for terabytes.
        let params = self.vocab_size as u128 * self.emb_dim as u128 * 2
            + self.context_length as u128 * self.emb_dim as u128
            + self.n_layers as u128 * 12 * (self.emb_dim as u128).pow(2);
        if params > 20_000_000_000 {
            return err(format!(
                "about {params} parameters is more than this tool supports"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_unknown_names_are_errors() {
        for name in PRESET_NAMES {
            GptConfig::preset(name).unwrap().validate().unwrap();
        }
        let e = GptConfig::preset("gpt5").unwrap_err().to_string();
        assert!(e.contains("unknown preset \"gpt5\""), "{e}");
        let bad = GptConfig {
            n_heads: 5,
            ..GptConfig::gpt2_small()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not divisible"));
    }
}
