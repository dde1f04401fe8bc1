//! SGEMM: `C = α·A·B + β·C` for f32 matrices.
//!
//! Every matmul in scratchgpt, forward and backward, ends here. Operands are described by a
//! slice, the position of element (0, 0) and a row and a column stride, so a transposed matrix
//! is the same data with its two strides swapped: `Aᵀ` costs nothing.
//!
//! On CPUs with AVX-512 the product runs on our own packed kernel ([`super::avx512_gemm`],
//! ~82% of peak against `matrixmultiply`'s ~70% here); elsewhere, or with the environment
//! variable `SCRATCHGPT_GEMM=matrixmultiply`, on the `matrixmultiply` crate. Both are
//! single-threaded and we parallelise around them: a large product is cut into row bands of C
//! (or column bands, when C is wide and short), one call per band on rayon. Each band writes
//! its own part of C, so no two threads touch the same element, and each element's sum over k
//! runs in the same order whatever the split, which keeps results bit-identical across thread
//! counts.
//!
//! [`gemm_naive`] is the three-loop reference the tests compare against.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::avx512_gemm;
use super::parallel::serial_dot;
use super::simd::wide;

/// A read-only matrix operand: `data[offset + i·rs + j·cs]` is element (i, j).
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major matrix with `cols` columns starting at `offset`.
    pub fn row_major(data: &'a [f32], offset: usize, cols: usize) -> Self {
        MatRef {
            data,
            offset,
            rs: cols,
            cs: 1,
        }
    }

    /// The sub-matrix whose element (0, 0) is this one's (i, j).
    pub fn at(self, i: usize, j: usize) -> Self {
        MatRef {
            offset: self.offset + i * self.rs + j * self.cs,
            ..self
        }
    }

    /// The transpose: the same values with the strides swapped.
    pub fn t(self) -> Self {
        MatRef {
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    #[track_caller]
    fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows == 0 || cols == 0 {
            return;
        }
        let last = self.offset + (rows - 1) * self.rs + (cols - 1) * self.cs;
        assert!(
            last < self.data.len(),
            "gemm: operand {what} ({rows}×{cols}, strides {}×{}) reads past its buffer of {}",
            self.rs,
            self.cs,
            self.data.len()
        );
    }
}

/// Products with fewer multiply-adds than this run on one thread: below ~4 MFLOP the split
/// costs more than it saves (measured with `cargo bench --bench matmul`).
const PAR_MIN_MACS: usize = 1 << 21;

/// Which SGEMM runs: our AVX-512 kernel where the CPU has it, unless the environment variable
/// `SCRATCHGPT_GEMM=matrixmultiply` asks for the portable one (to compare the two).
fn use_avx512() -> bool {
    static CHOICE: OnceLock<bool> = OnceLock::new();
    *CHOICE.get_or_init(|| {
        super::simd::has_avx512()
            && std::env::var("SCRATCHGPT_GEMM").map_or(true, |v| v != "matrixmultiply")
    })
}

/// A raw pointer that may cross to another thread. Safe to share here because every task
/// writes a disjoint block of C (see the SAFETY comments below).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// `C = alpha·A·B + beta·C` where A is m×k, B is k×n, and C is the row-major m×n matrix
/// starting at `c[0]` (`c.len() >= m·n`). With `beta = 1` the product is *added* to C, which
/// is how the backward pass accumulates weight gradients without a temporary.
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: &mut [f32],
) {
    check_operands(m, k, n, a, b, c, n);
    if m == 0 || n == 0 {
        return;
    }
    if !runs_in_parallel(m, k, n) {
        gemm_serial(m, k, n, alpha, a, b, beta, c);
        return;
    }
    // SAFETY: operands and C were bounds-checked above, and `c` stays mutably borrowed until
    // every block is done.
    unsafe { gemm_blocks(m, k, n, alpha, a, b, beta, SendPtr(c.as_mut_ptr())) };
}

/// `alpha·A·B` as a new row-major m×n buffer (A m×k, B k×n), which is never zeroed first:
/// with β = 0 every path of the product writes each element of C without reading it, so a
/// fresh output costs one pass over memory instead of two (a zeroing pass, then the product).
/// For layer outputs and first gradients.
#[track_caller]
pub fn gemm_new(m: usize, k: usize, n: usize, alpha: f32, a: MatRef, b: MatRef) -> Vec<f32> {
    if m <= 1 || n == 0 {
        // One row takes the unpacked row-times-matrix path, which works on a slice.
        let mut c = vec![0.0; m * n];
        gemm(m, k, n, alpha, a, b, 0.0, &mut c);
        return c;
    }
    a.check(m, k, "A");
    b.check(k, n, "B");
    let mut c = Vec::with_capacity(m * n);
    // SAFETY: A and B were bounds-checked above and `c` has room for m·n values. With β = 0,
    // `sgemm_block` writes every element of its block without reading it, and the blocks of
    // `gemm_blocks` cover all of C, so all m·n values are initialised before `set_len`.
    unsafe {
        gemm_blocks(m, k, n, alpha, a, b, 0.0, SendPtr(c.as_mut_ptr()));
        c.set_len(m * n);
    }
    c
}

/// Whether a product of this size is split between threads: below ~4 MFLOP the split costs
/// more than it saves.
fn runs_in_parallel(m: usize, k: usize, n: usize) -> bool {
    rayon::current_num_threads() > 1 && m * n * k >= PAR_MIN_MACS
}

/// The product into the row-major m×n matrix at `c`, one block of C per thread when it
/// [`runs_in_parallel`], else one block.
///
/// # Safety
/// A and B must be in bounds for an m×k and a k×n operand; `c` must be valid for writes of
/// m·n values and not accessed by anyone else meanwhile; m, n > 0.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_blocks(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: SendPtr,
) {
    if !runs_in_parallel(m, k, n) {
        sgemm_block(0..m, 0..n, k, alpha, a, b, beta, c, n);
        return;
    }
    // Split the longer side (bands of rows or of columns). Band edges fall on multiples of
    // the micro-tile, so only the last band has a partial tile.
    let threads = rayon::current_num_threads();
    let by_rows = m >= n;
    let (len, unit) = if by_rows {
        (m, avx512_gemm::MR)
    } else {
        (n, avx512_gemm::NR)
    };
    let blocks = threads.min(len.div_ceil(unit));
    let units = len.div_ceil(unit);
    let split =
        |i: usize| (units * i / blocks * unit).min(len)..(units * (i + 1) / blocks * unit).min(len);
    (0..blocks).into_par_iter().for_each(|i| {
        let (rows, cols) = if by_rows {
            (split(i), 0..n)
        } else {
            (0..m, split(i))
        };
        // SAFETY: blocks partition C's rows (or columns), so tasks write disjoint elements;
        // the caller keeps `c` exclusive until all tasks finish.
        unsafe { sgemm_block(rows, cols, k, alpha, a, b, beta, c, n) };
    });
}

/// Panics (naming the operand) unless A is m×k, B is k×n and C holds an m×n block with row
/// stride `ldc` in bounds.
#[track_caller]
fn check_operands(m: usize, k: usize, n: usize, a: MatRef, b: MatRef, c: &[f32], ldc: usize) {
    a.check(m, k, "A");
    b.check(k, n, "B");
    assert!(
        ldc >= n && (m == 0 || n == 0 || c.len() >= (m - 1) * ldc + n),
        "gemm: C has {} values, needs {m}×{n} with row stride {ldc}",
        c.len()
    );
}

/// [`gemm`] on the calling thread only: for callers that already run in parallel (one product
/// per batch entry), so parallelism is never nested.
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub fn gemm_serial(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: &mut [f32],
) {
    gemm_serial_strided(m, k, n, alpha, a, b, beta, c, n);
}

/// [`gemm_serial`] into an m×n block of a wider row-major matrix: row i of C starts at
/// `c[i·ldc]` (`ldc >= n`), e.g. a few columns of a wider result.
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub fn gemm_serial_strided(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    check_operands(m, k, n, a, b, c, ldc);
    if m == 0 || n == 0 {
        return;
    }
    if m == 1 && k > 0 && a.cs == 1 && (b.rs == 1 || b.cs == 1) {
        row_times_matrix(k, n, alpha, a, b, beta, &mut c[..n]);
        return;
    }
    // SAFETY: bounds of A, B and C were checked above, and `c` is borrowed mutably for the
    // duration of the call.
    unsafe {
        sgemm_block(
            0..m,
            0..n,
            k,
            alpha,
            a,
            b,
            beta,
            SendPtr(c.as_mut_ptr()),
            ldc,
        )
    };
}

/// `c = alpha·a·B + beta·c` for one contiguous row `a` (length k), without packing: a GEMM
/// with one row (generation's single query against the cached keys and values) would spend
/// as long copying B into panels as multiplying. B's columns contiguous (`rs == 1`, e.g. Kᵀ):
/// one dot product per output; B's rows contiguous (`cs == 1`, e.g. V): c accumulates
/// `a[p]·B[p, ..]` row by row. With `beta == 0`, c is only written.
fn row_times_matrix(
    k: usize,
    n: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: &mut [f32],
) {
    let a = &a.data[a.offset..a.offset + k];
    wide(
        #[inline(always)]
        || {
            if b.rs == 1 {
                for (j, cj) in c.iter_mut().enumerate() {
                    let start = b.offset + j * b.cs;
                    let d = alpha * serial_dot(a, &b.data[start..start + k]);
                    *cj = if beta == 0.0 { d } else { d + beta * *cj };
                }
            } else {
                if beta == 0.0 {
                    c.fill(0.0);
                } else if beta != 1.0 {
                    c.iter_mut().for_each(|x| *x *= beta);
                }
                for (p, &ap) in a.iter().enumerate() {
                    let start = b.offset + p * b.rs;
                    let w = alpha * ap;
                    for (x, &bv) in c.iter_mut().zip(&b.data[start..start + n]) {
                        *x += w * bv;
                    }
                }
            }
        },
    )
}

/// One `sgemm` call on the block `rows × cols` of C. With `beta == 0` every element of the
/// block is written and none is read, on every path (the AVX-512 kernel, `matrixmultiply`,
/// which documents it, and k = 0), so C may start uninitialised ([`gemm_new`] relies on it).
///
/// # Safety
/// `c` must point to a row-major m×n matrix with row stride `ldc` that covers the block, no
/// other thread may write the block, and A, B must be in bounds for the block.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_block(
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    k: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: SendPtr,
    ldc: usize,
) {
    let (mb, nb) = (rows.len(), cols.len());
    if mb == 0 || nb == 0 {
        return;
    }
    if k == 0 {
        // C = beta·C; sgemm would do the same, but say it plainly.
        for i in rows {
            for j in cols.clone() {
                let p = c.0.add(i * ldc + j);
                *p = if beta == 0.0 { 0.0 } else { beta * *p };
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if use_avx512() {
        let op = |x: MatRef, r0: usize, c0: usize| avx512_gemm::Operand {
            ptr: x.data.as_ptr().add(x.offset + r0 * x.rs + c0 * x.cs),
            rs: x.rs,
            cs: x.cs,
        };
        let cb = c.0.add(rows.start * ldc + cols.start);
        avx512_gemm::gemm(
            mb,
            k,
            nb,
            alpha,
            op(a, rows.start, 0),
            op(b, 0, cols.start),
            beta,
            cb,
            ldc,
        );
        return;
    }
    matrixmultiply::sgemm(
        mb,
        k,
        nb,
        alpha,
        a.data.as_ptr().add(a.offset + rows.start * a.rs),
        a.rs as isize,
        a.cs as isize,
        b.data.as_ptr().add(b.offset + cols.start * b.cs),
        b.rs as isize,
        b.cs as isize,
        beta,
        c.0.add(rows.start * ldc + cols.start),
        ldc as isize,
        1,
    );
}

/// The textbook triple loop: `C[i][j] = alpha·Σ_p A[i][p]·B[p][j] + beta·C[i][j]`.
/// The reference for tests, accumulated in f64.
#[allow(clippy::too_many_arguments)]
pub fn gemm_naive(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: &mut [f32],
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for p in 0..k {
                acc += a.data[a.offset + i * a.rs + p * a.cs] as f64
                    * b.data[b.offset + p * b.rs + j * b.cs] as f64;
            }
            let old = if beta == 0.0 {
                0.0
            } else {
                beta * c[i * n + j]
            };
            c[i * n + j] = alpha * acc as f32 + old;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    fn random(n: usize, rng: &mut Rng) -> Vec<f32> {
        (0..n).map(|_| rng.normal()).collect()
    }

    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    /// Every value within 1e-4 (relative, plus 1e-4 absolute) of the f64 reference.
    #[track_caller]
    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        for (x, y) in got.iter().zip(want) {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "{what}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn matches_naive_with_transposes_and_beta() {
        let mut rng = Rng::seed(0);
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 2),
            (17, 33, 9),
            (130, 70, 257),
            (600, 40, 600),
        ] {
            let a = random(m * k, &mut rng);
            let bt = random(n * k, &mut rng); // B stored transposed: n×k
            let c0 = random(m * n, &mut rng);
            let (mut c, mut want) = (c0.clone(), c0.clone());
            let am = MatRef::row_major(&a, 0, k);
            let bm = MatRef::row_major(&bt, 0, k).t();
            gemm(m, k, n, 0.5, am, bm, 1.0, &mut c);
            gemm_naive(m, k, n, 0.5, am, bm, 1.0, &mut want);
            assert_close(&c, &want, &format!("{m}×{k}×{n}"));
        }
    }

    #[test]
    fn one_row_without_packing_matches_naive() {
        let mut rng = Rng::seed(5);
        for &(k, n) in &[(1, 1), (64, 200), (37, 19), (300, 64)] {
            let a = random(k + 3, &mut rng); // the row starts at offset 3
            let b = random(k * n, &mut rng);
            let am = MatRef::row_major(&a, 3, k);
            // B with contiguous columns (a transposed n×k matrix) and with contiguous rows
            for bm in [MatRef::row_major(&b, 0, k).t(), MatRef::row_major(&b, 0, n)] {
                for beta in [0.0, 0.5, 1.0] {
                    // with beta = 0, C's old values (NaN here) must not leak in
                    let c0: Vec<f32> = if beta == 0.0 {
                        vec![f32::NAN; n]
                    } else {
                        random(n, &mut rng)
                    };
                    let (mut c, mut want) = (c0.clone(), c0.clone());
                    gemm_serial(1, k, n, 0.7, am, bm, beta, &mut c);
                    gemm_naive(1, k, n, 0.7, am, bm, beta, &mut want);
                    assert_close(&c, &want, &format!("1×{k}×{n} beta {beta}"));
                }
            }
        }
    }

    #[test]
    fn new_buffer_product_equals_product_into_zeros() {
        // Every path: one row, k = 0, serial tiles with edges, parallel bands (2 threads) by
        // rows and by columns, transposed operands. Same bits as β = 0 into a zeroed C.
        let mut rng = Rng::seed(6);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for &(m, k, n) in &[
            (1, 7, 5),
            (4, 0, 3),
            (13, 9, 35),
            (700, 64, 90),
            (90, 64, 700),
            (0, 3, 4),
        ] {
            let a = random(m * k, &mut rng);
            let b = random(k * n, &mut rng);
            for (am, bm) in [
                (MatRef::row_major(&a, 0, k), MatRef::row_major(&b, 0, n)),
                (
                    MatRef::row_major(&a, 0, m).t(),
                    MatRef::row_major(&b, 0, k).t(),
                ),
            ] {
                let mut want = vec![0.0; m * n];
                gemm(m, k, n, 0.5, am, bm, 0.0, &mut want);
                let got = pool.install(|| gemm_new(m, k, n, 0.5, am, bm));
                assert_eq!(got.len(), m * n);
                assert!(same_bits(&got, &want), "{m}×{k}×{n}");
            }
        }
    }

    #[test]
    fn bit_identical_across_thread_counts() {
        let mut rng = Rng::seed(1);
        let (m, k, n) = (300, 200, 500);
        let a = random(m * k, &mut rng);
        let b = random(k * n, &mut rng);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut c = vec![0.0; m * n];
            pool.install(|| {
                // called from outside the pool's workers, as the ops do
                gemm(
                    m,
                    k,
                    n,
                    1.0,
                    MatRef::row_major(&a, 0, k),
                    MatRef::row_major(&b, 0, n),
                    0.0,
                    &mut c,
                )
            });
            c
        };
        let one = run(1);
        for t in [2, 3] {
            assert!(same_bits(&run(t), &one), "{t} threads");
        }
    }

    #[test]
    #[should_panic(expected = "reads past its buffer")]
    fn out_of_bounds_operand_panics() {
        let a = vec![0.0; 5];
        let mut c = vec![0.0; 4];
        gemm(
            2,
            3,
            2,
            1.0,
            MatRef::row_major(&a, 0, 3),
            MatRef::row_major(&a, 0, 2),
            0.0,
            &mut c,
        );
    }
}
