//! Prints this machine's measured peak f32 FLOP/s (FMA loop), one core and all cores.
//! `cargo run --release -p scratchgpt-tensor --example peak_flops`
use scratchgpt_tensor::kernels::peak;

fn main() {
    println!(
        "peak, 1 core : {:6.1} GFLOP/s",
        peak::peak_gflops_one_core(500)
    );
    if let Some(p) = peak::peak_gflops_avx2_one_core(500) {
        println!("  (AVX2 only : {p:6.1} GFLOP/s)");
    }
    println!(
        "peak, {} threads: {:6.1} GFLOP/s",
        rayon::current_num_threads(),
        peak::peak_gflops_all_cores(500)
    );
}
