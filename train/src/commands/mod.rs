//! The commands of the `scratchgpt` binary, one file each; [`crate::cli`] parses the command
//! line and dispatches to them.

pub mod classify;
pub mod eval;
pub mod finetune;
pub mod generate;
pub mod inspect;
pub mod instruct;
pub mod merge_lora;
pub mod tokenize;
pub mod train;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use model::lora::{LoraConfig, LoraScaling};

use crate::error::TrainError;
use crate::run_dir::OutDir;
use crate::settings::{TokenizerSpec, TrainSettings};
use crate::trainer::{self, RunOptions, RunSummary, Session, Task};

/// Runs a fine-tuning task in the shared loop, in its run directory `out`: Ctrl-C stops after
/// saving, the first checkpoint completes the directory (`runs/latest`, `--force`), and a run
/// that fails before its first checkpoint leaves nothing behind. `stop` is set by Ctrl-C (also
/// after the loop, for the work the command does then).
pub fn run_in(
    out: &Arc<OutDir>,
    task: &dyn Task,
    session: &mut Session,
    data_files: Vec<PathBuf>,
    quiet: bool,
    stop: &Arc<AtomicBool>,
) -> Result<RunSummary, TrainError> {
    let stop = stop.clone();
    crate::cli::stop_on_ctrl_c(stop.clone());
    let hook_out = out.clone();
    let opts = RunOptions {
        out_dir: out.path.clone(),
        data_files: Some(data_files),
        on_checkpoint: Some(Arc::new(move || hook_out.checkpoint_written())),
        stop,
        progress: true,
        quiet,
        min_secs_between_epoch_saves: 5.0 * 60.0,
        ..RunOptions::default()
    };
    trainer::train_loop(task, session, &opts).inspect_err(|_| out.abandon())
}

/// What a fine-tuning command's flags say about its schedule.
pub struct FineTuneSchedule {
    /// `None`: the book's 5e-5, or 8e-4 with LoRA's alpha-over-rank scaling.
    pub lr: Option<f32>,
    pub weight_decay: f32,
    pub epochs: usize,
    pub max_steps: Option<usize>,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub eval_freq: usize,
    pub eval_iter: usize,
    pub dropout: f32,
    pub seed: u64,
    pub book_compat: bool,
}

/// The shared loop's settings for a fine-tuning run (`preset` names it in checkpoints): the
/// book's schedule of chapters 6 and 7 — a constant learning rate, no warm-up, no clipping —
/// with the flags given, checked.
/// A `--max-length` the model can take: at most its context (the default is capped to it, a
/// length given is not cut silently).
pub fn check_max_length(max_length: Option<usize>, context: usize) -> Result<(), TrainError> {
    match max_length {
        Some(m) if m > context => Err(TrainError(format!(
            "--max-length {m} is longer than the model's context of {context} tokens; give at most {context}"
        ))),
        _ => Ok(()),
    }
}

pub fn fine_tuning_settings(
    preset: &str,
    f: &FineTuneSchedule,
    lora: Option<&LoraConfig>,
) -> Result<TrainSettings, TrainError> {
    let lr = f.lr.unwrap_or(match lora {
        Some(cfg) if cfg.scaling == LoraScaling::AlphaOverRank => 8e-4,
        _ => 5e-5,
    });
    let s = TrainSettings {
        preset: preset.into(),
        tokenizer: TokenizerSpec::Gpt2,
        dropout: f.dropout,
        batch_size: f.batch_size,
        grad_accum: f.grad_accum,
        epochs: f.epochs,
        max_steps: f.max_steps,
        lr,
        min_lr: lr,
        cosine: false,
        warmup_steps: 0,
        weight_decay: f.weight_decay,
        grad_clip: None,
        eval_freq: f.eval_freq,
        eval_iter: f.eval_iter,
        seed: f.seed,
        book_compat: f.book_compat,
        ..TrainSettings::preset("quickstart")?
    };
    s.validate()?;
    Ok(s)
}
