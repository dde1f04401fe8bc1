//! The dropout layer (book section 3.5.2): zeroes a fraction `p` of its input while the model
//! trains and scales the rest by `1/(1 − p)`; passes values through unchanged in evaluation.
//! The switch and the random generator come from the model's [`Context`].
//! PyTorch: `nn.Dropout(p)`.

use tensor::Tensor;

use crate::module::Context;

pub struct Dropout {
    pub p: f32,
    ctx: Context,
}

impl Dropout {
    pub fn new(p: f32, ctx: &Context) -> Dropout {
        Dropout {
            p,
            ctx: ctx.clone(),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        if !self.ctx.is_training() || self.p == 0.0 {
            return x.clone();
        }
        x.dropout(self.p, true, &mut self.ctx.rng())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_in_eval_scaled_in_train() {
        let ctx = Context::new(0);
        let d = Dropout::new(0.5, &ctx);
        let x = Tensor::ones(&[6, 6]);
        let y = d.forward(&x).to_vec();
        assert!(y.iter().all(|&v| v == 0.0 || v == 2.0));
        assert!(y.contains(&0.0) && y.contains(&2.0));
        ctx.eval();
        assert_eq!(d.forward(&x).to_vec(), x.to_vec());
    }
}
