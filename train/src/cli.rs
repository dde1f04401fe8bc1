//! The `scratchgpt` command line: the commands and their flags (each command in its own file
//! under [`crate::commands`]), exit statuses, and what the commands share: reading a text
//! file, Ctrl-C.
//!
//! Every mistake a user can make (a missing file, a bad flag value, a corpus too short, a
//! checkpoint of another shape) ends with one `error: …` line and a non-zero exit status.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::commands::classify::{self, ClassifyArgs};
use crate::commands::eval::{eval_command, EvalArgs};
use crate::commands::finetune::{self, FinetuneCommand};
use crate::commands::generate::{generate_command, GenerateArgs};
use crate::commands::inspect::{inspect_command, InspectCommand};
use crate::commands::instruct::{self, ChatArgs};
use crate::commands::merge_lora::{merge_lora_command, MergeLoraArgs};
use crate::commands::tokenize::{tokenize_command, TokenizeArgs};
use crate::commands::train::{preset_defaults, train_command, TrainArgs, PRESET_FLAGS};
use crate::context_bench::{run_context_bench, ContextArgs};
use crate::error::{io_error, TrainError};

/// Largest training file read (a guard against pointing --data at a disk image).
const MAX_DATA_BYTES: u64 = 1 << 30;

/// The exit statuses, shown in `--help` and the README.
pub const EXIT_STATUSES: &str = "Exit status: 0 done; 1 an error in what was given (a file, a flag's value, the data, a checkpoint), \
explained on one `error:` line; 2 a usage error (unknown flag, missing value, flags that contradict each other); \
130 interrupted by Ctrl-C (train: after saving a checkpoint, resume with --resume; while it learns a BPE vocabulary, at once, writing nothing).";

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
    /// Give instructions to a model made with `finetune instruct`; it answers each one.
    #[command(after_help = EXIT_STATUSES)]
    Chat(ChatArgs),
    /// Fold a LoRA checkpoint's adapters into its weights (W + s·(A·B)ᵀ): a standalone model,
    /// as fast as the base one (book appendix E).
    #[command(after_help = EXIT_STATUSES)]
    MergeLora(MergeLoraArgs),
    /// Tokenize a corpus once into token shards (llm.c's format) and manifest.json, streaming
    /// it in bounded memory on all cores; or check such a directory with --verify.
    #[command(after_help = EXIT_STATUSES)]
    Tokenize(TokenizeArgs),
    /// See inside a model for one prompt: attention maps, the logit lens, layer-norm
    /// statistics, as SVG figures, CSV/JSON numbers and one self-contained index.html.
    #[command(subcommand)]
    Inspect(InspectCommand),
    /// Measure this machine: FMA peak, SGEMM, training steps, generation against the memory
    /// bandwidth (under a minute); `bench context`: attention's cost against context length.
    Bench(BenchArgs),
}

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: Option<BenchCommand>,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Attention's time and measured peak memory against the context length T (fused kernel
    /// and composed ops, forward + backward, fitted exponents), and where attention's FLOPs
    /// overtake the rest of a GPT-2 small layer; writes the table, log-log plots and
    /// index.html.
    #[command(after_help = EXIT_STATUSES)]
    Context(ContextArgs),
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

/// Makes Ctrl-C set `stop` (the training loop then saves and stops after the current step);
/// a second Ctrl-C exits at once with status 130.
pub fn stop_on_ctrl_c(stop: Arc<AtomicBool>) {
    on_ctrl_c(
        stop,
        "stopping after this step and saving a checkpoint, or at once if no step has begun (Ctrl-C again to quit now)",
        "interrupted again: exiting now (the last complete checkpoint is intact)",
    );
}

/// Makes Ctrl-C set `stop` and print `first`; a second Ctrl-C prints `again` and exits at once
/// with status 130.
pub fn on_ctrl_c(stop: Arc<AtomicBool>, first: &'static str, again: &'static str) {
    let _ = ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            eprintln!("\n{again}");
            std::process::exit(130);
        }
        eprintln!("\n{first}");
    });
}

/// Restores the default action of SIGPIPE. Rust ignores it, so printing into a closed pipe
/// (`scratchgpt … | head`) would panic in `println!`; with the default the process ends
/// quietly, as other command-line tools do. Call it first thing in `main`, before any other
/// thread exists.
pub fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called before any other thread exists (see above); SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// For the chapter examples (`examples/`): [`restore_sigpipe`], then checks that every
/// argument is one of `known` (a misspelt `--book-compat` would otherwise run the other way
/// without a word): anything else ends the process with one usage line, status 2.
pub fn check_example_args(known: &[&str]) {
    restore_sigpipe();
    let name = std::env::args().next().unwrap_or_default();
    if let Some(other) = std::env::args()
        .skip(1)
        .find(|a| !known.contains(&a.as_str()))
    {
        let accepted = if known.is_empty() {
            "it takes no arguments".to_string()
        } else {
            format!("it accepts {}", known.join(", "))
        };
        eprintln!("error: unexpected argument {other:?} for {name}: {accepted}");
        std::process::exit(2);
    }
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
            // clap's message in one line: its first line and the indented lines under it
            // (the arguments missing or in conflict), without the usage block
            let rendered = e.render().to_string();
            let mut lines = rendered.lines().take_while(|l| !l.trim().is_empty());
            let first = lines.next().unwrap_or("error: invalid arguments");
            let named: Vec<&str> = lines.map(str::trim).collect();
            if named.is_empty() {
                eprintln!("{first} (see --help)");
            } else {
                eprintln!("{first} {} (see --help)", named.join(", "));
            }
            return 2;
        }
    };
    // flags whose values contradict each other are usage errors, as clap's own conflicts are
    let sampling = match &cli.command {
        Command::Generate(a) => Some(&a.sampling),
        Command::Chat(a) => Some(&a.sampling),
        _ => None,
    };
    if let Some(e) = sampling.and_then(|s| s.contradiction()) {
        eprintln!("error: {e}");
        return 2;
    }
    // SCRATCHGPT_GEMM / SCRATCHGPT_SIMD name a path this CPU has, or nothing runs
    if let Err(e) = tensor::kernels::check_environment() {
        eprintln!("error: {e}");
        return 1;
    }
    // several processes started by mpirun only make sense for `train`: the others would each
    // do the same work, all printing and writing
    let processes = crate::collective::launched_size();
    if processes > 1 && !matches!(cli.command, Command::Train(_)) {
        eprintln!(
            "error: only `scratchgpt train` runs on several processes; this command was started as one of {processes} (run it without mpirun)"
        );
        return 1;
    }
    let result = match &cli.command {
        Command::Train(a) => train_command(a),
        Command::Generate(a) => generate_command(a),
        Command::Eval(a) => eval_command(a),
        Command::Finetune(FinetuneCommand::Classify(a)) => finetune::classify_command(a),
        Command::Finetune(FinetuneCommand::Instruct(a)) => instruct::instruct_command(a),
        Command::Classify(a) => classify::classify_command(a),
        Command::Chat(a) => instruct::chat_command(a),
        Command::MergeLora(a) => merge_lora_command(a),
        Command::Tokenize(a) => tokenize_command(a),
        Command::Inspect(c) => inspect_command(c),
        Command::Bench(BenchArgs {
            what: Some(BenchCommand::Context(a)),
        }) => run_context_bench(a),
        Command::Bench(BenchArgs { what: None }) => {
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
