//! Layer kernels, forward + backward, at GPT-2 small sizes for 512 tokens (B·T): layer norm
//! and GELU on [512, 768] / [512, 3072], softmax–cross-entropy over the 50,257-wide vocabulary,
//! and the token embedding lookup. Throughput in elements processed.
//!
//! Runs with the allocator settings of the `scratchgpt` binary (`common::tune_allocator`).
//!
//! `cargo bench --bench layers`

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use tensor::{Rng, Tensor};

#[path = "common.rs"]
mod common;

fn main() {
    common::tune_allocator();
    common::print_paths();
    let mut c = Criterion::default().configure_from_args();
    let mut rng = Rng::seed(0);
    let n = 512;
    let x = Tensor::randn(&[n, 768], &mut rng).requires_grad();
    let w = Tensor::ones(&[768]).requires_grad();
    let b = Tensor::zeros(&[768]).requires_grad();
    let h = Tensor::randn(&[n, 3072], &mut rng).requires_grad();
    let logits = Tensor::randn(&[n, 50257], &mut rng).requires_grad();
    let targets: Vec<usize> = (0..n).map(|i| (i * 97) % 50257).collect();
    let table = Tensor::randn(&[50257, 768], &mut rng).requires_grad();
    let ids: Vec<usize> = (0..n).map(|i| (i * 131) % 50257).collect();
    let pools = common::pools();
    let mut bench = |name: &str, elems: usize, f: &(dyn Fn() + Sync)| {
        let mut g = c.benchmark_group(format!("layers/{name}"));
        g.throughput(Throughput::Elements(elems as u64));
        g.sample_size(20);
        g.measurement_time(Duration::from_secs(2));
        for (threads, pool) in &pools {
            g.bench_function(BenchmarkId::from_parameter(threads), |bch| {
                bch.iter(|| pool.install(f))
            });
        }
        g.finish();
    };
    bench("layer_norm_512x768", n * 768, &|| {
        x.layer_norm(&w, &b, 1e-5).sum_all().backward()
    });
    bench("gelu_512x3072", n * 3072, &|| h.gelu().sum_all().backward());
    bench("cross_entropy_512x50257", n * 50257, &|| {
        logits.cross_entropy(&targets).backward()
    });
    bench("embedding_512_of_50257x768", n * 768, &|| {
        table.index_select(0, &ids).sum_all().backward()
    });
    c.final_summary();
}
