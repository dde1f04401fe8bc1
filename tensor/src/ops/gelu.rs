//! GELU, the tanh approximation GPT-2 uses (book section 4.3):
//!
//! ```text
//! gelu(x) = 0.5·x·(1 + tanh(u)),   u = √(2/π)·(x + 0.044715·x³)
//! gelu'(x) = 0.5·(1 + tanh u) + 0.5·x·(1 − tanh² u)·√(2/π)·(1 + 3·0.044715·x²)
//! ```
//!
//! PyTorch equivalent: `torch.nn.functional.gelu(x, approximate="tanh")`.
//! Saved for backward: the input x (the derivative needs x itself, not only y).

use super::unary::UnaryFn;
use crate::kernels::math;
use crate::tensor::Tensor;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_COEF: f32 = 0.044_715;

pub(crate) struct Gelu;

impl UnaryFn for Gelu {
    const NAME: &'static str = "gelu";

    #[inline(always)]
    fn f(&self, x: f32) -> f32 {
        let u = SQRT_2_OVER_PI * (x + GELU_COEF * x * x * x);
        0.5 * x * (1.0 + math::tanh(u))
    }

    #[inline(always)]
    fn df(&self, x: f32, _y: f32) -> f32 {
        let u = SQRT_2_OVER_PI * (x + GELU_COEF * x * x * x);
        let t = math::tanh(u);
        let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_COEF * x * x);
        0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du
    }
}

impl Tensor {
    /// Element-wise GELU (tanh approximation). Shape-preserving.
    /// PyTorch: `F.gelu(t, approximate="tanh")`.
    pub fn gelu(&self) -> Tensor {
        self.unary(Gelu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::gradcheck;
    use crate::Rng;

    #[test]
    fn known_values() {
        // torch.nn.functional.gelu(torch.tensor([-3., -1., 0., 1., 3.]), approximate="tanh")
        let x = Tensor::from_vec(vec![-3.0, -1.0, 0.0, 1.0, 3.0], &[5]);
        let want = [-0.003_637_4, -0.158_808, 0.0, 0.841_192, 2.996_363];
        for (g, w) in x.gelu().to_vec().iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
    }

    #[test]
    fn gradcheck_gelu() {
        let mut rng = Rng::seed(5);
        let x = Tensor::randn(&[4, 6], &mut rng).mul_scalar(2.0);
        gradcheck(&[&x], |xs| xs[0].gelu(), &mut rng).unwrap();
    }

    #[test]
    fn derivative_is_finite_and_correct_at_extremes() {
        // fast-math compilers once turned this into NaN (llm.c#19); we check it stays exact:
        // gelu'(x) → 1 as x → +∞ and → 0 as x → −∞.
        for (x, want) in [(50.0f32, 1.0f32), (-50.0, 0.0), (1e4, 1.0), (-1e4, 0.0)] {
            let d = Gelu.df(x, Gelu.f(x));
            assert!(d.is_finite() && (d - want).abs() < 1e-6, "gelu'({x}) = {d}");
        }
    }
}
