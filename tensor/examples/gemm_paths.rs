//! Every SGEMM path this CPU has, on the GEMMs of a GPT-2 small training step (B·T = 512
//! rows), forward and backward, as GFLOP/s and the share of the FMA peak of the matching
//! width, on 1 and 2 threads. A quick best-of-N timing for tuning; `cargo bench --bench
//! matmul` is the careful version.
//!
//! `cargo run --release -p scratchgpt-tensor --example gemm_paths [reps] [threads] [tiny]` (all
//! paths; `tiny`: the tiny configuration's shapes), or with `SCRATCHGPT_GEMM=avx2` (one).

use std::time::Instant;

use scratchgpt_tensor::kernels::cpu::GemmPath;
use scratchgpt_tensor::kernels::gemm::{gemm_on, MatRef};
use scratchgpt_tensor::kernels::{describe, peak};
use scratchgpt_tensor::Rng;

fn main() {
    println!("{}", describe());
    let reps: usize = std::env::args().nth(1).map_or(5, |s| s.parse().unwrap());
    // thread counts: 1 and 2, or the comma-separated list of the second argument
    let threads = std::env::args().nth(2).unwrap_or("1,2".into());
    let pools: Vec<_> = threads
        .split(',')
        .map(|t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t.parse().unwrap())
                .build()
                .unwrap()
        })
        .collect();
    let mut rng = Rng::seed(0);
    // the third argument `tiny`: the shapes of the tiny configuration's step (2,048 rows of
    // width 128, vocabulary 256) instead of GPT-2 small's (512 rows of width 768)
    let tiny = std::env::args().nth(3).is_some_and(|s| s == "tiny");
    let (rows, width, outs) = if tiny {
        (2048, 128, vec![128, 512, 256])
    } else {
        (512, 768, vec![768, 2304, 3072, 50257])
    };
    // (label, m, k, n, A transposed, B transposed), as the linear layer runs them with its
    // weight stored (out, in): y = x·Wᵀ, dx = dy·W, dW = dyᵀ·x
    let mut shapes = vec![];
    for n in outs {
        let (r, w) = (rows, width);
        shapes.push((format!("fwd {r}×{w} @ {w}×{n} (Bᵀ)"), r, w, n, false, true));
        shapes.push((format!("dx  {r}×{n} @ {n}×{w}"), r, n, w, false, false));
        shapes.push((format!("dW  {n}×{r} @ {r}×{w} (Aᵀ)"), n, r, w, true, false));
    }
    let n = 4 * width;
    shapes.push((
        format!("fwd {rows}×{width} @ {width}×{n} (row-major)"),
        rows,
        width,
        n,
        false,
        false,
    ));
    // all paths this CPU has, or only the one SCRATCHGPT_GEMM names
    let only = std::env::var("SCRATCHGPT_GEMM")
        .is_ok()
        .then(GemmPath::current);
    let paths = GemmPath::ALL
        .into_iter()
        .filter(|p| p.is_available() && only.is_none_or(|o| o == *p));
    for path in paths {
        let peaks: Vec<f64> = pools
            .iter()
            .map(|p| p.install(|| peak::peak_gflops_all_cores_for(path, 300)))
            .collect();
        println!(
            "\n{}: peak {peaks:.1?} GFLOP/s on {threads} threads",
            path.name()
        );
        for (label, m, k, n, ta, tb) in &shapes {
            let (m, k, n) = (*m, *k, *n);
            let a: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
            let am = if *ta {
                MatRef::row_major(&a, 0, m).t()
            } else {
                MatRef::row_major(&a, 0, k)
            };
            let bm = if *tb {
                MatRef::row_major(&b, 0, k).t()
            } else {
                MatRef::row_major(&b, 0, n)
            };
            let mut c = vec![0.0f32; m * n];
            let mut line = format!("  {label:<36}");
            for (pool, peak) in pools.iter().zip(&peaks) {
                let secs = (0..reps)
                    .map(|_| {
                        let t = Instant::now();
                        pool.install(|| gemm_on(path, m, k, n, 1.0, am, bm, 0.0, &mut c));
                        t.elapsed().as_secs_f64()
                    })
                    .fold(f64::INFINITY, f64::min);
                let gflops = 2.0 * (m * k * n) as f64 / secs / 1e9;
                line += &format!(" {gflops:7.1} ({:3.0}%)", 100.0 * gflops / peak);
            }
            println!("{line}");
        }
    }
}
