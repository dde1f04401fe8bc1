//! The feed-forward network of a transformer block (book section 4.3, `FeedForward`):
//! expand each token's vector four-fold, apply GELU, project back.
//! ```text
//! FFN(x) = Linear(4C → C)( GELU( Linear(C → 4C)(x) ) )
//! ```
//! Parameter names follow the book's `nn.Sequential`: `layers.0` and `layers.2`.

use tensor::Tensor;

use crate::gelu::Gelu;
use crate::linear::Linear;
use crate::module::{join, Context, Module};

pub struct FeedForward {
    pub fc1: Linear,
    pub gelu: Gelu,
    pub fc2: Linear,
}

impl FeedForward {
    pub fn new(emb_dim: usize, ctx: &Context) -> FeedForward {
        FeedForward {
            fc1: Linear::new(emb_dim, 4 * emb_dim, true, ctx),
            gelu: Gelu,
            fc2: Linear::new(4 * emb_dim, emb_dim, true, ctx),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.fc2.forward(&self.gelu.forward(&self.fc1.forward(x)))
    }
}

impl Module for FeedForward {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.fc1.visit_parameters(&join(prefix, "layers.0"), f);
        self.fc2.visit_parameters(&join(prefix, "layers.2"), f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::assert_layer_gradients;

    #[test]
    fn keeps_shape_and_gradchecks() {
        // Book 4.3: a [2, 3, 768] input comes out [2, 3, 768].
        let ctx = Context::new(0);
        let ff = FeedForward::new(8, &ctx);
        let x = Tensor::randn(&[2, 3, 8], &mut ctx.rng());
        assert_eq!(ff.forward(&x).shape(), &[2, 3, 8]);
        assert_eq!(ff.num_parameters(), 8 * 32 + 32 + 32 * 8 + 8);
        assert_layer_gradients(&ff, &x, |x| ff.forward(x));
    }
}
