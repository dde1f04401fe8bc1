//! SGEMM throughput: square sizes 128–2048 and the GEMMs of a GPT-2 small training step
//! (B·T = 512 rows), on 1 thread and on all threads.
//!
//! Criterion's "elements" throughput is set to the FLOP count (2·m·k·n), so its `elem/s`
//! column reads as FLOP/s. After the runs, a table with GFLOP/s and the share of this
//! machine's measured FMA peak is printed.
//!
//! `cargo bench --bench matmul` (all), or `cargo bench --bench matmul -- gpt2` (a subset).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use tensor::kernels::gemm::{gemm, MatRef};
use tensor::kernels::peak;
use tensor::Rng;

/// (label, m, k, n)
fn shapes() -> Vec<(String, usize, usize, usize)> {
    let mut v: Vec<_> = [128, 256, 512, 1024, 2048]
        .iter()
        .map(|&s| (format!("square_{s}"), s, s, s))
        .collect();
    for (name, n) in [
        ("attn_proj", 768),
        ("qkv", 2304),
        ("mlp_up", 3072),
        ("logits", 50257),
    ] {
        v.push((format!("gpt2_512x768x{n}_{name}"), 512, 768, n));
    }
    v
}

fn random(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| rng.normal()).collect()
}

fn bench(c: &mut Criterion, pools: &[(String, rayon::ThreadPool)]) {
    let mut rng = Rng::seed(0);
    for (label, m, k, n) in shapes() {
        let a = random(m * k, &mut rng);
        let b = random(k * n, &mut rng);
        let mut out = vec![0.0f32; m * n];
        let flops = 2.0 * (m * k * n) as f64;
        let mut group = c.benchmark_group(format!("sgemm/{label}"));
        group.throughput(Throughput::Elements(flops as u64));
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(300));
        group.measurement_time(Duration::from_secs_f64(
            (flops / 50e9 * 15.0).clamp(1.0, 8.0),
        ));
        for (threads, pool) in pools {
            group.bench_function(BenchmarkId::from_parameter(threads), |bch| {
                bch.iter(|| {
                    pool.install(|| {
                        gemm(
                            m,
                            k,
                            n,
                            1.0,
                            MatRef::row_major(&a, 0, k),
                            MatRef::row_major(&b, 0, n),
                            0.0,
                            black_box(&mut out),
                        )
                    })
                })
            });
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
    let all = rayon::current_num_threads();
    let pools: Vec<(String, rayon::ThreadPool)> = [1, all]
        .iter()
        .filter(|&&t| t == 1 || all > 1)
        .map(|&t| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap();
            (format!("{t}thread"), pool)
        })
        .collect();

    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &pools);
    c.final_summary();

    let peak1 = peak::peak_gflops_one_core(300);
    let peak_all = pools
        .last()
        .unwrap()
        .1
        .install(|| peak::peak_gflops_all_cores(300));
    println!(
        "\nMeasured peak (FMA loop): {peak1:.1} GFLOP/s on 1 core, {peak_all:.1} on {all} threads"
    );
    println!(
        "{:<44} {:>8} {:>10} {:>8}",
        "shape (m×k×n)", "threads", "GFLOP/s", "% peak"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/criterion");
    let root = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| Path::new(&d).join("criterion"))
        .unwrap_or(root);
    for (label, m, k, n) in shapes() {
        for (i, (threads, _)) in pools.iter().enumerate() {
            let dir = root.join(format!("sgemm_{label}")).join(threads);
            if let Some(secs) = mean_seconds(&dir) {
                let gflops = 2.0 * (m * k * n) as f64 / secs / 1e9;
                let peak = if i == 0 { peak1 } else { peak_all };
                println!(
                    "{:<44} {:>8} {:>10.1} {:>7.0}%",
                    format!("{label} ({m}×{k}×{n})"),
                    threads,
                    gflops,
                    100.0 * gflops / peak
                );
            }
        }
    }
}
