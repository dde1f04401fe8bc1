//! The `scratchgpt` command line: `train`, `generate`, `eval`.
//!
//! Every mistake a user can make (a missing file, a bad flag value, a corpus too short, a
//! checkpoint of another shape) ends with one `error: …` line and a non-zero exit status.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use model::generate::{generate, GenerateOptions, Sampling};
use model::Context;
use tensor::{no_grad, Rng};

use crate::checkpoint::load_for_inference;
use crate::data::{DataLoader, TokenWindows};
use crate::error::{io_error, TrainError};
use crate::settings::{TokenizerSpec, TrainSettings};
use crate::tokenizer::END_OF_TEXT;
use crate::trainer::{self, RunOptions};

/// Largest training file read (a guard against pointing --data at a disk image).
const MAX_DATA_BYTES: u64 = 1 << 30;

#[derive(Parser, Debug)]
#[command(
    name = "scratchgpt",
    version,
    about = "Train a small GPT from first principles, and sample from it"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Pretrain a GPT on text files (or the built-in corpus) and write checkpoints.
    Train(Box<TrainArgs>),
    /// Continue a prompt with a trained model (this project's checkpoints or a GPT-2 directory).
    Generate(GenerateArgs),
    /// Mean next-token loss and perplexity of a model on a text file.
    Eval(EvalArgs),
    /// Measure this machine: FMA peak, SGEMM, training steps, generation against the memory
    /// bandwidth (under a minute).
    Bench,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Text files to train on (UTF-8; several are joined with <|endoftext|>). Default: the built-in corpus.
    #[arg(long, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Settings preset: quickstart, book-ch5, gpt2-small, gpt2-medium, gpt2-large, gpt2-xl, small, tiny, micro.
    #[arg(long)]
    pub preset: Option<String>,
    /// gpt2, bytes, or bpe:N (a vocabulary of N learned from the data).
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Output directory for checkpoints, metrics.csv and loss.svg.
    #[arg(long, default_value = "runs/latest")]
    pub out: PathBuf,
    /// Continue the run saved in this directory (with the same --data).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    #[arg(long)]
    pub context_length: Option<usize>,
    #[arg(long)]
    pub emb_dim: Option<usize>,
    #[arg(long)]
    pub n_layers: Option<usize>,
    #[arg(long)]
    pub n_heads: Option<usize>,
    #[arg(long, allow_negative_numbers = true)]
    pub dropout: Option<f32>,
    /// Give the query/key/value projections a bias.
    #[arg(long)]
    pub qkv_bias: bool,
    /// Share the token embedding with the output head (as GPT-2).
    #[arg(long)]
    pub tie_weights: bool,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub stride: Option<usize>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub max_steps: Option<usize>,
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f32>,
    /// Final learning rate of the cosine decay (turns the cosine schedule on).
    #[arg(long, allow_negative_numbers = true)]
    pub min_lr: Option<f32>,
    /// Keep the learning rate constant after warm-up (no cosine decay).
    #[arg(long)]
    pub constant_lr: bool,
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f32>,
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// Clip the global gradient norm to this value; 0 turns clipping off.
    #[arg(long, allow_negative_numbers = true)]
    pub grad_clip: Option<f32>,
    #[arg(long)]
    pub eval_freq: Option<usize>,
    #[arg(long)]
    pub eval_iter: Option<usize>,
    /// Save a checkpoint every N steps (besides the end of the run and Ctrl-C).
    #[arg(long)]
    pub save_every: Option<usize>,
    /// At the end of an epoch, save a checkpoint if this many minutes passed since the last one.
    #[arg(long, default_value_t = 5.0)]
    pub save_minutes: f64,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, allow_negative_numbers = true)]
    pub train_ratio: Option<f64>,
    /// Prompt of the sample printed after each epoch.
    #[arg(long)]
    pub start_context: Option<String>,
    /// Stop (as Ctrl-C would, saving a checkpoint) after this many steps.
    #[arg(long, hide = true)]
    pub stop_at_step: Option<usize>,
    /// Draw random numbers exactly as the book's PyTorch code does, to reproduce its numbers.
    #[arg(long)]
    pub book_compat: bool,
    /// Print only errors.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A run directory, a checkpoint directory, or a GPT-2 directory (config.json + model.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[arg(long)]
    pub prompt: String,
    #[arg(long, default_value_t = 50)]
    pub max_new_tokens: usize,
    /// 0 = greedy (always the most likely token), as in the book.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f32,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long, allow_negative_numbers = true)]
    pub top_p: Option<f32>,
    #[arg(long, default_value_t = 123)]
    pub seed: u64,
    /// Recompute the whole prefix for every token instead of using the KV cache.
    #[arg(long)]
    pub no_cache: bool,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value_t = 8)]
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
        s.min_lr = s.lr;
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

fn train_command(a: &TrainArgs) -> Result<(), TrainError> {
    if a.resume.is_some() {
        check_resume_flags(a)?;
    }
    let settings = if a.resume.is_some() {
        TrainSettings::preset("quickstart")?
    } else {
        settings_from_args(a)?
    };
    let text = if a.data.is_empty() {
        crate::corpus::DEFAULT_CORPUS.to_string()
    } else {
        let parts = a
            .data
            .iter()
            .map(|p| read_text_file(p))
            .collect::<Result<Vec<_>, _>>()?;
        parts.join(END_OF_TEXT)
    };
    if text.trim().is_empty() {
        return Err(TrainError("the training data is empty".into()));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting now (the last complete checkpoint is intact)");
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step and saving a checkpoint (Ctrl-C again to quit now)");
    });
    let opts = RunOptions {
        out_dir: a.out.clone(),
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
        let source = if a.data.is_empty() {
            "the built-in corpus".to_string()
        } else {
            a.data
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if a.resume.is_some() {
            println!("training on {source} ({} bytes)", text.len());
        } else {
            println!(
                "training on {source} ({} bytes) with preset {}",
                text.len(),
                settings.preset
            );
        }
    }
    let summary = trainer::run(&text, settings, &opts)?;
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
        println!("loss plot:  {}", a.out.join("loss.svg").display());
        println!(
            "try:        scratchgpt generate --checkpoint {} --prompt \"Every effort moves you\"",
            a.out.display()
        );
    }
    Ok(())
}

fn generate_command(a: &GenerateArgs) -> Result<(), TrainError> {
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
    let prompt = tok.encode(&a.prompt);
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
    Ok(())
}

fn eval_command(a: &EvalArgs) -> Result<(), TrainError> {
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
    Ok(())
}

/// Runs the command line; returns the process exit status.
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
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
        Command::Bench => {
            crate::bench::run_bench();
            Ok(())
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
