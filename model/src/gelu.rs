//! GELU activation (book section 4.3), the tanh approximation GPT-2 was trained with:
//! ```text
//! GELU(x) ≈ 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
//! ```
//! [`Gelu::forward`] is one fused op (its derivative is written out in
//! `tensor/src/ops/gelu.rs`); [`Gelu::forward_composed`] is the book's formula built from
//! `powf`, `tanh`, `mul` and `add`, tested equal. PyTorch: `nn.GELU(approximate="tanh")`.

use tensor::Tensor;

#[derive(Clone, Copy, Default)]
pub struct Gelu;

impl Gelu {
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.gelu()
    }

    /// The book's listing 4.3 op by op.
    pub fn forward_composed(&self, x: &Tensor) -> Tensor {
        let inner = x
            .add(&x.powf(3.0).mul_scalar(0.044715))
            .mul_scalar((2.0 / std::f32::consts::PI).sqrt());
        x.mul_scalar(0.5).mul(&inner.tanh().add_scalar(1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::assert_close;
    use tensor::testing::gradcheck;
    use tensor::Rng;

    #[test]
    fn fused_and_composed_agree() {
        let x = Tensor::from_vec((0..100).map(|i| -3.0 + 0.06 * i as f32).collect(), &[100]);
        assert_close(&Gelu.forward(&x), &Gelu.forward_composed(&x), 1e-5);
        let mut rng = Rng::seed(4);
        let x = Tensor::randn(&[3, 4], &mut rng);
        gradcheck(&[&x], |t| Gelu.forward_composed(&t[0]), &mut rng).unwrap();
    }
}
