//! Fused layer normalization over the last axis (book section 4.2), with a hand-written
//! backward (the derivation follows llm.c's `doc/layernorm`).
//!
//! For each row x of C values:
//! ```text
//! μ = mean(x),  σ² = mean((x − μ)²)       (biased variance, as the book and GPT-2 use)
//! r = 1/√(σ² + ε),  n = (x − μ)·r          (n: the normalized row)
//! y = n·w + b                              (w: scale, b: shift)
//! ```
//! Backward, with g = dL/dy:
//! ```text
//! db += g,   dw += g·n
//! dn = g·w
//! dx += r·(dn − mean(dn) − n·mean(dn·n))
//! ```
//! Saved for backward: μ and r of every row (two floats per row), so n is recomputed from x.
//! The composed twin (`mean`, `var`, `sub`, `div`, ...) is `LayerNorm::forward_composed` in
//! the model crate; tests check the two agree. PyTorch: `F.layer_norm(x, (C,), w, b, eps)`.

use crate::autograd::{Backward, GradStore};
use crate::kernels::parallel::{accumulate_over_rows, new_by_row_pairs};
use crate::tensor::Tensor;

/// Σ f(xᵢ) over a row, in sixteen running sums in a fixed order, so it vectorises and gives
/// the same bits on every SIMD path. (A plain `.sum()` is one chain of dependent adds, four
/// cycles each: at C = 128 it cost more than all the rest of the row.)
#[inline(always)]
fn row_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for k in 0..16 {
            acc[k] += f(c[k]);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    acc.iter().sum::<f32>() + tail
}

/// One row: returns (μ, r) and writes y. Shapes: out, inp, weight, bias: (C,)
#[inline(always)]
fn layer_norm_row(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: &[f32],
    eps: f32,
) -> (f32, f32) {
    let c = inp.len() as f32;
    let mean = row_sum(inp, |x| x) / c;
    let var = row_sum(inp, |x| (x - mean) * (x - mean)) / c;
    let rstd = 1.0 / (var + eps).sqrt();
    let n = inp.len();
    for (((o, &x), &w), &b) in out[..n]
        .iter_mut()
        .zip(inp)
        .zip(&weight[..n])
        .zip(&bias[..n])
    {
        *o = (x - mean) * rstd * w + b;
    }
    (mean, rstd)
}

/// Forward over rows of length C: the output, and `stats[2r..2r+2] = (μ, r)` of row r.
fn layer_norm_forward(inp: &[f32], weight: &[f32], bias: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let c = weight.len();
    new_by_row_pairs(
        inp.len() / c.max(1),
        c,
        2,
        #[inline(always)]
        |r, row, stat| {
            let (mean, rstd) = layer_norm_row(row, &inp[r * c..(r + 1) * c], weight, bias, eps);
            (stat[0], stat[1]) = (mean, rstd);
        },
    )
}

/// `dinp += r·(dn − mean(dn) − n·mean(dn·n))` per row, with dn = dout·w.
fn layer_norm_backward_input(
    grads: &mut GradStore,
    t: &Tensor,
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    stats: &[f32],
) {
    let c = weight.len();
    grads.add_by_rows(
        t,
        c,
        #[inline(always)]
        |r, dx| {
            let (x, g) = (&inp[r * c..(r + 1) * c], &dout[r * c..(r + 1) * c]);
            layer_norm_backward_row(dx, g, x, weight, (stats[2 * r], stats[2 * r + 1]));
        },
    );
}

/// One row of [`layer_norm_backward_input`]: `dx += r·(dn − mean(dn) − n·mean(dn·n))`.
#[inline(always)]
fn layer_norm_backward_row(
    dx: &mut [f32],
    g: &[f32],
    x: &[f32],
    weight: &[f32],
    (mean, rstd): (f32, f32),
) {
    let c = weight.len();
    // mean(dn) and mean(dn·n) in sixteen running sums each (see `row_sum`)
    let (mut acc_dn, mut acc_dn_n) = ([0.0f32; 16], [0.0f32; 16]);
    let full = c / 16 * 16;
    for i0 in (0..full).step_by(16) {
        let (g, w, x) = (&g[i0..i0 + 16], &weight[i0..i0 + 16], &x[i0..i0 + 16]);
        for k in 0..16 {
            let dn = g[k] * w[k];
            acc_dn[k] += dn;
            acc_dn_n[k] += dn * (x[k] - mean) * rstd;
        }
    }
    let (mut dn_mean, mut dn_n_mean) = (acc_dn.iter().sum::<f32>(), acc_dn_n.iter().sum::<f32>());
    for i in full..c {
        let dn = g[i] * weight[i];
        dn_mean += dn;
        dn_n_mean += dn * (x[i] - mean) * rstd;
    }
    dn_mean /= c as f32;
    dn_n_mean /= c as f32;
    for (((d, &g), &x), &w) in dx[..c].iter_mut().zip(&g[..c]).zip(&x[..c]).zip(weight) {
        let n = (x - mean) * rstd;
        *d += rstd * (g * w - dn_mean - n * dn_n_mean);
    }
}

/// `dweight += Σ_rows dout·n`, `dbias += Σ_rows dout` (packed as one [dweight | dbias] buffer).
fn layer_norm_backward_params(dwb: &mut [f32], dout: &[f32], inp: &[f32], stats: &[f32], c: usize) {
    let rows = dout.len() / c.max(1);
    accumulate_over_rows(
        dwb,
        rows,
        c,
        #[inline(always)]
        |range, partial| {
            let (pw, pb) = partial.split_at_mut(c);
            for r in range {
                let (mean, rstd) = (stats[2 * r], stats[2 * r + 1]);
                let (g, x) = (&dout[r * c..(r + 1) * c], &inp[r * c..(r + 1) * c]);
                for (((pw, pb), &g), &x) in pw.iter_mut().zip(pb.iter_mut()).zip(g).zip(x) {
                    *pw += g * (x - mean) * rstd;
                    *pb += g;
                }
            }
        },
    );
}

struct LayerNormNode {
    stats: Vec<f32>,
}

impl Backward for LayerNormNode {
    fn name(&self) -> &'static str {
        "layer_norm"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &[f32], grads: &mut GradStore) {
        let (x, w, b) = (&inputs[0], &inputs[1], &inputs[2]);
        let (xv, wv) = (x.values(), w.values());
        let c = wv.len();
        layer_norm_backward_input(grads, x, dout, &xv, &wv, &self.stats);
        if w.is_requires_grad() || b.is_requires_grad() {
            let mut dwb = vec![0.0; 2 * c];
            layer_norm_backward_params(&mut dwb, dout, &xv, &self.stats, c);
            if let Some(dw) = grads.slot(w) {
                dw.iter_mut().zip(&dwb[..c]).for_each(|(a, b)| *a += b);
            }
            if let Some(db) = grads.slot(b) {
                db.iter_mut().zip(&dwb[c..]).for_each(|(a, b)| *a += b);
            }
        }
    }
}

impl Tensor {
    /// Layer norm over the last axis with scale `weight` and shift `bias` (both `[C]`).
    /// PyTorch: `F.layer_norm(x, (C,), weight, bias, eps)`.
    #[track_caller]
    pub fn layer_norm(&self, weight: &Tensor, bias: &Tensor, eps: f32) -> Tensor {
        let c = self.size(-1);
        assert!(
            weight.shape() == [c] && bias.shape() == [c],
            "layer_norm: input {:?} needs weight and bias of shape [{c}], got {:?} and {:?}",
            self.shape(),
            weight.shape(),
            bias.shape()
        );
        let xv = self.values();
        let (out, stats) = layer_norm_forward(&xv, &weight.values(), &bias.values(), eps);
        Tensor::from_op(out, self.shape(), &[self, weight, bias], || LayerNormNode {
            stats,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::gradcheck;
    use crate::{Rng, Tensor};

    #[test]
    fn normalizes_rows() {
        // row [1, 2, 3]: μ = 2, σ² = 2/3 → n = [-1.2247, 0, 1.2247]
        let x = Tensor::from_vec(vec![1., 2., 3.], &[1, 3]);
        let y = x
            .layer_norm(&Tensor::ones(&[3]), &Tensor::zeros(&[3]), 1e-5)
            .to_vec();
        assert!(
            (y[0] + 1.224_74).abs() < 1e-4 && y[1].abs() < 1e-6 && (y[2] - 1.224_74).abs() < 1e-4
        );
    }

    #[test]
    fn gradcheck_layer_norm() {
        let mut rng = Rng::seed(14);
        // 37 values a row: two blocks of the sixteen running sums and a tail
        let x = Tensor::randn(&[2, 3, 37], &mut rng);
        let w = Tensor::randn(&[37], &mut rng);
        let b = Tensor::randn(&[37], &mut rng);
        gradcheck(
            &[&x, &w, &b],
            |t| t[0].layer_norm(&t[1], &t[2], 1e-5),
            &mut rng,
        )
        .unwrap();
    }

    #[test]
    fn rows_give_identical_bits_on_every_simd_path() {
        use crate::kernels::cpu::SimdPath;
        use crate::kernels::simd::wide_on;
        let mut rng = Rng::seed(16);
        let c = 200; // twelve blocks of sixteen and a tail of eight
        let v = |rng: &mut Rng| -> Vec<f32> { (0..c).map(|_| 3.0 * rng.normal() + 0.5).collect() };
        let (x, w, b, g) = (v(&mut rng), v(&mut rng), v(&mut rng), v(&mut rng));
        #[inline(always)]
        fn run(x: &[f32], w: &[f32], b: &[f32], g: &[f32]) -> Vec<u32> {
            let mut y = vec![0.0; x.len()];
            let stats = super::layer_norm_row(&mut y, x, w, b, 1e-5);
            let mut dx = vec![0.0; x.len()];
            super::layer_norm_backward_row(&mut dx, g, x, w, stats);
            y.iter()
                .chain(&dx)
                .chain(&[stats.0, stats.1])
                .map(|f| f.to_bits())
                .collect()
        }
        let baseline = run(&x, &w, &b, &g);
        for path in SimdPath::ALL.into_iter().filter(|p| p.is_available()) {
            let got = wide_on(
                path,
                #[inline(always)]
                || run(&x, &w, &b, &g),
            );
            assert_eq!(got, baseline, "{}", path.name());
        }
    }

    #[test]
    fn fused_equals_composed() {
        let mut rng = Rng::seed(15);
        let x = Tensor::randn(&[4, 39], &mut rng).requires_grad();
        let w = Tensor::randn(&[39], &mut rng).requires_grad();
        let b = Tensor::randn(&[39], &mut rng).requires_grad();
        let r = Tensor::randn(&[4, 39], &mut rng);
        let composed = |x: &Tensor| {
            let mean = x.mean(-1, true);
            let var = x.var(-1, true, 0);
            x.sub(&mean)
                .div(&var.add_scalar(1e-5).sqrt())
                .mul(&w)
                .add(&b)
        };
        let y1 = x.layer_norm(&w, &b, 1e-5);
        y1.mul(&r).sum_all().backward();
        let g1: Vec<Vec<f32>> = [&x, &w, &b]
            .iter()
            .map(|t| t.grad().unwrap().to_vec())
            .collect();
        [&x, &w, &b].iter().for_each(|t| t.zero_grad());
        let y2 = composed(&x);
        y2.mul(&r).sum_all().backward();
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(p, q)| (p - q).abs() < 1e-4);
        assert!(close(&y1.to_vec(), &y2.to_vec()));
        for (t, g) in [&x, &w, &b].iter().zip(&g1) {
            assert!(close(&t.grad().unwrap().to_vec(), g));
        }
    }
}
