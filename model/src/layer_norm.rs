//! Layer normalization (book section 4.2, `LayerNorm`).
//!
//! Each token's vector is shifted to mean 0 and scaled to variance 1, then stretched and moved
//! by the learned `scale` and `shift`:
//! ```text
//! y = scale · (x − mean(x)) / √(var(x) + ε) + shift       over the last axis, ε = 1e-5
//! ```
//! The variance is the biased one (divide by C, not C − 1), as in the book and GPT-2.
//! [`LayerNorm::forward`] uses the fused `layer_norm` op; [`LayerNorm::forward_composed`] is
//! the book's listing op by op. Tests check both agree. PyTorch: `nn.LayerNorm(C)`.

use tensor::Tensor;

use crate::module::{join, Module};

pub struct LayerNorm {
    pub eps: f32,
    /// `[C]`, starts at 1 (PyTorch calls it `weight`).
    pub scale: Tensor,
    /// `[C]`, starts at 0 (PyTorch calls it `bias`).
    pub shift: Tensor,
}

impl LayerNorm {
    pub fn new(emb_dim: usize) -> LayerNorm {
        LayerNorm {
            eps: 1e-5,
            scale: Tensor::ones(&[emb_dim]).requires_grad(),
            shift: Tensor::zeros(&[emb_dim]).requires_grad(),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm(&self.scale, &self.shift, self.eps)
    }

    /// The book's listing 4.2, one op per line.
    pub fn forward_composed(&self, x: &Tensor) -> Tensor {
        let mean = x.mean(-1, true);
        let var = x.var(-1, true, 0);
        let norm_x = x.sub(&mean).div(&var.add_scalar(self.eps).sqrt());
        norm_x.mul(&self.scale).add(&self.shift)
    }
}

impl Module for LayerNorm {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        f(join(prefix, "scale"), &self.scale);
        f(join(prefix, "shift"), &self.shift);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, assert_layer_gradients};
    use tensor::Rng;

    #[test]
    fn output_has_zero_mean_unit_variance() {
        // Book 4.2: after normalisation each row has mean ≈ 0 and variance ≈ 1.
        let x = Tensor::randn(&[2, 5], &mut Rng::seed(123));
        let y = LayerNorm::new(5).forward(&x);
        for v in y.mean(-1, false).to_vec() {
            assert!(v.abs() < 1e-5);
        }
        for v in y.var(-1, false, 0).to_vec() {
            assert!((v - 1.0).abs() < 1e-3);
        }
    }

    #[test]
    fn fused_and_composed_agree_with_gradients() {
        let mut rng = Rng::seed(3);
        let ln = LayerNorm::new(6);
        ln.scale
            .copy_from_slice(&Tensor::randn(&[6], &mut rng).to_vec());
        let x = Tensor::randn(&[3, 6], &mut rng);
        assert_close(&ln.forward(&x), &ln.forward_composed(&x), 1e-5);
        assert_layer_gradients(&ln, &x, |x| ln.forward(x));
        assert_layer_gradients(&ln, &x, |x| ln.forward_composed(x));
    }
}
