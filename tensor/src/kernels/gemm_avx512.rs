//! The AVX-512 micro-kernel of the packed SGEMM ([`super::packed_gemm`]): 12×32 tiles.
//!
//! Per step of k it loads two 16-wide vectors of B, broadcasts 12 values of A and issues 24
//! FMAs into 24 accumulator registers (of 32), so the two FMA units, not the loads, set the
//! pace. The packers transpose 16×16 blocks in registers.

use std::arch::x86_64::*;

use super::cpu::has_avx512;
use super::packed_gemm::MicroKernel;

/// The AVX-512 12×32 micro-kernel.
pub struct Avx512;

/// How far ahead of the kernel B is prefetched: 8 steps of k.
const PREFETCH_B: usize = 8 * 32;

impl MicroKernel for Avx512 {
    const MR: usize = 12;
    const NR: usize = 32;
    const LANES: usize = 16;

    fn available() -> bool {
        has_avx512()
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
        if a_rs == 1 && a_cs == 12 {
            kernel_12x32::<true>(kc, a, a_rs, a_cs, b, c, ldc, alpha, beta)
        } else {
            kernel_12x32::<false>(kc, a, a_rs, a_cs, b, c, ldc, alpha, beta)
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

/// [`MicroKernel::transpose`] for 16×16 blocks.
///
/// # Safety
/// As [`MicroKernel::transpose`].
#[target_feature(enable = "avx512f")]
unsafe fn transpose_block(
    src: *const f32,
    ld: usize,
    rows: usize,
    dst: *mut f32,
    dst_ld: usize,
    store: usize,
) {
    let mut r = [_mm512_setzero_ps(); 16];
    for (i, v) in r.iter_mut().enumerate().take(rows) {
        *v = _mm512_loadu_ps(src.add(i * ld));
    }
    let mask: __mmask16 = ((1u32 << store) - 1) as __mmask16;
    for (p, v) in transpose_16x16(r).into_iter().enumerate() {
        _mm512_mask_storeu_ps(dst.add(p * dst_ld), mask, v);
    }
}

/// The transpose of the 16×16 matrix whose rows are `r`: in two rounds of in-lane shuffles
/// (pairs, then quads of rows) and two rounds of 128-bit lane shuffles.
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

/// The 12×32 tile `C = alpha·(A·Bp) + beta·C` (see [`MicroKernel::tile`]). The 24
/// accumulators stay in registers for the whole loop over k.
///
/// # Safety
/// As [`MicroKernel::tile`].
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_12x32<const PACKED: bool>(
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
    let (a_rs, a_cs) = if PACKED { (1, 12) } else { (a_rs, a_cs) };
    let mut acc = [[_mm512_setzero_ps(); 2]; 12];
    for i in 0..12 {
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc + 16) as *const i8);
    }
    for _ in 0..kc {
        _mm_prefetch::<_MM_HINT_T0>(b.add(PREFETCH_B) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(b.add(PREFETCH_B + 16) as *const i8);
        let b0 = _mm512_load_ps(b);
        let b1 = _mm512_load_ps(b.add(16));
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm512_set1_ps(*a.add(i * a_rs));
            row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
            row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
        }
        a = a.add(a_cs);
        b = b.add(32);
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
