//! Our own single-threaded SGEMM for CPUs with AVX-512, used by [`super::gemm`] when the CPU
//! has it (checked at run time; other CPUs use `matrixmultiply`).
//!
//! Why: `matrixmultiply`'s AVX-512 kernel computes a 16×16 tile and needs 17 loads for every
//! 16 fused multiply-adds, so the two load ports, not the two FMA units, set its speed (~70% of
//! peak here). The tile below is 12 rows × 32 columns: per step of k it loads two 16-wide
//! vectors of B, broadcasts 12 values of A and issues 24 FMAs into 24 accumulator registers,
//! so the FMA units are the limit.
//!
//! The structure is the classic one of GotoBLAS/BLIS:
//! ```text
//! for each block of NC columns of C            (B block: KC×NC, lives in L2)
//!   for each slice of KC along k               pack B[pc.., jc..] into NR-wide panels
//!     for each MR-row strip of C               pack A[ir.., pc..] (MR×KC, lives in L1)
//!       for each NR-wide panel                 micro-kernel: C tile += A strip · B panel
//! ```
//! Packing copies the operands into the exact order the micro-kernel reads them, so any
//! strides (transposed views included) cost one copy per block, not a slower kernel. Edges are
//! zero-padded in the packed buffers and the partial tile is written through a scratch tile.
//!
//! Every element of C is summed in the same order — k ascending within each KC slice, slices
//! in order — whatever the size of the block being computed, so splitting C between threads
//! never changes a bit of the result.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::cell::RefCell;

use super::simd::has_avx512;

/// Rows of C per micro-tile (values of A broadcast per step of k).
pub const MR: usize = 12;
/// Columns of C per micro-tile (two 16-float vectors of B per step of k).
pub const NR: usize = 32;
/// Depth of one packed slice: an A strip is MR·KC·4 = 12 KB (L1), a B panel NR·KC·4 = 32 KB.
const KC: usize = 256;
/// Columns per packed B block: KC·NC·4 = 1 MB, which stays in the 2 MB L2.
const NC: usize = 1024;
const PREFETCH_B: usize = 8 * NR;

/// A strided read-only operand: element (i, j) is at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub struct Operand {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
}

/// A 64-byte aligned scratch buffer (aligned vector loads never straddle cache lines).
#[repr(C, align(64))]
struct Aligned<const N: usize>([f32; N]);

thread_local! {
    /// The packed B block, reused across calls on this thread (1 MB plus alignment slack).
    static PACKED_B: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `C = alpha·A·B + beta·C` for the m×k A, k×n B and the m×n block of C at `c` with row
/// stride `ldc`, on the calling thread. With `beta == 0` C is only written, never read.
///
/// # Safety
/// [`has_avx512`] must be true; A and B must be readable for every (i, j) of their shapes;
/// `c` must be valid for writes of the m×n block and not be accessed by anyone else meanwhile;
/// `k > 0`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: Operand,
    b: Operand,
    beta: f32,
    c: *mut f32,
    ldc: usize,
) {
    debug_assert!(k > 0 && has_avx512());
    PACKED_B.with(|cell| {
        let mut buf = cell.borrow_mut();
        let need = KC * NC.min(n.next_multiple_of(NR)) + 16;
        if buf.len() < need {
            buf.resize(need, 0.0);
        }
        // Start the packed panels on a 64-byte boundary.
        let skip = buf.as_ptr().align_offset(64).min(16);
        let bp = &mut buf[skip..];
        let mut ap = Aligned([0.0f32; MR * KC]);
        let mut tile = Aligned([0.0f32; MR * NR]);
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                // Later slices add onto what the first one wrote.
                let beta = if pc == 0 { beta } else { 1.0 };
                let b_block = Operand {
                    ptr: b.ptr.add(pc * b.rs + jc * b.cs),
                    ..b
                };
                pack_b(kc, nc, b_block, bp);
                for ir in (0..m).step_by(MR) {
                    let mr = MR.min(m - ir);
                    let a_strip = Operand {
                        ptr: a.ptr.add(ir * a.rs + pc * a.cs),
                        ..a
                    };
                    pack_a(mr, kc, a_strip, &mut ap.0);
                    for jr in (0..nc).step_by(NR) {
                        let nr = NR.min(nc - jr);
                        let panel = bp.as_ptr().add(jr * kc);
                        let cij = c.add(ir * ldc + jc + jr);
                        if mr == MR && nr == NR {
                            kernel_12x32(kc, ap.0.as_ptr(), panel, cij, ldc, alpha, beta);
                        } else {
                            let t = tile.0.as_mut_ptr();
                            kernel_12x32(kc, ap.0.as_ptr(), panel, t, NR, 1.0, 0.0);
                            write_partial_tile(&tile.0, mr, nr, cij, ldc, alpha, beta);
                        }
                    }
                }
            }
        }
    });
}

/// Packs the kc×nc block of B into NR-wide panels: panel q holds
/// `B[p][q·NR + j]` at `q·kc·NR + p·NR + j`, columns past nc filled with zeros.
///
/// # Safety
/// `b` must be readable for the kc×nc block.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pack_b(kc: usize, nc: usize, b: Operand, out: &mut [f32]) {
    let full = nc / NR;
    let tail = nc - full * NR;
    if b.cs == 1 {
        // Row by row, so memory is read in long contiguous runs (reading one panel at a time
        // would touch 128 bytes per row of B, each a separate cache miss).
        for p in 0..kc {
            let row = b.ptr.add(p * b.rs);
            for q in 0..full {
                // A fixed-size copy: two vector moves, not a call.
                let src = &*(row.add(q * NR) as *const [f32; NR]);
                out[q * kc * NR + p * NR..][..NR].copy_from_slice(src);
            }
            if tail > 0 {
                let dst = &mut out[full * kc * NR + p * NR..][..NR];
                dst[..tail].copy_from_slice(std::slice::from_raw_parts(row.add(full * NR), tail));
                dst[tail..].fill(0.0);
            }
        }
    } else if b.rs == 1 {
        // B transposed: each column is contiguous. Load 16 columns × 16 steps of k and
        // transpose them in registers into 16 panel rows.
        let dst = out.as_mut_ptr();
        let steps = kc / 16 * 16;
        for q in 0..full + usize::from(tail > 0) {
            let nr = NR.min(nc - q * NR);
            let panel = dst.add(q * kc * NR);
            for half in 0..NR / 16 {
                let j0 = q * NR + half * 16;
                let cols = nr.saturating_sub(half * 16).min(16);
                for p0 in (0..steps).step_by(16) {
                    let mut r = [_mm512_setzero_ps(); 16];
                    for (j, v) in r.iter_mut().enumerate().take(cols) {
                        *v = _mm512_loadu_ps(b.ptr.add((j0 + j) * b.cs + p0));
                    }
                    for (p, v) in transpose_16x16(r).into_iter().enumerate() {
                        _mm512_storeu_ps(panel.add((p0 + p) * NR + half * 16), v);
                    }
                }
                for p in steps..kc {
                    for j in 0..16 {
                        *panel.add(p * NR + half * 16 + j) = if j < cols {
                            *b.ptr.add((j0 + j) * b.cs + p)
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    } else {
        // Any other strides: element by element.
        for q in 0..full + usize::from(tail > 0) {
            let nr = NR.min(nc - q * NR);
            let dst = &mut out[q * kc * NR..(q + 1) * kc * NR];
            for (p, row) in dst.chunks_exact_mut(NR).enumerate() {
                for (j, x) in row.iter_mut().enumerate() {
                    *x = if j < nr {
                        *b.ptr.add(p * b.rs + (q * NR + j) * b.cs)
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// Packs the mr×kc strip of A: `A[i][p]` goes to `p·MR + i`, rows past mr are zeros.
///
/// # Safety
/// `a` must be readable for the mr×kc strip.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pack_a(mr: usize, kc: usize, a: Operand, out: &mut [f32; MR * KC]) {
    // Each step of k becomes one vector holding the strip's column: lanes past mr are zeros
    // and all MR lanes are stored, which writes the zero padding too.
    let rows: __mmask16 = (1 << mr) - 1;
    let store: __mmask16 = (1 << MR) - 1;
    let dst = out.as_mut_ptr();
    if a.rs == 1 {
        // A transposed: the column is contiguous.
        for p in 0..kc {
            let v = _mm512_maskz_loadu_ps(rows, a.ptr.add(p * a.cs));
            _mm512_mask_storeu_ps(dst.add(p * MR), store, v);
        }
    } else if a.cs == 1 {
        // A row-major: load mr rows × 16 steps of k and transpose them in registers.
        let steps = kc / 16 * 16;
        for p0 in (0..steps).step_by(16) {
            let mut r = [_mm512_setzero_ps(); 16];
            for (i, v) in r.iter_mut().enumerate().take(mr) {
                *v = _mm512_loadu_ps(a.ptr.add(i * a.rs + p0));
            }
            for (p, v) in transpose_16x16(r).into_iter().enumerate() {
                _mm512_mask_storeu_ps(dst.add((p0 + p) * MR), store, v);
            }
        }
        for p in steps..kc {
            for i in 0..MR {
                out[p * MR + i] = if i < mr {
                    *a.ptr.add(i * a.rs + p)
                } else {
                    0.0
                };
            }
        }
    } else {
        for p in 0..kc {
            let col = a.ptr.add(p * a.cs);
            for i in 0..MR {
                out[p * MR + i] = if i < mr { *col.add(i * a.rs) } else { 0.0 };
            }
        }
    }
}

/// The transpose of the 16×16 matrix whose rows are `r`: in two rounds of in-lane shuffles
/// (pairs, then quads of rows) and two rounds of 128-bit lane shuffles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transpose_16x16(r: [__m512; 16]) -> [__m512; 16] {
    // t[2k], t[2k+1]: rows 2k and 2k+1 interleaved (columns 4L,4L+1 and 4L+2,4L+3 of lane L)
    let mut t = [_mm512_setzero_ps(); 16];
    for k in 0..8 {
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    // u[4g + c], lane L: rows 4g..4g+3 of column 4L + c
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let b = 4 * g;
        u[b] = _mm512_shuffle_ps::<0x44>(t[b], t[b + 2]);
        u[b + 1] = _mm512_shuffle_ps::<0xEE>(t[b], t[b + 2]);
        u[b + 2] = _mm512_shuffle_ps::<0x44>(t[b + 1], t[b + 3]);
        u[b + 3] = _mm512_shuffle_ps::<0xEE>(t[b + 1], t[b + 3]);
    }
    // column 4L + c gathers lane L of u[c], u[4 + c], u[8 + c], u[12 + c]
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        let x0 = _mm512_shuffle_f32x4::<0x44>(u[c], u[4 + c]);
        let x1 = _mm512_shuffle_f32x4::<0xEE>(u[c], u[4 + c]);
        let x2 = _mm512_shuffle_f32x4::<0x44>(u[8 + c], u[12 + c]);
        let x3 = _mm512_shuffle_f32x4::<0xEE>(u[8 + c], u[12 + c]);
        out[c] = _mm512_shuffle_f32x4::<0x88>(x0, x2);
        out[4 + c] = _mm512_shuffle_f32x4::<0xDD>(x0, x2);
        out[8 + c] = _mm512_shuffle_f32x4::<0x88>(x1, x3);
        out[12 + c] = _mm512_shuffle_f32x4::<0xDD>(x1, x3);
    }
    out
}

/// Writes the valid mr×nr corner of a scratch tile holding A·B into C, with the same
/// arithmetic as the kernel's epilogue (`alpha·t`, or `alpha·t + beta·c` fused).
///
/// # Safety
/// `c` must be valid for the mr×nr block with row stride `ldc`.
unsafe fn write_partial_tile(
    tile: &[f32; MR * NR],
    mr: usize,
    nr: usize,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
) {
    for i in 0..mr {
        for j in 0..nr {
            let t = tile[i * NR + j];
            let p = c.add(i * ldc + j);
            *p = if beta == 0.0 {
                alpha * t
            } else {
                alpha.mul_add(t, beta * *p)
            };
        }
    }
}

/// The micro-kernel: the 12×32 tile `C = alpha·(Ap·Bp) + beta·C`, where Ap is a packed A strip
/// (12 values per step of k) and Bp a packed B panel (32 values per step of k, 64-byte aligned).
/// The 24 accumulators stay in registers for the whole loop over k.
///
/// # Safety
/// AVX-512F must be available; `a` holds 12·kc and `b` 32·kc floats; `c` is valid for a 12×32
/// block with row stride `ldc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel_12x32(
    kc: usize,
    mut a: *const f32,
    mut b: *const f32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for i in 0..MR {
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc + 16) as *const i8);
    }
    for _ in 0..kc {
        _mm_prefetch::<_MM_HINT_T0>(b.add(PREFETCH_B) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(b.add(PREFETCH_B + 16) as *const i8);
        let b0 = _mm512_load_ps(b);
        let b1 = _mm512_load_ps(b.add(16));
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm512_set1_ps(*a.add(i));
            row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
            row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
        }
        a = a.add(MR);
        b = b.add(NR);
    }
    let alphav = _mm512_set1_ps(alpha);
    for (i, row) in acc.iter().enumerate() {
        let ci = c.add(i * ldc);
        for (h, &v) in row.iter().enumerate() {
            let p = ci.add(16 * h);
            let out = if beta == 0.0 {
                _mm512_mul_ps(alphav, v)
            } else {
                let old = _mm512_mul_ps(_mm512_set1_ps(beta), _mm512_loadu_ps(p));
                _mm512_fmadd_ps(alphav, v, old)
            };
            _mm512_storeu_ps(p, out);
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::kernels::gemm::{gemm_naive, MatRef};
    use crate::Rng;

    /// Random shapes around every block edge (MR, NR, KC, NC), with transposed operands,
    /// beta 0 and 1, against the f64 triple loop.
    #[test]
    fn matches_naive_on_edges_and_strides() {
        if !has_avx512() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        let mut rng = Rng::seed(7);
        let shapes = [
            (1, 1, 1),
            (12, 256, 32),
            (13, 257, 33),
            (11, 255, 31),
            (25, 513, 70),
            (7, 40, 1030),
            (30, 3, 2100),
        ];
        for &(m, k, n) in &shapes {
            for (ta, tb, beta) in [(false, false, 0.0), (true, true, 1.0), (false, true, 0.5)] {
                let a: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
                let b: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
                let am = if ta {
                    MatRef::row_major(&a, 0, m).t()
                } else {
                    MatRef::row_major(&a, 0, k)
                };
                let bm = if tb {
                    MatRef::row_major(&b, 0, k).t()
                } else {
                    MatRef::row_major(&b, 0, n)
                };
                let c0: Vec<f32> = (0..m * n).map(|_| rng.normal()).collect();
                let (mut got, mut want) = (c0.clone(), c0);
                // every other element: strides that are neither 1 (the generic packing)
                let spread: Vec<f32> = a.iter().chain(&b).flat_map(|&x| [x, -1.0]).collect();
                let (a2, b2) = spread.split_at(2 * m * k);
                let (am, bm) = if beta == 0.5 {
                    (
                        MatRef {
                            data: a2,
                            offset: 0,
                            rs: 2 * k,
                            cs: 2,
                        },
                        MatRef {
                            data: b2,
                            offset: 0,
                            rs: 2 * n,
                            cs: 2,
                        },
                    )
                } else {
                    (am, bm)
                };
                let op = |x: MatRef| Operand {
                    ptr: x.data.as_ptr(),
                    rs: x.rs,
                    cs: x.cs,
                };
                // SAFETY: AVX-512 checked above; operands and C sized for the shapes.
                unsafe { gemm(m, k, n, 0.7, op(am), op(bm), beta, got.as_mut_ptr(), n) };
                gemm_naive(m, k, n, 0.7, am, bm, beta, &mut want);
                for (x, y) in got.iter().zip(&want) {
                    let tol = 1e-5 * (k as f32).sqrt() * (1.0 + y.abs());
                    assert!(
                        (x - y).abs() <= tol,
                        "{m}×{k}×{n} ta={ta} tb={tb}: {x} vs {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn transpose_16x16_transposes() {
        if !has_avx512() {
            return;
        }
        let m: Vec<f32> = (0..256).map(|x| x as f32).collect();
        // SAFETY: AVX-512 checked above; every load and store covers 16 in-bounds floats.
        let t = unsafe {
            let rows = std::array::from_fn(|i| _mm512_loadu_ps(m.as_ptr().add(16 * i)));
            let cols = transpose_16x16(rows);
            let mut t = vec![0.0f32; 256];
            for (i, v) in cols.into_iter().enumerate() {
                _mm512_storeu_ps(t.as_mut_ptr().add(16 * i), v);
            }
            t
        };
        for i in 0..16 {
            for j in 0..16 {
                assert_eq!(t[16 * i + j], m[16 * j + i], "({i}, {j})");
            }
        }
    }

    /// beta = 0 must not read C: NaNs there do not leak into the result.
    #[test]
    fn beta_zero_ignores_old_c() {
        if !has_avx512() {
            return;
        }
        let (m, k, n) = (13, 5, 40);
        let a = vec![1.0f32; m * k];
        let b = vec![2.0f32; k * n];
        let mut c = vec![f32::NAN; m * n];
        let op = |x: &[f32], cols| Operand {
            ptr: x.as_ptr(),
            rs: cols,
            cs: 1,
        };
        // SAFETY: AVX-512 checked above; buffers sized for the shapes.
        unsafe { gemm(m, k, n, 1.0, op(&a, k), op(&b, n), 0.0, c.as_mut_ptr(), n) };
        assert!(c.iter().all(|&x| x == 10.0));
    }
}
