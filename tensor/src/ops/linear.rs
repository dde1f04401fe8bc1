//! Fused linear layer: `y = x·Wᵀ + b` in one op.
//!
//! Shapes: x `[..., IC]`, W `[OC, IC]` (PyTorch's `nn.Linear` layout), b `[OC]`, y `[..., OC]`.
//! All leading axes are folded into N = rows, so the whole layer is one SGEMM.
//! ```text
//! y  = x·Wᵀ + b        (N×IC · IC×OC)     bias pre-filled, then GEMM with β = 1
//! dx += dy·W           (N×OC · OC×IC)
//! dW += dyᵀ·x          (OC×N · N×IC)
//! db += Σ_rows dy
//! ```
//! The composed twin is `x.matmul(&w.t()).add(&b)`: same values, but the bias is broadcast to
//! `[N, OC]` first and its gradient summed back afterwards. The test below checks they agree.
//! PyTorch: `torch.nn.functional.linear(x, w, b)`.

use crate::autograd::{Backward, GradStore};
use crate::kernels::gemm::{gemm, MatRef};
use crate::kernels::parallel::{accumulate_over_rows, for_each_row_with_cost};
use crate::tensor::Tensor;

/// Rows up to which the forward pass uses dot products instead of SGEMM (generation feeds one
/// token at a time: a GEMM with one row would pack, and so copy, the whole weight matrix).
const GEMV_MAX_ROWS: usize = 4;

/// `x·w` for two equal-length slices, with sixteen running sums so it vectorises. The same
/// code is compiled twice: for the baseline x86-64 target and, picked at run time when the CPU
/// has it, for AVX2 (no build flag, so the binary still runs on any x86-64).
#[inline(always)]
fn dot_generic(x: &[f32], w: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (xc, wc) = (x.chunks_exact(16), w.chunks_exact(16));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(wc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in xc.zip(wc) {
        for k in 0..16 {
            acc[k] += a[k] * b[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_avx2(x: &[f32], w: &[f32]) -> f32 {
    dot_generic(x, w)
}

fn dot(x: &[f32], w: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { dot_avx2(x, w) };
    }
    dot_generic(x, w)
}

/// `out = inp·Wᵀ (+ bias)`. Shapes: out (N, OC), inp (N, IC), weight (OC, IC), bias (OC,)
fn linear_forward(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    ic: usize,
    oc: usize,
) {
    let n = inp.len() / ic.max(1);
    if n <= GEMV_MAX_ROWS && ic > 0 {
        // Each output is a dot product of an input row with a (contiguous) weight row: one
        // streaming pass over W, parallel over output columns.
        for (r, row) in out.chunks_exact_mut(oc).enumerate() {
            let x = &inp[r * ic..(r + 1) * ic];
            for_each_row_with_cost(row, 1, ic, |j, o| {
                o[0] = dot(x, &weight[j * ic..(j + 1) * ic]) + bias.map_or(0.0, |b| b[j]);
            });
        }
        return;
    }
    let beta = match bias {
        Some(b) => {
            for row in out.chunks_exact_mut(oc) {
                row.copy_from_slice(b);
            }
            1.0
        }
        None => 0.0,
    };
    let w_t = MatRef::row_major(weight, 0, ic).t();
    gemm(
        n,
        ic,
        oc,
        1.0,
        MatRef::row_major(inp, 0, ic),
        w_t,
        beta,
        out,
    );
}

/// `dinp += dout·W`, `dweight += doutᵀ·inp`, `dbias += Σ_rows dout` (each only if wanted).
#[allow(clippy::too_many_arguments)]
fn linear_backward(
    dinp: Option<&mut [f32]>,
    dweight: Option<&mut [f32]>,
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    ic: usize,
    oc: usize,
) {
    let n = dout.len() / oc.max(1);
    let dy = MatRef::row_major(dout, 0, oc);
    if let Some(dx) = dinp {
        gemm(
            n,
            oc,
            ic,
            1.0,
            dy,
            MatRef::row_major(weight, 0, ic),
            1.0,
            dx,
        );
    }
    if let Some(dw) = dweight {
        gemm(
            oc,
            n,
            ic,
            1.0,
            dy.t(),
            MatRef::row_major(inp, 0, ic),
            1.0,
            dw,
        );
    }
    if let Some(db) = dbias {
        accumulate_over_rows(db, n, oc, |rows, partial| {
            for r in rows {
                for (p, g) in partial.iter_mut().zip(&dout[r * oc..(r + 1) * oc]) {
                    *p += g;
                }
            }
        });
    }
}

struct LinearNode {
    ic: usize,
    oc: usize,
}

impl Backward for LinearNode {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &[f32], grads: &mut GradStore) {
        let (x, w) = (&inputs[0], &inputs[1]);
        let (xv, wv) = (x.values(), w.values());
        let (ic, oc) = (self.ic, self.oc);
        linear_backward(grads.slot(x), None, None, dout, &xv, &wv, ic, oc);
        linear_backward(None, grads.slot(w), None, dout, &xv, &wv, ic, oc);
        if let Some(b) = inputs.get(2) {
            linear_backward(None, None, grads.slot(b), dout, &xv, &wv, ic, oc);
        }
    }
}

impl Tensor {
    /// `self·weightᵀ + bias` over the last axis. PyTorch: `F.linear(x, weight, bias)`.
    #[track_caller]
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
        assert!(
            self.ndim() >= 1 && weight.ndim() == 2,
            "linear: input {:?}, weight {:?}: weight must be [out, in]",
            self.shape(),
            weight.shape()
        );
        let (oc, ic) = (weight.shape()[0], weight.shape()[1]);
        assert!(
            self.size(-1) == ic,
            "linear: input features differ: input {:?} vs weight {:?}",
            self.shape(),
            weight.shape()
        );
        if let Some(b) = bias {
            assert!(
                b.shape() == [oc],
                "linear: bias {:?} does not match weight {:?}",
                b.shape(),
                weight.shape()
            );
        }
        let (xv, wv) = (self.values(), weight.values());
        let bv = bias.map(|b| b.values());
        let mut out = vec![0.0; xv.len() / ic.max(1) * oc];
        linear_forward(&mut out, &xv, &wv, bv.as_deref(), ic, oc);
        let mut shape = self.shape().to_vec();
        *shape.last_mut().unwrap() = oc;
        let inputs: Vec<&Tensor> = [Some(self), Some(weight), bias]
            .into_iter()
            .flatten()
            .collect();
        Tensor::from_op(out, &shape, &inputs, || LinearNode { ic, oc })
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::gradcheck;
    use crate::{Rng, Tensor};

    #[test]
    fn fused_equals_composed_values_and_gradients() {
        let mut rng = Rng::seed(12);
        let x = Tensor::randn(&[2, 5, 6], &mut rng).requires_grad();
        let w = Tensor::randn(&[4, 6], &mut rng).requires_grad();
        let b = Tensor::randn(&[4], &mut rng).requires_grad();
        let r = Tensor::randn(&[2, 5, 4], &mut rng);
        let fused = x.linear(&w, Some(&b));
        fused.mul(&r).sum_all().backward();
        let grads_fused: Vec<Vec<f32>> = [&x, &w, &b]
            .iter()
            .map(|t| t.grad().unwrap().to_vec())
            .collect();
        [&x, &w, &b].iter().for_each(|t| t.zero_grad());
        let composed = x.matmul(&w.t()).add(&b);
        composed.mul(&r).sum_all().backward();
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(p, q)| (p - q).abs() < 1e-5);
        assert!(close(&fused.to_vec(), &composed.to_vec()));
        for (t, g) in [&x, &w, &b].iter().zip(&grads_fused) {
            assert!(close(&t.grad().unwrap().to_vec(), g));
        }
    }

    #[test]
    fn one_row_path_equals_the_gemm_path() {
        let mut rng = Rng::seed(14);
        let w = Tensor::randn(&[300, 77], &mut rng);
        let b = Tensor::randn(&[300], &mut rng);
        let x = Tensor::randn(&[9, 77], &mut rng);
        let all = x.linear(&w, Some(&b)); // 9 rows: SGEMM
        for r in [0, 4, 8] {
            let one = x.narrow(0, r, 1).linear(&w, Some(&b)); // 1 row: dot products
            let want = all.narrow(0, r, 1).to_vec();
            assert!(one
                .to_vec()
                .iter()
                .zip(&want)
                .all(|(p, q)| (p - q).abs() < 1e-4));
        }
    }

    #[test]
    fn gradcheck_linear_with_and_without_bias() {
        let mut rng = Rng::seed(13);
        let x = Tensor::randn(&[3, 2, 5], &mut rng);
        let w = Tensor::randn(&[4, 5], &mut rng);
        let b = Tensor::randn(&[4], &mut rng);
        gradcheck(&[&x, &w, &b], |t| t[0].linear(&t[1], Some(&t[2])), &mut rng).unwrap();
        gradcheck(&[&x, &w], |t| t[0].linear(&t[1], None), &mut rng).unwrap();
    }

    #[test]
    #[should_panic(expected = "linear: input features differ: input [3, 5] vs weight [4, 6]")]
    fn mismatched_features_panic() {
        Tensor::zeros(&[3, 5]).linear(&Tensor::zeros(&[4, 6]), None);
    }
}
