//! Fused causal scaled-dot-product attention (book section 3.5–3.6), one op with a
//! hand-written backward.
//!
//! Shapes: q `[..., Tq, HS]`, k and v `[..., Tk, HS]` (the leading axes, e.g. `[B, NH]`, must
//! match), output `[..., Tq, HS]`. Query i sits at absolute position `Tk − Tq + i` and may
//! attend to keys `j ≤ Tk − Tq + i` (with Tq = Tk this is the usual causal mask; with a KV
//! cache, Tq = 1 new query attends to every cached key).
//! For each batch entry:
//! ```text
//! S  = Q·Kᵀ / √HS                 scores (Tq×Tk)
//! P  = softmax(S) over allowed keys, 0 on masked ones
//! Pd = P ⊙ M                      dropout on the attention weights (M ∈ {0, 1/(1−p)})
//! O  = Pd·V
//!
//! dPd = dO·Vᵀ,   dV += Pdᵀ·dO
//! dP  = dPd ⊙ M
//! dS  = P ⊙ (dP − rowsum(dP ⊙ P))           softmax backward
//! dQ += dS·K / √HS,   dK += dSᵀ·Q / √HS
//! ```
//! Every product is an SGEMM on strided views (q, k, v may be transposed views of a `[B, T,
//! NH, HS]` projection: no copies). Queries go in blocks of 64 rows, and each block multiplies
//! only against the keys its last row may see, so about half of the masked triangle is never
//! computed; within a block the scores, softmax and weighted sum run back to back while the
//! block's rows are in cache. Batch entries run in parallel. Saved for backward: P (only the
//! part the blocks compute: each block's rows up to its last visible key, about half of
//! Tq×Tk) and the dropout mask.
//!
//! The composed twin, built from `matmul`, `masked_fill`, `softmax`, `dropout`, is
//! `MultiHeadAttention::forward_composed` in the model crate; tests check both agree.
//! PyTorch: `F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)`.

use rayon::prelude::*;

use super::matmul::{batch_offsets, mat};
use crate::autograd::{Backward, GradStore};
use crate::kernels::gemm::{gemm_serial, MatRef};
use crate::kernels::math;
use crate::kernels::parallel::{serial_dot, serial_max, serial_sum, zeros};
use crate::kernels::simd::wide;
use crate::rng::{DropoutMask, Rng};
use crate::tensor::Tensor;

#[derive(Clone, Copy)]
struct Dims {
    tq: usize,
    tk: usize,
    hs: usize,
    scale: f32,
}

impl Dims {
    /// Number of keys query row i may see.
    fn visible(&self, i: usize) -> usize {
        self.tk - self.tq + i + 1
    }
}

/// Queries are processed in blocks of this many rows: block [i0, i1) only multiplies against
/// the keys its last row can see, so the masked upper triangle is (mostly) never computed.
const QUERY_BLOCK: usize = 64;

/// The query blocks of one batch entry, each with the number of keys its rows may see.
fn query_blocks(d: Dims) -> impl Iterator<Item = (std::ops::Range<usize>, usize)> {
    (0..d.tq).step_by(QUERY_BLOCK).map(move |i0| {
        let i1 = (i0 + QUERY_BLOCK).min(d.tq);
        (i0..i1, d.visible(i1 - 1))
    })
}

/// Values of P one batch entry keeps: each query block's rows, `keys` wide (the block's
/// rows of P are stored one after another, each block `rows × keys`).
fn saved_len(d: Dims) -> usize {
    query_blocks(d).map(|(rows, keys)| rows.len() * keys).sum()
}

/// Row-wise masked softmax in place of a block's score rows (`keys` wide) starting at query
/// row `first_row`: row i keeps its first `visible(i)` entries, the rest become 0.
#[inline(always)] // so `wide` compiles it into its AVX-512 copy
fn causal_softmax(rows: &mut [f32], first_row: usize, keys: usize, d: Dims) {
    for (r, row) in rows.chunks_exact_mut(keys).enumerate() {
        let n = d.visible(first_row + r);
        let (seen, future) = row.split_at_mut(n);
        let m = serial_max(seen);
        for s in seen.iter_mut() {
            *s = math::exp(*s - m);
        }
        let sum = serial_sum(seen);
        let inv = 1.0 / sum;
        seen.iter_mut().for_each(|s| *s *= inv);
        future.fill(0.0);
    }
}

/// A block's rows of the dropout mask: keep bytes `tk` wide (only their first `keys` columns
/// are read) and the multiplier of kept weights.
#[derive(Clone, Copy)]
struct MaskRows<'a> {
    keep: &'a [u8],
    scale: f32,
}

impl<'a> MaskRows<'a> {
    /// Rows `rows` of the whole mask, rows `tk` wide.
    fn of(mask: &'a DropoutMask, rows: std::ops::Range<usize>, tk: usize) -> Self {
        MaskRows {
            keep: &mask.keep()[rows.start * tk..rows.end * tk],
            scale: mask.scale(),
        }
    }

    /// Rows `rows` of these rows, `tk` wide.
    fn rows(self, rows: std::ops::Range<usize>, tk: usize) -> Self {
        MaskRows {
            keep: &self.keep[rows.start * tk..rows.end * tk],
            ..self
        }
    }
}

/// The dropped-out weights `P ⊙ M` of a block of rows `keys` wide.
#[inline(always)] // so `wide` compiles it into its AVX-512 copy
fn apply_mask(out: &mut [f32], p: &[f32], mask: MaskRows, keys: usize, tk: usize) {
    for ((o, p), k) in out
        .chunks_exact_mut(keys)
        .zip(p.chunks_exact(keys))
        .zip(mask.keep.chunks_exact(tk))
    {
        for ((o, &p), &k) in o.iter_mut().zip(p).zip(&k[..keys]) {
            *o = p * DropoutMask::multiplier(k, mask.scale);
        }
    }
}

/// One batch entry's forward: fills `p` (the blocks of P, see [`saved_len`]) and `out`
/// (Tq×HS). Each query block runs scores → softmax → weighted sum while its rows of P are
/// still in cache.
#[inline(always)] // so `wide` compiles it into its AVX-512 copy
fn attention_forward(
    out: &mut [f32],
    p: &mut [f32],
    q: MatRef,
    k: MatRef,
    v: MatRef,
    mask: Option<MaskRows>,
    d: Dims,
) {
    let (tk, hs) = (d.tk, d.hs);
    let mut dropped = vec![0.0; if mask.is_some() { QUERY_BLOCK * tk } else { 0 }];
    let mut at = 0; // where the block's rows of P start
    for (rows, keys) in query_blocks(d) {
        let (i0, m) = (rows.start, rows.len());
        let s = &mut p[at..at + m * keys];
        at += m * keys;
        // S = Q·Kᵀ/√HS over the visible keys only, then P = softmax(S)
        gemm_serial(m, hs, keys, d.scale, q.at(i0, 0), k.t(), 0.0, s);
        causal_softmax(s, i0, keys, d);
        // O = (P ⊙ M)·V
        let w: &[f32] = match mask {
            Some(mk) => {
                let dropped = &mut dropped[..m * keys];
                apply_mask(dropped, s, mk.rows(rows.clone(), tk), keys, tk);
                dropped
            }
            None => s,
        };
        let w = MatRef::row_major(w, 0, keys);
        gemm_serial(
            m,
            keys,
            hs,
            1.0,
            w,
            v,
            0.0,
            &mut out[i0 * hs..rows.end * hs],
        );
    }
}

/// One batch entry's backward; accumulates into dq (Tq×HS), dk, dv (Tk×HS), one query block
/// at a time (its rows reach only the keys they can see).
#[allow(clippy::too_many_arguments)]
#[inline(always)] // so `wide` compiles it into its AVX-512 copy
fn attention_backward(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dout: &[f32],
    p: &[f32],
    mask: Option<MaskRows>,
    (q, k, v): (MatRef, MatRef, MatRef),
    d: Dims,
) {
    let (tk, hs) = (d.tk, d.hs);
    let d_o = MatRef::row_major(dout, 0, hs);
    let mut dropped = vec![0.0; if mask.is_some() { QUERY_BLOCK * tk } else { 0 }];
    let mut ds = vec![0.0; QUERY_BLOCK * tk];
    let mut at = 0; // where the block's rows of P start
    for (rows, keys) in query_blocks(d) {
        let (i0, m) = (rows.start, rows.len());
        let p = &p[at..at + m * keys];
        at += m * keys;
        let mask = mask.map(|mk| mk.rows(rows.clone(), tk));
        let d_o = d_o.at(i0, 0);
        // dV += (P ⊙ M)ᵀ·dO
        let w: &[f32] = match mask {
            Some(mk) => {
                let dropped = &mut dropped[..m * keys];
                apply_mask(dropped, p, mk, keys, tk);
                dropped
            }
            None => p,
        };
        let w = MatRef::row_major(w, 0, keys);
        gemm_serial(keys, m, hs, 1.0, w.t(), d_o, 1.0, &mut dv[..keys * hs]);
        // dP = (dO·Vᵀ) ⊙ M
        let ds = &mut ds[..m * keys];
        gemm_serial(m, hs, keys, 1.0, d_o, v.t(), 0.0, ds);
        // dS = P ⊙ (dP − rowsum(dP ⊙ P)) over the visible keys, 0 up to the block's last key
        for (r, (drow, prow)) in ds
            .chunks_exact_mut(keys)
            .zip(p.chunks_exact(keys))
            .enumerate()
        {
            let n = d.visible(i0 + r);
            let (drow, rest) = drow.split_at_mut(n);
            if let Some(mk) = mask {
                drow.iter_mut()
                    .zip(&mk.keep[r * tk..])
                    .for_each(|(a, &k)| *a *= DropoutMask::multiplier(k, mk.scale));
            }
            let dot = serial_dot(drow, &prow[..n]);
            drow.iter_mut()
                .zip(prow)
                .for_each(|(a, b)| *a = b * (*a - dot));
            rest.fill(0.0);
        }
        // dQ += dS·K/√HS,  dK += dSᵀ·Q/√HS
        let s = MatRef::row_major(ds, 0, keys);
        gemm_serial(
            m,
            keys,
            hs,
            d.scale,
            s,
            k,
            1.0,
            &mut dq[i0 * hs..rows.end * hs],
        );
        gemm_serial(
            keys,
            m,
            hs,
            d.scale,
            s.t(),
            q.at(i0, 0),
            1.0,
            &mut dk[..keys * hs],
        );
    }
}

struct AttentionNode {
    /// P of each batch entry, in query blocks (see [`saved_len`]).
    p: Vec<Vec<f32>>,
    mask: Option<DropoutMask>,
    dims: Dims,
}

impl Backward for AttentionNode {
    fn name(&self) -> &'static str {
        "causal_attention"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &[f32], grads: &mut GradStore) {
        let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
        let d = self.dims;
        let take = |g: &mut GradStore, t: &Tensor| {
            g.take_buffer(t).unwrap_or_else(|| vec![0.0; t.numel()])
        };
        let (mut dq, mut dk, mut dv) = (take(grads, q), take(grads, k), take(grads, v));
        let (qd, kd, vd) = (q.storage(), k.storage(), v.storage());
        let (qo, ko, vo) = (
            batch_offsets(q.layout()),
            batch_offsets(k.layout()),
            batch_offsets(v.layout()),
        );
        let (qs, ks) = (d.tq * d.hs, d.tk * d.hs);
        dq.par_chunks_mut(qs)
            .zip(dk.par_chunks_mut(ks))
            .zip(dv.par_chunks_mut(ks))
            .enumerate()
            .for_each(|(i, ((dqi, dki), dvi))| {
                let mats = (mat(&qd, q, qo[i]), mat(&kd, k, ko[i]), mat(&vd, v, vo[i]));
                let mask = self
                    .mask
                    .as_ref()
                    .map(|m| MaskRows::of(m, i * d.tq..(i + 1) * d.tq, d.tk));
                let p = &self.p[i];
                let dout = &dout[i * qs..(i + 1) * qs];
                // compiled for AVX-512 where the CPU has it (16-lane exp and dot; same bits)
                wide(
                    #[inline(always)]
                    || attention_backward(dqi, dki, dvi, dout, p, mask, mats, d),
                );
            });
        for (t, buf) in [(q, dq), (k, dk), (v, dv)] {
            if t.is_requires_grad() {
                grads.put(t, buf);
            }
        }
    }
}

/// Checks the shapes of q, k, v and returns the dimensions and the number of batch entries.
#[track_caller]
fn dims_of(q: &Tensor, k: &Tensor, v: &Tensor) -> (Dims, usize) {
    let nd = q.ndim();
    let ok = nd >= 2
        && k.shape() == v.shape()
        && k.ndim() == nd
        && q.shape()[..nd - 2] == k.shape()[..nd - 2]
        && q.size(-1) == k.size(-1)
        && q.size(-2) <= k.size(-2);
    assert!(
        ok,
        "causal_attention: q {:?}, k {:?}, v {:?} must be [..., Tq, HS], [..., Tk, HS] with Tq <= Tk",
        q.shape(),
        k.shape(),
        v.shape()
    );
    let (tq, tk, hs) = (q.size(-2), k.size(-2), q.size(-1));
    let dims = Dims {
        tq,
        tk,
        hs,
        scale: 1.0 / (hs as f32).sqrt(),
    };
    (dims, q.numel() / (tq * hs).max(1))
}

/// The forward pass over all `nb` batch entries in parallel: the output (`nb·Tq·HS`) and each
/// entry's P in query blocks (see [`saved_len`]).
fn forward_entries(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&DropoutMask>,
    dims: Dims,
    nb: usize,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let (tq, tk, hs) = (dims.tq, dims.tk, dims.hs);
    let mut out = zeros(nb * tq * hs);
    // one buffer per batch entry, zeroed by the thread that fills it (while in its cache)
    let mut p: Vec<Vec<f32>> = vec![Vec::new(); nb];
    let (qd, kd, vd) = (q.storage(), k.storage(), v.storage());
    let (qo, ko, vo) = (
        batch_offsets(q.layout()),
        batch_offsets(k.layout()),
        batch_offsets(v.layout()),
    );
    out.par_chunks_mut(tq * hs)
        .zip(p.par_iter_mut())
        .enumerate()
        .for_each(|(i, (o, pi))| {
            *pi = vec![0.0; saved_len(dims)];
            let m = mask.map(|m| MaskRows::of(m, i * tq..(i + 1) * tq, tk));
            let (qi, ki, vi) = (mat(&qd, q, qo[i]), mat(&kd, k, ko[i]), mat(&vd, v, vo[i]));
            // compiled for AVX-512 where the CPU has it (16-lane exp in the softmax; same bits)
            wide(
                #[inline(always)]
                || attention_forward(o, pi, qi, ki, vi, m, dims),
            );
        });
    (out, p)
}

/// One batch entry's P as a dense `Tq×Tk` matrix, unpacked from its query blocks (the keys a
/// block never computed are masked ones: 0).
fn dense_weights(p: &[f32], d: Dims) -> Vec<f32> {
    let mut dense = vec![0.0; d.tq * d.tk];
    let mut at = 0;
    for (rows, keys) in query_blocks(d) {
        for i in rows {
            dense[i * d.tk..i * d.tk + keys].copy_from_slice(&p[at..at + keys]);
            at += keys;
        }
    }
    dense
}

impl Tensor {
    /// Causal scaled-dot-product attention of queries `q` over keys `k` and values `v`, with
    /// dropout `p_drop` on the attention weights when `train` is set (masks drawn from `rng`).
    #[track_caller]
    pub fn causal_attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        p_drop: f32,
        train: bool,
        rng: &mut Rng,
    ) -> Tensor {
        let (dims, nb) = dims_of(q, k, v);
        assert!(
            (0.0..1.0).contains(&p_drop),
            "causal_attention: dropout {p_drop} not in [0, 1)"
        );
        let mask = (train && p_drop > 0.0).then(|| {
            // the same draws as dropout on the [.., Tq, Tk] weights (so fused == composed)
            rng.dropout_mask(nb * dims.tq * dims.tk, p_drop)
        });
        let (out, p) = forward_entries(q, k, v, mask.as_ref(), dims, nb);
        Tensor::from_op(out, q.shape(), &[q, k, v], || AttentionNode {
            p,
            mask,
            dims,
        })
    }

    /// The same kernel without dropout, also returning the attention weights P `[..., Tq, Tk]`
    /// it computed (0 on masked keys): what `scratchgpt inspect attention` draws (book section
    /// 3.5's `attn_weights`). The output is differentiable as [`Tensor::causal_attention`]'s;
    /// the weights are plain values (a copy of what the kernel saves for backward).
    #[track_caller]
    pub fn causal_attention_with_weights(q: &Tensor, k: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
        let (dims, nb) = dims_of(q, k, v);
        let (out, p) = forward_entries(q, k, v, None, dims, nb);
        let dense: Vec<f32> = p.iter().flat_map(|pi| dense_weights(pi, dims)).collect();
        let mut shape = q.shape().to_vec();
        *shape.last_mut().unwrap() = dims.tk;
        let weights = Tensor::from_vec(dense, &shape);
        let out = Tensor::from_op(out, q.shape(), &[q, k, v], || AttentionNode {
            p,
            mask: None,
            dims,
        });
        (out, weights)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::gradcheck;
    use crate::{Rng, Tensor};

    /// The textbook path: scores, mask, softmax, dropout, weighted sum.
    fn composed(q: &Tensor, k: &Tensor, v: &Tensor, p: f32, train: bool, rng: &mut Rng) -> Tensor {
        let (tq, tk, hs) = (q.size(-2), k.size(-2), q.size(-1));
        let mask: Vec<f32> = (0..tq * tk)
            .map(|x| ((x % tk) > (tk - tq + x / tk)) as u8 as f32)
            .collect();
        let scores = q
            .matmul(&k.transpose(-2, -1))
            .mul_scalar(1.0 / (hs as f32).sqrt());
        let w = scores
            .masked_fill(&Tensor::from_vec(mask, &[tq, tk]), f32::NEG_INFINITY)
            .softmax(-1);
        w.dropout(p, train, rng).matmul(v)
    }

    #[test]
    fn fused_equals_composed_forward_and_backward() {
        let mut rng = Rng::seed(18);
        // the long cases span several query blocks, with and without a KV-cache offset
        for (tq, tk, train) in [
            (5, 5, false),
            (5, 5, true),
            (1, 4, false),
            (3, 6, true),
            (150, 150, true),
            (70, 200, false),
        ] {
            let q = Tensor::randn(&[2, 3, tq, 4], &mut rng).requires_grad();
            let k = Tensor::randn(&[2, 3, tk, 4], &mut rng).requires_grad();
            let v = Tensor::randn(&[2, 3, tk, 4], &mut rng).requires_grad();
            let r = Tensor::randn(&[2, 3, tq, 4], &mut rng);
            let a = Tensor::causal_attention(&q, &k, &v, 0.3, train, &mut Rng::seed(1));
            a.mul(&r).sum_all().backward();
            let ga: Vec<Vec<f32>> = [&q, &k, &v]
                .iter()
                .map(|t| t.grad().unwrap().to_vec())
                .collect();
            [&q, &k, &v].iter().for_each(|t| t.zero_grad());
            // both draw one uniform per (entry, row, key) in the same order, so masks agree
            let b = composed(&q, &k, &v, 0.3, train, &mut Rng::seed(1));
            b.mul(&r).sum_all().backward();
            let close = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(p, q)| (p - q).abs() < 1e-4);
            assert!(
                close(&a.to_vec(), &b.to_vec()),
                "forward tq={tq} tk={tk} train={train}"
            );
            for (t, g) in [&q, &k, &v].iter().zip(&ga) {
                assert!(
                    close(&t.grad().unwrap().to_vec(), g),
                    "backward tq={tq} tk={tk}"
                );
            }
        }
    }

    #[test]
    fn gradcheck_causal_attention_on_transposed_views() {
        let mut rng = Rng::seed(19);
        // q, k, v as [B, T, NH, HS] transposed to [B, NH, T, HS]: strided, not copied
        let q = Tensor::randn(&[2, 4, 2, 3], &mut rng);
        let k = Tensor::randn(&[2, 4, 2, 3], &mut rng);
        let v = Tensor::randn(&[2, 4, 2, 3], &mut rng);
        gradcheck(
            &[&q, &k, &v],
            |t| {
                let [q, k, v] = [0, 1, 2].map(|i| t[i].transpose(1, 2));
                Tensor::causal_attention(&q, &k, &v, 0.2, true, &mut Rng::seed(3))
            },
            &mut rng,
        )
        .unwrap();
    }

    #[test]
    fn fused_weights_equal_composed_softmax() {
        // P = softmax(mask(Q·Kᵀ/√HS)), the tensor the book calls attn_weights (section 3.5),
        // from the fused kernel and from composed ops; over several query blocks and with a
        // KV-cache offset (Tq < Tk)
        let mut rng = Rng::seed(20);
        for (tq, tk) in [(5, 5), (1, 4), (70, 70), (66, 130)] {
            let q = Tensor::randn(&[2, 3, tq, 4], &mut rng);
            let k = Tensor::randn(&[2, 3, tk, 4], &mut rng);
            let v = Tensor::randn(&[2, 3, tk, 4], &mut rng);
            let (out, w) = Tensor::causal_attention_with_weights(&q, &k, &v);
            assert_eq!(w.shape(), &[2, 3, tq, tk]);
            let mask: Vec<f32> = (0..tq * tk)
                .map(|x| ((x % tk) > (tk - tq + x / tk)) as u8 as f32)
                .collect();
            let composed = q
                .matmul(&k.transpose(-2, -1))
                .mul_scalar(0.5)
                .masked_fill(&Tensor::from_vec(mask, &[tq, tk]), f32::NEG_INFINITY)
                .softmax(-1);
            let (a, b) = (w.to_vec(), composed.to_vec());
            assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5));
            // every row sums to 1, and the output is the kernel's usual one
            for row in a.chunks(tk) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            }
            let plain = Tensor::causal_attention(&q, &k, &v, 0.0, false, &mut Rng::seed(0));
            assert_eq!(out.to_vec(), plain.to_vec());
        }
    }
}
