//! `scratchgpt train`: pretraining (book chapter 5) on text files or the built-in corpus. The
//! flags become [`TrainSettings`] (a preset, then each flag given); the run directory follows
//! [`crate::run_dir`]'s rules; the work is [`crate::trainer::run`].

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Args;

use crate::checkpoint;
use crate::cli::{read_text_file, stop_on_ctrl_c};
use crate::collective::{Collective, World};
use crate::error::TrainError;
use crate::run_dir::{OutDir, RUNS_ROOT};
use crate::settings::{TokenizerSpec, TrainSettings, TRAIN_PRESETS};
use crate::token_data::{is_token_data, open_token_data, TokenData};
use crate::tokenizer::END_OF_TEXT;
use crate::trainer::{self, RunOptions, TrainingData};

/// `scratchgpt train`. Flags marked "preset" take their default from `--preset`; the values of
/// every preset are appended to their help text from the presets themselves
/// ([`preset_defaults`]), so the help cannot drift from the code.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Text files to train on (UTF-8; several are joined with <|endoftext|>), or token shards:
    /// a directory written by scratchgpt tokenize, a directory of llm.c's *_train_*.bin /
    /// *_val_*.bin shards, or nanoGPT's train.bin and val.bin (read window by window: start-up
    /// and memory do not grow with the corpus) [default: the built-in corpus, about 18 KB of
    /// stories]. With --resume, only needed when the run's files have moved.
    #[arg(long, num_args = 1.., value_name = "FILE|DIR")]
    pub data: Vec<PathBuf>,
    /// Settings preset [default: quickstart]. quickstart: a 1.1M-parameter model that learns
    /// visibly in under a minute; book-ch5: the book's chapter-5 run; gpt2-small, gpt2-medium,
    /// gpt2-large, gpt2-xl, small, tiny, micro: model shapes trained with the quickstart's
    /// schedule. Flags override the preset.
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// Tokenizer: gpt2 (GPT-2's 50,257 tokens), bytes (256 byte ids + end-of-text) or bpe:N (a
    /// vocabulary of N tokens learned from the training text).
    #[arg(long, value_name = "KIND")]
    pub tokenizer: Option<String>,
    /// Directory of this run (checkpoints, metrics.csv, loss.svg) [default: a new numbered
    /// directory runs/run-NNNN; runs/latest links to the newest]. A directory that already
    /// holds a run is refused: continue it with --resume, or replace it with --force.
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// With --out: replace the run in that directory (its files are deleted only once the new
    /// run's first checkpoint is written, and restored if the new run fails before), or write
    /// into a directory that holds other files.
    #[arg(long, requires = "out", conflicts_with = "resume")]
    pub force: bool,
    /// Continue the run in DIR, writing into DIR only [default: start a new run]. The run keeps
    /// its settings and finds its data files again by itself; only --epochs and --max-steps (to
    /// extend a finished run), --grad-accum, --save-every and --data (when the files moved) may
    /// be given. DIR is the run's directory, or its latest checkpoint.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Tokens per training window, which is also the model's longest context, in tokens.
    #[arg(long, value_name = "TOKENS")]
    pub context_length: Option<usize>,
    /// Width of the model: the size of token embeddings and of the residual stream.
    #[arg(long, value_name = "N")]
    pub emb_dim: Option<usize>,
    /// Number of transformer blocks.
    #[arg(long, value_name = "N")]
    pub n_layers: Option<usize>,
    /// Attention heads per block (must divide --emb-dim).
    #[arg(long, value_name = "N")]
    pub n_heads: Option<usize>,
    /// Dropout probability during training, from 0 up to (not including) 1.
    #[arg(long, allow_negative_numbers = true, value_name = "P")]
    pub dropout: Option<f32>,
    /// Give the query/key/value projections a bias, as GPT-2 has [default: off].
    #[arg(long)]
    pub qkv_bias: bool,
    /// Share the token embedding with the output head, as GPT-2 does [default: off].
    #[arg(long)]
    pub tie_weights: bool,
    /// The model's vocabulary size, when larger than the tokenizer's: pads the token embedding
    /// and output head with rows for ids that never occur, e.g. 50304 (a multiple of 64) for
    /// GPT-2's 50,257 as nanoGPT does; those ids are never generated. Smaller than the
    /// tokenizer's is refused [default: the tokenizer's].
    #[arg(long, value_name = "N")]
    pub vocab_size: Option<usize>,
    /// Training windows per optimizer step.
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Tokens between the starts of consecutive training windows: the context length means no
    /// overlap, less means overlapping windows. Without it, the preset's, at most
    /// --context-length.
    #[arg(long, value_name = "TOKENS")]
    pub stride: Option<usize>,
    /// Passes over the training windows.
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    /// Compute each batch in N equal micro-batches whose gradients add up before one optimizer
    /// step: the same training (up to float rounding) in the memory of a batch N times smaller.
    /// Must divide --batch-size. May be changed when resuming [default: 1].
    #[arg(long, value_name = "N")]
    pub grad_accum: Option<usize>,
    /// Stop after this many optimizer steps, whatever the epoch [default: no limit].
    #[arg(long, value_name = "N")]
    pub max_steps: Option<usize>,
    /// Peak learning rate of AdamW, reached at the end of the warm-up.
    #[arg(long, allow_negative_numbers = true, value_name = "X")]
    pub lr: Option<f32>,
    /// Final learning rate of the cosine decay; giving it turns the decay on. Cannot be larger
    /// than --lr.
    #[arg(long, allow_negative_numbers = true, value_name = "X")]
    pub min_lr: Option<f32>,
    /// Keep the learning rate constant after the warm-up (no cosine decay) [default: the
    /// preset's: on for book-ch5, off otherwise].
    #[arg(long, conflicts_with = "min_lr")]
    pub constant_lr: bool,
    /// AdamW's decoupled weight decay.
    #[arg(long, allow_negative_numbers = true, value_name = "X")]
    pub weight_decay: Option<f32>,
    /// Optimizer steps of linear learning-rate warm-up.
    #[arg(long, value_name = "STEPS")]
    pub warmup_steps: Option<usize>,
    /// Clip the global L2 norm of the gradients to this value; 0 turns clipping off.
    #[arg(long, allow_negative_numbers = true, value_name = "X")]
    pub grad_clip: Option<f32>,
    /// Evaluate after the first optimizer step and then every N steps.
    #[arg(long, value_name = "STEPS")]
    pub eval_freq: Option<usize>,
    /// Batches of training and of validation data per evaluation.
    #[arg(long, value_name = "N")]
    pub eval_iter: Option<usize>,
    /// Also save a checkpoint every N optimizer steps (the run keeps its latest two
    /// checkpoints); 0 turns it off. May be changed when resuming [default: off; checkpoints are
    /// written at the end, on Ctrl-C, and per --save-minutes].
    #[arg(long, value_name = "STEPS")]
    pub save_every: Option<usize>,
    /// At the end of an epoch, save a checkpoint if this many minutes passed since the last one.
    #[arg(long, default_value_t = 5.0, value_name = "MINUTES")]
    pub save_minutes: f64,
    /// Seed of every random number of the run: initial weights, shuffling, dropout.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Share of the text, by characters, used for training; the rest is for validation.
    #[arg(long, allow_negative_numbers = true, value_name = "R")]
    pub train_ratio: Option<f64>,
    /// Prompt of the greedy sample printed after each epoch.
    #[arg(long, value_name = "TEXT")]
    pub start_context: Option<String>,
    /// Stop (as Ctrl-C would, saving a checkpoint) after this many steps.
    #[arg(long, hide = true)]
    pub stop_at_step: Option<usize>,
    /// Draw every random number exactly as the book's PyTorch code does, to reproduce its
    /// numbers (somewhat slower) [default: off].
    #[arg(long)]
    pub book_compat: bool,
    /// Print only errors.
    #[arg(long)]
    pub quiet: bool,
}

/// For each `train` flag whose default comes from the preset: how to show a preset's value.
pub type PresetValue = fn(&TrainSettings) -> String;
pub const PRESET_FLAGS: [(&str, PresetValue); 19] = [
    ("tokenizer", |s| s.tokenizer.to_string()),
    ("context_length", |s| s.context_length.to_string()),
    ("emb_dim", |s| s.emb_dim.to_string()),
    ("n_layers", |s| s.n_layers.to_string()),
    ("n_heads", |s| s.n_heads.to_string()),
    ("dropout", |s| s.dropout.to_string()),
    ("batch_size", |s| s.batch_size.to_string()),
    ("stride", |s| s.stride.to_string()),
    ("epochs", |s| s.epochs.to_string()),
    ("lr", |s| format!("{:e}", s.lr)),
    ("min_lr", |s| match s.cosine {
        true => format!("{:e}", s.min_lr),
        false => "none (constant)".into(),
    }),
    ("weight_decay", |s| s.weight_decay.to_string()),
    ("warmup_steps", |s| s.warmup_steps.to_string()),
    ("grad_clip", |s| {
        s.grad_clip.map_or("0 (off)".into(), |c| c.to_string())
    }),
    ("eval_freq", |s| s.eval_freq.to_string()),
    ("eval_iter", |s| s.eval_iter.to_string()),
    ("seed", |s| s.seed.to_string()),
    ("train_ratio", |s| s.train_ratio.to_string()),
    ("start_context", |s| format!("{:?}", s.start_context)),
];

/// `[default: from --preset: quickstart, tiny: 128 · book-ch5: 256 · …]` for a flag of
/// `PRESET_FLAGS`: every preset's value, presets with the same value grouped.
pub fn preset_defaults(show: PresetValue) -> String {
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for name in TRAIN_PRESETS {
        let Ok(s) = TrainSettings::preset(name) else {
            continue;
        };
        let v = show(&s);
        match groups.iter_mut().find(|(value, _)| *value == v) {
            Some((_, names)) => names.push(name),
            None => groups.push((v, vec![name])),
        }
    }
    if let [(v, _)] = groups.as_slice() {
        return format!("[default: {v} in every preset]");
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|(v, names)| format!("{}: {v}", names.join(", ")))
        .collect();
    format!("[default: from --preset: {}]", parts.join(" · "))
}

/// The settings a `train` command asks for: the preset, then each flag given.
pub fn settings_from_args(a: &TrainArgs) -> Result<TrainSettings, TrainError> {
    let mut s = TrainSettings::preset(a.preset.as_deref().unwrap_or("quickstart"))?;
    if let Some(t) = &a.tokenizer {
        s.tokenizer = TokenizerSpec::parse(t)?;
    }
    macro_rules! set {
        ($($field:ident),*) => { $( if let Some(v) = a.$field.clone() { s.$field = v; } )* };
    }
    set!(
        context_length,
        emb_dim,
        n_layers,
        n_heads,
        dropout,
        batch_size,
        epochs,
        lr,
        weight_decay,
        warmup_steps,
        eval_freq,
        eval_iter,
        seed,
        train_ratio,
        start_context
    );
    if let Some(st) = a.stride {
        s.stride = st;
    } else if a.context_length.is_some() && s.preset == "book-ch5" {
        s.stride = s.context_length;
    }
    if a.stride.is_none() && s.stride > s.context_length {
        s.stride = s.context_length;
    }
    if let Some(m) = a.min_lr {
        s.min_lr = m;
        s.cosine = true;
    }
    if a.constant_lr {
        s.cosine = false;
    }
    if a.max_steps.is_some() {
        s.max_steps = a.max_steps;
    }
    if let Some(n) = a.vocab_size {
        s.vocab_size = Some(n);
    }
    if let Some(n) = a.grad_accum {
        s.grad_accum = n;
    }
    if a.save_every.is_some() {
        s.save_every = a.save_every.filter(|&k| k > 0); // 0: off
    }
    if let Some(c) = a.grad_clip {
        s.grad_clip = if c == 0.0 { None } else { Some(c) };
    }
    s.qkv_bias |= a.qkv_bias;
    s.book_compat |= a.book_compat;
    s.tie_weights |= a.tie_weights;
    if s.min_lr > s.lr {
        if a.min_lr.is_some() {
            return Err(TrainError(format!(
                "--min-lr {} is larger than the learning rate {}: the decay would go up",
                s.min_lr, s.lr
            )));
        }
        s.min_lr = s.lr; // the preset's floor lies above a lower --lr: decay to --lr itself
    }
    s.validate()?;
    Ok(s)
}

/// With `--resume`, the run keeps its saved settings: any other setting flag is an error
/// rather than silently ignored.
fn check_resume_flags(a: &TrainArgs) -> Result<(), TrainError> {
    let given = [
        ("--preset", a.preset.is_some()),
        ("--tokenizer", a.tokenizer.is_some()),
        ("--context-length", a.context_length.is_some()),
        ("--emb-dim", a.emb_dim.is_some()),
        ("--n-layers", a.n_layers.is_some()),
        ("--n-heads", a.n_heads.is_some()),
        ("--vocab-size", a.vocab_size.is_some()),
        ("--dropout", a.dropout.is_some()),
        ("--qkv-bias", a.qkv_bias),
        ("--tie-weights", a.tie_weights),
        ("--batch-size", a.batch_size.is_some()),
        ("--stride", a.stride.is_some()),
        ("--lr", a.lr.is_some()),
        ("--min-lr", a.min_lr.is_some()),
        ("--constant-lr", a.constant_lr),
        ("--weight-decay", a.weight_decay.is_some()),
        ("--warmup-steps", a.warmup_steps.is_some()),
        ("--grad-clip", a.grad_clip.is_some()),
        ("--eval-freq", a.eval_freq.is_some()),
        ("--eval-iter", a.eval_iter.is_some()),
        ("--seed", a.seed.is_some()),
        ("--train-ratio", a.train_ratio.is_some()),
        ("--start-context", a.start_context.is_some()),
        ("--book-compat", a.book_compat),
    ];
    match given.iter().find(|(_, g)| *g) {
        Some((flag, _)) => Err(TrainError(format!(
            "{flag} cannot change when resuming: the run keeps the settings saved in its checkpoint (only --epochs, --max-steps, --grad-accum, --save-every and --data can be given)"
        ))),
        None => Ok(()),
    }
}

/// The training text: the files joined with end-of-text, or the built-in corpus when there are
/// none. Every error names its file.
fn read_training_text(files: &[PathBuf]) -> Result<String, TrainError> {
    if files.is_empty() {
        return Ok(crate::corpus::DEFAULT_CORPUS.to_string());
    }
    // a file given twice would be read twice: its text in both the training and the
    // validation part
    for (i, p) in files.iter().enumerate() {
        let same = |q: &PathBuf| match (p.canonicalize(), q.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => p == q,
        };
        if files[..i].iter().any(same) {
            return Err(TrainError(format!(
                "{}: given twice in --data",
                p.display()
            )));
        }
    }
    let mut parts = Vec::with_capacity(files.len());
    for p in files {
        let text = read_text_file(p)?;
        if text.trim().is_empty() {
            return Err(TrainError(format!(
                "{}: the file is empty (nothing to train on)",
                p.display()
            )));
        }
        parts.push(text);
    }
    Ok(parts.join(END_OF_TEXT))
}

/// Text larger than this makes `train` suggest `scratchgpt tokenize`.
pub const TOKENIZE_HINT_BYTES: u64 = 64 << 20;

/// The tokenizer of a new run on token shards: the shards' own. `--tokenizer` may name it but
/// not change it, and `--train-ratio` has no text to split.
fn shard_tokenizer(a: &TrainArgs, d: &TokenData) -> Result<TokenizerSpec, TrainError> {
    if a.train_ratio.is_some() {
        return Err(TrainError(format!(
            "--train-ratio splits text files; {} holds its own validation shards",
            d.description
        )));
    }
    if let Some(t) = &a.tokenizer {
        let asked = TokenizerSpec::parse(t)?;
        if asked != d.tokenizer_spec {
            return Err(TrainError(format!(
                "--tokenizer {asked}: {} was written with the tokenizer {}; a run on shards uses their tokenizer",
                d.description, d.tokenizer_spec
            )));
        }
    }
    Ok(d.tokenizer_spec.clone())
}

/// The data files a run records: absolute, so `--resume` finds them from any directory.
fn absolute(files: &[PathBuf]) -> Vec<PathBuf> {
    files
        .iter()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect()
}

/// Returns the exit status: 0 when the run finished, 130 when it was interrupted (after
/// saving). Started by `mpirun -np W` (with the `mpi` feature), the W processes train together
/// ([`crate::data_parallel`]); an error on any of them ends them all.
pub fn train_command(a: &TrainArgs) -> Result<i32, TrainError> {
    let world = World::from_environment()?; // ends MPI when dropped, after the run
    let coll = world.collective.clone();
    match train_in(a, coll.clone()) {
        Err(e) if coll.size() > 1 => {
            match coll.rank() {
                0 => eprintln!("error: {e}"),
                r => eprintln!("error: rank {r} of {}: {e}", coll.size()),
            }
            // the other ranks may be waiting for this one in a collective
            coll.abort(1)
        }
        result => result,
    }
}

/// The processes of a data-parallel run and their threads, for the first lines of a run:
/// `2 processes (Open MPI v4.1.4), threads per process: 1, 1`.
fn describe_world(coll: &dyn Collective) -> String {
    let mut threads = vec![0.0f64; coll.size()];
    threads[coll.rank()] = rayon::current_num_threads() as f64;
    coll.all_reduce_sum_f64(&mut threads); // every slot filled by one rank: exact
    let list: Vec<String> = threads.iter().map(|t| t.to_string()).collect();
    format!(
        "data-parallel: {} processes ({}), threads per process: {}",
        coll.size(),
        coll.describe(),
        list.join(", ")
    )
}

fn train_in(a: &TrainArgs, coll: Arc<dyn Collective>) -> Result<i32, TrainError> {
    if !(a.save_minutes.is_finite() && a.save_minutes >= 0.0) {
        return Err(TrainError(format!(
            "--save-minutes must be 0 or a positive number of minutes, got {}",
            a.save_minutes
        )));
    }
    // with several processes, rank 0 alone prints and writes the run directory
    let root = coll.rank() == 0;
    let world_line = (coll.size() > 1).then(|| describe_world(coll.as_ref()));
    let quiet = a.quiet || !root;
    // What to train, on what, and where: everything the user gave is checked before anything
    // is written.
    let (settings, data_files, out) = match &a.resume {
        Some(dir) => {
            check_resume_flags(a)?;
            let out = OutDir::for_resume(dir)?;
            let state = checkpoint::read_state(&checkpoint::resolve(dir)?)?;
            if let Some(command) = state.settings.preset.strip_prefix("finetune-") {
                return Err(TrainError(format!(
                    "{}: is a `finetune {command}` run, which `train --resume` cannot continue; fine-tune again from its base model, or from this run's checkpoint as a new base",
                    dir.display()
                )));
            }
            let files = if !a.data.is_empty() {
                a.data.clone()
            } else {
                let files = state.data_files.clone().unwrap_or_default();
                if let Some(gone) = files.iter().find(|f| !f.exists()) {
                    return Err(TrainError(format!(
                        "{}: this file of the run's data is not there any more; if it moved, give its new place with --data",
                        gone.display()
                    )));
                }
                files
            };
            // the saved settings are used; these are only a placeholder
            (TrainSettings::preset("quickstart")?, files, Some(out))
        }
        None => (settings_from_args(a)?, a.data.clone(), None),
    };
    let token_data = match is_token_data(&data_files)? {
        true => Some(open_token_data(&data_files)?),
        false => None,
    };
    let mut settings = settings;
    let text = match &token_data {
        Some(d) => {
            if a.resume.is_none() {
                settings.tokenizer = shard_tokenizer(a, d)?;
            }
            String::new()
        }
        None => read_training_text(&data_files)?,
    };
    let data_files = absolute(&data_files);
    let out = match out {
        Some(out) => Some(out),
        None if !root => None, // only rank 0 makes or replaces the run directory
        None => Some(match &a.out {
            Some(dir) => OutDir::at(dir, a.force, true)?,
            None => OutDir::new_numbered(Path::new(RUNS_ROOT))?,
        }),
    };
    let out = out.map(Arc::new);
    // ranks other than 0 write nothing; the path only names the run in their messages
    let out_path = match (&out, &a.out) {
        (Some(out), _) => out.path.clone(),
        (None, Some(dir)) => dir.clone(),
        (None, None) => PathBuf::from(RUNS_ROOT),
    };
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_ctrl_c(stop.clone());
    let hook_out = out.clone();
    let opts = RunOptions {
        out_dir: out_path.clone(),
        data_files: Some(data_files.clone()),
        on_checkpoint: hook_out.map(|o| Arc::new(move || o.checkpoint_written()) as Arc<_>),
        resume: a.resume.clone(),
        resume_epochs: a.epochs.filter(|_| a.resume.is_some()),
        resume_max_steps: a.max_steps.filter(|_| a.resume.is_some()),
        resume_grad_accum: a.grad_accum.filter(|_| a.resume.is_some()),
        resume_save_every: a.save_every.filter(|_| a.resume.is_some()),
        stop,
        stop_at_step: a.stop_at_step,
        min_secs_between_epoch_saves: a.save_minutes.max(0.0) * 60.0,
        progress: true,
        quiet,
        collective: Some(coll.clone()),
    };
    if !quiet {
        println!("{}", tensor::kernels::describe());
        if let Some(line) = &world_line {
            println!("{line}");
        }
        let source = trainer::describe_data(Some(&data_files));
        let preset = match a.resume {
            Some(_) => String::new(),
            None => format!(" with preset {}", settings.preset),
        };
        let size = match &token_data {
            Some(d) => format!(
                "{} training tokens in {} shards, {} validation tokens",
                d.train_tokens(),
                d.train.len(),
                d.val_tokens()
            ),
            None => format!("{} bytes", text.len()),
        };
        println!(
            "training on {source} ({size}){preset}, writing to {}",
            out_path.display()
        );
        if token_data.is_none() && text.len() as u64 > TOKENIZE_HINT_BYTES {
            println!(
                "note: {:.0} MB of text is read and tokenized at the start of every run and every --resume; tokenize it once with `scratchgpt tokenize --data FILES --out DIR` and train with --data DIR to start at once with flat memory",
                text.len() as f64 / 1e6
            );
        }
    }
    let data = match &token_data {
        Some(d) => TrainingData::Tokens(d),
        None => TrainingData::Text(&text),
    };
    let summary = match trainer::run(data, settings, &opts) {
        Ok(summary) => summary,
        Err(e) => {
            if let Some(out) = &out {
                out.abandon();
            }
            // Ctrl-C while the vocabulary was being learned: an interruption, not a failure
            if e.0 == trainer::STOPPED_BEFORE_TRAINING {
                eprintln!("{e}");
                return Ok(130);
            }
            return Err(e);
        }
    };
    if !quiet {
        println!(
            "{} after {} steps ({} tokens) in {:.1}s, {:.0} training tokens/s",
            if summary.interrupted {
                "stopped"
            } else {
                "done"
            },
            summary.steps,
            summary.tokens_seen,
            summary.elapsed_secs,
            summary.train_tokens_per_second
        );
        println!("checkpoint: {}", summary.checkpoint.display());
        println!("loss plot:  {}", out_path.join("loss.svg").display());
        println!(
            "try:        scratchgpt generate --checkpoint {} --prompt \"Every effort moves you\"",
            out_path.display()
        );
    }
    Ok(if summary.interrupted { 130 } else { 0 })
}
