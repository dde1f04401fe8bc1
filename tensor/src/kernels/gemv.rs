//! The loop of a linear layer fed one token: dot products of one input row with a few weight
//! rows side by side, streamed from memory once (generation reads every weight once per
//! token, so this loop sets its speed).
//!
//! [`dot_rows`] forms each row's sum exactly as
//! [`serial_dot`](super::parallel::serial_dot) does: sixteen running sums
//! (lane `k` takes the products at positions `k`, `k + 16`, …, a multiplication then an
//! addition, never an FMA), added up in lane order, then the tail past the last sixteen.
//! So a row gives the same bits read alone or in a group, on every SIMD path.
//!
//! It is written with the vector types of each path rather than left to the compiler: the
//! plain loop (sixteen running sums per row, `R` rows) vectorised for four rows but not for
//! two, where the compiler packed lanes of the two rows together instead (measured on the
//! Intel Xeon, 2026-12-03: a third of the speed).

use super::cpu::SimdPath;

/// `[x·w_first, …, x·w_(first+R-1)]` for rows `first..first + R` of `weights` (rows of
/// `x.len()` floats, stored one after another), with the sums of
/// [`serial_dot`](super::parallel::serial_dot) (see the module docs).
///
/// The `R` rows after these (which the caller reads next) are prefetched line by line as this
/// group is read, so the next group is on its way from memory before it is needed (measured
/// ≈ 5% more tokens/s in generation on an Intel Xeon than the hardware prefetcher alone). A
/// prefetch never faults, so they need not exist.
///
/// # Panics
/// If `weights` holds fewer than `first + R` rows.
#[inline(always)]
pub fn dot_rows<const R: usize>(x: &[f32], weights: &[f32], first: usize) -> [f32; R] {
    dot_rows_on(SimdPath::current(), x, weights, first)
}

/// [`dot_rows`] on the given SIMD path rather than the process-wide one, to test or compare
/// paths.
///
/// # Panics
/// As [`dot_rows`], or if this CPU cannot run `path`.
#[inline(always)]
pub fn dot_rows_on<const R: usize>(
    path: SimdPath,
    x: &[f32],
    weights: &[f32],
    first: usize,
) -> [f32; R] {
    assert!(
        path.is_available(),
        "dot_rows: this CPU cannot run the {} path",
        path.name()
    );
    let ic = x.len();
    let rows = &weights[first * ic..(first + R) * ic];
    let full = ic / 16 * 16;
    // the next group's first float (it need not exist: it is only prefetched, never read)
    #[cfg(target_arch = "x86_64")]
    let next = weights.as_ptr().wrapping_add((first + R) * ic);
    // SAFETY (each arm): the CPU runs the path (asserted above); `rows` holds R rows of
    // ic ≥ full floats and x holds ic.
    #[cfg(target_arch = "x86_64")]
    let mut sums = match path {
        SimdPath::Avx512 => unsafe { x86::lanes_avx512::<R>(x, rows, full, next) },
        SimdPath::Avx2 => unsafe { x86::lanes_avx2::<R>(x, rows, full, next) },
        SimdPath::Baseline => unsafe { x86::lanes_sse2::<R>(x, rows, full, next) },
    }
    .map(|lanes| lanes.iter().sum::<f32>());
    #[cfg(not(target_arch = "x86_64"))]
    let mut sums = lanes_portable::<R>(x, rows, full).map(|lanes| lanes.iter().sum::<f32>());
    if full < ic {
        for (r, s) in sums.iter_mut().enumerate() {
            let row = &rows[r * ic..(r + 1) * ic];
            *s += x[full..]
                .iter()
                .zip(&row[full..])
                .map(|(a, b)| a * b)
                .sum::<f32>();
        }
    }
    sums
}

/// The sixteen running sums of each row over the first `full` floats, in plain Rust.
#[cfg(not(target_arch = "x86_64"))]
fn lanes_portable<const R: usize>(x: &[f32], rows: &[f32], full: usize) -> [[f32; 16]; R] {
    let ic = x.len();
    let mut acc = [[0.0f32; 16]; R];
    for (r, a) in acc.iter_mut().enumerate() {
        let row = &rows[r * ic..r * ic + full];
        for (xs, ws) in x[..full].chunks_exact(16).zip(row.chunks_exact(16)) {
            for k in 0..16 {
                a[k] += xs[k] * ws[k];
            }
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// One version per vector width: `$v` vectors of `$ty` make the sixteen lanes.
    macro_rules! lanes {
        ($name:ident, $feat:literal, $ty:ty, $v:literal, $zero:ident, $load:ident, $mul:ident,
         $add:ident, $store:ident) => {
            /// The sixteen running sums of each of the `R` rows over the first `full` floats
            /// (a multiple of 16), prefetching the next group's lines.
            ///
            /// # Safety
            /// The CPU has the target feature; `x` holds `full` floats and `rows` `R` rows of
            /// `x.len() ≥ full` floats.
            #[target_feature(enable = $feat)]
            #[inline]
            pub unsafe fn $name<const R: usize>(
                x: &[f32],
                rows: &[f32],
                full: usize,
                next: *const f32,
            ) -> [[f32; 16]; R] {
                const WIDTH: usize = 16 / $v;
                let ic = x.len();
                let (x, w) = (x.as_ptr(), rows.as_ptr());
                let mut acc: [[$ty; $v]; R] = [[$zero(); $v]; R];
                let mut c = 0;
                while c < full {
                    for r in 0..R {
                        let line = next.wrapping_add(r * ic + c) as *const i8;
                        _mm_prefetch::<_MM_HINT_T0>(line);
                    }
                    for h in 0..$v {
                        // SAFETY: c + 16 ≤ full ≤ ic: inside x and inside every row.
                        let xv = unsafe { $load(x.add(c + h * WIDTH)) };
                        for (r, a) in acc.iter_mut().enumerate() {
                            let wv = unsafe { $load(w.add(r * ic + c + h * WIDTH)) };
                            a[h] = $add(a[h], $mul(xv, wv));
                        }
                    }
                    c += 16;
                }
                let mut out = [[0.0f32; 16]; R];
                for (o, a) in out.iter_mut().zip(&acc) {
                    for h in 0..$v {
                        // SAFETY: o holds 16 floats, WIDTH per vector.
                        unsafe { $store(o.as_mut_ptr().add(h * WIDTH), a[h]) };
                    }
                }
                out
            }
        };
    }

    lanes!(
        lanes_avx512,
        "avx512f",
        __m512,
        1,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_mul_ps,
        _mm512_add_ps,
        _mm512_storeu_ps
    );
    lanes!(
        lanes_avx2,
        "avx2",
        __m256,
        2,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_mul_ps,
        _mm256_add_ps,
        _mm256_storeu_ps
    );
    lanes!(
        lanes_sse2,
        "sse2",
        __m128,
        4,
        _mm_setzero_ps,
        _mm_loadu_ps,
        _mm_mul_ps,
        _mm_add_ps,
        _mm_storeu_ps
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::parallel::serial_dot;
    use crate::Rng;

    /// On every path this CPU has, a group of rows gives each row the bits of `serial_dot`
    /// (which a row left over after the groups gets), for widths with and without a tail.
    #[test]
    fn rows_side_by_side_give_the_bits_of_single_dots_on_every_path() {
        let mut rng = Rng::seed(15);
        for ic in [5, 16, 77, 768] {
            let x: Vec<f32> = (0..ic).map(|_| rng.normal()).collect();
            let w: Vec<f32> = (0..4 * ic).map(|_| rng.normal()).collect();
            let single: Vec<u32> = w
                .chunks_exact(ic)
                .map(|row| serial_dot(&x, row).to_bits())
                .collect();
            let bits = |d: &[f32]| d.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            for path in SimdPath::ALL.into_iter().filter(|p| p.is_available()) {
                // the last row alone, two from the middle, all four
                assert_eq!(bits(&dot_rows_on::<1>(path, &x, &w, 3)), single[3..]);
                assert_eq!(bits(&dot_rows_on::<2>(path, &x, &w, 1)), single[1..3]);
                assert_eq!(bits(&dot_rows_on::<4>(path, &x, &w, 0)), single, "{path:?}");
            }
        }
    }
}
