//! Dropout (book section 3.5.2): during training, zero each element with probability `p` and
//! scale the survivors by `1/(1 − p)` ("inverted" dropout), so the expected value of every
//! element is unchanged and evaluation needs no rescaling. In evaluation it is the identity.
//!
//! ```text
//! y = x · m / (1 − p),   m ~ Bernoulli(1 − p)
//! dx = dy · m / (1 − p)
//! ```
//! Saved for backward: the mask, one byte per element ([`DropoutMask`]).
//! PyTorch equivalent: `torch.nn.functional.dropout(x, p, training)`.

use crate::autograd::{Backward, GradStore};
use crate::kernels::parallel::new_by_chunks;
use crate::rng::{DropoutMask, Rng};
use crate::tensor::Tensor;

/// `out[i] = inp[i] · mask[i]`, `mask[i]` ∈ {0, 1/(1−p)} drawn from `rng`; returns the output
/// and the mask.
fn dropout_forward(inp: &[f32], p: f32, rng: &mut Rng) -> (Vec<f32>, DropoutMask) {
    let mask = rng.dropout_mask(inp.len(), p);
    let (keep, scale) = (mask.keep(), mask.scale());
    let out = new_by_chunks(
        inp.len(),
        #[inline(always)]
        |s, piece| {
            for ((o, &k), &x) in piece.iter_mut().zip(&keep[s..]).zip(&inp[s..]) {
                *o = x * DropoutMask::multiplier(k, scale);
            }
        },
    );
    (out, mask)
}

/// `dinp[i] += dout[i] · mask[i]` into the gradient of `t`.
fn dropout_backward(grads: &mut GradStore, t: &Tensor, mask: &DropoutMask, dout: &[f32]) {
    let (keep, scale) = (mask.keep(), mask.scale());
    grads.add_by_chunks(
        t,
        #[inline(always)]
        |s, piece| {
            for ((d, &k), &g) in piece.iter_mut().zip(&keep[s..]).zip(&dout[s..]) {
                *d += g * DropoutMask::multiplier(k, scale);
            }
        },
    );
}

struct DropoutNode {
    mask: DropoutMask,
}

impl Backward for DropoutNode {
    fn name(&self) -> &'static str {
        "dropout"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &[f32], grads: &mut GradStore) {
        dropout_backward(grads, &inputs[0], &self.mask, dout);
    }
}

impl Tensor {
    /// Inverted dropout with drop probability `p` when `train` is set; identity otherwise.
    #[track_caller]
    pub fn dropout(&self, p: f32, train: bool, rng: &mut Rng) -> Tensor {
        assert!(
            (0.0..=1.0).contains(&p),
            "dropout: p = {p} is not a probability"
        );
        if !train || p == 0.0 {
            return self.clone();
        }
        let inp = self.values();
        let (out, mask) = dropout_forward(&inp, p, rng);
        Tensor::from_op(out, self.shape(), &[self], || DropoutNode { mask })
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::gradcheck;
    use crate::{Rng, Tensor};

    #[test]
    fn eval_mode_is_identity() {
        let x = Tensor::ones(&[4, 4]);
        let y = x.dropout(0.5, false, &mut Rng::seed(0));
        assert_eq!(x.to_vec(), y.to_vec());
    }

    #[test]
    fn keeps_one_minus_p_and_scales_survivors() {
        let x = Tensor::ones(&[100_000]);
        let y = x.dropout(0.2, true, &mut Rng::seed(1)).to_vec();
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / y.len() as f64;
        assert!((kept - 0.8).abs() < 0.01, "kept fraction {kept}");
        assert!(y.iter().all(|&v| v == 0.0 || (v - 1.25).abs() < 1e-6));
        // expectation preserved
        let mean = y.iter().map(|&v| v as f64).sum::<f64>() / y.len() as f64;
        assert!((mean - 1.0).abs() < 0.01);
    }

    #[test]
    fn same_seed_same_mask() {
        let x = Tensor::ones(&[64]);
        let a = x.dropout(0.5, true, &mut Rng::seed(3)).to_vec();
        let b = x.dropout(0.5, true, &mut Rng::seed(3)).to_vec();
        assert_eq!(a, b);
    }

    #[test]
    fn gradcheck_dropout_with_fixed_mask() {
        // gradcheck re-runs the function many times, so it must draw the same mask each run:
        // re-seed inside the closure.
        let mut rng = Rng::seed(4);
        let x = Tensor::randn(&[3, 5], &mut rng);
        gradcheck(
            &[&x],
            |t| t[0].dropout(0.3, true, &mut Rng::seed(9)),
            &mut rng,
        )
        .unwrap();
    }
}
