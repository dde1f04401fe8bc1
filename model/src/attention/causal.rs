//! Causal ("masked") attention with dropout (book section 3.5, listing 3.3).
//!
//! A language model predicts the next token, so position i may only look at positions ≤ i.
//! The scores of future positions are set to −∞ before the softmax, which turns them into
//! weights of exactly 0 while the remaining weights still sum to 1 (3.5.1). Dropout then
//! zeroes some attention weights during training (3.5.2).
//! ```text
//! mask[i][j] = 1 if j > i                  (above the diagonal: the future)
//! A = dropout(softmax(masked_fill(Q·Kᵀ, mask, −∞) / √d_k))
//! Z = A·V
//! ```

use tensor::Tensor;

use crate::dropout::Dropout;
use crate::linear::Linear;
use crate::module::{join, Context, Module};

/// The `[T, T]` causal mask: 1 above the diagonal (positions a query must not see), else 0.
/// PyTorch: `torch.triu(torch.ones(T, T), diagonal=1)`.
pub fn causal_mask(t: usize) -> Tensor {
    let data = (0..t * t)
        .map(|x| ((x % t) > (x / t)) as u8 as f32)
        .collect();
    Tensor::from_vec(data, &[t, t])
}

pub struct CausalAttention {
    pub d_out: usize,
    pub w_query: Linear,
    pub w_key: Linear,
    pub w_value: Linear,
    pub dropout: Dropout,
    pub context_length: usize,
}

impl CausalAttention {
    pub fn new(
        d_in: usize,
        d_out: usize,
        context_length: usize,
        dropout: f32,
        qkv_bias: bool,
        ctx: &Context,
    ) -> Self {
        CausalAttention {
            d_out,
            w_query: Linear::new(d_in, d_out, qkv_bias, ctx),
            w_key: Linear::new(d_in, d_out, qkv_bias, ctx),
            w_value: Linear::new(d_in, d_out, qkv_bias, ctx),
            dropout: Dropout::new(dropout, ctx),
            context_length,
        }
    }

    /// The attention weights `[B, T, T]` after mask, softmax and dropout.
    #[track_caller]
    pub fn attention_weights(&self, x: &Tensor) -> Tensor {
        let t = x.size(-2);
        assert!(
            t <= self.context_length,
            "CausalAttention: {t} tokens exceed context length {}",
            self.context_length
        );
        let keys = self.w_key.forward(x);
        let queries = self.w_query.forward(x);
        let scores = queries.matmul(&keys.transpose(-2, -1));
        let masked = scores.masked_fill(&causal_mask(t), f32::NEG_INFINITY);
        let d_k = keys.size(-1) as f32;
        self.dropout
            .forward(&masked.mul_scalar(1.0 / d_k.sqrt()).softmax(-1))
    }

    /// `x`: `[B, T, d_in]` → `[B, T, d_out]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.attention_weights(x).matmul(&self.w_value.forward(x))
    }
}

impl Module for CausalAttention {
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
    use crate::testing::assert_layer_gradients;

    #[test]
    fn future_weights_are_zero_and_rows_sum_to_one() {
        let ctx = Context::new(789);
        ctx.eval();
        let ca = CausalAttention::new(3, 2, 6, 0.0, false, &ctx);
        let w = ca
            .attention_weights(&your_journey_inputs().unsqueeze(0))
            .squeeze(0);
        for i in 0..6 {
            for j in 0..6 {
                if j > i {
                    assert_eq!(w.at(&[i, j]), 0.0);
                }
            }
            assert!((w.narrow(0, i, 1).sum_all().item() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn batch_of_two_gives_book_shape_and_gradchecks() {
        // Book 3.5.3: a batch of two copies of the inputs gives context vectors [2, 6, 2].
        let ctx = Context::new(123);
        ctx.eval();
        let ca = CausalAttention::new(3, 2, 6, 0.0, false, &ctx);
        let x = your_journey_inputs()
            .unsqueeze(0)
            .broadcast_to(&[2, 6, 3])
            .contiguous();
        assert_eq!(ca.forward(&x).shape(), &[2, 6, 2]);
        assert_layer_gradients(&ca, &x, |x| ca.forward(x));
    }
}
