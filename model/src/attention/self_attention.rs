//! Self-attention with trainable weights, "scaled dot-product attention" (book section 3.4).
//!
//! Three learned projections turn each input into a query, a key and a value:
//! ```text
//! Q = X·W_q,  K = X·W_k,  V = X·W_v
//! A = softmax(Q·Kᵀ / √d_k)          attention weights, one row per query
//! Z = A·V                           context vectors
//! ```
//! Dividing by √d_k keeps the dot products from growing with the width, which would push the
//! softmax into regions with vanishing gradients.
//! `SelfAttentionV1` holds the three matrices as raw `[d_in, d_out]` parameters (3.4.1);
//! `SelfAttentionV2` uses `Linear` layers (3.4.2), which store `[d_out, d_in]` and initialise
//! better.

use tensor::Tensor;

use crate::linear::Linear;
use crate::module::{join, Context, Module};

/// Book listing 3.1.
pub struct SelfAttentionV1 {
    /// `[d_in, d_out]` each, initialised U(0, 1) like the book's `torch.rand`.
    pub w_query: Tensor,
    pub w_key: Tensor,
    pub w_value: Tensor,
}

impl SelfAttentionV1 {
    pub fn new(d_in: usize, d_out: usize, ctx: &Context) -> SelfAttentionV1 {
        let mut rng = ctx.rng();
        let mut draw = || Tensor::rand(&[d_in, d_out], &mut rng).requires_grad();
        SelfAttentionV1 {
            w_query: draw(),
            w_key: draw(),
            w_value: draw(),
        }
    }

    /// `x`: `[T, d_in]` → context vectors `[T, d_out]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let keys = x.matmul(&self.w_key);
        let queries = x.matmul(&self.w_query);
        let values = x.matmul(&self.w_value);
        let d_k = keys.size(-1) as f32;
        let attn_scores = queries.matmul(&keys.t());
        let attn_weights = attn_scores.mul_scalar(1.0 / d_k.sqrt()).softmax(-1);
        attn_weights.matmul(&values)
    }
}

impl Module for SelfAttentionV1 {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        f(join(prefix, "W_query"), &self.w_query);
        f(join(prefix, "W_key"), &self.w_key);
        f(join(prefix, "W_value"), &self.w_value);
    }
}

/// Book listing 3.2.
pub struct SelfAttentionV2 {
    pub w_query: Linear,
    pub w_key: Linear,
    pub w_value: Linear,
}

impl SelfAttentionV2 {
    pub fn new(d_in: usize, d_out: usize, qkv_bias: bool, ctx: &Context) -> SelfAttentionV2 {
        SelfAttentionV2 {
            w_query: Linear::new(d_in, d_out, qkv_bias, ctx),
            w_key: Linear::new(d_in, d_out, qkv_bias, ctx),
            w_value: Linear::new(d_in, d_out, qkv_bias, ctx),
        }
    }

    /// The attention weights `[T, T]` (what the book prints before the context vectors).
    pub fn attention_weights(&self, x: &Tensor) -> Tensor {
        let keys = self.w_key.forward(x);
        let queries = self.w_query.forward(x);
        let d_k = keys.size(-1) as f32;
        queries
            .matmul(&keys.t())
            .mul_scalar(1.0 / d_k.sqrt())
            .softmax(-1)
    }

    /// `x`: `[T, d_in]` → context vectors `[T, d_out]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.attention_weights(x).matmul(&self.w_value.forward(x))
    }
}

impl Module for SelfAttentionV2 {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.w_query.visit_parameters(&join(prefix, "W_query"), f);
        self.w_key.visit_parameters(&join(prefix, "W_key"), f);
        self.w_value.visit_parameters(&join(prefix, "W_value"), f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::simplified::your_journey_inputs;
    use crate::testing::{assert_close, assert_layer_gradients};

    #[test]
    fn v1_with_v2s_weights_gives_v2s_output() {
        // Book exercise 3.1: copying V2's Linear weights (transposed) into V1 gives the same result.
        let ctx = Context::new(789);
        let v2 = SelfAttentionV2::new(3, 2, false, &ctx);
        let v1 = SelfAttentionV1::new(3, 2, &ctx);
        v1.w_query.copy_from_slice(&v2.w_query.weight.t().to_vec());
        v1.w_key.copy_from_slice(&v2.w_key.weight.t().to_vec());
        v1.w_value.copy_from_slice(&v2.w_value.weight.t().to_vec());
        let x = your_journey_inputs();
        assert_close(&v1.forward(&x), &v2.forward(&x), 1e-6);
        assert_eq!(v2.forward(&x).shape(), &[6, 2]);
    }

    #[test]
    fn gradchecks() {
        let ctx = Context::new(1);
        let x = your_journey_inputs();
        let v1 = SelfAttentionV1::new(3, 2, &ctx);
        assert_layer_gradients(&v1, &x, |x| v1.forward(x));
        let v2 = SelfAttentionV2::new(3, 2, true, &ctx);
        assert_layer_gradients(&v2, &x, |x| v2.forward(x));
    }
}
