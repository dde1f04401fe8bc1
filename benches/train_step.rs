//! One training step (forward, backward, AdamW) of three configurations, reported in tokens per
//! second (criterion's `elem/s`):
//! - tiny: vocab 256, context 128, width 128, 4 heads, 4 layers, batch 16;
//! - small: vocab 50,257, context 256, width 256, 4 heads, 4 layers, batch 8;
//! - gpt2-small: GPT-2 small's shape with context 256, batch 2 (the book's chapter-5 run).
//!
//! `cargo bench --bench train_step` (`-- tiny` for one of them)

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use model::{Context, GptModel, Module};
use tensor::{AdamW, Optimizer, Rng};

#[path = "common.rs"]
mod common;

fn main() {
    common::print_paths();
    common::tune_allocator();
    let mut c = Criterion::default().configure_from_args();
    for ((label, cfg, batch), name) in
        train::bench::train_step_configs()
            .into_iter()
            .zip(["tiny", "small", "gpt2-small"])
    {
        let _ = label;
        let model = GptModel::new(&cfg, &Context::new(123)).unwrap();
        let mut opt = AdamW::new(model.parameters(), 4e-4, 0.1);
        let mut rng = Rng::seed(1);
        let n = batch * cfg.context_length;
        let ids: Vec<usize> = (0..n).map(|_| rng.below(cfg.vocab_size)).collect();
        let targets: Vec<usize> = (0..n).map(|_| rng.below(cfg.vocab_size)).collect();
        let mut g = c.benchmark_group(format!("train_step/{name}"));
        g.throughput(Throughput::Elements(n as u64));
        g.sample_size(10);
        g.measurement_time(Duration::from_secs(if name == "gpt2-small" {
            40
        } else {
            5
        }));
        for (threads, pool) in common::pools() {
            g.bench_function(BenchmarkId::from_parameter(&threads), |bch| {
                bch.iter(|| {
                    pool.install(|| {
                        opt.zero_grad();
                        model
                            .forward(&ids, batch)
                            .cross_entropy(&targets)
                            .backward();
                        opt.step();
                    })
                })
            });
        }
        g.finish();
    }
    c.final_summary();
}
