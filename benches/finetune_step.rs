//! One classification fine-tuning step (forward, backward, AdamW) of GPT-2 small with a 2-class
//! head, batch 8 of 120 tokens (issue #13, book chapter 6 and appendix E), three ways:
//! - `last-block`: the last block, the final norm and the head train (the book's chapter 6);
//! - `all`: every parameter trains;
//! - `lora-r16`: LoRA adapters of rank 16 on every linear layer and the head (appendix E).
//!
//! Frozen parameters get no gradients, so the frozen runs must be markedly cheaper than `all`.
//! Reported in tokens per second (criterion's `elem/s`). Each step takes seconds: one sample
//! set per mode, on all cores.
//!
//! `cargo bench --bench finetune_step` (`-- lora` for one of them)

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use train::bench::{FinetuneMode, FinetuneStep};

#[path = "common.rs"]
mod common;

fn main() {
    common::tune_allocator();
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("finetune_step/gpt2-small B8 T120");
    g.throughput(Throughput::Elements(
        (FinetuneStep::BATCH * FinetuneStep::TOKENS) as u64,
    ));
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat); // ten steps, not criterion's 1 + 2 + … + 10
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(30));
    for mode in FinetuneMode::ALL {
        // one model at a time: GPT-2 small with AdamW's moments is 1.5 GB
        let mut step = FinetuneStep::new(mode);
        g.bench_function(BenchmarkId::from_parameter(mode.name()), |b| {
            b.iter(|| step.run())
        });
    }
    g.finish();
    c.final_summary();
}
