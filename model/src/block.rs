//! The transformer block (book section 4.5, listing 4.6).
//!
//! Two sub-layers, each wrapped as *pre-LayerNorm* with a *shortcut* (residual) connection:
//! ```text
//! x = x + dropout(attention(norm1(x)))
//! x = x + dropout(feed_forward(norm2(x)))
//! ```
//! The shortcuts give the gradient a direct path back to early layers (section 4.4 shows the
//! gradients vanishing without them).

use tensor::Tensor;

use crate::attention::{KvCache, MultiHeadAttention};
use crate::config::GptConfig;
use crate::dropout::Dropout;
use crate::feed_forward::FeedForward;
use crate::layer_norm::LayerNorm;
use crate::module::{join, Context, Module};

pub struct TransformerBlock {
    pub att: MultiHeadAttention,
    pub ff: FeedForward,
    pub norm1: LayerNorm,
    pub norm2: LayerNorm,
    pub drop_shortcut: Dropout,
}

impl TransformerBlock {
    pub fn new(cfg: &GptConfig, ctx: &Context) -> TransformerBlock {
        TransformerBlock {
            att: MultiHeadAttention::new(
                cfg.emb_dim,
                cfg.emb_dim,
                cfg.context_length,
                cfg.drop_rate,
                cfg.n_heads,
                cfg.qkv_bias,
                ctx,
            ),
            ff: FeedForward::new(cfg.emb_dim, ctx),
            norm1: LayerNorm::new(cfg.emb_dim),
            norm2: LayerNorm::new(cfg.emb_dim),
            drop_shortcut: Dropout::new(cfg.drop_rate, ctx),
        }
    }

    /// `[B, T, C]` → `[B, T, C]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let shortcut = x;
        let x = self
            .drop_shortcut
            .forward(&self.att.forward(&self.norm1.forward(x)))
            .add(shortcut);
        let shortcut = &x;
        self.drop_shortcut
            .forward(&self.ff.forward(&self.norm2.forward(&x)))
            .add(shortcut)
    }

    /// [`TransformerBlock::forward`] that also keeps what happens inside (dropout must be off:
    /// `model.eval()`): the inputs and outputs of both layer norms and the attention weights.
    /// The same ops as `forward`, so the output is bit for bit the same (tested).
    pub fn forward_traced(&self, x: &Tensor) -> (Tensor, BlockTrace) {
        let norm1_out = self.norm1.forward(x);
        let (h, attn_weights) = self.att.forward_with_weights(&norm1_out);
        let mid = self.drop_shortcut.forward(&h).add(x);
        let norm2_out = self.norm2.forward(&mid);
        let out = self
            .drop_shortcut
            .forward(&self.ff.forward(&norm2_out))
            .add(&mid);
        let trace = BlockTrace {
            norm1_in: x.clone(),
            norm1_out,
            attn_weights,
            norm2_in: mid,
            norm2_out,
        };
        (out, trace)
    }

    /// The same block built only from composed (textbook) ops: for teaching and for the test
    /// that fused and composed paths agree.
    pub fn forward_composed(&self, x: &Tensor) -> Tensor {
        let h = self.att.forward_composed(&self.norm1.forward_composed(x));
        let x = self.drop_shortcut.forward(&h).add(x);
        let h = self
            .ff
            .fc1
            .forward_composed(&self.norm2.forward_composed(&x));
        let h = self
            .ff
            .fc2
            .forward_composed(&self.ff.gelu.forward_composed(&h));
        self.drop_shortcut.forward(&h).add(&x)
    }

    /// Generation path with a KV cache (layer `layer` of `cache`), no gradients.
    pub fn forward_cached(&self, x: &Tensor, cache: &mut KvCache, layer: usize) -> Tensor {
        let h = self
            .att
            .forward_cached(&self.norm1.forward(x), &mut cache.layers[layer]);
        let x = h.add(x);
        self.ff.forward(&self.norm2.forward(&x)).add(&x)
    }
}

/// What one block computed inside, for inspection ([`TransformerBlock::forward_traced`]).
pub struct BlockTrace {
    /// The residual stream entering the block `[B, T, C]`, i.e. `norm1`'s input.
    pub norm1_in: Tensor,
    pub norm1_out: Tensor,
    /// Attention weights `[B, NH, T, T]`.
    pub attn_weights: Tensor,
    /// The residual stream after the attention shortcut, `norm2`'s input.
    pub norm2_in: Tensor,
    pub norm2_out: Tensor,
}

impl Module for TransformerBlock {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.att.visit_parameters(&join(prefix, "att"), f);
        self.ff.visit_parameters(&join(prefix, "ff"), f);
        self.norm1.visit_parameters(&join(prefix, "norm1"), f);
        self.norm2.visit_parameters(&join(prefix, "norm2"), f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, assert_layer_gradients};

    fn tiny() -> GptConfig {
        GptConfig {
            vocab_size: 11,
            context_length: 6,
            emb_dim: 8,
            n_heads: 2,
            n_layers: 1,
            drop_rate: 0.1,
            qkv_bias: true,
            tie_weights: false,
        }
    }

    #[test]
    fn fused_equals_composed_and_gradchecks() {
        let ctx = Context::new(3);
        let block = TransformerBlock::new(&tiny(), &ctx);
        let x = Tensor::randn(&[2, 6, 8], &mut ctx.rng());
        // Book 4.5: the block keeps the shape [2, 6, 8] (there [2, 4, 768]).
        let saved = ctx.rng().clone();
        let a = block.forward(&x);
        *ctx.rng() = saved;
        let b = block.forward_composed(&x);
        assert_eq!(a.shape(), &[2, 6, 8]);
        assert_close(&a, &b, 1e-5);
        ctx.eval();
        assert_layer_gradients(&block, &x, |x| block.forward(x));
        let (traced, t) = block.forward_traced(&x);
        assert_eq!(traced.to_vec(), block.forward(&x).to_vec());
        assert_eq!(t.attn_weights.shape(), &[2, 2, 6, 6]);
        assert_eq!(t.norm2_out.shape(), &[2, 6, 8]);
    }
}
