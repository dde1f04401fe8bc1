//! The machine's peak single-precision FLOP/s, measured with a loop of independent fused
//! multiply-adds, so benchmarks can report matmul speed as a share of what the cores can do.
//!
//! The loop keeps 12 vector accumulators busy (enough to hide the FMA latency on two FMA
//! ports) and uses the widest FMA the CPU has, detected at run time: AVX-512 (16 lanes) or
//! AVX2 (8 lanes). Each FMA counts as 2 FLOPs per lane.
//!
//! It also measures the memory read bandwidth, the bound of one-token generation (every
//! weight is read once per token, and there is almost no arithmetic per byte).

use std::time::Instant;

use super::cpu::GemmPath;
use super::parallel::serial_dot;
use super::simd::wide;

/// Peak GFLOP/s of one core (f32, FMA), measured over about `millis` milliseconds.
pub fn peak_gflops_one_core(millis: u64) -> f64 {
    let iters = 1 << 20;
    let start = Instant::now();
    let mut best: f64 = 0.0;
    while start.elapsed().as_millis() < millis as u128 {
        let t = Instant::now();
        let (f, sink) = fma_loop(iters);
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(sink);
        best = best.max(f / secs);
    }
    best / 1e9
}

/// Peak GFLOP/s of all rayon threads running the loop at once.
pub fn peak_gflops_all_cores(millis: u64) -> f64 {
    use rayon::prelude::*;
    let n = rayon::current_num_threads();
    (0..n)
        .into_par_iter()
        .map(|_| peak_gflops_one_core(millis))
        .sum()
}

/// Peak GFLOP/s of one core with 256-bit (AVX2) FMAs only, or `None` without AVX2/FMA.
/// Reported beside the full peak because many kernels (and `matrixmultiply` on some CPUs)
/// use 256-bit vectors.
pub fn peak_gflops_avx2_one_core(millis: u64) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("fma") && is_x86_feature_detected!("avx") {
            let iters = 1 << 20;
            let start = Instant::now();
            let mut best: f64 = 0.0;
            while start.elapsed().as_millis() < millis as u128 {
                let t = Instant::now();
                // SAFETY: the CPU supports AVX and FMA (checked above).
                let s = unsafe { x86::fma_avx2(iters) };
                std::hint::black_box(s);
                best = best.max(iters as f64 * 12.0 * 8.0 * 2.0 / t.elapsed().as_secs_f64());
            }
            return Some(best / 1e9);
        }
    }
    None
}

/// Peak GFLOP/s of one core with the FMA width a GEMM path computes with: 8 lanes for the
/// AVX2 kernel, the widest the CPU has for the others (`matrixmultiply` picks its widest
/// kernel too). The share of this number a path reaches is its efficiency.
pub fn peak_gflops_for(path: GemmPath, millis: u64) -> f64 {
    match path {
        GemmPath::Avx2 => peak_gflops_avx2_one_core(millis).unwrap_or(0.0),
        GemmPath::Avx512 | GemmPath::MatrixMultiply => peak_gflops_one_core(millis),
    }
}

/// [`peak_gflops_for`] on all rayon threads at once (summed).
pub fn peak_gflops_all_cores_for(path: GemmPath, millis: u64) -> f64 {
    use rayon::prelude::*;
    (0..rayon::current_num_threads())
        .into_par_iter()
        .map(|_| peak_gflops_for(path, millis))
        .sum()
}

/// The memory read bandwidth measured by [`read_bandwidth`], in GB/s.
#[derive(Clone, Copy, Debug)]
pub struct ReadBandwidth {
    /// The fastest pass: what the memory gave when nothing else competed for it.
    pub best_gbs: f64,
    /// The median pass: on a VM whose host is busy the passes of one probe can range over a
    /// factor of two (18–44 GB/s within 0.6 s on an AMD EPYC Zen 4 guest, 2026-12-03), so the
    /// best pass alone may say little about the bandwidth a longer job gets.
    pub median_gbs: f64,
}

/// Read bandwidth from main memory, with all rayon threads streaming their own part of a
/// `bytes`-sized buffer (make it far larger than the caches) in passes for about `millis`
/// milliseconds (at least one). This is the speed at which generation can read a model's
/// weights: each pass runs the dot product generation's linear layers run over their weights.
pub fn read_bandwidth(bytes: usize, millis: u64) -> ReadBandwidth {
    use rayon::prelude::*;
    let buf = vec![1.0f32; bytes / 4];
    let piece = (buf.len() / rayon::current_num_threads() / 16).max(1 << 14);
    let start = Instant::now();
    let mut passes = Vec::new();
    while passes.is_empty() || start.elapsed().as_millis() < millis as u128 {
        let t = Instant::now();
        let total: f32 = buf
            .par_chunks(piece)
            .map(|p| {
                wide(
                    #[inline(always)]
                    || serial_dot(p, p),
                )
            })
            .sum();
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(total);
        passes.push(4.0 * buf.len() as f64 / secs / 1e9);
    }
    passes.sort_by(f64::total_cmp);
    ReadBandwidth {
        best_gbs: passes[passes.len() - 1],
        median_gbs: passes[passes.len() / 2],
    }
}

/// Runs `iters` rounds of 12 independent vector FMAs; returns (FLOPs done, a value to keep).
fn fma_loop(iters: usize) -> (f64, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            let s = unsafe { x86::fma_avx512(iters) };
            return (iters as f64 * 12.0 * 16.0 * 2.0, s);
        }
        if is_x86_feature_detected!("fma") && is_x86_feature_detected!("avx") {
            // SAFETY: the CPU supports AVX and FMA (checked just above).
            let s = unsafe { x86::fma_avx2(iters) };
            return (iters as f64 * 12.0 * 8.0 * 2.0, s);
        }
    }
    // Portable fallback: scalar FMAs the compiler may or may not vectorise.
    let mut acc = [1.0f32; 12];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = a.mul_add(0.999_999, 1e-7);
        }
    }
    (iters as f64 * 12.0 * 2.0, acc.iter().sum())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    macro_rules! fma_kernel {
        ($name:ident, $feat:literal, $ty:ty, $set1:ident, $fmadd:ident, $add:ident, $cvt:expr) => {
            #[target_feature(enable = $feat)]
            pub unsafe fn $name(iters: usize) -> f32 {
                let x = $set1(0.999_999);
                let y = $set1(1e-7);
                let mut a: [$ty; 12] = [$set1(1.0); 12];
                for _ in 0..iters {
                    a[0] = $fmadd(a[0], x, y);
                    a[1] = $fmadd(a[1], x, y);
                    a[2] = $fmadd(a[2], x, y);
                    a[3] = $fmadd(a[3], x, y);
                    a[4] = $fmadd(a[4], x, y);
                    a[5] = $fmadd(a[5], x, y);
                    a[6] = $fmadd(a[6], x, y);
                    a[7] = $fmadd(a[7], x, y);
                    a[8] = $fmadd(a[8], x, y);
                    a[9] = $fmadd(a[9], x, y);
                    a[10] = $fmadd(a[10], x, y);
                    a[11] = $fmadd(a[11], x, y);
                }
                let mut s = a[0];
                for v in &a[1..] {
                    s = $add(s, *v);
                }
                $cvt(s)
            }
        };
    }

    fma_kernel!(
        fma_avx512,
        "avx512f",
        __m512,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        _mm512_add_ps,
        |s| _mm512_reduce_add_ps(s)
    );
    fma_kernel!(
        fma_avx2,
        "avx,fma",
        __m256,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        _mm256_add_ps,
        |s| _mm256_cvtss_f32(s)
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_is_positive() {
        assert!(super::peak_gflops_one_core(20) > 0.1);
    }

    #[test]
    fn bandwidth_is_positive_and_its_median_at_most_its_best() {
        let bw = super::read_bandwidth(1 << 22, 10);
        assert!(
            bw.median_gbs > 0.01 && bw.median_gbs <= bw.best_gbs,
            "{bw:?}"
        );
    }
}
