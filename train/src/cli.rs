//! The `scratchgpt` command line: `train`, `generate`, `eval`.
//!
//! Every mistake a user can make (a missing file, a bad flag value, a corpus too short, a
//! checkpoint of another shape) ends with one `error: …` line and a non-zero exit status.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use model::generate::{generate, GenerateOptions, Sampling};
use model::Context;
use tensor::{no_grad, Rng};

use crate::checkpoint::{self, load_for_inference};
use crate::classification::{is_classifier, Columns};
use crate::commands::classify::{self, eval_classifier, ClassifyArgs};
use crate::commands::finetune::{self, FinetuneCommand};
use crate::commands::merge_lora::{merge_lora_command, MergeLoraArgs};
use crate::data::{DataLoader, TokenWindows};
use crate::error::{io_error, TrainError};
use crate::run_dir::{OutDir, RUNS_ROOT};
use crate::settings::{TokenizerSpec, TrainSettings, TRAIN_PRESETS};
use crate::tokenizer::END_OF_TEXT;
use crate::trainer::{self, RunOptions};

/// Largest training file read (a guard against pointing --data at a disk image).
const MAX_DATA_BYTES: u64 = 1 << 30;

/// The exit statuses, shown in `--help` and the README.
pub const EXIT_STATUSES: &str = "Exit status: 0 done; 1 an error in what was given (a file, a flag's value, the data, a checkpoint), \
explained on one `error:` line; 2 a usage error (unknown flag, missing value, flags that contradict each other); \
130 interrupted by Ctrl-C (train: after saving a checkpoint; resume with --resume).";

#[derive(Parser, Debug)]
#[command(
    name = "scratchgpt",
    version,
    about = "Train a small GPT from first principles, and sample from it",
    after_help = EXIT_STATUSES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Pretrain a GPT on text files (or the built-in corpus) and write checkpoints.
    #[command(after_help = EXIT_STATUSES)]
    Train(Box<TrainArgs>),
    /// Continue a prompt with a trained model (this project's checkpoints or a GPT-2 directory).
    #[command(after_help = EXIT_STATUSES)]
    Generate(GenerateArgs),
    /// Mean next-token loss and perplexity of a model on a text file; for a classifier,
    /// accuracy and confusion matrix on a labelled CSV/TSV file.
    #[command(after_help = EXIT_STATUSES)]
    Eval(EvalArgs),
    /// Fine-tune a pretrained model (book chapters 6–7).
    #[command(subcommand)]
    Finetune(FinetuneCommand),
    /// The label of a text, by a classifier made with `finetune classify`.
    #[command(after_help = EXIT_STATUSES)]
    Classify(ClassifyArgs),
    /// Fold a LoRA checkpoint's adapters into its weights (W + s·(A·B)ᵀ): a standalone model,
    /// as fast as the base one (book appendix E).
    #[command(after_help = EXIT_STATUSES)]
    MergeLora(MergeLoraArgs),
    /// Measure this machine: FMA peak, SGEMM, training steps, generation against the memory
    /// bandwidth (under a minute).
    Bench,
}

/// `scratchgpt train`. Flags marked "preset" take their default from `--preset`; the values of
/// every preset are appended to their help text from the presets themselves
/// ([`preset_defaults`]), so the help cannot drift from the code.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Text files to train on (UTF-8; several are joined with <|endoftext|>) [default: the
    /// built-in corpus, about 18 KB of stories]. With --resume, only needed when the run's files
    /// have moved.
    #[arg(long, num_args = 1.., value_name = "FILE")]
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
    #[arg(long, requires = "out")]
    pub force: bool,
    /// Continue the run in DIR, writing into DIR only [default: start a new run]. The run keeps
    /// its settings and finds its data files again by itself; only --epochs and --max-steps (to
    /// extend a finished run) and --data (when the files moved) may be given.
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
    /// Training windows per optimizer step.
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Tokens between the starts of consecutive training windows (the context length: no
    /// overlap); capped at --context-length unless given.
    #[arg(long, value_name = "TOKENS")]
    pub stride: Option<usize>,
    /// Passes over the training windows.
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
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
    /// Also save a checkpoint every N optimizer steps [default: off; checkpoints are written at
    /// the end, on Ctrl-C, and per --save-minutes].
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
type PresetValue = fn(&TrainSettings) -> String;
const PRESET_FLAGS: [(&str, PresetValue); 19] = [
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

/// The command-line definition, with the preset defaults added to the help of `train`.
pub fn command() -> clap::Command {
    Cli::command().mut_subcommand("train", |mut train| {
        for (id, show) in PRESET_FLAGS {
            train = train.mut_arg(id, |arg| {
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                arg.help(format!("{help} {}", preset_defaults(show)))
            });
        }
        train
    })
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A run directory (its latest checkpoint), one checkpoint directory, a Hugging Face
    /// GPT-2 directory (config.json + model.safetensors), or a GPT-2 name (gpt2, gpt2-medium,
    /// gpt2-large, gpt2-xl: from the Hugging Face cache, downloaded when missing).
    #[arg(long, value_name = "DIR|NAME")]
    pub checkpoint: PathBuf,
    /// The text to continue. A prompt longer than the model's context keeps its last tokens
    /// (with a notice).
    #[arg(long, value_name = "TEXT")]
    pub prompt: String,
    /// Tokens to generate, at most (generation stops early at end-of-text).
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy decoding (always the most likely token), as in the
    /// book.
    #[arg(
        long,
        default_value_t = 0.0,
        allow_negative_numbers = true,
        value_name = "T"
    )]
    pub temperature: f32,
    /// Sample only among the K most likely tokens; needs --temperature above 0 [default: all].
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probabilities add up to P (0 < P ≤ 1);
    /// needs --temperature above 0 [default: off].
    #[arg(long, allow_negative_numbers = true, value_name = "P")]
    pub top_p: Option<f32>,
    /// Seed of the sampling generator.
    #[arg(long, default_value_t = 123, value_name = "N")]
    pub seed: u64,
    /// Recompute the whole prefix for every token instead of using the KV cache (slower, same
    /// tokens).
    #[arg(long)]
    pub no_cache: bool,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A run directory (its latest checkpoint), one checkpoint directory, a Hugging Face
    /// GPT-2 directory, or a GPT-2 name (as for generate).
    #[arg(long, value_name = "DIR|NAME")]
    pub checkpoint: PathBuf,
    /// UTF-8 text file to measure the loss on, cut into non-overlapping windows of the model's
    /// context length (a short tail is dropped); for a classifier, a labelled CSV/TSV file.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// For a classifier: the column holding the texts.
    #[arg(long, default_value = "Text", value_name = "NAME")]
    pub text_column: String,
    /// For a classifier: the column holding the labels.
    #[arg(long, default_value = "Label", value_name = "NAME")]
    pub label_column: String,
    /// Windows per forward pass: memory against speed; the result does not change.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub batch_size: usize,
}

/// Reads a UTF-8 text file for training or evaluation, with errors naming the file.
pub fn read_text_file(path: &Path) -> Result<String, TrainError> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, e))?;
    if meta.is_dir() {
        return Err(TrainError(format!(
            "{}: is a directory, expected a text file",
            path.display()
        )));
    }
    if meta.len() > MAX_DATA_BYTES {
        return Err(TrainError(format!(
            "{}: {} bytes is more than the 1 GiB this tool reads",
            path.display(),
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        TrainError(format!(
            "{}: not valid UTF-8 text (invalid byte at offset {}); convert it to UTF-8 first",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
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
    if a.save_every.is_some() {
        s.save_every = a.save_every;
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
        ("--save-every", a.save_every.is_some()),
        ("--seed", a.seed.is_some()),
        ("--train-ratio", a.train_ratio.is_some()),
        ("--start-context", a.start_context.is_some()),
        ("--book-compat", a.book_compat),
    ];
    match given.iter().find(|(_, g)| *g) {
        Some((flag, _)) => Err(TrainError(format!(
            "{flag} cannot change when resuming: the run keeps the settings saved in its checkpoint (only --epochs and --max-steps can be given)"
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

/// The data files a run records: absolute, so `--resume` finds them from any directory.
fn absolute(files: &[PathBuf]) -> Vec<PathBuf> {
    files
        .iter()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect()
}

/// Makes Ctrl-C set `stop` (the training loop then saves and stops after the current step);
/// a second Ctrl-C exits at once with status 130.
pub fn stop_on_ctrl_c(stop: Arc<AtomicBool>) {
    let _ = ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting now (the last complete checkpoint is intact)");
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step and saving a checkpoint (Ctrl-C again to quit now)");
    });
}

/// Returns the exit status: 0 when the run finished, 130 when it was interrupted (after
/// saving).
fn train_command(a: &TrainArgs) -> Result<i32, TrainError> {
    // What to train, on what, and where: everything the user gave is checked before anything
    // is written.
    let (settings, data_files, out) = match &a.resume {
        Some(dir) => {
            check_resume_flags(a)?;
            let out = OutDir::for_resume(dir)?;
            let state = checkpoint::read_state(&checkpoint::resolve(dir)?)?;
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
    let text = read_training_text(&data_files)?;
    let data_files = absolute(&data_files);
    let out = match out {
        Some(out) => out,
        None => match &a.out {
            Some(dir) => OutDir::at(dir, a.force)?,
            None => OutDir::new_numbered(Path::new(RUNS_ROOT))?,
        },
    };
    let out = Arc::new(out);
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_ctrl_c(stop.clone());
    let hook_out = out.clone();
    let opts = RunOptions {
        out_dir: out.path.clone(),
        data_files: Some(data_files.clone()),
        on_checkpoint: Some(Arc::new(move || hook_out.checkpoint_written())),
        resume: a.resume.clone(),
        resume_epochs: a.epochs.filter(|_| a.resume.is_some()),
        resume_max_steps: a.max_steps.filter(|_| a.resume.is_some()),
        stop,
        stop_at_step: a.stop_at_step,
        min_secs_between_epoch_saves: a.save_minutes.max(0.0) * 60.0,
        progress: true,
        quiet: a.quiet,
    };
    if !a.quiet {
        let source = trainer::describe_data(Some(&data_files));
        let preset = match a.resume {
            Some(_) => String::new(),
            None => format!(" with preset {}", settings.preset),
        };
        println!(
            "training on {source} ({} bytes){preset}, writing to {}",
            text.len(),
            out.path.display()
        );
    }
    let summary = match trainer::run(&text, settings, &opts) {
        Ok(summary) => summary,
        Err(e) => {
            out.abandon();
            return Err(e);
        }
    };
    if !a.quiet {
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
        println!("loss plot:  {}", out.path.join("loss.svg").display());
        println!(
            "try:        scratchgpt generate --checkpoint {} --prompt \"Every effort moves you\"",
            out.path.display()
        );
    }
    Ok(if summary.interrupted { 130 } else { 0 })
}

fn generate_command(a: &GenerateArgs) -> Result<i32, TrainError> {
    if a.temperature == 0.0 {
        for (flag, given) in [
            ("--top-k", a.top_k.is_some()),
            ("--top-p", a.top_p.is_some()),
        ] {
            if given {
                return Err(TrainError(format!(
                    "{flag} has no effect with --temperature 0 (greedy decoding always takes the most likely token); give a temperature above 0 to sample"
                )));
            }
        }
    }
    let sampling = Sampling {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
    };
    sampling.validate()?;
    if a.prompt.is_empty() {
        return Err(TrainError("--prompt must not be empty".into()));
    }
    let ctx = Context::new(a.seed);
    let (model, tok) = load_for_inference(&a.checkpoint, &ctx)?;
    let mut prompt = tok.encode(&a.prompt);
    let context = model.cfg.context_length;
    if prompt.len() > context {
        eprintln!(
            "note: the prompt is {} tokens, more than the model's context of {context}; only its last {context} tokens are used",
            prompt.len()
        );
        prompt.drain(..prompt.len() - context);
    }
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        sampling,
        eos_id: tok.end_of_text(),
        use_cache: !a.no_cache,
    };
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", a.prompt);
    let _ = out.flush();
    // Stream: print each token's bytes as soon as they form whole UTF-8 characters.
    let mut pending: Vec<u8> = Vec::new();
    let mut rng = Rng::seed(a.seed);
    let mut stream = |id: usize| {
        if Some(id) == tok.end_of_text() {
            return;
        }
        if let Ok(b) = tok.decode_bytes(&[id]) {
            pending.extend_from_slice(&b);
        }
        let valid = match std::str::from_utf8(&pending) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(), // wait for the rest of a character
            Err(_) => pending.len(),
        };
        let _ = out.write_all(String::from_utf8_lossy(&pending[..valid]).as_bytes());
        let _ = out.flush();
        pending.drain(..valid);
    };
    generate(&model, &prompt, &opts, &mut rng, &mut stream);
    let _ = writeln!(std::io::stdout());
    Ok(0)
}

fn eval_command(a: &EvalArgs) -> Result<i32, TrainError> {
    if crate::checkpoint::resolve(&a.checkpoint).is_ok_and(|d| is_classifier(&d)) {
        let columns = Columns {
            text: a.text_column.clone(),
            label: a.label_column.clone(),
        };
        return eval_classifier(&a.checkpoint, &a.data, &columns);
    }
    if a.batch_size == 0 {
        return Err(TrainError("--batch-size must be at least 1".into()));
    }
    let text = read_text_file(&a.data)?;
    let ctx = Context::new(0);
    let (model, tok) = load_for_inference(&a.checkpoint, &ctx)?;
    model.eval();
    let t = model.cfg.context_length;
    let ids = tok.encode(&text);
    let windows = TokenWindows::new(ids, t, t)
        .map_err(|e| TrainError(format!("{}: {e}", a.data.display())))?;
    let loader = DataLoader::new(windows, a.batch_size, false, false);
    let order: Vec<usize> = (0..loader.data.len()).collect();
    let _g = no_grad();
    let mut total = 0.0f64;
    for b in 0..loader.num_batches() {
        let batch = loader.batch(&order, b);
        let loss = model
            .forward(&batch.inputs, batch.batch)
            .cross_entropy(&batch.targets)
            .item();
        total += loss as f64 * batch.batch as f64;
    }
    let loss = total / loader.data.len() as f64;
    println!("loss {loss:.6} perplexity {:.4}", loss.exp());
    Ok(0)
}

/// Runs the command line; returns the process exit status.
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let parsed = command()
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    2
                } else {
                    0
                };
            }
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .next()
                .unwrap_or("error: invalid arguments");
            eprintln!("{first} (see --help)");
            return 2;
        }
    };
    let result = match &cli.command {
        Command::Train(a) => train_command(a),
        Command::Generate(a) => generate_command(a),
        Command::Eval(a) => eval_command(a),
        Command::Finetune(FinetuneCommand::Classify(a)) => finetune::classify_command(a),
        Command::Classify(a) => classify::classify_command(a),
        Command::MergeLora(a) => merge_lora_command(a),
        Command::Bench => {
            crate::bench::run_bench();
            Ok(0)
        }
    };
    match result {
        Ok(status) => status,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
