//! Reductions over one axis: `sum`, `mean`, `max`, `var`; and over everything: `sum_all`,
//! `mean_all`.
//!
//! Reducing axis `dim` of a contiguous tensor views it as `[outer, n, inner]`: `outer` is the
//! product of the axes before `dim`, `n` the axis itself, `inner` the product of the axes after.
//! Output element `(o, i)` reduces the `n` values `x[o, 0..n, i]`.
//!
//! | op | y | ∂y/∂x[o, j, i] |
//! |---|---|---|
//! | sum | Σⱼ x | 1 |
//! | max | maxⱼ x | 1 at the arg-max j (first one on ties), else 0 |
//! | mean | sum / n | composed: sum, then scale |
//! | var | mean((x − mean x)²)·n/(n − correction) | composed from the ops above |

use crate::autograd::{Backward, GradStore};
use crate::kernels::parallel::{self, for_each_row};
use crate::tensor::Tensor;

/// `[outer, n, inner]` around axis `d`.
fn split_dims(shape: &[usize], d: usize) -> (usize, usize, usize) {
    let outer = shape[..d].iter().product();
    let inner = shape[d + 1..].iter().product();
    (outer, shape[d], inner)
}

fn reduced_shape(shape: &[usize], d: usize, keepdim: bool) -> Vec<usize> {
    let mut s = shape.to_vec();
    if keepdim {
        s[d] = 1;
    } else {
        s.remove(d);
    }
    s
}

/// `out[o, i] = Σⱼ inp[o, j, i]`. Shapes: out (outer, inner), inp (outer, n, inner)
fn sum_forward(out: &mut [f32], inp: &[f32], n: usize, inner: usize) {
    for_each_row(
        out,
        inner,
        #[inline(always)]
        |o, row| {
            let block = &inp[o * n * inner..(o + 1) * n * inner];
            if inner == 1 {
                row[0] = parallel::sum(block);
                return;
            }
            row.fill(0.0);
            for xs in block.chunks_exact(inner) {
                for (r, x) in row.iter_mut().zip(xs) {
                    *r += x;
                }
            }
        },
    );
}

/// `dinp[o, j, i] += dout[o, i]` for every j.
fn sum_backward(dinp: &mut [f32], dout: &[f32], n: usize, inner: usize) {
    for_each_row(
        dinp,
        n * inner,
        #[inline(always)]
        |o, block| {
            let g = &dout[o * inner..(o + 1) * inner];
            for ds in block.chunks_exact_mut(inner) {
                for (d, x) in ds.iter_mut().zip(g) {
                    *d += x;
                }
            }
        },
    );
}

struct SumNode {
    n: usize,
    inner: usize,
}

impl Backward for SumNode {
    fn name(&self) -> &'static str {
        "sum"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &[f32], grads: &mut GradStore) {
        if let Some(dinp) = grads.slot(&inputs[0]) {
            sum_backward(dinp, dout, self.n, self.inner);
        }
    }
}

/// `out[o, i] = maxⱼ inp[o, j, i]`, recording the arg-max j of each output.
fn max_forward(out: &mut [f32], argmax: &mut [usize], inp: &[f32], n: usize, inner: usize) {
    for (idx, (o, a)) in out.iter_mut().zip(argmax.iter_mut()).enumerate() {
        let (outer_i, i) = (idx / inner, idx % inner);
        let base = outer_i * n * inner + i;
        let (mut best, mut best_j) = (inp[base], 0);
        for j in 1..n {
            let x = inp[base + j * inner];
            if x > best || best.is_nan() {
                (best, best_j) = (x, j);
            }
        }
        (*o, *a) = (best, best_j);
    }
}

/// `dinp[o, argmax, i] += dout[o, i]`: only the winner gets the gradient.
fn max_backward(dinp: &mut [f32], dout: &[f32], argmax: &[usize], n: usize, inner: usize) {
    for (idx, (&g, &j)) in dout.iter().zip(argmax).enumerate() {
        let (outer_i, i) = (idx / inner, idx % inner);
        dinp[outer_i * n * inner + j * inner + i] += g;
    }
}

struct MaxNode {
    argmax: Vec<usize>,
    n: usize,
    inner: usize,
}

impl Backward for MaxNode {
    fn name(&self) -> &'static str {
        "max"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &[f32], grads: &mut GradStore) {
        if let Some(dinp) = grads.slot(&inputs[0]) {
            max_backward(dinp, dout, &self.argmax, self.n, self.inner);
        }
    }
}

/// `sum_all` backward: every input element gets the one output gradient.
struct SumAllNode;

impl Backward for SumAllNode {
    fn name(&self) -> &'static str {
        "sum_all"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &[f32], grads: &mut GradStore) {
        if let Some(dinp) = grads.slot(&inputs[0]) {
            parallel::for_each_chunk(
                dinp,
                #[inline(always)]
                |_, piece| piece.iter_mut().for_each(|d| *d += dout[0]),
            );
        }
    }
}

impl Tensor {
    /// Sum over axis `dim`. PyTorch: `t.sum(dim, keepdim)`.
    #[track_caller]
    pub fn sum(&self, dim: isize, keepdim: bool) -> Tensor {
        let d = self.axis("sum", dim);
        let (outer, n, inner) = split_dims(self.shape(), d);
        let mut out = vec![0.0; outer * inner];
        sum_forward(&mut out, &self.values(), n, inner);
        let shape = reduced_shape(self.shape(), d, keepdim);
        Tensor::from_op(out, &shape, &[self], || SumNode { n, inner })
    }

    /// Mean over axis `dim`. PyTorch: `t.mean(dim, keepdim)`.
    #[track_caller]
    pub fn mean(&self, dim: isize, keepdim: bool) -> Tensor {
        let n = self.size(dim);
        self.sum(dim, keepdim).mul_scalar(1.0 / n as f32)
    }

    /// Maximum over axis `dim`; the gradient goes to the (first) arg-max.
    /// PyTorch: `t.max(dim, keepdim).values` / `t.amax(dim, keepdim)`.
    #[track_caller]
    pub fn max(&self, dim: isize, keepdim: bool) -> Tensor {
        let d = self.axis("max", dim);
        let (outer, n, inner) = split_dims(self.shape(), d);
        assert!(n > 0, "max: axis {d} of shape {:?} is empty", self.shape());
        let mut out = vec![0.0; outer * inner];
        let mut argmax = vec![0; outer * inner];
        max_forward(&mut out, &mut argmax, &self.values(), n, inner);
        let shape = reduced_shape(self.shape(), d, keepdim);
        Tensor::from_op(out, &shape, &[self], || MaxNode { argmax, n, inner })
    }

    /// Variance over axis `dim`, dividing by `n − correction` (0: biased, as layer norm uses;
    /// 1: unbiased, PyTorch's default). PyTorch: `t.var(dim, keepdim, correction=c)`.
    #[track_caller]
    pub fn var(&self, dim: isize, keepdim: bool, correction: usize) -> Tensor {
        let n = self.size(dim);
        assert!(
            n > correction,
            "var: axis of size {n} with correction {correction}"
        );
        let centered = self.sub(&self.mean(dim, true));
        let ss = centered.mul(&centered).sum(dim, keepdim);
        ss.mul_scalar(1.0 / (n - correction) as f32)
    }

    /// Sum of all elements, as a 0-d tensor. Summed in a fixed order, so the result is the same
    /// for any number of threads. PyTorch: `t.sum()`.
    pub fn sum_all(&self) -> Tensor {
        let total = parallel::sum(&self.values());
        Tensor::from_op(vec![total], &[], &[self], || SumAllNode)
    }

    /// Mean of all elements, as a 0-d tensor. PyTorch: `t.mean()`.
    pub fn mean_all(&self) -> Tensor {
        self.sum_all().mul_scalar(1.0 / self.numel() as f32)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::gradcheck;
    use crate::{Rng, Tensor};

    #[test]
    fn hand_worked_reductions() {
        // [[1, 5, 3],
        //  [4, 2, 6]]
        let x = Tensor::from_vec(vec![1., 5., 3., 4., 2., 6.], &[2, 3]);
        assert_eq!(x.sum(0, false).to_vec(), [5., 7., 9.]);
        assert_eq!(x.sum(1, true).shape(), &[2, 1]);
        assert_eq!(x.mean(1, false).to_vec(), [3., 4.]);
        assert_eq!(x.max(1, false).to_vec(), [5., 6.]);
        assert_eq!(x.max(0, false).to_vec(), [4., 5., 6.]);
        // row 0: mean 3, deviations (-2, 2, 0): biased var 8/3, unbiased 4
        assert!((x.var(1, false, 0).at(&[0]) - 8.0 / 3.0).abs() < 1e-6);
        assert_eq!(x.var(1, false, 1).at(&[0]), 4.0);
        assert_eq!(x.sum_all().item(), 21.0);
        assert_eq!(x.mean_all().item(), 3.5);
    }

    #[test]
    fn max_gradient_goes_to_the_argmax() {
        let x = Tensor::from_vec(vec![1., 5., 3.], &[3]).requires_grad();
        x.max(0, false).backward();
        assert_eq!(x.grad().unwrap().to_vec(), [0., 1., 0.]);
    }

    #[test]
    fn gradcheck_reductions() {
        let mut rng = Rng::seed(4);
        let x = Tensor::randn(&[3, 4, 5], &mut rng);
        for dim in [0isize, 1, -1] {
            for keep in [false, true] {
                gradcheck(&[&x], |t| t[0].sum(dim, keep), &mut rng).unwrap();
                gradcheck(&[&x], |t| t[0].mean(dim, keep), &mut rng).unwrap();
                gradcheck(&[&x], |t| t[0].max(dim, keep), &mut rng).unwrap();
                gradcheck(&[&x], |t| t[0].var(dim, keep, 0), &mut rng).unwrap();
                gradcheck(&[&x], |t| t[0].var(dim, keep, 1), &mut rng).unwrap();
            }
        }
        gradcheck(&[&x], |t| t[0].sum_all(), &mut rng).unwrap();
        gradcheck(&[&x], |t| t[0].mean_all(), &mut rng).unwrap();
    }
}
