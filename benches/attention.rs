//! Causal multi-head attention, forward + backward: the fused kernel against the composed
//! textbook ops, batch 2, 12 heads, head size 64, T = 256 and 1024. Throughput is reported in
//! FLOPs of the four attention matmuls (forward QKᵀ and PV, backward ×2), so `elem/s` reads as
//! FLOP/s at SGEMM-equivalent work.
//!
//! Runs with the allocator setting of the `scratchgpt` binary (`common::tune_allocator`).
//!
//! `cargo bench --bench attention`

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use tensor::{Rng, Tensor};

#[path = "common.rs"]
mod common;

fn composed(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    let t = q.size(-2);
    let mask: Vec<f32> = (0..t * t)
        .map(|x| ((x % t) > (x / t)) as u8 as f32)
        .collect();
    let scores = q
        .matmul(&k.transpose(-2, -1))
        .mul_scalar(1.0 / (q.size(-1) as f32).sqrt());
    scores
        .masked_fill(&Tensor::from_vec(mask, &[t, t]), f32::NEG_INFINITY)
        .softmax(-1)
        .matmul(v)
}

fn main() {
    common::print_paths();
    common::tune_allocator();
    let mut c = Criterion::default().configure_from_args();
    let (b, nh, hs) = (2, 12, 64);
    for t in [256, 1024] {
        let mut rng = Rng::seed(0);
        let [q, k, v] = [0, 1, 2].map(|_| Tensor::randn(&[b, nh, t, hs], &mut rng).requires_grad());
        // forward: QKᵀ and PV, 2·T·T·HS each; backward: four products of the same size
        let flops = (b * nh) as u64 * 6 * 2 * (t * t * hs) as u64;
        let mut g = c.benchmark_group(format!("attention_fwd_bwd/T{t}"));
        g.throughput(Throughput::Elements(flops));
        g.sample_size(10);
        g.measurement_time(Duration::from_secs(if t > 512 { 8 } else { 3 }));
        for (name, pool) in common::pools() {
            g.bench_function(BenchmarkId::new("fused", &name), |bch| {
                bch.iter(|| {
                    pool.install(|| {
                        let y = Tensor::causal_attention(&q, &k, &v, 0.0, false, &mut Rng::seed(1));
                        y.sum_all().backward();
                    })
                })
            });
            g.bench_function(BenchmarkId::new("composed", &name), |bch| {
                bch.iter(|| pool.install(|| composed(&q, &k, &v).sum_all().backward()))
            });
        }
        g.finish();
    }
    c.final_summary();
}
