//! Causal attention forward + backward against the context length T (issue #15,
//! `scratchgpt bench context` is the quick version): GPT-2 small's 12 heads of size 64,
//! batch 1, T = 128 … 2048 for the fused kernel and T = 128 … 1024 for the composed ops (whose
//! T×T intermediates make each point slow and large). Before timing, each point's peak heap
//! bytes beyond its inputs are measured with the engine's allocation counter, installed as
//! every bench's allocator (`common.rs`), and printed.
//!
//! Throughput is in FLOPs of the attention products over the causal half (forward QKᵀ and PV,
//! backward four more of the same size: 6 products of T·(T+1)/2·HS multiply-adds, 2 FLOPs
//! each, per head), so `elem/s` reads as FLOP/s.
//!
//! `cargo bench --bench context`

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use tensor::alloc_counter;
use tensor::{Rng, Tensor};
use train::context_bench::{attention_step, Path};

#[path = "common.rs"]
mod common;

fn main() {
    common::print_paths();
    common::tune_allocator();
    alloc_counter::mark_installed();
    let mut c = Criterion::default().configure_from_args();
    let (nh, hs) = (12, 64);
    for t in [128usize, 256, 512, 1024, 2048] {
        let mut rng = Rng::seed(0);
        let [q, k, v] = [0, 1, 2].map(|_| Tensor::randn(&[1, nh, t, hs], &mut rng).requires_grad());
        let flops = nh as u64 * 6 * (t * (t + 1) / 2 * hs) as u64 * 2;
        let mut g = c.benchmark_group(format!("context/T{t}"));
        g.throughput(Throughput::Elements(flops));
        g.sample_size(10);
        g.measurement_time(Duration::from_secs(if t >= 1024 { 6 } else { 2 }));
        let paths: &[(Path, &str)] = if t <= 1024 {
            &[(Path::Fused, "fused"), (Path::Composed, "composed")]
        } else {
            &[(Path::Fused, "fused")]
        };
        for &(path, name) in paths {
            let ((), peak) = alloc_counter::peak_during(|| attention_step(path, &q, &k, &v));
            println!(
                "context/T{t}/{name}: peak allocated {:.1} MB",
                peak as f64 / 1e6
            );
            g.bench_function(BenchmarkId::new(name, t), |b| {
                b.iter(|| {
                    attention_step(path, &q, &k, &v);
                    [&q, &k, &v].iter().for_each(|x| x.zero_grad());
                })
            });
        }
        g.finish();
    }
    c.final_summary();
}
