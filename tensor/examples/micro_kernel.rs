//! The SGEMM micro-kernels alone: one packed B panel and A strip that stay in cache, C in
//! cache, the tile called over and over, as GFLOP/s and share of the FMA peak of the
//! matching width (one core). Where a whole product is slower than this, the blocking or the
//! packing is to blame; where this is below the peak, the kernel's loop is.
//!
//! `cargo run --release -p scratchgpt-tensor --example micro_kernel [kc]`; with `LD=768` the A
//! strip is read in place as 12 (or 6) rows of a row-major matrix 768 floats wide, as the GEMM
//! reads a row-major A, instead of packed.

#[cfg(target_arch = "x86_64")]
fn main() {
    use scratchgpt_tensor::kernels::gemm_avx2::Avx2;
    use scratchgpt_tensor::kernels::gemm_avx512::Avx512;
    use scratchgpt_tensor::kernels::packed_gemm::MicroKernel;
    use scratchgpt_tensor::kernels::{describe, peak};
    println!("{}", describe());
    let kc: usize = std::env::args().nth(1).map_or(256, |s| s.parse().unwrap());
    let peak512 = peak::peak_gflops_one_core(300);
    let peak256 = peak::peak_gflops_avx2_one_core(300).unwrap_or(0.0);
    if <Avx512 as MicroKernel>::available() {
        run::<Avx512>("avx512", kc, peak512);
    }
    if <Avx2 as MicroKernel>::available() {
        run::<Avx2>("avx2", kc, peak256);
    }
}

/// Times `K::tile` on one packed A strip and one B panel of depth `kc` (both in L1/L2), C a
/// tile-sized block updated in place, best of several rounds.
#[cfg(target_arch = "x86_64")]
fn run<K: scratchgpt_tensor::kernels::packed_gemm::MicroKernel>(name: &str, kc: usize, peak: f64) {
    use std::time::Instant;
    let (mr, nr) = (K::MR, K::NR);
    // A either packed (a_rs 1, a_cs MR) or MR rows of a row-major matrix read in place
    // (a_rs = LD, a_cs 1), as the GEMM reads a row-major A
    let ld: usize = std::env::var("LD").map_or(0, |s| s.parse().unwrap());
    let (a_rs, a_cs) = if ld > 0 { (ld, 1) } else { (1, mr) };
    let a: Vec<f32> = (0..mr * kc.max(ld))
        .map(|i| (i % 7) as f32 * 0.01)
        .collect();
    // the packed B panel must be 64-byte aligned: over-allocate and offset
    let mut b_store = vec![0.0f32; nr * kc + 16];
    let off = b_store.as_ptr().align_offset(64);
    for (i, v) in b_store[off..off + nr * kc].iter_mut().enumerate() {
        *v = (i % 5) as f32 * 0.01;
    }
    let mut c = vec![0.0f32; mr * nr];
    let calls = (1usize << 27) / (mr * nr * kc).max(1);
    let mut best = 0.0f64;
    for _ in 0..15 {
        let t = Instant::now();
        for _ in 0..calls {
            // SAFETY: the kernel is available (checked by the caller); A holds MR×kc floats
            // packed (a_rs 1, a_cs MR), B NR·kc aligned floats, C an MR×NR block.
            unsafe {
                K::tile(
                    kc,
                    a.as_ptr(),
                    a_rs,
                    a_cs,
                    b_store.as_ptr().add(off),
                    c.as_mut_ptr(),
                    nr,
                    1.0,
                    1.0,
                )
            };
        }
        let secs = t.elapsed().as_secs_f64();
        best = best.max((2 * mr * nr * kc * calls) as f64 / secs / 1e9);
    }
    std::hint::black_box(&c);
    println!(
        "{name:7} {mr}×{nr} kc {kc}: {best:6.1} GFLOP/s = {:4.1}% of one core's peak ({peak:.1})",
        100.0 * best / peak
    );
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("no micro-kernels of this project's own on this architecture");
}
