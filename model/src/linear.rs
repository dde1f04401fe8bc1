//! The linear layer `y = x·Wᵀ + b` (used throughout chapters 3–4).
//!
//! PyTorch: `nn.Linear(in_features, out_features, bias)`. The weight is stored `[out, in]`
//! as PyTorch does, and initialised like PyTorch: W and b ~ U(−1/√in, 1/√in).
//! [`Linear::forward`] runs the fused `linear` op (one SGEMM, bias folded in);
//! [`Linear::forward_composed`] is the textbook `x.matmul(Wᵀ) + b`, kept for teaching and
//! tested equal.
//!
//! A linear layer may carry a LoRA adapter (appendix E, [`crate::lora`]): then both forwards
//! add its low-rank update `s·(x·A·B)`, which is the book's `LinearWithLoRA`.

use tensor::Tensor;

use crate::lora::LoRALayer;
use crate::module::{join, Context, Module};

pub struct Linear {
    /// `[out_features, in_features]`
    pub weight: Tensor,
    /// `[out_features]`, if the layer has a bias.
    pub bias: Option<Tensor>,
    /// A LoRA adapter, if one was added ([`crate::lora::add_lora`]).
    pub lora: Option<LoRALayer>,
}

impl Linear {
    pub fn new(in_features: usize, out_features: usize, bias: bool, ctx: &Context) -> Linear {
        // PyTorch's kaiming_uniform_(a=√5) bound, computed in f64 as PyTorch does:
        // √3 · gain/√fan_in with gain = √(2/(1 + 5)), which is 1/√fan_in up to rounding.
        let fan_in = in_features as f64;
        let bound = (3f64.sqrt() * ((2.0f64 / 6.0).sqrt() / fan_in.sqrt())) as f32;
        let bias_bound = (1.0 / fan_in.sqrt()) as f32;
        let mut rng = ctx.rng();
        let mut draw = |shape: &[usize], bound: f32| {
            if ctx.draws_weights() {
                Tensor::uniform(shape, -bound, bound, &mut rng).requires_grad()
            } else {
                Tensor::zeros(shape).requires_grad()
            }
        };
        let weight = draw(&[out_features, in_features], bound);
        let bias = bias.then(|| draw(&[out_features], bias_bound));
        Linear::from_weights(weight, bias)
    }

    /// A layer with the given weight `[out, in]` and bias `[out]`, without adapter.
    pub fn from_weights(weight: Tensor, bias: Option<Tensor>) -> Linear {
        Linear {
            weight,
            bias,
            lora: None,
        }
    }

    /// `x·Wᵀ + b` over the last axis of `x`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.linear(&self.weight, self.bias.as_ref());
        self.add_adapter(x, y)
    }

    /// The same, composed from `matmul` and a broadcast `add`.
    pub fn forward_composed(&self, x: &Tensor) -> Tensor {
        let y = x.matmul(&self.weight.t());
        let y = match &self.bias {
            Some(b) => y.add(b),
            None => y,
        };
        self.add_adapter(x, y)
    }

    /// `y + s·(x·A·B)` with an adapter, else `y`.
    fn add_adapter(&self, x: &Tensor, y: Tensor) -> Tensor {
        match &self.lora {
            Some(lora) => y.add(&lora.forward(x)),
            None => y,
        }
    }
}

impl Module for Linear {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        f(join(prefix, "weight"), &self.weight);
        if let Some(b) = &self.bias {
            f(join(prefix, "bias"), b);
        }
        if let Some(lora) = &self.lora {
            lora.visit_parameters(&join(prefix, "lora"), f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::assert_layer_gradients;

    #[test]
    fn fused_and_composed_agree() {
        let ctx = Context::new(1);
        let lin = Linear::new(5, 3, true, &ctx);
        let x = Tensor::randn(&[2, 4, 5], &mut ctx.rng());
        let (a, b) = (lin.forward(&x).to_vec(), lin.forward_composed(&x).to_vec());
        assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-5));
        assert!(lin
            .weight
            .to_vec()
            .iter()
            .all(|w| w.abs() <= 1.0 / 5f32.sqrt()));
    }

    #[test]
    fn gradcheck_linear_layer() {
        let ctx = Context::new(2);
        let lin = Linear::new(4, 3, true, &ctx);
        let x = Tensor::randn(&[2, 4], &mut ctx.rng());
        assert_layer_gradients(&lin, &x, |x| lin.forward(x));
    }
}
