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

use rayon::prelude::*;

use crate::autograd::{Backward, GradStore};
use crate::kernels::gemm::{gemm, gemm_new, MatRef};
use crate::kernels::gemv::dot_rows;
use crate::kernels::parallel::{accumulate_over_rows, new_by_rows_with_cost, serial_dot};
use crate::kernels::simd::wide;
use crate::tensor::Tensor;

/// Rows up to which the forward pass uses dot products instead of SGEMM (generation feeds one
/// token at a time: a GEMM with one row would pack, and so copy, the whole weight matrix).
const GEMV_MAX_ROWS: usize = 4;

/// `out_t[j, r] = inp[r]·weight[j] + bias[j]` for a few input rows (`out_t` is `[OC, N]`):
/// the weights are streamed from memory once, whatever N is ([`forward_band`]). The output
/// rows are cut into bands, several per thread for balance; each value is computed
/// the same way in any band, so the split does not change results.
fn linear_forward_few_rows(
    out_t: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    ic: usize,
    n: usize,
) {
    let oc = out_t.len() / n;
    // one copy of the band loop per group size, each compiled into its own wide closure
    let band = |out: &mut [f32], first: usize| match rows_side_by_side() {
        1 => wide(
            #[inline(always)]
            || forward_band::<1>(out, first, inp, weight, bias, ic, n),
        ),
        _ => wide(
            #[inline(always)]
            || forward_band::<2>(out, first, inp, weight, bias, ic, n),
        ),
    };
    if oc * ic < GEMV_PAR_MIN_WEIGHTS {
        return band(out_t, 0);
    }
    let per_band = oc
        .div_ceil(GEMV_BANDS_PER_THREAD * rayon::current_num_threads())
        .next_multiple_of(rows_side_by_side());
    out_t
        .par_chunks_mut(per_band * n)
        .enumerate()
        .for_each(|(i, out)| band(out, i * per_band));
}

/// Weight rows the one-token loop ([`forward_band`]) reads side by side: one on AMD CPUs,
/// two elsewhere. Measured with GPT-2 small on 2 threads. On the AMD EPYC Zen 4 (2026-12-02)
/// one row at a time streamed the 49 linear layers of a token at 26–31 GB/s where four rows
/// side by side reached 20–23. On the Intel Xeon (2 MB L2, 2026-12-03), 300-token generation
/// in alternating runs (medians): two rows 15.8 ms per token, three 16.4, four 16.3; four
/// rows had been 5.5% faster than one row without prefetching.
fn rows_side_by_side() -> usize {
    if crate::kernels::cpu::is_amd() {
        1
    } else {
        2
    }
}

/// Output rows `first..` of [`linear_forward_few_rows`] (inlined into its AVX-512 copy):
/// `R` weight rows at a time against every input row (each group stays in L1 for the n dot
/// products), the rest one by one. Every value is the same [`serial_dot`] sum either way.
#[inline(always)]
fn forward_band<const R: usize>(
    out: &mut [f32],
    first: usize,
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    ic: usize,
    n: usize,
) {
    let rows = out.len() / n;
    let w = |j: usize| &weight[(first + j) * ic..(first + j + 1) * ic];
    let b = |j: usize| bias.map_or(0.0, |b| b[first + j]);
    let x = |r: usize| &inp[r * ic..(r + 1) * ic];
    let mut j = 0;
    if R > 1 {
        while j + R <= rows {
            for r in 0..n {
                let d = dot_rows::<R>(x(r), weight, first + j);
                for (k, d) in d.into_iter().enumerate() {
                    out[(j + k) * n + r] = d + b(j + k);
                }
            }
            j += R;
        }
    }
    for j in j..rows {
        for r in 0..n {
            out[j * n + r] = serial_dot(x(r), w(j)) + b(j);
        }
    }
}

/// Bands of output rows per thread in [`linear_forward_few_rows`]: enough that a thread which
/// finishes early takes over work (4 and 16 measured within noise; 16 slightly ahead).
const GEMV_BANDS_PER_THREAD: usize = 16;

/// Weights below which the few-rows forward runs on one thread (a 128×128 layer: waking a
/// second thread costs more than reading 64 KB).
const GEMV_PAR_MIN_WEIGHTS: usize = 32 * 1024;

/// `inp·Wᵀ (+ bias)` as a new buffer. Shapes: out (N, OC), inp (N, IC), weight (OC, IC), bias (OC,)
fn linear_forward(
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    ic: usize,
    oc: usize,
) -> Vec<f32> {
    let n = inp.len() / ic.max(1);
    if n <= GEMV_MAX_ROWS && ic > 0 {
        let mut out = vec![0.0; n * oc];
        if n == 1 {
            linear_forward_few_rows(&mut out, inp, weight, bias, ic, 1);
        } else {
            let mut out_t = vec![0.0; n * oc];
            linear_forward_few_rows(&mut out_t, inp, weight, bias, ic, n);
            for (j, col) in out_t.chunks_exact(n).enumerate() {
                for (r, &v) in col.iter().enumerate() {
                    out[r * oc + j] = v;
                }
            }
        }
        return out;
    }
    let x = MatRef::row_major(inp, 0, ic);
    let w_t = MatRef::row_major(weight, 0, ic).t();
    match bias {
        // Every row starts as the bias and the product is added to it (β = 1). The rows are
        // written in parallel (one thread writing megabytes of bias rows kept the other idle).
        Some(b) => {
            let mut out = new_by_rows_with_cost(n, oc, oc, |_, row| row.copy_from_slice(b));
            gemm(n, ic, oc, 1.0, x, w_t, 1.0, &mut out);
            out
        }
        None => gemm_new(n, ic, oc, 1.0, x, w_t),
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
    /// `dinp += dout·W`, `dweight += doutᵀ·inp`, `dbias += Σ_rows dout`, each only if wanted.
    /// A first contribution is written straight into a new buffer instead of being added to
    /// zeros (`GradStore::add`).
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &[f32], grads: &mut GradStore) {
        let (x, w) = (&inputs[0], &inputs[1]);
        let (xv, wv) = (x.values(), w.values());
        let (ic, oc) = (self.ic, self.oc);
        let n = dout.len() / oc.max(1);
        let dy = MatRef::row_major(dout, 0, oc);
        let (xm, wm) = (MatRef::row_major(&xv, 0, ic), MatRef::row_major(&wv, 0, ic));
        // dx (N, IC) = dy (N, OC) · W (OC, IC)
        grads.add(
            x,
            || gemm_new(n, oc, ic, 1.0, dy, wm),
            |dx| gemm(n, oc, ic, 1.0, dy, wm, 1.0, dx),
        );
        // dW (OC, IC) = dyᵀ (OC, N) · x (N, IC)
        grads.add(
            w,
            || gemm_new(oc, n, ic, 1.0, dy.t(), xm),
            |dw| gemm(oc, n, ic, 1.0, dy.t(), xm, 1.0, dw),
        );
        // db (OC) = Σ over rows of dy
        if let Some(db) = inputs.get(2).and_then(|b| grads.slot(b)) {
            accumulate_over_rows(
                db,
                n,
                oc,
                #[inline(always)]
                |rows, partial| {
                    for r in rows {
                        for (p, g) in partial.iter_mut().zip(&dout[r * oc..(r + 1) * oc]) {
                            *p += g;
                        }
                    }
                },
            );
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
        let out = linear_forward(&xv, &wv, bv.as_deref(), ic, oc);
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
    fn reused_input_and_weight_accumulate_their_gradients() {
        // h feeds two linear layers that share one weight: the first contribution to each
        // gradient is written fresh, the second is added to it.
        let mut rng = Rng::seed(13);
        let x = Tensor::randn(&[3, 40, 24], &mut rng).requires_grad();
        let w = Tensor::randn(&[16, 24], &mut rng).requires_grad();
        let b = Tensor::randn(&[16], &mut rng).requires_grad();
        let r = Tensor::randn(&[3, 40, 16], &mut rng);
        let run = |fused: bool| {
            [&x, &w, &b].iter().for_each(|t| t.zero_grad());
            let h = x.mul_scalar(2.0);
            let y = if fused {
                h.linear(&w, Some(&b)).add(&h.linear(&w, None))
            } else {
                h.matmul(&w.t()).add(&b).add(&h.matmul(&w.t()))
            };
            y.mul(&r).sum_all().backward();
            [&x, &w, &b].map(|t| t.grad().unwrap().to_vec())
        };
        let (fused, composed) = (run(true), run(false));
        for (f, c) in fused.iter().zip(&composed) {
            assert!(f
                .iter()
                .zip(c)
                .all(|(p, q)| (p - q).abs() < 1e-4 * (1.0 + q.abs())));
        }
    }

    #[test]
    fn few_rows_path_equals_the_gemm_path() {
        let mut rng = Rng::seed(14);
        // 300×77: one thread; 1003×100: parallel bands, a row count not a multiple of four,
        // and an input width with a tail past the last 16 lanes
        for (oc, ic) in [(300, 77), (1003, 100)] {
            let w = Tensor::randn(&[oc, ic], &mut rng);
            let b = Tensor::randn(&[oc], &mut rng);
            let x = Tensor::randn(&[9, ic], &mut rng);
            let all = x.linear(&w, Some(&b)); // 9 rows: SGEMM
            for (start, rows) in [(0, 1), (4, 1), (8, 1), (2, 3), (5, 4)] {
                let few = x.narrow(0, start, rows).linear(&w, Some(&b)); // dot products
                let want = all.narrow(0, start, rows).to_vec();
                assert!(few
                    .to_vec()
                    .iter()
                    .zip(&want)
                    .all(|(p, q)| (p - q).abs() < 1e-4));
                // each row gives the same bits whether it comes alone or with others
                for r in 0..rows {
                    let one = x.narrow(0, start + r, 1).linear(&w, Some(&b));
                    assert_eq!(one.to_vec(), few.narrow(0, r, 1).to_vec());
                }
            }
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
