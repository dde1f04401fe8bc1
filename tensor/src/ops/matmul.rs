//! Matrix multiplication: `C = A·B`, 2-D or batched, through SGEMM.
//!
//! Shapes: `A [..., m, k] @ B [..., k, n] → C [..., m, n]`; the batch axes (`...`) broadcast
//! by NumPy's rule. For one batch entry:
//! ```text
//! C[i][j] = Σₚ A[i][p]·B[p][j]
//! dA = dC · Bᵀ        (m×n · n×k)        because ∂C[i][j]/∂A[i][p] = B[p][j]
//! dB = Aᵀ · dC        (k×m · m×n)        because ∂C[i][j]/∂B[p][j] = A[i][p]
//! ```
//! Both backward products run through the same SGEMM with β = 1, so they are *added* into
//! the gradient buffers without a temporary. `Aᵀ`/`Bᵀ` are stride swaps, never copies, and a
//! transposed or otherwise strided operand (such as `w.t()` in a linear layer, or `kᵀ` in
//! attention) goes to SGEMM as it is.
//!
//! Parallelism: when there are at least as many batch entries as threads, entries run in
//! parallel with one single-threaded GEMM each; otherwise each GEMM is split across threads
//! (see `kernels::gemm`). A 3-D-or-more `A` times a 2-D `B` (a linear layer on `[B, T, C]`)
//! is folded into one `(B·T)×k` GEMM, which is both faster and lets B's gradient accumulate
//! in one product.

use rayon::prelude::*;

use crate::autograd::{Backward, GradStore};
use crate::kernels::gemm::{gemm, gemm_serial, MatRef};
use crate::layout::{broadcast_shapes, Layout};
use crate::tensor::Tensor;

/// Storage offset of each batch entry's matrix, for a layout whose last two axes are the matrix.
pub(crate) fn batch_offsets(layout: &Layout) -> Vec<usize> {
    let nb = layout.shape.len() - 2;
    let batch = Layout {
        shape: layout.shape[..nb].iter().copied().chain([1]).collect(),
        strides: layout.strides[..nb].iter().copied().chain([1]).collect(),
        offset: layout.offset,
    };
    let mut offsets = Vec::with_capacity(batch.numel());
    batch.for_each_row(|pos| offsets.push(pos));
    offsets
}

/// The matrix of one batch entry of `t` (last two axes) at storage offset `offset`.
pub(crate) fn mat<'a>(data: &'a [f32], t: &Tensor, offset: usize) -> MatRef<'a> {
    let s = &t.layout().strides;
    MatRef {
        data,
        offset,
        rs: s[s.len() - 2],
        cs: s[s.len() - 1],
    }
}

/// Runs `f(batch_index, c_block)` for each batch entry's `block`-sized slice of `c`: in
/// parallel (with serial GEMMs inside) when there are enough entries, else one at a time
/// (with parallel GEMMs inside). Never both.
fn for_each_batch(c: &mut [f32], block: usize, f: impl Fn(usize, &mut [f32], bool) + Sync) {
    let nbatch = c.len() / block.max(1);
    if block == 0 {
        return;
    }
    if nbatch >= rayon::current_num_threads() && nbatch > 1 {
        c.par_chunks_mut(block)
            .enumerate()
            .for_each(|(i, cb)| f(i, cb, false));
    } else {
        c.chunks_mut(block)
            .enumerate()
            .for_each(|(i, cb)| f(i, cb, true));
    }
}

#[allow(clippy::too_many_arguments)]
fn gemm_any(
    parallel: bool,
    m: usize,
    k: usize,
    n: usize,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: &mut [f32],
) {
    if parallel {
        gemm(m, k, n, 1.0, a, b, beta, c);
    } else {
        gemm_serial(m, k, n, 1.0, a, b, beta, c);
    }
}

/// `out[b] = a[b] · bm[b]` for every batch entry b. Shapes: out (batch, m, n)
fn matmul_forward(out: &mut [f32], a: &Tensor, b: &Tensor, (m, k, n): (usize, usize, usize)) {
    let (ad, bd) = (a.storage(), b.storage());
    let (aoff, boff) = (batch_offsets(a.layout()), batch_offsets(b.layout()));
    for_each_batch(out, m * n, |i, c, par| {
        gemm_any(
            par,
            m,
            k,
            n,
            mat(&ad, a, aoff[i]),
            mat(&bd, b, boff[i]),
            0.0,
            c,
        );
    });
}

/// `da[b] += dout[b] · bm[b]ᵀ` and `db[b] += a[b]ᵀ · dout[b]` (accumulate, β = 1).
fn matmul_backward(
    da: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
    a: &Tensor,
    b: &Tensor,
    dout: &[f32],
    (m, k, n): (usize, usize, usize),
) {
    let dc = |i: usize| MatRef::row_major(dout, i * m * n, n);
    if let Some(da) = da {
        let bd = b.storage();
        let boff = batch_offsets(b.layout());
        for_each_batch(da, m * k, |i, dai, par| {
            gemm_any(par, m, n, k, dc(i), mat(&bd, b, boff[i]).t(), 1.0, dai);
        });
    }
    if let Some(db) = db {
        let ad = a.storage();
        let aoff = batch_offsets(a.layout());
        for_each_batch(db, k * n, |i, dbi, par| {
            gemm_any(par, k, m, n, mat(&ad, a, aoff[i]).t(), dc(i), 1.0, dbi);
        });
    }
}

struct MatmulNode {
    mkn: (usize, usize, usize),
}

impl Backward for MatmulNode {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &[f32], grads: &mut GradStore) {
        let (a, b) = (&inputs[0], &inputs[1]);
        // One gradient buffer at a time (a and b may even be the same tensor: x·xᵀ).
        matmul_backward(grads.slot(a), None, a, b, dout, self.mkn);
        matmul_backward(None, grads.slot(b), a, b, dout, self.mkn);
    }
}

impl Tensor {
    /// Matrix product `self @ other`: `[..., m, k] @ [..., k, n] → [..., m, n]`, batch axes
    /// broadcast. PyTorch: `torch.matmul(a, b)` (both operands at least 2-D here).
    #[track_caller]
    pub fn matmul(&self, other: &Tensor) -> Tensor {
        let (a, b) = (self, other);
        assert!(
            a.ndim() >= 2 && b.ndim() >= 2,
            "matmul: operands must be at least 2-D: lhs {:?} vs rhs {:?}",
            a.shape(),
            b.shape()
        );
        let (m, k) = (a.size(-2), a.size(-1));
        let (k2, n) = (b.size(-2), b.size(-1));
        assert!(
            k == k2,
            "matmul: inner dims differ: lhs {:?} vs rhs {:?}",
            a.shape(),
            b.shape()
        );
        if b.ndim() == 2 && a.ndim() > 2 {
            // [..., m, k] @ [k, n]: fold the batch into the rows of one large GEMM.
            let mut out_shape = a.shape().to_vec();
            *out_shape.last_mut().unwrap() = n;
            return a.reshape(&[a.numel() / k, k]).matmul(b).reshape(&out_shape);
        }
        let (ab, bb) = (&a.shape()[..a.ndim() - 2], &b.shape()[..b.ndim() - 2]);
        let batch = broadcast_shapes(ab, bb).unwrap_or_else(|| {
            panic!(
                "matmul: batch dims do not broadcast: lhs {:?} vs rhs {:?}",
                a.shape(),
                b.shape()
            )
        });
        let with = |x: usize, y: usize| batch.iter().copied().chain([x, y]).collect::<Vec<_>>();
        let a = a.broadcast_to(&with(m, k));
        let b = b.broadcast_to(&with(k, n));
        let out_shape = with(m, n);
        let mut out = vec![0.0; out_shape.iter().product()];
        matmul_forward(&mut out, &a, &b, (m, k, n));
        Tensor::from_op(out, &out_shape, &[&a, &b], || MatmulNode { mkn: (m, k, n) })
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::gradcheck;
    use crate::{Rng, Tensor};

    #[test]
    fn two_by_two_by_hand() {
        // [[1,2],[3,4]] @ [[5,6],[7,8]] = [[19,22],[43,50]]
        let a = Tensor::from_vec(vec![1., 2., 3., 4.], &[2, 2]);
        let b = Tensor::from_vec(vec![5., 6., 7., 8.], &[2, 2]);
        assert_eq!(a.matmul(&b).to_vec(), [19., 22., 43., 50.]);
        // a @ bᵀ through strides: [[1,2],[3,4]] @ [[5,7],[6,8]] = [[17,23],[39,53]]
        assert_eq!(a.matmul(&b.t()).to_vec(), [17., 23., 39., 53.]);
    }

    #[test]
    #[should_panic(expected = "matmul: inner dims differ: lhs [4, 64, 768] vs rhs [512, 768]")]
    fn inner_dim_mismatch_names_both_shapes() {
        Tensor::zeros(&[4, 64, 768]).matmul(&Tensor::zeros(&[512, 768]));
    }

    #[test]
    fn gradcheck_matmul_shapes() {
        let mut rng = Rng::seed(8);
        let cases: [(&[usize], &[usize]); 6] = [
            (&[3, 4], &[4, 5]),
            (&[2, 3, 4], &[4, 2]),       // folded: linear layer
            (&[2, 3, 4], &[2, 4, 5]),    // batched
            (&[2, 1, 3, 4], &[3, 4, 2]), // broadcast batch dims
            (&[1, 7], &[7, 1]),          // non-square, thin
            (&[4, 3, 2], &[2, 3]),
        ];
        for (sa, sb) in cases {
            let a = Tensor::randn(sa, &mut rng);
            let b = Tensor::randn(sb, &mut rng);
            gradcheck(&[&a, &b], |t| t[0].matmul(&t[1]), &mut rng)
                .unwrap_or_else(|e| panic!("{sa:?} @ {sb:?}: {e}"));
        }
        // transposed operand passed by strides, and x·xᵀ (same tensor on both sides)
        let w = Tensor::randn(&[5, 4], &mut rng);
        let x = Tensor::randn(&[3, 4], &mut rng);
        gradcheck(&[&x, &w], |t| t[0].matmul(&t[1].t()), &mut rng).unwrap();
        gradcheck(&[&x], |t| t[0].matmul(&t[0].t()), &mut rng).unwrap();
    }

    #[test]
    fn large_batched_matches_per_entry_products() {
        let mut rng = Rng::seed(9);
        let a = Tensor::randn(&[6, 40, 30], &mut rng);
        let b = Tensor::randn(&[6, 30, 50], &mut rng);
        let c = a.matmul(&b);
        for i in [0, 5] {
            let ci = a
                .narrow(0, i, 1)
                .squeeze(0)
                .matmul(&b.narrow(0, i, 1).squeeze(0));
            assert_eq!(c.narrow(0, i, 1).squeeze(0).to_vec(), ci.to_vec());
        }
    }
}
