//! Generation speed of GPT-2 small (random weights, greedy), 200 new tokens after a 4-token
//! prompt, with and without the KV cache, on all threads. Throughput in new tokens per second.
//!
//! `cargo bench --bench generate`

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use model::generate::{generate, GenerateOptions, Sampling};
use model::{Context, GptConfig, GptModel};
use tensor::Rng;

#[path = "common.rs"]
mod common;

fn main() {
    common::print_paths();
    common::tune_allocator();
    let mut c = Criterion::default().configure_from_args();
    let model = GptModel::new(
        &GptConfig {
            tie_weights: true,
            ..GptConfig::gpt2_small()
        },
        &Context::new(123),
    )
    .unwrap();
    model.eval();
    let new_tokens = 200;
    let mut g = c.benchmark_group("generate/gpt2-small_200_tokens");
    g.throughput(Throughput::Elements(new_tokens as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(60));
    for use_cache in [true, false] {
        let opts = GenerateOptions {
            max_new_tokens: new_tokens,
            sampling: Sampling::greedy(),
            eos_id: None,
            use_cache,
            id_limit: None,
        };
        let name = if use_cache { "kv_cache" } else { "no_cache" };
        g.bench_function(BenchmarkId::from_parameter(name), |bch| {
            bch.iter(|| {
                generate(
                    &model,
                    &[15496, 11, 314, 716],
                    &opts,
                    &mut Rng::seed(0),
                    |_| {},
                )
            })
        });
    }
    g.finish();
    c.final_summary();
}
