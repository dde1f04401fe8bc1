//! Our own single-threaded SGEMM, one design for two vector widths: [`super::gemm`] runs it
//! with the AVX-512 micro-kernel ([`super::gemm_avx512`], 12×32 tiles) or the AVX2+FMA one
//! ([`super::gemm_avx2`], 6×16 tiles), whichever the CPU has (see [`super::cpu`]); other CPUs
//! use `matrixmultiply`.
//!
//! Why our own: `matrixmultiply`'s kernels need about one load per FMA (its AVX-512 tile is
//! 16×16: 17 loads for 16 FMAs), so the load ports, not the FMA units, set their speed (~62–70%
//! of peak). A micro-kernel that keeps an MR×NR tile of C in registers loads NR/LANES vectors
//! of B and broadcasts MR values of A per step of k, and issues MR·NR/LANES FMAs: 24 FMAs for
//! 14 loads at 12×32 on AVX-512, 12 FMAs for 8 loads at 6×16 on AVX2, so the FMA units are
//! the limit.
//!
//! The structure is the classic one of GotoBLAS/BLIS:
//! ```text
//! for each block of NC columns of C            (B block: KC×NC, lives in L2)
//!   for each slice of KC along k               pack B[pc.., jc..] into NR-wide panels
//!     for each MR-row strip of C               pack A[ir.., pc..] (MR×KC, lives in L1),
//!                                              unless it is row-major: read in place
//!       for each NR-wide panel                 micro-kernel: C tile += A strip · B panel
//! ```
//! Packing copies the operands into the exact order the micro-kernel reads them, so any
//! strides (transposed views included) cost one copy per block, not a slower kernel. The one
//! exception is a full strip of a row-major A: the kernel reads its MR rows in place (MR
//! sequential streams that stay in L1), as BLIS's small-matrix kernels do, because
//! transposing it cost as much as it saved. Edges are
//! zero-padded in the packed buffers and a partial tile is computed into a scratch tile, then
//! written. With β = 0, C is only written, never read.
//!
//! The only width-specific parts are behind [`MicroKernel`]: the tile itself and an
//! in-register LANES×LANES transpose the packers use for row-major A and transposed B.
//! Block sizes ([`Blocking`]) follow the cache sizes of the CPU at hand.
//!
//! Every element of C is summed in the same order (k ascending within each KC slice, slices
//! in order) whatever the size of the block being computed, so splitting C between threads
//! never changes a bit of the result.

use std::cell::RefCell;

use super::cpu::cache_sizes;

/// A strided read-only operand: element (i, j) is at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub struct Operand {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
}

/// The width-specific part of the packed SGEMM: an MR×NR micro-kernel and a transpose.
pub trait MicroKernel {
    /// Rows of C per tile (values of A broadcast per step of k); at most `LANES`.
    const MR: usize;
    /// Columns of C per tile, a multiple of `LANES`.
    const NR: usize;
    /// f32 lanes per vector register.
    const LANES: usize;

    /// Whether this CPU can run it.
    fn available() -> bool;

    /// `C = alpha·(A·Bp) + beta·C` on one MR×NR tile, where A is an MR×kc strip with `A[i][p]`
    /// at `a + i·a_rs + p·a_cs` (a packed strip: `a_rs = 1`, `a_cs = MR`; rows of a row-major
    /// matrix read in place: `a_rs` = its row stride, `a_cs = 1`) and Bp a packed B panel (NR
    /// values per step of k, 64-byte aligned). With `beta == 0`, C is not read.
    ///
    /// # Safety
    /// [`Self::available`]; `a` is readable for the MR×kc strip and `b` for NR·kc floats; `c`
    /// is valid for an MR×NR block with row stride `ldc`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        kc: usize,
        a: *const f32,
        a_rs: usize,
        a_cs: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        alpha: f32,
        beta: f32,
    );

    /// Transposes a LANES×LANES block: row `r < rows` is the LANES floats at `src + r·ld`
    /// (rows past `rows` are zeros and are not read); column `p` goes to the first `store`
    /// floats at `dst + p·dst_ld` (`store <= LANES`; nothing past them is written).
    ///
    /// # Safety
    /// [`Self::available`]; the rows read and the columns written must be in bounds.
    unsafe fn transpose(
        src: *const f32,
        ld: usize,
        rows: usize,
        dst: *mut f32,
        dst_ld: usize,
        store: usize,
    );
}

/// The block sizes of the loops above, for one micro-kernel on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    /// Depth of one packed slice along k.
    pub kc: usize,
    /// Columns of B per packed block.
    pub nc: usize,
}

impl Blocking {
    /// From the per-core cache sizes: an A strip and a B panel together fill at most L1
    /// (`(MR + NR)·KC·4 <= L1d`, KC a multiple of 64 in 128..=384), and the KC×NC block of B
    /// fills L2 but at most 1 MB of it (NC a multiple of NR in 4·NR..=4096). On a 48 KB L1 and
    /// 1 MB L2 (Zen 5): AVX-512 12×32 → KC 256, NC 1024; AVX2 6×16 → KC 384, NC 672; on the
    /// Intel Xeon's 48 KB L1 and 2 MB L2 the same.
    ///
    /// Measured on Zen 5 (best of 8, 1 and 2 threads, GPT-2 shapes): a B block of half of its
    /// 1 MB L2 was no faster for AVX-512 and 2–5 points slower for AVX2; KC 512 was slower for
    /// AVX2 than 256 or 384. On the Intel Xeon (2 MB L2) the micro-kernel alone, sweeping the
    /// panels of one B block with A and C in cache, keeps 93% of the FMA peak up to a 1 MB
    /// block and falls to 77% at 2 MB; the whole GEMM gained 5–11% (both kernels, 1 and 2
    /// threads) from a 1 MB block instead of the full L2.
    ///
    /// One cache geometry beats the model by measurement and takes the measured blocks
    /// instead (`MEASURED_BLOCKS` below).
    pub fn of<K: MicroKernel>() -> Self {
        let (l1, l2) = cache_sizes();
        Self::for_caches::<K>(l1, l2)
    }

    fn for_caches<K: MicroKernel>(l1: usize, l2: usize) -> Self {
        if let Some(&(_, _, kc, nc)) = MEASURED_BLOCKS
            .iter()
            .find(|&&(l1d, l2d, ..)| (l1d, l2d) == (l1, l2))
        {
            return Blocking { kc, nc };
        }
        let kc = (l1 / ((K::MR + K::NR) * 4) / 64 * 64).clamp(128, 384);
        let b_block = l2.min(1 << 20);
        let nc = (b_block / (kc * 4) / K::NR * K::NR).clamp(4 * K::NR, 4096 / K::NR * K::NR);
        Blocking { kc, nc }
    }
}

/// Cache geometries (per-core L1d, L2) whose measured best blocks (KC, NC) differ from the
/// model of [`Blocking::of`], for both micro-kernels (NC is a multiple of 32).
///
/// 32 KB L1d, 1 MB L2 (AMD EPYC Zen 4, 2026-12-02): the model gives KC 128 for the AVX-512
/// kernel (A strip and a B panel in L1), but the B panel streams from L2 and only the A strip
/// (18 KB at KC 384) needs to stay in L1, while a deeper slice means fewer passes over C. On
/// six GPT-2 shapes (forward and backward, median of 25 in-process rounds, configurations
/// interleaved): AVX-512 KC 128/NC 2048 0.315 s → KC 384/NC 1344 0.278 s on 2 threads (0.655 →
/// 0.578 s on 1); AVX2 KC 320/NC 816 0.332 → 0.305 s. KC 384 with NC 672 (a 1 MB block) was
/// 2–4% slower than NC 1344 on both thread counts.
const MEASURED_BLOCKS: [(usize, usize, usize, usize); 1] = [(32 << 10, 1 << 20, 384, 1344)];

/// Whether the rows of a row-major A (row stride `rs` floats) would share one L1 set if the
/// kernel read them in place. x86 L1 data caches of 32 and 48 KB have 64 sets of 64-byte lines,
/// so addresses a multiple of 4 KB apart land in the same set: MR rows that far apart are MR
/// streams fighting over the set's 8 or 12 ways, and evict each other (and B) every step.
/// Such a strip is packed. Measured on the AMD EPYC Zen 4 (AVX-512, 1 thread, 512 rows × 768
/// columns, 2026-12-02): k = 1024, 2048 and 3072 (rows 4, 8, 12 KB apart) ran at 64–66 GFLOP/s
/// in place and 85–91 packed; k = 512 and 1536 (rows spread over 2 or 4 sets) as fast or
/// faster in place.
fn rows_share_l1_sets(rs: usize) -> bool {
    (rs * 4).is_multiple_of(4096)
}

/// The largest micro-tile of any kernel (12×32), for the scratch tile of partial tiles.
const MAX_TILE: usize = 12 * 32;

/// A 64-byte aligned scratch tile (aligned vector loads never straddle cache lines).
#[repr(C, align(64))]
struct Aligned([f32; MAX_TILE]);

thread_local! {
    /// The packed A strip and B block, reused across calls on this thread.
    static PACKED: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `len` floats of `buf` starting on a 64-byte boundary (growing `buf` if needed).
fn aligned_part(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len + 16 {
        buf.resize(len + 16, 0.0);
    }
    let skip = buf.as_ptr().align_offset(64).min(16);
    &mut buf[skip..skip + len]
}

/// `C = alpha·A·B + beta·C` for the m×k A, k×n B and the m×n block of C at `c` with row
/// stride `ldc`, on the calling thread, with micro-kernel `K`. With `beta == 0` C is only
/// written, never read.
///
/// # Safety
/// `K::available()`; A and B must be readable for every (i, j) of their shapes; `c` must be
/// valid for writes of the m×n block and not be accessed by anyone else meanwhile; `k > 0`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm<K: MicroKernel>(
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
    const { assert!(K::MR * K::NR <= MAX_TILE && K::MR <= K::LANES && K::NR % K::LANES == 0) };
    debug_assert!(k > 0 && K::available());
    let Blocking {
        kc: kc_max,
        nc: nc_max,
    } = Blocking::of::<K>();
    PACKED.with(|cell| {
        let (abuf, bbuf) = &mut *cell.borrow_mut();
        let ap = aligned_part(abuf, K::MR * kc_max);
        let bp = aligned_part(bbuf, kc_max * nc_max.min(n.next_multiple_of(K::NR)));
        let mut tile = Aligned([0.0f32; MAX_TILE]);
        for jc in (0..n).step_by(nc_max) {
            let nc = nc_max.min(n - jc);
            for pc in (0..k).step_by(kc_max) {
                let kc = kc_max.min(k - pc);
                // Later slices add onto what the first one wrote.
                let beta = if pc == 0 { beta } else { 1.0 };
                let b_block = Operand {
                    ptr: b.ptr.add(pc * b.rs + jc * b.cs),
                    ..b
                };
                pack_b::<K>(kc, nc, b_block, bp.as_mut_ptr());
                for ir in (0..m).step_by(K::MR) {
                    let mr = K::MR.min(m - ir);
                    let a_strip = Operand {
                        ptr: a.ptr.add(ir * a.rs + pc * a.cs),
                        ..a
                    };
                    // A whole strip of a row-major A is read in place: its MR rows are MR
                    // sequential streams, and transposing it into a packed strip cost as much
                    // as the kernel saved (k = 128…768 products), unless its rows would evict
                    // each other from L1. Anything else is packed.
                    let in_place = a.cs == 1 && mr == K::MR && !rows_share_l1_sets(a.rs);
                    let (a_ptr, a_rs, a_cs) = if in_place {
                        (a_strip.ptr, a.rs, 1)
                    } else {
                        pack_a::<K>(mr, kc, a_strip, ap.as_mut_ptr());
                        (ap.as_ptr(), 1, K::MR)
                    };
                    for jr in (0..nc).step_by(K::NR) {
                        let nr = K::NR.min(nc - jr);
                        let panel = bp.as_ptr().add(jr * kc);
                        let cij = c.add(ir * ldc + jc + jr);
                        if mr == K::MR && nr == K::NR {
                            K::tile(kc, a_ptr, a_rs, a_cs, panel, cij, ldc, alpha, beta);
                        } else {
                            let t = tile.0.as_mut_ptr();
                            K::tile(kc, a_ptr, a_rs, a_cs, panel, t, K::NR, 1.0, 0.0);
                            write_partial_tile(&tile.0, K::NR, mr, nr, cij, ldc, alpha, beta);
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
/// `b` must be readable for the kc×nc block, `out` writable for `kc·nc.next_multiple_of(NR)`.
unsafe fn pack_b<K: MicroKernel>(kc: usize, nc: usize, b: Operand, out: *mut f32) {
    let (nr_full, lanes) = (K::NR, K::LANES);
    let panels = nc.div_ceil(nr_full);
    if b.cs == 1 {
        // Row by row, so memory is read in long contiguous runs (reading one panel at a time
        // would touch NR floats per row of B, each a separate cache miss).
        let full = nc / nr_full;
        for p in 0..kc {
            let row = b.ptr.add(p * b.rs);
            for q in 0..full {
                // NR is a constant here: a few vector moves, not a call
                std::ptr::copy_nonoverlapping(
                    row.add(q * nr_full),
                    out.add((q * kc + p) * nr_full),
                    nr_full,
                );
            }
            if full < panels {
                let tail = nc - full * nr_full;
                let dst = out.add((full * kc + p) * nr_full);
                std::ptr::copy_nonoverlapping(row.add(full * nr_full), dst, tail);
                std::ptr::write_bytes(dst.add(tail), 0, nr_full - tail);
            }
        }
    } else if b.rs == 1 {
        // B transposed: each column is contiguous. Transpose LANES columns × LANES steps of k
        // in registers into LANES panel rows.
        //
        // Each column is a short run (kc floats, 1 KB at KC 256) and LANES of them are read
        // at once, too many short streams for the hardware prefetcher: the next LANES columns
        // are prefetched while these are transposed, one cache line of each per block.
        let steps = kc / lanes * lanes;
        for q in 0..panels {
            let nr = nr_full.min(nc - q * nr_full);
            let panel = out.add(q * kc * nr_full);
            for part in 0..nr_full / lanes {
                let j0 = q * nr_full + part * lanes;
                let cols = nr.saturating_sub(part * lanes).min(lanes);
                // (not read when cols == 0, so it may point past B)
                let col0 = b.ptr.wrapping_add(j0 * b.cs);
                let next_cols = nc.saturating_sub(j0 + lanes).min(lanes);
                let next0 = col0.wrapping_add(lanes * b.cs);
                for p0 in (0..steps).step_by(lanes) {
                    for j in 0..next_cols {
                        prefetch_read(next0.wrapping_add(j * b.cs + p0));
                    }
                    let dst = panel.add(p0 * nr_full + part * lanes);
                    K::transpose(col0.wrapping_add(p0), b.cs, cols, dst, nr_full, lanes);
                }
                for p in steps..kc {
                    for j in 0..lanes {
                        *panel.add(p * nr_full + part * lanes + j) = if j < cols {
                            *col0.add(j * b.cs + p)
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    } else {
        // Any other strides: element by element.
        for q in 0..panels {
            let nr = nr_full.min(nc - q * nr_full);
            for p in 0..kc {
                for j in 0..nr_full {
                    *out.add((q * kc + p) * nr_full + j) = if j < nr {
                        *b.ptr.add(p * b.rs + (q * nr_full + j) * b.cs)
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// Asks for the cache line holding `p` to be brought into L1 (a hint: never faults, even
/// for an address outside any buffer).
#[inline(always)]
fn prefetch_read(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint and reads nothing architecturally.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast())
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Packs the mr×kc strip of A: `A[i][p]` goes to `p·MR + i`, rows past mr are zeros.
///
/// # Safety
/// `a` must be readable for the mr×kc strip, `out` writable for MR·kc floats.
unsafe fn pack_a<K: MicroKernel>(mr: usize, kc: usize, a: Operand, out: *mut f32) {
    let (mr_full, lanes) = (K::MR, K::LANES);
    if a.rs == 1 {
        // A transposed: the strip's column at each step of k is contiguous.
        for p in 0..kc {
            let dst = out.add(p * mr_full);
            if mr == mr_full {
                std::ptr::copy_nonoverlapping(a.ptr.add(p * a.cs), dst, mr_full);
            } else {
                std::ptr::copy_nonoverlapping(a.ptr.add(p * a.cs), dst, mr);
                std::ptr::write_bytes(dst.add(mr), 0, mr_full - mr);
            }
        }
    } else if a.cs == 1 {
        // A row-major: transpose mr rows × LANES steps of k in registers; each column stores
        // all MR floats, which writes the zero padding too.
        let steps = kc / lanes * lanes;
        for p0 in (0..steps).step_by(lanes) {
            K::transpose(
                a.ptr.add(p0),
                a.rs,
                mr,
                out.add(p0 * mr_full),
                mr_full,
                mr_full,
            );
        }
        for p in steps..kc {
            for i in 0..mr_full {
                *out.add(p * mr_full + i) = if i < mr {
                    *a.ptr.add(i * a.rs + p)
                } else {
                    0.0
                };
            }
        }
    } else {
        for p in 0..kc {
            let col = a.ptr.add(p * a.cs);
            for i in 0..mr_full {
                *out.add(p * mr_full + i) = if i < mr { *col.add(i * a.rs) } else { 0.0 };
            }
        }
    }
}

/// Writes the valid mr×nr corner of a scratch tile (row stride `ts`) holding A·B into C, with
/// the same arithmetic as the kernels' epilogue (`alpha·t`, or `alpha·t + beta·c` fused).
///
/// # Safety
/// `c` must be valid for the mr×nr block with row stride `ldc`.
#[allow(clippy::too_many_arguments)]
unsafe fn write_partial_tile(
    tile: &[f32; MAX_TILE],
    ts: usize,
    mr: usize,
    nr: usize,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
) {
    for i in 0..mr {
        for j in 0..nr {
            let t = tile[i * ts + j];
            let p = c.add(i * ldc + j);
            *p = if beta == 0.0 {
                alpha * t
            } else {
                alpha.mul_add(t, beta * *p)
            };
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::kernels::gemm::{gemm_naive, MatRef};
    use crate::kernels::gemm_avx2::Avx2;
    use crate::kernels::gemm_avx512::Avx512;
    use crate::Rng;

    /// Random shapes around every block edge (MR, NR, KC, NC), with transposed operands and
    /// generic strides, β ∈ {0, ½, 1} (NaNs in C for β = 0), against the f64 triple loop.
    fn matches_naive_on_edges_and_strides<K: MicroKernel>(name: &str) {
        if !K::available() {
            eprintln!("skipped {name}: this CPU lacks it");
            return;
        }
        let Blocking { kc, nc } = Blocking::of::<K>();
        let (mr, nr) = (K::MR, K::NR);
        let mut rng = Rng::seed(7);
        let shapes = [
            (1, 1, 1),
            (mr, kc, nr),
            (mr + 1, kc + 1, nr + 1),
            (mr - 1, kc - 1, nr - 1),
            (2 * mr + 1, 2 * kc + 1, 70),
            (7, 40, nc + 6),
            (30, 3, 2 * nc + 52),
            // rows of a row-major A 4 KB apart: full strips packed, not read in place
            (2 * mr, 1024, nr + 3),
        ];
        for &(m, k, n) in &shapes {
            for (ta, tb, beta) in [
                (false, false, 0.0),
                (true, true, 1.0),
                (false, true, 0.5),
                (true, false, 0.0),
            ] {
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
                // with β = 0, C's old values (NaN here) must not be read
                let c0: Vec<f32> = if beta == 0.0 {
                    vec![f32::NAN; m * n]
                } else {
                    (0..m * n).map(|_| rng.normal()).collect()
                };
                let (mut got, mut want) = (c0.clone(), c0);
                // every other element: strides that are neither 1 (the generic packing)
                let spread: Vec<f32> = a.iter().chain(&b).flat_map(|&x| [x, -1.0]).collect();
                let (a2, b2) = spread.split_at(2 * m * k);
                let (am, bm) = if beta == 0.5 {
                    let at = |data, rs| MatRef {
                        data,
                        offset: 0,
                        rs,
                        cs: 2,
                    };
                    (at(a2, 2 * k), at(b2, 2 * n))
                } else {
                    (am, bm)
                };
                let op = |x: MatRef| Operand {
                    ptr: x.data.as_ptr(),
                    rs: x.rs,
                    cs: x.cs,
                };
                // SAFETY: availability checked above; operands and C sized for the shapes.
                unsafe { gemm::<K>(m, k, n, 0.7, op(am), op(bm), beta, got.as_mut_ptr(), n) };
                gemm_naive(m, k, n, 0.7, am, bm, beta, &mut want);
                for (x, y) in got.iter().zip(&want) {
                    let tol = 1e-5 * (k as f32).sqrt() * (1.0 + y.abs());
                    assert!(
                        (x - y).abs() <= tol,
                        "{name} {m}×{k}×{n} ta={ta} tb={tb} beta={beta}: {x} vs {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn avx512_matches_naive_on_edges_and_strides() {
        matches_naive_on_edges_and_strides::<Avx512>("AVX-512");
    }

    #[test]
    fn avx2_matches_naive_on_edges_and_strides() {
        matches_naive_on_edges_and_strides::<Avx2>("AVX2");
    }

    /// A row-major A is read in place by the kernel, any other A packed first: both must
    /// give the same bits (the same products summed in the same order), on full strips and
    /// on the partial last one, across KC slices.
    fn in_place_and_packed_a_agree<K: MicroKernel>() {
        if !K::available() {
            return;
        }
        let Blocking { kc, .. } = Blocking::of::<K>();
        let (m, k, n) = (3 * K::MR + 2, kc + 37, 2 * K::NR + 5);
        let mut rng = Rng::seed(11);
        let a: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
        // the same A once as a row-major matrix and once as the transpose of its transpose
        let at: Vec<f32> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
        let run = |op: Operand| {
            let mut c = vec![f32::NAN; m * n];
            let bop = Operand {
                ptr: b.as_ptr(),
                rs: n,
                cs: 1,
            };
            // SAFETY: availability checked above; operands and C sized for the shapes.
            unsafe { gemm::<K>(m, k, n, 1.0, op, bop, 0.0, c.as_mut_ptr(), n) };
            c
        };
        let in_place = run(Operand {
            ptr: a.as_ptr(),
            rs: k,
            cs: 1,
        });
        let packed = run(Operand {
            ptr: at.as_ptr(),
            rs: 1,
            cs: m,
        });
        assert_eq!(in_place, packed);
    }

    #[test]
    fn avx512_in_place_and_packed_a_agree() {
        in_place_and_packed_a_agree::<Avx512>();
    }

    #[test]
    fn avx2_in_place_and_packed_a_agree() {
        in_place_and_packed_a_agree::<Avx2>();
    }

    /// The transpose hook on a full block, on a partial one (fewer rows read, fewer lanes
    /// stored, nothing else touched).
    fn transpose_transposes<K: MicroKernel>() {
        if !K::available() {
            return;
        }
        let l = K::LANES;
        let m: Vec<f32> = (0..l * l).map(|x| x as f32).collect();
        for (rows, store) in [(l, l), (l - 3, K::MR)] {
            let mut t = vec![-1.0f32; l * l];
            // SAFETY: availability checked above; every row read and column written is in m, t.
            unsafe { K::transpose(m.as_ptr(), l, rows, t.as_mut_ptr(), l, store) };
            for p in 0..l {
                for i in 0..l {
                    let want = match (i < store, i < rows) {
                        (false, _) => -1.0,
                        (true, true) => m[l * i + p],
                        (true, false) => 0.0,
                    };
                    assert_eq!(t[l * p + i], want, "rows {rows} store {store} ({p}, {i})");
                }
            }
        }
    }

    #[test]
    fn avx512_transpose_transposes() {
        transpose_transposes::<Avx512>();
    }

    #[test]
    fn avx2_transpose_transposes() {
        transpose_transposes::<Avx2>();
    }

    #[test]
    fn blocks_follow_the_caches() {
        // 48 KB L1, 1 MB L2 (Zen 5); 48 KB, 2 MB (the Intel Xeon: the B block stays at 1 MB);
        // 32 KB / 256 KB (an older Intel core)
        assert_eq!(
            Blocking::for_caches::<Avx512>(48 << 10, 1 << 20),
            Blocking { kc: 256, nc: 1024 }
        );
        assert_eq!(
            Blocking::for_caches::<Avx2>(48 << 10, 1 << 20),
            Blocking { kc: 384, nc: 672 }
        );
        assert_eq!(
            Blocking::for_caches::<Avx512>(48 << 10, 2 << 20),
            Blocking { kc: 256, nc: 1024 }
        );
        assert_eq!(
            Blocking::for_caches::<Avx2>(48 << 10, 2 << 20),
            Blocking { kc: 384, nc: 672 }
        );
        assert_eq!(
            Blocking::for_caches::<Avx2>(32 << 10, 256 << 10),
            Blocking { kc: 320, nc: 192 }
        );
        assert_eq!(
            Blocking::for_caches::<Avx512>(32 << 10, 2 << 20),
            Blocking { kc: 128, nc: 2048 }
        );
        // 32 KB / 1 MB (Zen 4): the measured blocks, for both kernels
        for blocks in [
            Blocking::for_caches::<Avx512>(32 << 10, 1 << 20),
            Blocking::for_caches::<Avx2>(32 << 10, 1 << 20),
        ] {
            assert_eq!(blocks, Blocking { kc: 384, nc: 1344 });
        }
    }

    #[test]
    fn rows_a_multiple_of_4_kb_apart_are_packed() {
        assert!(rows_share_l1_sets(1024) && rows_share_l1_sets(3072));
        assert!(!rows_share_l1_sets(768) && !rows_share_l1_sets(512) && !rows_share_l1_sets(1536));
    }
}
