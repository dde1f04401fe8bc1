//! `scratchgpt bench`: this machine's speed in under a minute, without criterion — the CPU and
//! code paths in use (first line), the FMA peak, SGEMM on GPT-2 shapes as a share of it, fused causal attention, training steps of
//! three model sizes, and generation with the KV cache against the memory read bandwidth.
//! (`cargo bench` has the careful versions of each.) `benches/pytorch_reference.py` runs the
//! same jobs in PyTorch, for a comparison on the same machine.

use std::time::Instant;

use model::generate::{generate, GenerateOptions, Sampling};
use model::{Context, GptConfig, GptModel, Module};
use tensor::kernels::cpu::GemmPath;
use tensor::kernels::gemm::{gemm, MatRef};
use tensor::kernels::peak;
use tensor::{AdamW, Optimizer, Rng, Tensor};

use crate::data::{DataLoader, TokenWindows};
use crate::settings::TrainSettings;

/// The three training-step configurations of the performance targets, as (label, config,
/// batch size): tiny (vocab 256, context 128, width 128, 4 heads, 4 layers, batch 16), small
/// (vocab 50,257, context 256, width 256, 4 heads, 4 layers, batch 8) and GPT-2 small at
/// context 256, batch 2. Shared with `cargo bench --bench train_step`.
pub fn train_step_configs() -> Vec<(&'static str, GptConfig, usize)> {
    let base = GptConfig::gpt2_small();
    let with = |vocab_size, context_length, emb_dim, n_heads, n_layers| GptConfig {
        vocab_size,
        context_length,
        emb_dim,
        n_heads,
        n_layers,
        ..base.clone()
    };
    vec![
        (
            "train step tiny (V256 T128 C128 L4, B16)",
            with(256, 128, 128, 4, 4),
            16,
        ),
        (
            "train step small (V50257 T256 C256 L4, B8)",
            with(50257, 256, 256, 4, 4),
            8,
        ),
        (
            "train step gpt2-small (T256, B2)",
            with(50257, 256, 768, 12, 12),
            2,
        ),
    ]
}

/// Best of `reps` timings of `f`, in seconds.
fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Runs the benchmarks and prints one table.
pub fn run_bench() {
    println!("{}", tensor::kernels::describe());
    let threads = rayon::current_num_threads();
    let peak1 = peak::peak_gflops_one_core(300);
    let peak_all = peak::peak_gflops_all_cores(300);
    println!("threads: {threads} (set RAYON_NUM_THREADS to change)");
    println!("FMA peak: {peak1:.1} GFLOP/s per core, {peak_all:.1} GFLOP/s on {threads} threads");
    // SGEMM is compared with the peak of the vector width its path computes with
    let path = GemmPath::current();
    let gemm_peak = match path {
        GemmPath::Avx2 => {
            let p = peak::peak_gflops_all_cores_for(path, 300);
            println!("AVX2 FMA peak (the SGEMM path's width): {p:.1} GFLOP/s on {threads} threads");
            p
        }
        _ => peak_all,
    };
    println!();
    println!("{:<44} {:>12} {:>16}", "benchmark", "time", "throughput");

    let mut rng = Rng::seed(0);
    for (label, m, k, n) in [
        ("sgemm 512x768 @ 768x3072 (MLP up)", 512, 768, 3072),
        ("sgemm 512x768 @ 768x50257 (logits)", 512, 768, 50257),
    ] {
        let a: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
        let mut c = vec![0.0f32; m * n];
        let secs = best_of(3, || {
            gemm(
                m,
                k,
                n,
                1.0,
                MatRef::row_major(&a, 0, k),
                MatRef::row_major(&b, 0, n),
                0.0,
                &mut c,
            )
        });
        let gflops = 2.0 * (m * k * n) as f64 / secs / 1e9;
        println!(
            "{label:<44} {:>10.2}ms {:>9.1} GFLOP/s ({:.0}% of peak)",
            secs * 1e3,
            gflops,
            100.0 * gflops / gemm_peak
        );
    }

    for t in [256, 1024] {
        let (b, nh, hs) = (2, 12, 64);
        let [q, k, v] = [0, 1, 2].map(|_| Tensor::randn(&[b, nh, t, hs], &mut rng).requires_grad());
        let step = || {
            let y = Tensor::causal_attention(&q, &k, &v, 0.0, false, &mut Rng::seed(1));
            y.sum_all().backward();
        };
        step(); // warm up
        let secs = best_of(5, step);
        println!(
            "{:<44} {:>10.1}ms",
            format!("causal attention fwd+bwd B{b} NH{nh} T{t} HS{hs}"),
            secs * 1e3
        );
    }

    let base = GptConfig::gpt2_small();
    for ((label, cfg, batch), reps) in train_step_configs().into_iter().zip([5, 3, 2]) {
        let model = GptModel::new(&cfg, &Context::new(1)).expect("valid config");
        let mut opt = AdamW::new(model.parameters(), 4e-4, 0.1);
        let n = batch * cfg.context_length;
        let ids: Vec<usize> = (0..n).map(|_| rng.below(cfg.vocab_size)).collect();
        let targets: Vec<usize> = (0..n).map(|_| rng.below(cfg.vocab_size)).collect();
        let mut step = || {
            opt.zero_grad();
            model
                .forward(&ids, batch)
                .cross_entropy(&targets)
                .backward();
            opt.step();
        };
        step(); // warm up
        let secs = best_of(reps, &mut step);
        println!(
            "{label:<44} {:>10.1}ms {:>9.0} tokens/s",
            secs * 1e3,
            n as f64 / secs
        );
        if cfg.vocab_size == 256 {
            let own = loop_overhead(&model, &cfg, batch);
            println!(
                "{:<44} {:>10.2}ms ({:.1}% of the tiny step)",
                "training loop's own work per tiny step",
                own * 1e3,
                100.0 * own / secs
            );
        }
    }

    let model = GptModel::new(
        &GptConfig {
            tie_weights: true,
            ..base
        },
        &Context::new(1),
    )
    .expect("valid config");
    model.eval();
    const NEW_TOKENS: usize = 64;
    let opts = GenerateOptions {
        max_new_tokens: NEW_TOKENS,
        sampling: Sampling::greedy(),
        eos_id: None,
        use_cache: true,
        id_limit: None,
    };
    let secs = best_of(3, || {
        generate(
            &model,
            &[15496, 11, 314, 716],
            &opts,
            &mut Rng::seed(0),
            |_| {},
        );
    });
    // Each new token reads every weight once, except the position table (one row of it).
    let weights_read = (model.num_parameters() - (base.context_length - 1) * base.emb_dim) * 4;
    let bandwidth = peak::read_bandwidth(weights_read, 600);
    let tps = NEW_TOKENS as f64 / secs;
    let read_gbs = tps * weights_read as f64 / 1e9;
    println!(
        "{:<44} {:>10.1}ms {:>9.1} tokens/s ({:.1} GB/s of weights read: {:.0}% of the {:.1} GB/s read bandwidth; median pass {:.1} GB/s)",
        format!("generate gpt2-small, KV cache, {NEW_TOKENS} tokens"),
        secs * 1e3,
        tps,
        read_gbs,
        100.0 * read_gbs / bandwidth.best_gbs,
        bandwidth.best_gbs,
        bandwidth.median_gbs,
    );
    bench_finetune_steps();
}

/// What `scratchgpt train` does per step besides the model's forward, backward and AdamW step
/// (which the row above times): cut the batch's windows out of the data in a shuffled order,
/// compute the gradients' global norm and the clipping factor, and look up the learning rate. Best of
/// 20, in seconds; `model` must hold gradients.
fn loop_overhead(model: &GptModel, cfg: &GptConfig, batch: usize) -> f64 {
    let mut rng = Rng::seed(2);
    let t = cfg.context_length;
    let ids: Vec<usize> = (0..200 * batch * t)
        .map(|_| rng.below(cfg.vocab_size))
        .collect();
    let windows = TokenWindows::new(ids, t, t).expect("enough tokens");
    let loader = DataLoader::new(windows, batch, true, true);
    let order = loader.epoch_order(&mut rng);
    let params = model.parameters();
    let settings = TrainSettings::preset("quickstart").expect("preset exists");
    let mut b = 0;
    best_of(20, || {
        let x = loader
            .batch(&order, b % loader.num_batches())
            .expect("in memory");
        std::hint::black_box(&x);
        let _ = crate::trainer::clip_scale(&params, Some(1.0));
        std::hint::black_box(settings.lr_at(b, 1000));
        b += 1;
    })
}

/// What trains in [`FinetuneStep`]: the three fine-tuning strategies of issue #13.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinetuneMode {
    /// The last transformer block, the final norm and the head (the book's chapter 6).
    LastBlock,
    /// Every parameter.
    All,
    /// LoRA adapters of rank 16, alpha 16, on every linear layer and the head (appendix E).
    Lora16,
}

impl FinetuneMode {
    pub const ALL: [FinetuneMode; 3] = [
        FinetuneMode::LastBlock,
        FinetuneMode::All,
        FinetuneMode::Lora16,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FinetuneMode::LastBlock => "last-block",
            FinetuneMode::All => "all",
            FinetuneMode::Lora16 => "lora-r16",
        }
    }
}

/// One classification fine-tuning step (forward, backward, AdamW) of GPT-2 small with a 2-class
/// head, batch 8 of 120 tokens, read at the last position: the measurement of issue #13.
/// Frozen parameters get no gradient, so backward stops at the first trainable layer (with
/// LoRA every block has adapters: backward runs through all of them, but computes no gradient
/// for any base weight). Shared with `cargo bench --bench finetune_step`.
pub struct FinetuneStep {
    pub classifier: model::classifier::Classifier,
    pub opt: AdamW,
    ids: Vec<usize>,
    lengths: Vec<usize>,
    classes: Vec<usize>,
}

impl FinetuneStep {
    pub const BATCH: usize = 8;
    pub const TOKENS: usize = 120;

    /// GPT-2 small as loaded from OpenAI's weights (QKV bias, tied head; random values here).
    pub fn new(mode: FinetuneMode) -> FinetuneStep {
        use model::classifier::{Classifier, Pool, Trainable};
        use model::lora::{add_lora, LoraConfig};
        let cfg = GptConfig {
            qkv_bias: true,
            tie_weights: true,
            ..GptConfig::gpt2_small()
        };
        let ctx = Context::new(123);
        let mut gpt = GptModel::new(&cfg, &ctx).expect("valid config");
        gpt.set_dropout(0.0);
        let mut classifier = Classifier::new(gpt, 2, Pool::Last, &ctx);
        match mode {
            FinetuneMode::LastBlock => classifier.set_trainable(Trainable::LastBlocks(1)),
            FinetuneMode::All => classifier.set_trainable(Trainable::All),
            FinetuneMode::Lora16 => {
                add_lora(&mut classifier, &LoraConfig::new(16), &ctx);
            }
        }
        let params = classifier
            .trainable_parameters()
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        let opt = AdamW::new(params, 5e-5, 0.1);
        let mut rng = Rng::seed(1);
        let n = Self::BATCH * Self::TOKENS;
        FinetuneStep {
            ids: (0..n).map(|_| rng.below(cfg.vocab_size)).collect(),
            lengths: vec![Self::TOKENS; Self::BATCH],
            classes: (0..Self::BATCH).map(|_| rng.below(2)).collect(),
            classifier,
            opt,
        }
    }

    pub fn run(&mut self) {
        self.opt.zero_grad();
        self.classifier
            .forward(&self.ids, &self.lengths)
            .cross_entropy(&self.classes)
            .backward();
        self.opt.step();
    }
}

/// The rows of [`run_bench`] for [`FinetuneStep`]: each mode's step time and its ratio to
/// training everything.
fn bench_finetune_steps() {
    let mut all_secs = None;
    let mut rows = Vec::new();
    // "all" first, so every row can state its ratio to it
    for mode in [
        FinetuneMode::All,
        FinetuneMode::LastBlock,
        FinetuneMode::Lora16,
    ] {
        let mut step = FinetuneStep::new(mode);
        let trainable = step.classifier.num_trainable_parameters();
        step.run(); // warm up
        let secs = best_of(2, || step.run());
        drop(step);
        let all = *all_secs.get_or_insert(secs);
        rows.push((mode, trainable, secs, secs / all));
    }
    rows.sort_by_key(|r| FinetuneMode::ALL.iter().position(|m| *m == r.0));
    for (mode, trainable, secs, ratio) in rows {
        println!(
            "{:<44} {:>10.1}ms {:>9.2}x of all ({trainable} trainable)",
            format!("finetune gpt2-small B8 T120 {}", mode.name()),
            secs * 1e3,
            ratio,
        );
    }
}
