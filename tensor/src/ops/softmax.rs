//! Softmax and log-softmax over the last axis, numerically stable.
//!
//! ```text
//! softmax(x)ᵢ     = e^(xᵢ − m) / Σⱼ e^(xⱼ − m)           m = maxⱼ xⱼ
//! log_softmax(x)ᵢ = xᵢ − m − ln Σⱼ e^(xⱼ − m)
//! ```
//! Subtracting the row maximum `m` changes nothing mathematically (it cancels) but keeps
//! `e^x` from overflowing: the largest exponent is e⁰ = 1.
//!
//! Backward, per row, with `g = dL/dy`:
//! ```text
//! softmax:      dxᵢ = yᵢ·(gᵢ − Σⱼ gⱼ·yⱼ)
//! log_softmax:  dxᵢ = gᵢ − softmax(x)ᵢ·Σⱼ gⱼ       (softmax(x) = e^y)
//! ```
//! Other axes are handled by moving the axis last, applying, and moving it back.

use crate::autograd::{Backward, GradStore};
use crate::kernels::math;
use crate::kernels::parallel::{self, new_by_rows_with_cost};
use crate::tensor::Tensor;

/// One row: `out = softmax(inp)`, or `log_softmax(inp)` when `log` is set. Shapes: (C,)
fn softmax_row(out: &mut [f32], inp: &[f32], log: bool) {
    let m = parallel::serial_max(inp);
    // A row of all −∞ (fully masked) has no finite maximum; treat it as m = 0 so the
    // result is NaN-free where possible.
    let m = if m.is_finite() { m } else { 0.0 };
    for (o, &x) in out.iter_mut().zip(inp) {
        *o = math::exp(x - m);
    }
    let sum = parallel::serial_sum(out);
    if log {
        let log_sum = sum.ln();
        for (o, &x) in out.iter_mut().zip(inp) {
            *o = x - m - log_sum;
        }
    } else {
        let inv = 1.0 / sum;
        out.iter_mut().for_each(|o| *o *= inv);
    }
}

/// Rows of length `c`: forward of softmax (or log-softmax).
fn softmax_forward(inp: &[f32], c: usize, log: bool) -> Vec<f32> {
    new_by_rows_with_cost(
        inp.len() / c.max(1),
        c,
        c,
        #[inline(always)]
        |r, row| softmax_row(row, &inp[r * c..(r + 1) * c], log),
    )
}

/// Rows of length `c`: `dinp += softmax' · dout` into the gradient of `t`, given the forward
/// output `out`.
fn softmax_backward(
    grads: &mut GradStore,
    t: &Tensor,
    out: &[f32],
    dout: &[f32],
    c: usize,
    log: bool,
) {
    grads.add_by_rows(
        t,
        c,
        #[inline(always)]
        |r, dx| {
            let (y, g) = (&out[r * c..(r + 1) * c], &dout[r * c..(r + 1) * c]);
            if log {
                let gsum: f32 = g.iter().sum();
                for ((d, &g), &y) in dx[..c].iter_mut().zip(g).zip(y) {
                    *d += g - math::exp(y) * gsum;
                }
            } else {
                let dot: f32 = g.iter().zip(y).map(|(a, b)| a * b).sum();
                for ((d, &g), &y) in dx[..c].iter_mut().zip(g).zip(y) {
                    *d += y * (g - dot);
                }
            }
        },
    );
}

struct SoftmaxNode {
    log: bool,
}

impl Backward for SoftmaxNode {
    fn name(&self) -> &'static str {
        if self.log {
            "log_softmax"
        } else {
            "softmax"
        }
    }
    fn backward(&self, inputs: &[Tensor], out: &Tensor, dout: &[f32], grads: &mut GradStore) {
        if inputs[0].is_requires_grad() {
            softmax_backward(
                grads,
                &inputs[0],
                &out.values(),
                dout,
                out.size(-1),
                self.log,
            );
        }
    }
}

impl Tensor {
    fn softmax_impl(&self, dim: isize, log: bool, name: &str) -> Tensor {
        let d = self.axis(name, dim);
        let last = self.ndim() - 1;
        if d != last {
            return self
                .transpose(d as isize, -1)
                .softmax_impl(-1, log, name)
                .transpose(d as isize, -1);
        }
        let c = self.shape()[last];
        let out = softmax_forward(&self.values(), c, log);
        Tensor::from_op(out, self.shape(), &[self], || SoftmaxNode { log })
    }

    /// Softmax along `dim`: non-negative values summing to 1. PyTorch: `torch.softmax(t, dim)`.
    #[track_caller]
    pub fn softmax(&self, dim: isize) -> Tensor {
        self.softmax_impl(dim, false, "softmax")
    }

    /// `ln softmax` along `dim`, computed without forming the softmax first.
    /// PyTorch: `torch.log_softmax(t, dim)`.
    #[track_caller]
    pub fn log_softmax(&self, dim: isize) -> Tensor {
        self.softmax_impl(dim, true, "log_softmax")
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::gradcheck;
    use crate::{Rng, Tensor};

    #[test]
    fn stable_for_large_inputs() {
        let x = Tensor::from_vec(vec![1000.0, 1001.0, 1002.0], &[3]);
        let s = x.softmax(-1).to_vec();
        // same as softmax([0, 1, 2]) = [0.0900, 0.2447, 0.6652]
        for (a, b) in s.iter().zip([0.090_030_57, 0.244_728_48, 0.665_240_94]) {
            assert!((a - b).abs() < 1e-6);
        }
        let ls = x.log_softmax(-1).to_vec();
        assert!((ls[2] - (-0.407_605_96)).abs() < 1e-5);
    }

    #[test]
    fn masked_entries_get_zero_weight() {
        let x = Tensor::from_vec(vec![0.5, f32::NEG_INFINITY, 0.5], &[3]);
        assert_eq!(x.softmax(0).to_vec(), [0.5, 0.0, 0.5]);
    }

    #[test]
    fn gradcheck_softmax_and_log_softmax() {
        let mut rng = Rng::seed(6);
        let x = Tensor::randn(&[2, 3, 5], &mut rng);
        for dim in [-1isize, 1, 0] {
            gradcheck(&[&x], |t| t[0].softmax(dim), &mut rng).unwrap();
            gradcheck(&[&x], |t| t[0].log_softmax(dim), &mut rng).unwrap();
        }
    }

    #[test]
    fn log_softmax_equals_log_of_softmax() {
        let mut rng = Rng::seed(7);
        let x = Tensor::randn(&[4, 9], &mut rng);
        let a = x.log_softmax(-1).to_vec();
        let b = x.softmax(-1).log().to_vec();
        assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-5));
    }
}
