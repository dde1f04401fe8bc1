//! Multi-head attention (book section 3.6).
//!
//! Several causal attention "heads" run side by side, each with its own projections, and their
//! context vectors are concatenated. [`MultiHeadAttentionWrapper`] does exactly that with a
//! list of [`CausalAttention`] modules (3.6.1). [`MultiHeadAttention`] computes the same thing
//! efficiently (3.6.2): one projection of width `d_out = NH·HS` for all heads, split into
//! heads by a reshape `[B, T, d_out] → [B, T, NH, HS]` and a transpose to `[B, NH, T, HS]`;
//! after attention the heads are put back side by side and mixed by an output projection.
//!
//! [`MultiHeadAttention::forward`] runs the fused `causal_attention` op (one kernel for scores,
//! mask, softmax, dropout and weighted sum, with a hand-written backward);
//! [`MultiHeadAttention::forward_composed`] is the book's listing 3.5 op by op. They draw the
//! same dropout masks and agree to float rounding (tested below).
//! [`MultiHeadAttention::forward_cached`] is the generation path with a KV cache: keys and
//! values of earlier positions are kept, so each new token costs one position's work.

use tensor::{no_grad, Tensor};

use super::causal::{causal_mask, CausalAttention};
use crate::dropout::Dropout;
use crate::linear::Linear;
use crate::module::{join, Context, Module};

/// Book listing 3.4: independent causal attention heads, outputs concatenated.
pub struct MultiHeadAttentionWrapper {
    pub heads: Vec<CausalAttention>,
}

impl MultiHeadAttentionWrapper {
    pub fn new(
        d_in: usize,
        d_out: usize,
        context_length: usize,
        dropout: f32,
        num_heads: usize,
        qkv_bias: bool,
        ctx: &Context,
    ) -> Self {
        let heads = (0..num_heads)
            .map(|_| CausalAttention::new(d_in, d_out, context_length, dropout, qkv_bias, ctx))
            .collect();
        MultiHeadAttentionWrapper { heads }
    }

    /// `[B, T, d_in]` → `[B, T, num_heads·d_out]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let outs: Vec<Tensor> = self.heads.iter().map(|h| h.forward(x)).collect();
        Tensor::concat(&outs.iter().collect::<Vec<_>>(), -1)
    }
}

impl Module for MultiHeadAttentionWrapper {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        for (i, h) in self.heads.iter().enumerate() {
            h.visit_parameters(&join(prefix, &format!("heads.{i}")), f);
        }
    }
}

/// Book listing 3.5.
pub struct MultiHeadAttention {
    pub d_out: usize,
    pub num_heads: usize,
    pub head_dim: usize,
    pub w_query: Linear,
    pub w_key: Linear,
    pub w_value: Linear,
    pub out_proj: Linear,
    pub dropout: Dropout,
    pub context_length: usize,
    ctx: Context,
}

/// Keys and values of the positions seen so far, per layer (see [`LayerCache`]).
#[derive(Default, Clone)]
pub struct KvCache {
    pub layers: Vec<Option<LayerCache>>,
}

impl KvCache {
    /// An empty cache for a model of `n_layers`.
    pub fn new(n_layers: usize) -> KvCache {
        KvCache {
            layers: vec![None; n_layers],
        }
    }

    /// Number of positions cached.
    pub fn len(&self) -> usize {
        match self.layers.first() {
            Some(Some(layer)) => layer.len(),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One layer's cached keys and values: buffers `[B, NH, capacity, HS]` whose first `len`
/// positions are filled. A new token's key and value are written in place after them, and
/// attention reads the filled part as a view ([`LayerCache::keys`]), so a step copies only
/// its own positions; concatenating instead would copy the whole cache at every token. Like a
/// `Vec`, the buffers double when full (at most to the context length), so growing to T
/// positions copies fewer than 2·T positions in all.
#[derive(Clone)]
pub struct LayerCache {
    keys: Tensor,
    values: Tensor,
    len: usize,
}

impl LayerCache {
    /// Positions held when the first step brings fewer: room for this many new tokens before
    /// the first doubling.
    const MIN_CAPACITY: usize = 64;

    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the buffers hold before they have to grow.
    pub fn capacity(&self) -> usize {
        self.keys.size(2)
    }

    /// The cached keys `[B, NH, len, HS]`: a view of the buffer, not a copy.
    pub fn keys(&self) -> Tensor {
        self.keys.narrow(2, 0, self.len)
    }

    /// The cached values `[B, NH, len, HS]`: a view of the buffer, not a copy.
    pub fn values(&self) -> Tensor {
        self.values.narrow(2, 0, self.len)
    }

    /// A cache holding the keys and values `[B, NH, T, HS]` of the first T positions, with
    /// room for `capacity` (at least T) before it grows.
    pub fn new(k: &Tensor, v: &Tensor, capacity: usize) -> LayerCache {
        let shape = |cap: usize| [k.size(0), k.size(1), cap, k.size(3)];
        let cap = capacity.max(k.size(2));
        let mut layer = LayerCache {
            keys: Tensor::zeros(&shape(cap)),
            values: Tensor::zeros(&shape(cap)),
            len: 0,
        };
        layer.append(k, v, cap);
        layer
    }

    /// Writes the keys and values `[B, NH, T_new, HS]` of the next positions after the cached
    /// ones, doubling the buffers first if they are full (to at most `max_len` positions).
    #[track_caller]
    pub fn append(&mut self, k: &Tensor, v: &Tensor, max_len: usize) {
        let (batch, heads, hs) = (self.keys.size(0), self.keys.size(1), self.keys.size(3));
        assert!(
            k.shape() == v.shape()
                && k.ndim() == 4
                && [k.size(0), k.size(1), k.size(3)] == [batch, heads, hs],
            "LayerCache::append: keys {:?} and values {:?} must be [B, NH, T_new, HS] \
             as the cache's {:?}",
            k.shape(),
            v.shape(),
            self.keys.shape()
        );
        let (new, cap) = (k.size(2), self.capacity());
        assert!(
            self.len + new <= max_len.max(cap),
            "LayerCache::append: {} cached + {new} new positions exceed {} positions",
            self.len,
            max_len.max(cap)
        );
        if self.len + new > cap {
            let grown = (2 * cap).max(self.len + new).min(max_len);
            let (keys, values) = (self.keys(), self.values());
            *self = LayerCache::new(&keys, &values, grown);
        }
        write_positions(&self.keys, &k.values(), self.len, new);
        write_positions(&self.values, &v.values(), self.len, new);
        self.len += new;
    }
}

/// Copies `rows` (`[B, NH, T_new, HS]`, row-major) into positions `at..at + T_new` of the
/// buffer `[B, NH, capacity, HS]`.
fn write_positions(buffer: &Tensor, rows: &[f32], at: usize, new: usize) {
    let (cap, hs) = (buffer.size(2), buffer.size(3));
    buffer.update(|buf| {
        for (head, src) in rows.chunks_exact(new * hs).enumerate() {
            let start = (head * cap + at) * hs;
            buf[start..start + new * hs].copy_from_slice(src);
        }
    });
}

impl MultiHeadAttention {
    #[track_caller]
    pub fn new(
        d_in: usize,
        d_out: usize,
        context_length: usize,
        dropout: f32,
        num_heads: usize,
        qkv_bias: bool,
        ctx: &Context,
    ) -> Self {
        assert!(
            num_heads > 0 && d_out.is_multiple_of(num_heads),
            "MultiHeadAttention: d_out {d_out} must be divisible by num_heads {num_heads}"
        );
        MultiHeadAttention {
            d_out,
            num_heads,
            head_dim: d_out / num_heads,
            w_query: Linear::new(d_in, d_out, qkv_bias, ctx),
            w_key: Linear::new(d_in, d_out, qkv_bias, ctx),
            w_value: Linear::new(d_in, d_out, qkv_bias, ctx),
            out_proj: Linear::new(d_out, d_out, true, ctx),
            dropout: Dropout::new(dropout, ctx),
            context_length,
            ctx: ctx.clone(),
        }
    }

    /// `[B, T, d_out]` → `[B, NH, T, HS]` (a view: reshape of a contiguous tensor, then transpose).
    fn split_heads(&self, t: &Tensor) -> Tensor {
        let (b, n) = (t.size(0), t.size(1));
        t.reshape(&[b, n, self.num_heads, self.head_dim])
            .transpose(1, 2)
    }

    /// `[B, NH, T, HS]` → `[B, T, d_out]`, heads side by side again.
    fn merge_heads(&self, t: &Tensor) -> Tensor {
        let (b, n) = (t.size(0), t.size(2));
        t.transpose(1, 2).reshape(&[b, n, self.d_out])
    }

    #[track_caller]
    fn check_input(&self, x: &Tensor) {
        assert!(
            x.ndim() == 3 && x.size(1) <= self.context_length,
            "MultiHeadAttention: input {:?} must be [B, T, d_in] with T <= context length {}",
            x.shape(),
            self.context_length
        );
    }

    /// Queries, keys and values `[B, NH, T, HS]` of `x`, each a view of its projection.
    fn project(&self, x: &Tensor) -> (Tensor, Tensor, Tensor) {
        let q = self.split_heads(&self.w_query.forward(x));
        let k = self.split_heads(&self.w_key.forward(x));
        let v = self.split_heads(&self.w_value.forward(x));
        (q, k, v)
    }

    /// `[B, T, d_in]` → `[B, T, d_out]` through the fused attention kernel.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.check_input(x);
        let (q, k, v) = self.project(x);
        let p = if self.ctx.is_training() {
            self.dropout.p
        } else {
            0.0
        };
        let context = Tensor::causal_attention(&q, &k, &v, p, p > 0.0, &mut self.ctx.rng());
        self.out_proj.forward(&self.merge_heads(&context))
    }

    /// [`MultiHeadAttention::forward`] without dropout, also returning the attention weights
    /// `[B, NH, T, T]` (the book's `attn_weights`, section 3.5) from the same fused kernel
    /// (`Tensor::causal_attention_with_weights`): what `scratchgpt inspect attention` draws.
    #[track_caller]
    pub fn forward_with_weights(&self, x: &Tensor) -> (Tensor, Tensor) {
        self.check_input(x);
        let (q, k, v) = self.project(x);
        let (context, weights) = Tensor::causal_attention_with_weights(&q, &k, &v);
        (self.out_proj.forward(&self.merge_heads(&context)), weights)
    }

    /// The book's listing 3.5 op by op: same result as [`MultiHeadAttention::forward`].
    #[track_caller]
    pub fn forward_composed(&self, x: &Tensor) -> Tensor {
        self.check_input(x);
        let t = x.size(1);
        let keys = self.split_heads(&self.w_key.forward(x));
        let queries = self.split_heads(&self.w_query.forward(x));
        let values = self.split_heads(&self.w_value.forward(x));
        let attn_scores = queries.matmul(&keys.transpose(2, 3)); // [B, NH, T, T]
        let masked = attn_scores.masked_fill(&causal_mask(t), f32::NEG_INFINITY);
        let attn_weights = masked
            .mul_scalar(1.0 / (self.head_dim as f32).sqrt())
            .softmax(-1);
        let attn_weights = self.dropout.forward(&attn_weights);
        let context = attn_weights.matmul(&values); // [B, NH, T, HS]
        self.out_proj.forward(&self.merge_heads(&context))
    }

    /// Generation with a KV cache: `x` holds only the new positions `[B, T_new, d_in]`;
    /// `cache` holds keys and values of the earlier ones and is extended. No gradients.
    #[track_caller]
    pub fn forward_cached(&self, x: &Tensor, cache: &mut Option<LayerCache>) -> Tensor {
        let _guard = no_grad();
        let q = self.split_heads(&self.w_query.forward(x));
        let k_new = self.split_heads(&self.w_key.forward(x));
        let v_new = self.split_heads(&self.w_value.forward(x));
        let past = cache.as_ref().map_or(0, LayerCache::len);
        assert!(
            past + k_new.size(2) <= self.context_length,
            "MultiHeadAttention: cache of {} positions exceeds context length {}",
            past + k_new.size(2),
            self.context_length
        );
        let layer = match cache {
            Some(layer) => {
                layer.append(&k_new, &v_new, self.context_length);
                layer
            }
            None => cache.insert(LayerCache::new(
                &k_new,
                &v_new,
                LayerCache::MIN_CAPACITY.min(self.context_length),
            )),
        };
        let (k, v) = (layer.keys(), layer.values());
        let context = Tensor::causal_attention(&q, &k, &v, 0.0, false, &mut self.ctx.rng());
        self.out_proj.forward(&self.merge_heads(&context))
    }
}

impl Module for MultiHeadAttention {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.w_query.visit_parameters(&join(prefix, "W_query"), f);
        self.w_key.visit_parameters(&join(prefix, "W_key"), f);
        self.w_value.visit_parameters(&join(prefix, "W_value"), f);
        self.out_proj.visit_parameters(&join(prefix, "out_proj"), f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, assert_layer_gradients};

    #[test]
    fn fused_equals_composed_with_and_without_dropout() {
        for train in [false, true] {
            let ctx = Context::new(5);
            let mha = MultiHeadAttention::new(6, 8, 10, 0.25, 2, true, &ctx);
            let x = Tensor::randn(&[2, 7, 6], &mut ctx.rng());
            if !train {
                ctx.eval();
            }
            let saved = ctx.rng().clone();
            let fused = mha.forward(&x);
            *ctx.rng() = saved;
            let composed = mha.forward_composed(&x);
            assert_close(&fused, &composed, 1e-5);
        }
    }

    #[test]
    fn weights_come_with_the_same_output() {
        let ctx = Context::new(8);
        ctx.eval();
        let mha = MultiHeadAttention::new(6, 8, 10, 0.25, 2, true, &ctx);
        let x = Tensor::randn(&[1, 7, 6], &mut ctx.rng());
        let (out, w) = mha.forward_with_weights(&x);
        assert_eq!(out.to_vec(), mha.forward(&x).to_vec());
        assert_eq!(w.shape(), &[1, 2, 7, 7]);
    }

    #[test]
    fn wrapper_shapes_match_the_book() {
        // Book 3.6.1: two heads of d_out 2 on a [2, 6, 3] batch give [2, 6, 4].
        let ctx = Context::new(123);
        let w = MultiHeadAttentionWrapper::new(3, 2, 6, 0.0, 2, false, &ctx);
        let x = Tensor::rand(&[2, 6, 3], &mut ctx.rng());
        assert_eq!(w.forward(&x).shape(), &[2, 6, 4]);
        let mha = MultiHeadAttention::new(3, 2, 6, 0.0, 2, false, &ctx);
        assert_eq!(mha.forward(&x).shape(), &[2, 6, 2]);
    }

    #[test]
    fn cached_positions_equal_full_forward() {
        let ctx = Context::new(6);
        ctx.eval();
        let mha = MultiHeadAttention::new(8, 8, 16, 0.1, 4, false, &ctx);
        let x = Tensor::randn(&[1, 9, 8], &mut ctx.rng());
        let full = mha.forward(&x);
        let mut cache = None;
        let first = mha.forward_cached(&x.narrow(1, 0, 5), &mut cache);
        let rest: Vec<Tensor> = (5..9)
            .map(|t| mha.forward_cached(&x.narrow(1, t, 1), &mut cache))
            .collect();
        let mut parts = vec![&first];
        parts.extend(rest.iter());
        assert_close(&Tensor::concat(&parts, 1), &full, 1e-5);
    }

    #[test]
    fn gradchecks_both_paths() {
        let ctx = Context::new(7);
        ctx.eval();
        let mha = MultiHeadAttention::new(4, 6, 5, 0.0, 3, true, &ctx);
        let x = Tensor::randn(&[2, 5, 4], &mut ctx.rng());
        assert_layer_gradients(&mha, &x, |x| mha.forward(x));
        assert_layer_gradients(&mha, &x, |x| mha.forward_composed(x));
        let w = MultiHeadAttentionWrapper::new(4, 2, 5, 0.0, 2, false, &ctx);
        assert_layer_gradients(&w, &x, |x| w.forward(x));
    }

    #[test]
    fn cached_steps_past_a_doubling_equal_the_full_forward() {
        // context 150: the cache starts at 64 positions, doubles to 128, then stops at 150
        let ctx = Context::new(9);
        let mha = MultiHeadAttention::new(6, 8, 150, 0.0, 2, true, &ctx);
        ctx.eval();
        let x = Tensor::randn(&[2, 150, 6], &mut ctx.rng());
        let full = {
            let _g = no_grad();
            mha.forward(&x)
        };
        let mut cache = None;
        let first = mha.forward_cached(&x.narrow(1, 0, 5), &mut cache);
        assert_close(&first, &full.narrow(1, 0, 5), 1e-5);
        let mut capacities = vec![cache.as_ref().unwrap().capacity()];
        for t in 5..150 {
            let step = mha.forward_cached(&x.narrow(1, t, 1), &mut cache);
            assert_close(&step, &full.narrow(1, t, 1), 1e-5);
            let layer = cache.as_ref().unwrap();
            assert_eq!(layer.len(), t + 1);
            if capacities.last() != Some(&layer.capacity()) {
                capacities.push(layer.capacity());
            }
        }
        assert_eq!(capacities, [64, 128, 150]);
    }

    #[test]
    fn layer_cache_appends_in_place_and_keeps_earlier_positions() {
        let mut rng = tensor::Rng::seed(3);
        let parts: Vec<(Tensor, Tensor)> = [3, 1, 4]
            .iter()
            .map(|&t| {
                (
                    Tensor::randn(&[2, 3, t, 4], &mut rng),
                    Tensor::randn(&[2, 3, t, 4], &mut rng),
                )
            })
            .collect();
        let mut layer = LayerCache::new(&parts[0].0, &parts[0].1, 4);
        for (k, v) in &parts[1..] {
            layer.append(k, v, 10);
        }
        assert_eq!((layer.len(), layer.capacity()), (8, 8));
        let keys: Vec<&Tensor> = parts.iter().map(|(k, _)| k).collect();
        let values: Vec<&Tensor> = parts.iter().map(|(_, v)| v).collect();
        assert_eq!(layer.keys().to_vec(), Tensor::concat(&keys, 2).to_vec());
        assert_eq!(layer.values().to_vec(), Tensor::concat(&values, 2).to_vec());
    }

    #[test]
    #[should_panic(expected = "must be [B, NH, T_new, HS] as the cache's [1, 2, 6, 2]")]
    fn layer_cache_refuses_keys_of_another_shape() {
        let k = Tensor::zeros(&[1, 2, 3, 2]);
        let mut layer = LayerCache::new(&k, &k, 6);
        let other = Tensor::zeros(&[1, 3, 1, 2]);
        layer.append(&other, &other, 6);
    }

    #[test]
    #[should_panic(expected = "exceed 10 positions")]
    fn layer_cache_refuses_more_than_its_limit() {
        let k = Tensor::zeros(&[1, 1, 6, 2]);
        let mut layer = LayerCache::new(&k, &k, 6);
        layer.append(&k, &k, 10);
    }
}
