//! SGEMM: `C = α·A·B + β·C` for f32 matrices.
//!
//! Every matmul in scratchgpt, forward and backward, ends here. Operands are described by a
//! slice, the position of element (0, 0) and a row and a column stride, so a transposed matrix
//! is the same data with its two strides swapped: `Aᵀ` costs nothing.
//!
//! On CPUs with AVX-512 or AVX2+FMA the product runs on our own packed kernel
//! ([`super::packed_gemm`], with a 12×32 or a 6×16 micro-kernel); elsewhere on the
//! `matrixmultiply` crate. `SCRATCHGPT_GEMM` chooses one for the whole process, and
//! [`gemm_on`] for one call (see [`super::cpu`]). All are single-threaded and we parallelise
//! around them: a large product is cut into row bands of C (or column bands, when C is wide
//! and short), one call per band on rayon. Each band writes its own part of C, so no two
//! threads touch the same element, and each element's sum over k runs in the same order
//! whatever the split, which keeps results bit-identical across thread counts on each path
//! (different paths may differ in the last bits). A product whose k is long next to its small
//! output is cut along k instead, into two halves summed separately and then added
//! (`k_split`); that cut depends on the shape only, never on the number of threads.
//!
//! [`gemm_naive`] is the three-loop reference the tests compare against.

use rayon::prelude::*;

use super::cpu::GemmPath;
use super::packed_gemm::Operand;
use super::parallel::{for_each_chunk, serial_dot};
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
    gemm_on(GemmPath::current(), m, k, n, alpha, a, b, beta, c)
}

/// [`gemm`] on the given path rather than the process-wide one, to test or compare paths.
///
/// # Panics
/// If this CPU cannot run `path` (see [`GemmPath::is_available`]).
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub fn gemm_on(
    path: GemmPath,
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
    if let Some(h) = k_split(m, k, n) {
        // C = β·C + α·A₀·B₀ on one thread while the other computes α·A₁·B₁; then the sum
        let mut second = vec![0.0; m * n];
        let (a1, b1) = (a.at(0, h), b.at(h, 0));
        rayon::join(
            || gemm_serial_strided_on(path, m, h, n, alpha, a, b, beta, &mut c[..m * n], n),
            || gemm_serial_strided_on(path, m, k - h, n, alpha, a1, b1, 0.0, &mut second, n),
        );
        for_each_chunk(&mut c[..m * n], |start, piece| {
            for (x, y) in piece.iter_mut().zip(&second[start..]) {
                *x += y;
            }
        });
        return;
    }
    if !runs_in_parallel(m, k, n) {
        gemm_serial_strided_on(path, m, k, n, alpha, a, b, beta, c, n);
        return;
    }
    // SAFETY: operands and C were bounds-checked above, and `c` stays mutably borrowed until
    // every block is done.
    unsafe { gemm_blocks(path, m, k, n, alpha, a, b, beta, SendPtr(c.as_mut_ptr())) };
}

/// Where a product whose k is long next to its output is cut in two along k, if it is:
/// k at least eight times the longer side of C and enough work to share (the weight
/// gradients of a small model over many tokens, 128×2048 @ 2048×128; none of GPT-2 small's
/// products at 512 tokens). Split into bands of C, each
/// thread would pack all of B (and C is too small to keep two threads busy); cut along k,
/// each half packs only its half of A and B, the halves run at once, and the second is then
/// added to the first. Decided by the shape alone, so every element is summed the same way on
/// any number of threads (on one, the halves run one after the other).
fn k_split(m: usize, k: usize, n: usize) -> Option<usize> {
    (k >= 8 * m.max(n) && m * n * k >= PAR_MIN_MACS).then_some(k / 2)
}

/// `alpha·A·B` as a new row-major m×n buffer (A m×k, B k×n), which is never zeroed first:
/// with β = 0 every path of the product writes each element of C without reading it, so a
/// fresh output costs one pass over memory instead of two (a zeroing pass, then the product).
/// For layer outputs and first gradients.
#[track_caller]
pub fn gemm_new(m: usize, k: usize, n: usize, alpha: f32, a: MatRef, b: MatRef) -> Vec<f32> {
    gemm_new_on(GemmPath::current(), m, k, n, alpha, a, b)
}

/// [`gemm_new`] on the given path.
#[track_caller]
fn gemm_new_on(
    path: GemmPath,
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
) -> Vec<f32> {
    if m <= 1 || n == 0 || k_split(m, k, n).is_some() {
        // One row takes the unpacked row-times-matrix path, which works on a slice; a product
        // cut along k adds its halves into a slice.
        let mut c = vec![0.0; m * n];
        gemm_on(path, m, k, n, alpha, a, b, 0.0, &mut c);
        return c;
    }
    a.check(m, k, "A");
    b.check(k, n, "B");
    let mut c = Vec::with_capacity(m * n);
    // SAFETY: A and B were bounds-checked above and `c` has room for m·n values. With β = 0,
    // `sgemm_block` writes every element of its block without reading it, and the blocks of
    // `gemm_blocks` cover all of C, so all m·n values are initialised before `set_len`.
    unsafe {
        gemm_blocks(path, m, k, n, alpha, a, b, 0.0, SendPtr(c.as_mut_ptr()));
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
    path: GemmPath,
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
        sgemm_block(path, 0..m, 0..n, k, alpha, a, b, beta, c, n);
        return;
    }
    // Split the longer side (bands of rows or of columns). Band edges fall on multiples of
    // the micro-tile, so only the last band has a partial tile.
    let threads = rayon::current_num_threads();
    let by_rows = m >= n;
    let (mr, nr) = tile_of(path);
    let (len, unit) = if by_rows { (m, mr) } else { (n, nr) };
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
        unsafe { sgemm_block(path, rows, cols, k, alpha, a, b, beta, c, n) };
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

/// The micro-tile (rows, columns) of a path; bands of C split between threads start on its
/// multiples. (`matrixmultiply` takes any split; its own tiles are no larger than this.)
fn tile_of(path: GemmPath) -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    use super::{gemm_avx2::Avx2, gemm_avx512::Avx512, packed_gemm::MicroKernel};
    match path {
        #[cfg(target_arch = "x86_64")]
        GemmPath::Avx2 => (Avx2::MR, Avx2::NR),
        #[cfg(target_arch = "x86_64")]
        GemmPath::Avx512 => (Avx512::MR, Avx512::NR),
        _ => (12, 32),
    }
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
    gemm_serial_strided_on(GemmPath::current(), m, k, n, alpha, a, b, beta, c, ldc)
}

/// [`gemm_serial_strided`] on the given path.
#[track_caller]
#[allow(clippy::too_many_arguments)]
fn gemm_serial_strided_on(
    path: GemmPath,
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
            path,
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
/// block is written and none is read, on every path (our packed kernels, `matrixmultiply`,
/// which documents it, and k = 0), so C may start uninitialised ([`gemm_new`] relies on it).
///
/// # Panics
/// If this CPU cannot run `path`: the one place every path goes through checks it.
///
/// # Safety
/// `c` must point to a row-major m×n matrix with row stride `ldc` that covers the block, no
/// other thread may write the block, and A, B must be in bounds for the block.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_block(
    path: GemmPath,
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
    assert!(
        path.is_available(),
        "gemm: this CPU cannot run the {} path",
        path.name()
    );
    let op = |x: MatRef, r0: usize, c0: usize| Operand {
        ptr: x.data.as_ptr().add(x.offset + r0 * x.rs + c0 * x.cs),
        rs: x.rs,
        cs: x.cs,
    };
    // the block: rows of A, columns of B, and its corner of C
    let (ap, bp) = (op(a, rows.start, 0), op(b, 0, cols.start));
    let cb = c.0.add(rows.start * ldc + cols.start);
    // SAFETY (all paths): the CPU runs the path (asserted above); bounds are the caller's.
    match path {
        #[cfg(target_arch = "x86_64")]
        GemmPath::Avx512 => {
            use super::{gemm_avx512::Avx512, packed_gemm};
            packed_gemm::gemm::<Avx512>(mb, k, nb, alpha, ap, bp, beta, cb, ldc);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        GemmPath::Avx2 => {
            use super::{gemm_avx2::Avx2, packed_gemm};
            packed_gemm::gemm::<Avx2>(mb, k, nb, alpha, ap, bp, beta, cb, ldc);
            return;
        }
        _ => {}
    }
    matrixmultiply::sgemm(
        mb,
        k,
        nb,
        alpha,
        ap.ptr,
        ap.rs as isize,
        ap.cs as isize,
        bp.ptr,
        bp.rs as isize,
        bp.cs as isize,
        beta,
        cb,
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

    /// The paths this CPU can run; the others are skipped with a note.
    fn paths() -> Vec<GemmPath> {
        GemmPath::ALL
            .into_iter()
            .filter(|p| {
                let ok = p.is_available();
                if !ok {
                    eprintln!("skipped the {} path: this CPU lacks it", p.name());
                }
                ok
            })
            .collect()
    }

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    /// Every path against the f64 loop: plain and transposed operands, β ∈ {0, ½, 1} (β = 0
    /// with NaNs in C, which must not leak in), on one thread and in parallel bands.
    #[test]
    fn matches_naive_with_transposes_and_beta() {
        let mut rng = Rng::seed(0);
        let pools = [pool(1), pool(2)];
        for path in paths() {
            for &(m, k, n) in &[
                (1, 1, 1),
                (3, 5, 2),
                (17, 33, 9),
                (130, 70, 257),
                (600, 40, 600),
                (40, 300, 1100),
                (70, 2100, 60), // cut along k
            ] {
                let a = random(m * k, &mut rng);
                let bt = random(n * k, &mut rng); // B stored transposed: n×k
                for (beta, ta) in [(0.0, false), (0.5, true), (1.0, false)] {
                    let c0 = if beta == 0.0 {
                        vec![f32::NAN; m * n]
                    } else {
                        random(m * n, &mut rng)
                    };
                    let am = if ta {
                        MatRef::row_major(&a, 0, m).t()
                    } else {
                        MatRef::row_major(&a, 0, k)
                    };
                    let bm = MatRef::row_major(&bt, 0, k).t();
                    let mut want = c0.clone();
                    gemm_naive(m, k, n, 0.5, am, bm, beta, &mut want);
                    for p in &pools {
                        let mut c = c0.clone();
                        p.install(|| gemm_on(path, m, k, n, 0.5, am, bm, beta, &mut c));
                        let what = format!("{} {m}×{k}×{n} beta {beta}", path.name());
                        assert_close(&c, &want, &what);
                    }
                }
            }
        }
    }

    #[test]
    fn lacking_path_panics_instead_of_running() {
        for path in GemmPath::ALL.into_iter().filter(|p| !p.is_available()) {
            let (a, b) = (vec![1.0; 4], vec![1.0; 4]);
            let r = std::panic::catch_unwind(|| {
                let mut c = vec![0.0; 4];
                let (am, bm) = (MatRef::row_major(&a, 0, 2), MatRef::row_major(&b, 0, 2));
                gemm_on(path, 2, 2, 2, 1.0, am, bm, 0.0, &mut c);
            });
            assert!(r.is_err(), "{}", path.name());
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
        let pool = pool(2);
        for path in paths() {
            for &(m, k, n) in &[
                (1, 7, 5),
                (4, 0, 3),
                (13, 9, 35),
                (700, 64, 90),
                (90, 64, 700),
                (0, 3, 4),
                (60, 1500, 40), // cut along k
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
                    gemm_on(path, m, k, n, 0.5, am, bm, 0.0, &mut want);
                    let got = pool.install(|| gemm_new_on(path, m, k, n, 0.5, am, bm));
                    assert_eq!(got.len(), m * n);
                    assert!(same_bits(&got, &want), "{} {m}×{k}×{n}", path.name());
                }
            }
        }
    }

    #[test]
    fn only_long_thin_products_are_cut_along_k() {
        // the tiny model's weight gradients, and the shapes the tests above cut
        for (m, k, n) in [
            (128, 2048, 128),
            (256, 2048, 128),
            (70, 2100, 60),
            (60, 1500, 40),
        ] {
            assert_eq!(k_split(m, k, n), Some(k / 2), "{m}×{k}×{n}");
        }
        assert_eq!(k_split(120, 2048, 100), Some(1024));
        // GPT-2 small's products, and one too small to share
        for (m, k, n) in [
            (512, 768, 3072),
            (512, 3072, 768),
            (768, 512, 768),
            (50257, 512, 768),
            (512, 2048, 128),
            (16, 512, 16),
        ] {
            assert_eq!(k_split(m, k, n), None, "{m}×{k}×{n}");
        }
    }

    #[test]
    fn bit_identical_across_thread_counts() {
        // Column bands (m < n) and row bands (m >= n), both with partial tiles, and k longer
        // than one KC slice on every path, so the sum runs over several slices; β = 1 too; and
        // a product cut along k (its halves on two threads, or one after the other on one).
        let mut rng = Rng::seed(1);
        for (m, k, n, beta) in [
            (300, 700, 500, 0.0),
            (500, 700, 130, 1.0),
            (120, 2048, 100, 1.0),
        ] {
            let a = random(m * k, &mut rng);
            let b = random(k * n, &mut rng);
            let c0 = random(m * n, &mut rng);
            let run = |path: GemmPath, threads: usize| {
                let mut c = c0.clone();
                let (am, bm) = (MatRef::row_major(&a, 0, k), MatRef::row_major(&b, 0, n));
                // called from outside the pool's workers, as the ops do
                pool(threads).install(|| gemm_on(path, m, k, n, 1.0, am, bm, beta, &mut c));
                c
            };
            for path in paths() {
                let one = run(path, 1);
                for t in [2, 3] {
                    let what = format!("{} {m}×{k}×{n}, {t} threads", path.name());
                    assert!(same_bits(&run(path, t), &one), "{what}");
                }
            }
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
