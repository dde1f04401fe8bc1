//! The AVX2+FMA micro-kernel of the packed SGEMM ([`super::packed_gemm`]): 6×16 tiles, the
//! shape of the BLIS and OpenBLAS Haswell kernels.
//!
//! Per step of k it loads two 8-wide vectors of B, broadcasts 6 values of A and issues 12
//! FMAs into 12 accumulator registers (of 16; the two B vectors and one broadcast use three
//! more). Twelve independent chains are enough to cover the FMA latency (4–5 cycles) on two
//! FMA units, and 8 loads per 12 FMAs stay within two load ports. The packers transpose 8×8
//! blocks in registers.

use std::arch::x86_64::*;

use super::cpu::has_avx2_fma;
use super::packed_gemm::MicroKernel;

/// The AVX2+FMA micro-kernel: MR rows × NV vectors of 8 columns.
pub struct Avx2Tile<const MR: usize, const NV: usize>;

/// The tile in use: 6×16. (4×24, also 12 accumulators and one load fewer per step, measured
/// the same within the noise of a shared 2-core VM.)
pub type Avx2 = Avx2Tile<6, 2>;

/// How far ahead of the kernel B is prefetched, in steps of k.
const PREFETCH_STEPS: usize = 8;

impl<const MR: usize, const NV: usize> MicroKernel for Avx2Tile<MR, NV> {
    const MR: usize = MR;
    const NR: usize = 8 * NV;
    const LANES: usize = 8;

    fn available() -> bool {
        has_avx2_fma()
    }

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
    ) {
        // two copies of the kernel: the packed strip's strides are constants in one
        if a_rs == 1 && a_cs == MR {
            kernel::<MR, NV, true>(kc, a, a_rs, a_cs, b, c, ldc, alpha, beta)
        } else {
            kernel::<MR, NV, false>(kc, a, a_rs, a_cs, b, c, ldc, alpha, beta)
        }
    }

    unsafe fn transpose(
        src: *const f32,
        ld: usize,
        rows: usize,
        dst: *mut f32,
        dst_ld: usize,
        store: usize,
    ) {
        transpose_block(src, ld, rows, dst, dst_ld, store)
    }
}

/// [`MicroKernel::transpose`] for 8×8 blocks.
///
/// # Safety
/// As [`MicroKernel::transpose`].
#[target_feature(enable = "avx2,fma")]
unsafe fn transpose_block(
    src: *const f32,
    ld: usize,
    rows: usize,
    dst: *mut f32,
    dst_ld: usize,
    store: usize,
) {
    let mut r = [_mm256_setzero_ps(); 8];
    for (i, v) in r.iter_mut().enumerate().take(rows) {
        *v = _mm256_loadu_ps(src.add(i * ld));
    }
    // lane i is stored when i < store (the sign bit of each 32-bit mask lane decides)
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(store as i32), lane);
    for (p, v) in transpose_8x8(r).into_iter().enumerate() {
        _mm256_maskstore_ps(dst.add(p * dst_ld), mask, v);
    }
}

/// The transpose of the 8×8 matrix whose rows are `r`: two rounds of in-lane shuffles (pairs,
/// then quads of rows) and one exchange of 128-bit halves.
#[target_feature(enable = "avx2,fma")]
fn transpose_8x8(r: [__m256; 8]) -> [__m256; 8] {
    // t[2k], t[2k+1]: rows 2k and 2k+1 interleaved
    let mut t = [_mm256_setzero_ps(); 8];
    for k in 0..4 {
        t[2 * k] = _mm256_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm256_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    // u[4g + c], half H: rows 4g..4g+3 of column 4H + c
    let mut u = [_mm256_setzero_ps(); 8];
    for g in 0..2 {
        let b = 4 * g;
        u[b] = _mm256_shuffle_ps::<0x44>(t[b], t[b + 2]);
        u[b + 1] = _mm256_shuffle_ps::<0xEE>(t[b], t[b + 2]);
        u[b + 2] = _mm256_shuffle_ps::<0x44>(t[b + 1], t[b + 3]);
        u[b + 3] = _mm256_shuffle_ps::<0xEE>(t[b + 1], t[b + 3]);
    }
    // column c takes the low halves of u[c] and u[4 + c]; column 4 + c their high halves
    let mut out = [_mm256_setzero_ps(); 8];
    for c in 0..4 {
        out[c] = _mm256_permute2f128_ps::<0x20>(u[c], u[4 + c]);
        out[4 + c] = _mm256_permute2f128_ps::<0x31>(u[c], u[4 + c]);
    }
    out
}

/// The MR×(8·NV) tile `C = alpha·(A·Bp) + beta·C` (see [`MicroKernel::tile`]). The 12
/// accumulators stay in registers for the whole loop over k.
///
/// # Safety
/// As [`MicroKernel::tile`].
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel<const MR: usize, const NV: usize, const PACKED: bool>(
    kc: usize,
    mut a: *const f32,
    a_rs: usize,
    a_cs: usize,
    mut b: *const f32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
) {
    let (a_rs, a_cs) = if PACKED { (1, MR) } else { (a_rs, a_cs) };
    let mut acc = [[_mm256_setzero_ps(); NV]; MR];
    for i in 0..MR {
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc + 8 * NV - 1) as *const i8);
    }
    for _ in 0..kc {
        _mm_prefetch::<_MM_HINT_T0>(b.add(PREFETCH_STEPS * 8 * NV) as *const i8);
        let bv: [__m256; NV] = std::array::from_fn(|h| _mm256_load_ps(b.add(8 * h)));
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm256_broadcast_ss(&*a.add(i * a_rs));
            for (r, &bh) in row.iter_mut().zip(&bv) {
                *r = _mm256_fmadd_ps(ai, bh, *r);
            }
        }
        a = a.add(a_cs);
        b = b.add(8 * NV);
    }
    let alphav = _mm256_set1_ps(alpha);
    for (i, row) in acc.iter().enumerate() {
        let ci = c.add(i * ldc);
        for (h, &v) in row.iter().enumerate() {
            let p = ci.add(8 * h);
            let out = if beta == 0.0 {
                _mm256_mul_ps(alphav, v)
            } else {
                let old = _mm256_mul_ps(_mm256_set1_ps(beta), _mm256_loadu_ps(p));
                _mm256_fmadd_ps(alphav, v, old)
            };
            _mm256_storeu_ps(p, out);
        }
    }
}
