//! Wide vectors without a build flag.
//!
//! The crates are compiled for baseline x86-64 (SSE2), so the binary runs on any x86-64 CPU.
//! Element-wise loops (exp, tanh, layer norm, Adam…) are written so the compiler can
//! vectorise them, but with SSE2 that means 4 lanes. [`wide`] runs a closure through a copy
//! of itself compiled with AVX-512 enabled when the CPU has it (checked at run time, once),
//! so the same loops run 16 lanes wide there. The arithmetic is the same IEEE operations in
//! the same order (Rust never contracts `a * b + c` into an FMA on its own and never
//! reorders float sums), so results are bit-identical either way.

/// True when this CPU has AVX-512F (std caches the detection).
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs `f`, compiled for AVX-512 when this CPU has it (see the module docs). The compiler
/// only does so for code it inlines into the copy: mark the closure `#[inline(always)]`, and
/// the functions it calls too where they are large.
#[inline(always)]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        #[target_feature(enable = "avx512f")]
        fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU supports AVX-512F (checked just above).
        return unsafe { with_avx512(f) };
    }
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::math;

    /// The wide copy computes exactly what the baseline one does.
    #[test]
    fn wide_loops_give_identical_bits() {
        let xs: Vec<f32> = (0..10_000).map(|i| (i as f32 - 5000.0) * 0.0173).collect();
        let run = |x: &[f32]| -> Vec<f32> {
            x.iter()
                .map(|&v| math::exp(v * 0.01) + math::tanh(v) * 0.5 - v * v)
                .collect()
        };
        let narrow = run(&xs);
        let wide = wide(|| run(&xs));
        assert!(narrow
            .iter()
            .zip(&wide)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
