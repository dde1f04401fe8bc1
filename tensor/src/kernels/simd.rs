//! Wide vectors without a build flag.
//!
//! The crates are compiled for baseline x86-64 (SSE2), so the binary runs on any x86-64 CPU.
//! Element-wise loops (exp, tanh, layer norm, Adam…) are written so the compiler can
//! vectorise them, but with SSE2 that means 4 lanes. [`wide`] runs a closure through a copy
//! of itself compiled with AVX-512 (16 lanes) or AVX2+FMA (8 lanes) enabled, the widest the
//! CPU has (checked at run time, once; `SCRATCHGPT_SIMD` can choose, see [`super::cpu`]), so
//! the same loops run 16 or 8 lanes wide there. The arithmetic is the same IEEE operations in
//! the same order (Rust never contracts `a * b + c` into an FMA on its own, even where FMA is
//! enabled, and never reorders float sums), so results are bit-identical on every path.

use super::cpu::SimdPath;
use super::cpu::{has_avx2_fma, has_avx512};

/// Runs `f`, compiled for the widest vectors this CPU has (see the module docs). The compiler
/// only does so for code it inlines into the copy: mark the closure `#[inline(always)]`, and
/// the functions it calls too where they are large.
#[inline(always)]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    wide_on(SimdPath::current(), f)
}

/// [`wide`] on the given path rather than the process-wide one, to test or compare paths.
///
/// # Panics
/// If this CPU cannot run `path`.
#[inline(always)]
pub fn wide_on<R>(path: SimdPath, f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    match path {
        SimdPath::Avx512 if has_avx512() => {
            #[target_feature(enable = "avx512f")]
            fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { with_avx512(f) };
        }
        SimdPath::Avx2 if has_avx2_fma() => {
            #[target_feature(enable = "avx2,fma")]
            fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { with_avx2(f) };
        }
        _ => {}
    }
    assert!(
        path == SimdPath::Baseline,
        "wide: this CPU cannot run the {} path",
        path.name()
    );
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::math;

    /// Every path this CPU has computes exactly what the baseline one does, on loops with the
    /// shapes the ops use: a polynomial-and-division `exp`/`tanh`, a multiply-add that must
    /// not become an FMA, and a running sum that must not be reordered.
    #[test]
    fn wide_loops_give_identical_bits_on_every_path() {
        let xs: Vec<f32> = (0..10_000).map(|i| (i as f32 - 5000.0) * 0.0173).collect();
        #[inline(always)]
        fn run(x: &[f32]) -> (Vec<f32>, f32) {
            let v = x
                .iter()
                .map(|&v| math::exp(v * 0.01) + math::tanh(v) * 0.5 - v * v)
                .collect();
            let mut sum = 0.0f32;
            for (a, b) in x.iter().zip(x.iter().rev()) {
                sum += a * 0.37 + b * 1.1;
            }
            (v, sum)
        }
        let (narrow, narrow_sum) = run(&xs);
        for path in SimdPath::ALL {
            if !path.is_available() {
                eprintln!("skipped {}: this CPU lacks it", path.name());
                continue;
            }
            let (got, sum) = wide_on(
                path,
                #[inline(always)]
                || run(&xs),
            );
            assert_eq!(sum.to_bits(), narrow_sum.to_bits(), "{}", path.name());
            assert!(
                narrow
                    .iter()
                    .zip(&got)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{}",
                path.name()
            );
        }
    }

    #[test]
    fn lacking_path_panics_instead_of_running() {
        for path in SimdPath::ALL.into_iter().filter(|p| !p.is_available()) {
            let r = std::panic::catch_unwind(|| wide_on(path, || 1));
            assert!(r.is_err(), "{}", path.name());
        }
    }
}
