//! The commands of the `scratchgpt` binary, one file each; [`crate::cli`] parses the command
//! line and dispatches to them.

pub mod classify;
pub mod eval;
pub mod finetune;
pub mod generate;
pub mod instruct;
pub mod merge_lora;
pub mod train;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::error::TrainError;
use crate::run_dir::OutDir;
use crate::trainer::{self, RunOptions, RunSummary, Session, Task};

/// Runs a fine-tuning task in the shared loop, in its run directory `out`: Ctrl-C stops after
/// saving, the first checkpoint completes the directory (`runs/latest`, `--force`), and a run
/// that fails before its first checkpoint leaves nothing behind.
pub fn run_in(
    out: &Arc<OutDir>,
    task: &dyn Task,
    session: &mut Session,
    data_files: Vec<PathBuf>,
    quiet: bool,
) -> Result<RunSummary, TrainError> {
    let stop = Arc::new(AtomicBool::new(false));
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
