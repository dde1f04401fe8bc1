//! The GPT model (book section 4.6, listing 4.7).
//!
//! ```text
//! ids [B, T] ─ token embedding ─┐
//!                               + ─ dropout ─ n × TransformerBlock ─ final LayerNorm ─ out_head ─ logits [B, T, V]
//! positions 0..T ─ pos embedding┘
//! ```
//! The output head is a bias-free `Linear(C → V)`; with `tie_weights` it reuses the token
//! embedding matrix, as GPT-2 does (section 4.6 discusses the two parameter counts).

use tensor::{no_grad, Tensor};

use crate::attention::KvCache;
use crate::block::TransformerBlock;
use crate::config::{ConfigError, GptConfig};
use crate::dropout::Dropout;
use crate::embedding::Embedding;
use crate::layer_norm::LayerNorm;
use crate::linear::Linear;
use crate::module::{join, Context, Module};

pub struct GptModel {
    pub cfg: GptConfig,
    pub tok_emb: Embedding,
    pub pos_emb: Embedding,
    pub drop_emb: Dropout,
    pub trf_blocks: Vec<TransformerBlock>,
    pub final_norm: LayerNorm,
    pub out_head: Linear,
    pub ctx: Context,
}

impl GptModel {
    /// A freshly initialised model. Parameters are drawn from `ctx`'s generator in the book's
    /// construction order: token embedding, position embedding, then each block, then the head.
    pub fn new(cfg: &GptConfig, ctx: &Context) -> Result<GptModel, ConfigError> {
        cfg.validate()?;
        let tok_emb = Embedding::new(cfg.vocab_size, cfg.emb_dim, ctx);
        let pos_emb = Embedding::new(cfg.context_length, cfg.emb_dim, ctx);
        let drop_emb = Dropout::new(cfg.drop_rate, ctx);
        let trf_blocks = (0..cfg.n_layers)
            .map(|_| TransformerBlock::new(cfg, ctx))
            .collect();
        let final_norm = LayerNorm::new(cfg.emb_dim);
        let out_head = if cfg.tie_weights {
            Linear::from_weights(tok_emb.weight.clone(), None)
        } else {
            Linear::new(cfg.emb_dim, cfg.vocab_size, false, ctx)
        };
        Ok(GptModel {
            cfg: cfg.clone(),
            tok_emb,
            pos_emb,
            drop_emb,
            trf_blocks,
            final_norm,
            out_head,
            ctx: ctx.clone(),
        })
    }

    /// Dropout on. PyTorch: `model.train()`.
    pub fn train(&self) {
        self.ctx.train();
    }

    /// Dropout off. PyTorch: `model.eval()`.
    pub fn eval(&self) {
        self.ctx.eval();
    }

    #[track_caller]
    pub(crate) fn embed(&self, ids: &[usize], batch: usize, start: usize) -> Tensor {
        assert!(
            batch > 0 && ids.len().is_multiple_of(batch),
            "GptModel: {} ids do not split into {batch} rows",
            ids.len()
        );
        let t = ids.len() / batch;
        assert!(
            start + t <= self.cfg.context_length,
            "GptModel: {} positions exceed the context length {}",
            start + t,
            self.cfg.context_length
        );
        if let Some(&bad) = ids.iter().find(|&&i| i >= self.cfg.vocab_size) {
            panic!(
                "GptModel: token id {bad} is outside the vocabulary of {}",
                self.cfg.vocab_size
            );
        }
        let positions: Vec<usize> = (start..start + t).collect();
        let tok = self.tok_emb.forward(ids, &[batch, t]);
        let pos = self.pos_emb.forward(&positions, &[t]);
        tok.add(&pos)
    }

    /// Logits `[B, T, V]` for token ids given row by row (`ids.len() = B·T`).
    #[track_caller]
    pub fn forward(&self, ids: &[usize], batch: usize) -> Tensor {
        self.out_head.forward(&self.hidden_states(ids, batch))
    }

    /// The final layer norm's output `[B, T, C]`: what the output head reads (and what a
    /// classification head reads instead, chapter 6).
    #[track_caller]
    pub fn hidden_states(&self, ids: &[usize], batch: usize) -> Tensor {
        let mut x = self.drop_emb.forward(&self.embed(ids, batch, 0));
        for block in &self.trf_blocks {
            x = block.forward(&x);
        }
        self.final_norm.forward(&x)
    }

    /// Sets every dropout of the model (embeddings, attention weights, shortcuts) to `p`, as
    /// fine-tuning does (the book fine-tunes with `drop_rate` 0).
    pub fn set_dropout(&mut self, p: f32) {
        self.cfg.drop_rate = p;
        self.drop_emb.p = p;
        for b in &mut self.trf_blocks {
            b.drop_shortcut.p = p;
            b.att.dropout.p = p;
        }
    }

    /// The same model through composed (textbook) ops only.
    #[track_caller]
    pub fn forward_composed(&self, ids: &[usize], batch: usize) -> Tensor {
        let mut x = self.drop_emb.forward(&self.embed(ids, batch, 0));
        for block in &self.trf_blocks {
            x = block.forward_composed(&x);
        }
        self.out_head
            .forward_composed(&self.final_norm.forward_composed(&x))
    }

    /// Logits `[B, T_new, V]` for new positions only, reading and extending `cache`
    /// (generation; no gradients; dropout off).
    #[track_caller]
    pub fn forward_cached(&self, ids: &[usize], batch: usize, cache: &mut KvCache) -> Tensor {
        let _g = no_grad();
        if cache.layers.len() != self.trf_blocks.len() {
            *cache = KvCache::new(self.trf_blocks.len());
        }
        let mut x = self.embed(ids, batch, cache.len());
        for (i, block) in self.trf_blocks.iter().enumerate() {
            x = block.forward_cached(&x, cache, i);
        }
        self.out_head.forward(&self.final_norm.forward(&x))
    }

    /// Size of the parameters at 4 bytes each, in MB of 1024² bytes (the book's
    /// `total_size_mb`; 621.83 MB for gpt2-small untied).
    pub fn size_mb(&self) -> f64 {
        self.num_parameters() as f64 * 4.0 / (1024.0 * 1024.0)
    }
}

impl std::fmt::Debug for GptModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GptModel({:?}, {} parameters)",
            self.cfg,
            self.num_parameters()
        )
    }
}

impl Module for GptModel {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.tok_emb.visit_parameters(&join(prefix, "tok_emb"), f);
        self.pos_emb.visit_parameters(&join(prefix, "pos_emb"), f);
        for (i, b) in self.trf_blocks.iter().enumerate() {
            b.visit_parameters(&join(prefix, &format!("trf_blocks.{i}")), f);
        }
        self.final_norm
            .visit_parameters(&join(prefix, "final_norm"), f);
        self.out_head.visit_parameters(&join(prefix, "out_head"), f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_parameter_gradients};
    use tensor::testing::GradcheckOptions;
    use tensor::Rng;

    pub(crate) fn tiny_config() -> GptConfig {
        GptConfig {
            vocab_size: 13,
            context_length: 8,
            emb_dim: 8,
            n_heads: 2,
            n_layers: 2,
            drop_rate: 0.1,
            qkv_bias: false,
            tie_weights: false,
        }
    }

    #[test]
    fn gpt2_small_parameter_counts_match_the_book() {
        // Counting needs no weights: sum the shapes (building the model would allocate 650 MB).
        let cfg = GptConfig::gpt2_small();
        let (c, v, t, l) = (
            cfg.emb_dim,
            cfg.vocab_size,
            cfg.context_length,
            cfg.n_layers,
        );
        let block = 3 * c * c + (c * c + c) + (c * 4 * c + 4 * c) + (4 * c * c + c) + 4 * c;
        let untied = v * c + t * c + l * block + 2 * c + v * c;
        assert_eq!(untied, 163_009_536);
        assert_eq!(untied - v * c, 124_412_160);
        assert_eq!(cfg.num_parameters(), 163_009_536);
        let tied = GptConfig {
            tie_weights: true,
            ..cfg.clone()
        };
        assert_eq!(tied.num_parameters(), 124_412_160);
        // the book's size: 163,009,536 × 4 bytes / 1024² = 621.83 MB
        let mb = cfg.num_parameters() as f64 * 4.0 / (1024.0 * 1024.0);
        assert!((mb - 621.83).abs() < 0.005, "{mb}");
        // and the formula agrees with a real (small) model's count
        let small = tiny_config();
        let m = GptModel::new(&small, &Context::new(0)).unwrap();
        let (c, v, t, l) = (
            small.emb_dim,
            small.vocab_size,
            small.context_length,
            small.n_layers,
        );
        let block = 3 * c * c + (c * c + c) + (c * 4 * c + 4 * c) + (4 * c * c + c) + 4 * c;
        assert_eq!(
            m.num_parameters(),
            v * c + t * c + l * block + 2 * c + v * c
        );
        let tied = GptModel::new(
            &GptConfig {
                tie_weights: true,
                ..small
            },
            &Context::new(0),
        )
        .unwrap();
        assert_eq!(tied.num_parameters(), m.num_parameters() - v * c);
        assert_eq!(m.num_parameters() as u128, m.cfg.num_parameters());
        assert_eq!(tied.num_parameters() as u128, tied.cfg.num_parameters());
    }

    #[test]
    #[ignore = "allocates gpt2-small (650 MB); run with --ignored"]
    fn gpt2_small_built_for_real_has_the_book_counts_and_size() {
        let m = GptModel::new(&GptConfig::gpt2_small(), &Context::new(123)).unwrap();
        assert_eq!(m.num_parameters(), 163_009_536);
        assert!((m.size_mb() - 621.83).abs() < 0.01, "{}", m.size_mb());
    }

    #[test]
    fn output_shape_and_causality() {
        let ctx = Context::new(1);
        let m = GptModel::new(&tiny_config(), &ctx).unwrap();
        m.eval();
        let ids = [1, 5, 2, 7, 3, 3, 0, 12];
        let logits = m.forward(&ids, 2);
        assert_eq!(logits.shape(), &[2, 4, 13]);
        // changing the last token of each row leaves earlier positions' logits unchanged
        let mut changed = ids;
        changed[3] = 9;
        changed[7] = 4;
        let other = m.forward(&changed, 2);
        for b in 0..2 {
            let early = |l: &Tensor| l.narrow(0, b, 1).narrow(1, 0, 3).to_vec();
            assert_eq!(early(&logits), early(&other));
            assert_ne!(
                logits.narrow(0, b, 1).narrow(1, 3, 1).to_vec(),
                other.narrow(0, b, 1).narrow(1, 3, 1).to_vec()
            );
        }
    }

    #[test]
    fn fused_equals_composed_model() {
        let ctx = Context::new(2);
        let m = GptModel::new(&tiny_config(), &ctx).unwrap();
        let ids = [1, 5, 2, 7, 3, 3, 0, 12, 4, 4];
        let saved = ctx.rng().clone();
        let a = m.forward(&ids, 2);
        *ctx.rng() = saved;
        let b = m.forward_composed(&ids, 2);
        assert_close(&a, &b, 1e-4);
    }

    #[test]
    fn gradcheck_whole_tiny_model_loss() {
        let ctx = Context::new(3);
        let m = GptModel::new(&tiny_config(), &ctx).unwrap();
        m.eval();
        let ids = [1, 5, 2, 7, 3, 3, 0, 12];
        let targets = [5, 2, 7, 3, 3, 0, 12, 1];
        let opts = GradcheckOptions {
            max_elements: 6,
            eps: 1e-2,
            atol: 1e-3,
            rtol: 2e-2,
        };
        check_parameter_gradients(
            &m,
            || m.forward(&ids, 2).cross_entropy(&targets),
            &mut Rng::seed(4),
            opts,
        )
        .unwrap();
    }

    #[test]
    fn kv_cache_gives_the_same_logits() {
        let ctx = Context::new(4);
        let m = GptModel::new(&tiny_config(), &ctx).unwrap();
        m.eval();
        let ids = [3, 1, 4, 1, 5, 9, 2];
        let full = {
            let _g = no_grad();
            m.forward(&ids, 1)
        };
        let mut cache = KvCache::new(2);
        let first = m.forward_cached(&ids[..4], 1, &mut cache);
        assert_close(&first, &full.narrow(1, 0, 4), 1e-4);
        for t in 4..7 {
            let step = m.forward_cached(&ids[t..t + 1], 1, &mut cache);
            assert_close(&step, &full.narrow(1, t, 1), 1e-4);
        }
        assert_eq!(cache.len(), 7);
    }
}
