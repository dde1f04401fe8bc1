//! SGEMM throughput on every GEMM path this CPU has (our AVX-512 and AVX2 kernels,
//! `matrixmultiply`): square sizes 128–2048 and the GEMMs of a GPT-2 small training step
//! (B·T = 512 rows: the forward products and, for the MLP-up and logits layers, the two
//! backward ones with a transposed operand), on 1 thread and on all threads.
//!
//! Criterion's "elements" throughput is set to the FLOP count (2·m·k·n), so its `elem/s`
//! column reads as FLOP/s. After the runs, a table with GFLOP/s and the share of this
//! machine's measured FMA peak *of the width the path computes with* is printed (AVX2: 8
//! lanes; the others: the widest the CPU has).
//!
//! `cargo bench --bench matmul` (all), `cargo bench --bench matmul -- gpt2` (a subset), or
//! with `SCRATCHGPT_GEMM=avx2` (one path).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use tensor::kernels::cpu::GemmPath;
use tensor::kernels::gemm::{gemm_on, MatRef};
use tensor::kernels::peak;
use tensor::Rng;

#[path = "common.rs"]
mod common;

/// One product: C (m×n) = A (m×k) · B (k×n), A or B possibly stored transposed.
struct Shape {
    label: String,
    m: usize,
    k: usize,
    n: usize,
    a_transposed: bool,
    b_transposed: bool,
}

fn shapes() -> Vec<Shape> {
    let shape = |label: String, m, k, n, a_transposed, b_transposed| Shape {
        label,
        m,
        k,
        n,
        a_transposed,
        b_transposed,
    };
    let mut v: Vec<_> = [128, 256, 512, 1024, 2048]
        .iter()
        .map(|&s| shape(format!("square_{s}"), s, s, s, false, false))
        .collect();
    for (name, n) in [
        ("attn_proj", 768),
        ("qkv", 2304),
        ("mlp_up", 3072),
        ("logits", 50257),
    ] {
        v.push(shape(
            format!("gpt2_512x768x{n}_{name}"),
            512,
            768,
            n,
            false,
            false,
        ));
    }
    // The linear layer's backward with its weight W stored (out, in): dx = dy·W (row-major),
    // dW = dyᵀ·x (A transposed).
    for (name, n) in [("mlp_up", 3072), ("logits", 50257)] {
        v.push(shape(
            format!("gpt2_dx_512x{n}x768_{name}"),
            512,
            n,
            768,
            false,
            false,
        ));
        v.push(shape(
            format!("gpt2_dW_{n}x512x768_{name}_At"),
            n,
            512,
            768,
            true,
            false,
        ));
    }
    v
}

fn random(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| rng.normal()).collect()
}

/// The paths to measure: all this CPU has, or only the one `SCRATCHGPT_GEMM` names.
fn paths() -> Vec<GemmPath> {
    let only = std::env::var_os("SCRATCHGPT_GEMM").map(|_| GemmPath::current());
    GemmPath::ALL
        .into_iter()
        .filter(|p| p.is_available() && only.is_none_or(|o| o == *p))
        .collect()
}

fn bench(c: &mut Criterion, pools: &[(String, rayon::ThreadPool)]) {
    let mut rng = Rng::seed(0);
    for s in shapes() {
        let (m, k, n) = (s.m, s.k, s.n);
        let a = random(m * k, &mut rng);
        let b = random(k * n, &mut rng);
        let am = if s.a_transposed {
            MatRef::row_major(&a, 0, m).t()
        } else {
            MatRef::row_major(&a, 0, k)
        };
        let bm = if s.b_transposed {
            MatRef::row_major(&b, 0, k).t()
        } else {
            MatRef::row_major(&b, 0, n)
        };
        let mut out = vec![0.0f32; m * n];
        let flops = 2.0 * (m * k * n) as f64;
        let mut group = c.benchmark_group(format!("sgemm/{}", s.label));
        group.throughput(Throughput::Elements(flops as u64));
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(300));
        group.measurement_time(Duration::from_secs_f64(
            (flops / 50e9 * 15.0).clamp(1.0, 8.0),
        ));
        for path in paths() {
            for (threads, pool) in pools {
                let id = BenchmarkId::from_parameter(format!("{}-{threads}", path.name()));
                group.bench_function(id, |bch| {
                    bch.iter(|| {
                        pool.install(|| {
                            gemm_on(path, m, k, n, 1.0, am, bm, 0.0, black_box(&mut out))
                        })
                    })
                });
            }
        }
        group.finish();
    }
}

/// Mean time in seconds of one criterion benchmark, read from its saved estimates.
fn mean_seconds(dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("new/estimates.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(json["mean"]["point_estimate"].as_f64()? / 1e9)
}

fn main() {
    common::print_paths();
    let pools = common::pools();

    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &pools);
    c.final_summary();

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/criterion");
    let root = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| Path::new(&d).join("criterion"))
        .unwrap_or(root);
    for path in paths() {
        // the FMA peak of this path's vector width, per thread count
        let peaks: Vec<f64> = pools
            .iter()
            .map(|(_, pool)| pool.install(|| peak::peak_gflops_all_cores_for(path, 300)))
            .collect();
        println!(
            "\n{}: measured FMA peak {:.1} GFLOP/s on 1 thread, {:.1} on {} threads",
            tensor::kernels::cpu::describe_gemm(path),
            peaks[0],
            peaks[peaks.len() - 1],
            rayon::current_num_threads()
        );
        println!(
            "{:<48} {:>8} {:>10} {:>8}",
            "shape (m×k×n)", "threads", "GFLOP/s", "% peak"
        );
        for s in shapes() {
            for ((threads, _), peak) in pools.iter().zip(&peaks) {
                let dir = root
                    .join(format!("sgemm_{}", s.label))
                    .join(format!("{}-{threads}", path.name()));
                if let Some(secs) = mean_seconds(&dir) {
                    let gflops = 2.0 * (s.m * s.k * s.n) as f64 / secs / 1e9;
                    println!(
                        "{:<48} {:>8} {:>10.1} {:>7.0}%",
                        format!("{} ({}×{}×{})", s.label, s.m, s.k, s.n),
                        threads,
                        gflops,
                        100.0 * gflops / peak
                    );
                }
            }
        }
    }
}
