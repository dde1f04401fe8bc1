//! `scratchgpt finetune classify`: classification fine-tuning (book chapter 6), assembled from
//! the shared parts: a checkpoint loaded as for generation, the classification data and task
//! ([`crate::classification`]), the run directory rules ([`crate::run_dir`]), and the shared
//! training loop ([`crate::trainer::train_loop`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Subcommand};
use model::classifier::{Classifier, Pool, Trainable};
use model::lora::{add_lora, LoraConfig};
use model::memory::MemoryEstimate;
use model::{Context, Module};
use serde_json::json;
use tensor::AdamW;

use crate::checkpoint::{self, write_moments, TrainerState, OPTIMIZER_FILE};
use crate::classification::{
    encode, labels_of, loss_and_accuracy, read_examples, write_classifier, Classification,
    ClassifierInfo, Columns, EncodedSet,
};
use crate::error::TrainError;
use crate::lora::{write_adapters, LoraArgs, LoraInfo};
use crate::memory::check_fits;
use crate::metrics::accuracy_plot_svg;
use crate::run_dir::{OutDir, RUNS_ROOT};
use crate::settings::TrainSettings;
use crate::trainer::Session;

/// A classification run's final accuracies (training, validation, test) and their plot.
pub const ACCURACY_FILE: &str = "accuracy.json";
pub const ACCURACY_PLOT: &str = "accuracy.svg";

#[derive(Subcommand, Debug)]
pub enum FinetuneCommand {
    /// Fine-tune a pretrained GPT to classify texts (book chapter 6): a new output head with one
    /// logit per label, trained on a labelled CSV or TSV file.
    #[command(after_help = crate::cli::EXIT_STATUSES)]
    Classify(Box<ClassifyTrainArgs>),
    /// Fine-tune a pretrained GPT to follow instructions (book chapter 7): the Alpaca prompt
    /// template, all weights trained, then responses to the test split.
    #[command(after_help = crate::cli::EXIT_STATUSES)]
    Instruct(Box<crate::commands::instruct::InstructTrainArgs>),
}

#[derive(Args, Debug)]
pub struct ClassifyTrainArgs {
    /// The pretrained model: a run directory, a checkpoint directory, a Hugging Face GPT-2
    /// directory, or a GPT-2 name (gpt2, gpt2-medium, …).
    #[arg(long, value_name = "DIR|NAME")]
    pub checkpoint: PathBuf,
    /// Training examples: a CSV file (or TSV, by its .tsv extension) with a header row.
    #[arg(long, value_name = "FILE")]
    pub train: PathBuf,
    /// Validation examples, evaluated during training (same columns).
    #[arg(long, value_name = "FILE")]
    pub val: PathBuf,
    /// Test examples, evaluated once at the end [default: none].
    #[arg(long, value_name = "FILE")]
    pub test: Option<PathBuf>,
    /// The column holding the texts.
    #[arg(long, default_value = "Text", value_name = "NAME")]
    pub text_column: String,
    /// The column holding the labels (any strings; class ids follow their sorted order).
    #[arg(long, default_value = "Label", value_name = "NAME")]
    pub label_column: String,
    /// Directory of this run [default: a new numbered directory runs/run-NNNN]; an existing
    /// run there is refused unless --force.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// With --out: replace the run in that directory (after the new run's first checkpoint).
    #[arg(long, requires = "out")]
    pub force: bool,
    /// Where the class is read: last (the padded sequence's last position, the book's choice),
    /// last-token-of-text (the text's own last token), mean (over the text's tokens) or first
    /// [default: last-token-of-text; last with --book-compat].
    #[arg(long, value_name = "POOL")]
    pub pool: Option<String>,
    /// What trains: head (only the new head), last-block (the last transformer block, the final
    /// layer norm and the head, as the book), last:K (the last K blocks, …) or all.
    #[arg(
        long,
        default_value = "last-block",
        value_name = "WHICH",
        conflicts_with = "lora"
    )]
    pub trainable: String,
    #[command(flatten)]
    pub lora: LoraArgs,
    /// Pad every text to this many tokens (longer ones are truncated) [default: the longest
    /// training text, at most the model's context].
    #[arg(long, value_name = "TOKENS")]
    pub max_length: Option<usize>,
    /// Peak learning rate of AdamW [default: 5e-5, the book's; 8e-4 with --lora and the
    /// alpha-over-rank scaling, the book repository's LoRA run].
    #[arg(long, value_name = "X")]
    pub lr: Option<f32>,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 0.1, value_name = "X")]
    pub weight_decay: f32,
    /// Passes over the training examples.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub epochs: usize,
    /// Stop after this many optimizer steps [default: no limit].
    #[arg(long, value_name = "N")]
    pub max_steps: Option<usize>,
    /// Examples per optimizer step (the last, incomplete batch of an epoch is dropped).
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub batch_size: usize,
    /// Compute each batch in N equal micro-batches whose gradients add up before the step
    /// (the memory of a batch N times smaller); must divide --batch-size.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub grad_accum: usize,
    /// Evaluate after the first step and then every N steps.
    #[arg(long, default_value_t = 50, value_name = "STEPS")]
    pub eval_freq: usize,
    /// Batches of training and of validation data per evaluation.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub eval_iter: usize,
    /// Dropout during fine-tuning (the book fine-tunes without).
    #[arg(
        long,
        default_value_t = 0.0,
        allow_negative_numbers = true,
        value_name = "P"
    )]
    pub dropout: f32,
    /// Seed of the new head's initial weights and of the shuffling.
    #[arg(long, default_value_t = 123, value_name = "N")]
    pub seed: u64,
    /// Draw random numbers as the book's PyTorch code does, and read the last position
    /// (--pool last) [default: off].
    #[arg(long)]
    pub book_compat: bool,
    /// Print only errors.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `finetune classify`; returns the exit status (0, or 130 when interrupted).
pub fn classify_command(a: &ClassifyTrainArgs) -> Result<i32, TrainError> {
    // ------------------------------------------------ everything given is checked first
    let pool = match &a.pool {
        Some(p) => Pool::parse(p)?,
        None if a.book_compat => Pool::Last,
        None => Pool::LastTokenOfText,
    };
    let trainable = Trainable::parse(&a.trainable)?;
    let lora = a.lora.config()?;
    crate::lora::refuse_as_base(&a.checkpoint)?;
    let settings = settings(a, lora.as_ref())?;
    let columns = Columns {
        text: a.text_column.clone(),
        label: a.label_column.clone(),
    };
    let train_rows = read_examples(&a.train, &columns)?;
    let val_rows = read_examples(&a.val, &columns)?;
    let test_rows = match &a.test {
        Some(p) => Some(read_examples(p, &columns)?),
        None => None,
    };
    let labels = labels_of(&train_rows, &a.train)?;
    let ctx = if a.book_compat {
        Context::book_compat(a.seed)
    } else {
        Context::new(a.seed)
    };
    let (mut gpt, tok) = checkpoint::load_for_inference(&a.checkpoint, &ctx)?;
    gpt.set_dropout(a.dropout);
    if let Trainable::LastBlocks(k) = trainable {
        let blocks = gpt.cfg.n_layers;
        if k > blocks {
            return Err(TrainError(format!(
                "--trainable last:{k}: the model has {blocks} transformer blocks; give at most last:{blocks}, or all"
            )));
        }
    }
    let pad_id = tok.end_of_text().unwrap_or(0);
    let context = gpt.cfg.context_length;
    if a.max_length == Some(0) {
        return Err(TrainError("--max-length must be at least 1".into()));
    }
    super::check_max_length(a.max_length, context)?;
    let quiet = a.quiet;
    let warn_truncated = |n: usize, file: &Path, len: usize| {
        if n > 0 && !quiet {
            eprintln!(
                "warning: {n} texts of {} are longer than {len} tokens and were truncated",
                file.display()
            );
        }
    };
    let (train_set, cut) = encode(
        &train_rows,
        &a.train,
        &labels,
        &tok,
        pad_id,
        a.max_length,
        context,
    )?;
    warn_truncated(cut, &a.train, train_set.max_length);
    let max_length = Some(train_set.max_length);
    let (val_set, cut) = encode(
        &val_rows, &a.val, &labels, &tok, pad_id, max_length, context,
    )?;
    warn_truncated(cut, &a.val, train_set.max_length);
    let test_set = match (&test_rows, &a.test) {
        (Some(rows), Some(path)) => {
            let (set, cut) = encode(rows, path, &labels, &tok, pad_id, max_length, context)?;
            warn_truncated(cut, path, train_set.max_length);
            Some(set)
        }
        _ => None,
    };
    if train_set.len() < a.batch_size {
        return Err(TrainError(format!(
            "{}: {} examples are fewer than one batch of {}: lower --batch-size",
            a.train.display(),
            train_set.len(),
            a.batch_size
        )));
    }

    // ------------------------------------------------ the model
    // the book calls torch.manual_seed(123) right before making the new head (and its LoRA
    // adapters), and again right before training: with --book-compat the head and the
    // shuffling draw from fresh generators as there (loading the base model drew for its
    // initial weights)
    if a.book_compat {
        *ctx.rng() = tensor::Rng::torch(a.seed);
    }
    let mut classifier = Classifier::new(gpt, labels.len(), pool, &ctx);
    let what_trains = match &lora {
        // appendix E: the head is created first, then everything is frozen and adapted
        Some(cfg) => {
            crate::lora::check_adapters(&mut classifier, cfg)?;
            add_lora(&mut classifier, cfg, &ctx);
            format!(
                "LoRA rank {}, alpha {}, scaling {}",
                cfg.rank,
                cfg.alpha,
                cfg.scaling.name()
            )
        }
        None => {
            classifier.set_trainable(trainable);
            trainable.to_string()
        }
    };
    if a.book_compat {
        *ctx.rng() = tensor::Rng::torch(a.seed);
    }
    let lora_info = lora.map(|cfg| LoraInfo::new(&cfg, &a.checkpoint));
    let trainable_params = classifier.trainable_parameters();
    let n_trainable: usize = trainable_params.iter().map(|(_, p)| p.numel()).sum();
    let need = MemoryEstimate::fine_tuning(
        &classifier.gpt.cfg,
        a.batch_size,
        train_set.max_length,
        n_trainable as u64,
        labels.len(),
    );
    check_fits(
        &need,
        "this fine-tuning run",
        "use a smaller model, --batch-size or --max-length",
    )?;
    let info = ClassifierInfo {
        labels: labels.clone(),
        pool: pool.name().to_string(),
        max_length: train_set.max_length,
        pad_id,
        trainable: match lora {
            Some(_) => "lora".to_string(),
            None => trainable.to_string(),
        },
    };
    let out = Arc::new(match &a.out {
        Some(dir) => OutDir::at(dir, a.force, false)?,
        None => OutDir::new_numbered(Path::new(RUNS_ROOT))?,
    });
    if !a.quiet {
        println!(
            "fine-tuning {} to classify {} ({}), writing to {}",
            a.checkpoint.display(),
            labels.join(" / "),
            a.train.display(),
            out.path.display()
        );
        println!(
            "model: {} parameters, {} trainable ({what_trains}), head {} → {}, pooling {}",
            classifier.num_parameters(),
            n_trainable,
            classifier.gpt.cfg.emb_dim,
            labels.len(),
            pool.name()
        );
        println!("memory: {need} at batch {}", a.batch_size);
        println!(
            "data: {} training, {} validation{} examples, padded to {} tokens",
            train_set.len(),
            val_set.len(),
            test_set
                .as_ref()
                .map_or(String::new(), |t| format!(", {} test", t.len())),
            train_set.max_length
        );
    }

    // ------------------------------------------------ the shared loop
    let names: Vec<String> = trainable_params.iter().map(|(n, _)| n.clone()).collect();
    let opt = AdamW::new(
        trainable_params.into_iter().map(|(_, p)| p).collect(),
        settings.lr,
        settings.weight_decay,
    );
    let state = TrainerState {
        version: 1,
        settings,
        step: 0,
        epoch: 0,
        batch_in_epoch: 0,
        order: crate::data::EpochOrder::default(),
        rng: ctx.rng().state(),
        tokens_seen: 0,
        adam_t: 0,
        data_fingerprint: String::new(),
        history: Vec::new(),
        elapsed_secs: 0.0,
        data_files: Some(vec![a.train.clone(), a.val.clone()]),
    };
    let task = Classification {
        model: &classifier,
        train: train_set,
        val: val_set,
        batch_size: a.batch_size,
    };
    let out_dir = out.path.clone();
    let mut session = Session {
        opt,
        state,
        ctx: ctx.clone(),
        title: format!("fine-tuning a classifier ({})", labels.join(" / ")),
        started: Instant::now(),
        save: Box::new(|opt: &AdamW, state: &TrainerState| {
            checkpoint::save_with(&out_dir, &classifier.gpt, &tok, state, |dir| {
                write_moments(&dir.join(OPTIMIZER_FILE), &names, opt)?;
                if let Some(lora) = &lora_info {
                    write_adapters(dir, &classifier, lora)?;
                }
                write_classifier(dir, &classifier, &info)
            })
        }),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let summary = super::run_in(
        &out,
        &task,
        &mut session,
        vec![a.train.clone(), a.val.clone()],
        a.quiet,
        &stop,
    )?;
    if summary.interrupted {
        if !a.quiet {
            println!(
                "stopped after {}; checkpoint: {} (the accuracies on every set were not computed)",
                crate::counted(summary.steps, "step", "steps"),
                summary.checkpoint.display()
            );
        }
        return Ok(130);
    }

    // ------------------------------------------------ final accuracy on every set
    classifier.eval();
    let whole = |set: &EncodedSet| {
        let order: Vec<usize> = (0..set.len()).collect();
        loss_and_accuracy(&classifier, set, a.batch_size, &order, None).1
    };
    let (train_acc, val_acc) = (whole(&task.train), whole(&task.val));
    let test_acc = test_set.as_ref().map(whole);
    let mut results = json!({
        "train_accuracy": train_acc,
        "val_accuracy": val_acc,
        "steps": summary.steps,
        "labels": labels,
    });
    if let Some(t) = test_acc {
        results["test_accuracy"] = json!(t);
    }
    model::weights::write_atomically(
        &out.path.join(ACCURACY_FILE),
        &serde_json::to_vec_pretty(&results).expect("results serialise"),
    )?;
    model::weights::write_atomically(
        &out.path.join(ACCURACY_PLOT),
        accuracy_plot_svg(&summary.history, &session.title).as_bytes(),
    )?;
    if !a.quiet {
        let test = test_acc.map_or(String::new(), |t| {
            format!(" | Test accuracy: {:.2}%", 100.0 * t)
        });
        println!(
            "Training accuracy: {:.2}% | Validation accuracy: {:.2}%{test}",
            100.0 * train_acc,
            100.0 * val_acc
        );
        println!(
            "{} after {} steps in {:.1}s; checkpoint: {}",
            if summary.interrupted {
                "stopped"
            } else {
                "done"
            },
            summary.steps,
            summary.elapsed_secs,
            summary.checkpoint.display()
        );
        println!(
            "try:        scratchgpt classify --checkpoint {} --text \"...\"",
            out.path.display()
        );
        if lora.is_some() {
            println!(
                "standalone: scratchgpt merge-lora --checkpoint {} --out DIR",
                out.path.display()
            );
        }
    }
    Ok(if summary.interrupted { 130 } else { 0 })
}

/// The loop's settings for a classification run (see [`super::fine_tuning_settings`]).
fn settings(a: &ClassifyTrainArgs, lora: Option<&LoraConfig>) -> Result<TrainSettings, TrainError> {
    let schedule = super::FineTuneSchedule {
        lr: a.lr,
        weight_decay: a.weight_decay,
        epochs: a.epochs,
        max_steps: a.max_steps,
        batch_size: a.batch_size,
        grad_accum: a.grad_accum,
        eval_freq: a.eval_freq,
        eval_iter: a.eval_iter,
        dropout: a.dropout,
        seed: a.seed,
        book_compat: a.book_compat,
    };
    super::fine_tuning_settings("finetune-classify", &schedule, lora)
}
