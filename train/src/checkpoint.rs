//! Checkpoints: everything needed to continue a run exactly, written so that a crash can
//! never destroy the last good one.
//!
//! Layout of a run's output directory:
//! ```text
//! out/
//!   latest                       "checkpoints/step-00000120" (replaced atomically)
//!   checkpoints/step-00000120/
//!     config.json, model.safetensors     GPT-2 names and layout (loads in other GPT-2 tools)
//!     tokenizer.json, vocab.json, merges.txt  Hugging Face tokenizer files (see tokenizer::files)
//!     optimizer.safetensors              AdamW moments m/<param>, v/<param>
//!     scratchgpt_state.json              step, epoch, data position, RNG state, settings, metrics
//!                                        (trainer_state.json in earlier versions, still read)
//!   metrics.csv, loss.svg
//! ```
//! A checkpoint is first written completely into a temporary directory (every file flushed to
//! disk), then renamed into place, and only then does `latest` move to it. A crash at any
//! moment leaves `latest` pointing at a complete checkpoint. The previous checkpoint is kept
//! until a newer one is complete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use model::memory::MemoryEstimate;
use model::weights::{self, write_atomically, write_safetensors, LoadOptions, TensorToWrite};
use model::{Context, GptModel, Module};
use safetensors::tensor::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use tensor::AdamW;

use crate::error::{io_error, TrainError};
use crate::metrics::MetricRecord;
use crate::settings::TrainSettings;
use crate::tokenizer::Tokenizer;

pub const LATEST_FILE: &str = "latest";
/// scratchgpt's own name: Hugging Face's Trainer writes a `trainer_state.json` of another
/// content into its checkpoints.
pub const STATE_FILE: &str = "scratchgpt_state.json";
/// The state file's name in checkpoints of earlier versions (still read).
pub const OLD_STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const STATE_VERSION: u32 = 1;

/// Where a run stands: what resuming needs besides weights and optimizer moments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub version: u32,
    pub settings: TrainSettings,
    /// Optimizer steps done.
    pub step: usize,
    /// The epoch in progress (0-based) and how many of its batches are done.
    pub epoch: usize,
    pub batch_in_epoch: usize,
    /// The order this epoch visits the training windows in (a list, or a permutation's key
    /// for token shards; older checkpoints hold a list).
    pub order: crate::data::EpochOrder,
    /// The run generator's state (dropout masks, shuffling).
    pub rng: Vec<u64>,
    pub tokens_seen: u64,
    /// AdamW's step counter.
    pub adam_t: u64,
    /// Fingerprint of the training and validation token ids, so a resume on other data is caught.
    pub data_fingerprint: String,
    pub history: Vec<MetricRecord>,
    pub elapsed_secs: f64,
    /// The text files the run trains on (absolute paths; empty for the built-in corpus), so
    /// `--resume` needs no `--data`. `None` in checkpoints of versions that did not record them.
    #[serde(default)]
    pub data_files: Option<Vec<PathBuf>>,
}

/// FNV-1a over the token ids: a cheap fingerprint of a dataset.
pub fn fingerprint(parts: &[&[usize]]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &x in part.iter().chain([&usize::MAX]) {
            for b in (x as u64).to_le_bytes() {
                h ^= b as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    format!("{h:016x}")
}

/// The checkpoint directory a path refers to: `path/latest`'s target for a run directory,
/// else `path` itself when it holds `config.json` (a single checkpoint or a GPT-2 download).
pub fn resolve(path: &Path) -> Result<PathBuf, TrainError> {
    if !path.exists() {
        return Err(TrainError(format!("{}: no such directory", path.display())));
    }
    if !path.is_dir() {
        return Err(TrainError(format!(
            "{}: is a file; a checkpoint is a directory",
            path.display()
        )));
    }
    let latest = path.join(LATEST_FILE);
    if latest.is_file() {
        let target = std::fs::read_to_string(&latest).map_err(|e| io_error(&latest, e))?;
        let target = target.trim();
        if target.is_empty() || target.contains("..") || Path::new(target).is_absolute() {
            return Err(TrainError(format!(
                "{}: does not name a checkpoint",
                latest.display()
            )));
        }
        return Ok(path.join(target));
    }
    if path.join(weights::CONFIG_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    Err(TrainError(format!(
        "{}: no checkpoint here (expected `{LATEST_FILE}` or `{}`)",
        path.display(),
        weights::CONFIG_FILE
    )))
}

/// Loads a model and its tokenizer for inference from a run directory, a checkpoint directory,
/// a Hugging Face GPT-2 directory (GPT-2 tokenizer unless it carries its own files), or a
/// GPT-2 name such as `gpt2` (from the Hugging Face cache, downloaded when missing: see
/// [`crate::hub::checkpoint_dir`]).
pub fn load_for_inference(path: &Path, ctx: &Context) -> Result<(GptModel, Tokenizer), TrainError> {
    load_fitting(
        path,
        ctx,
        |cfg| MemoryEstimate::inference(cfg, 1),
        crate::memory::INFERENCE_REMEDY,
    )
}

/// [`load_for_inference`], checking first that what the command will do with the model
/// (`need`, from its config) fits in memory, or saying what to change (`remedy`).
pub fn load_fitting(
    path: &Path,
    ctx: &Context,
    need: impl Fn(&model::GptConfig) -> MemoryEstimate,
    remedy: &str,
) -> Result<(GptModel, Tokenizer), TrainError> {
    let dir = resolve(&crate::hub::checkpoint_dir(path)?)?;
    let cfg = weights::read_config(&dir.join(weights::CONFIG_FILE))?;
    let need = need(&cfg);
    crate::memory::check_fits(&need, &format!("the model in {}", dir.display()), remedy)?;
    let model = weights::load_model_with(&dir, ctx, LoadOptions { check_finite: true })?;
    let tokenizer = Tokenizer::load(&dir)?;
    // a model's vocabulary may be padded past its tokenizer's (train --vocab-size), not cut
    if tokenizer.vocab_size() > model.cfg.vocab_size {
        return Err(TrainError(format!(
            "{}: the tokenizer has {} ids but the model's vocabulary only {}",
            dir.display(),
            tokenizer.vocab_size(),
            model.cfg.vocab_size
        )));
    }
    Ok((model, tokenizer))
}

/// Everything a resumed run needs.
pub struct Resumed {
    pub model: GptModel,
    pub tokenizer: Tokenizer,
    pub optimizer: AdamW,
    pub state: TrainerState,
    pub dir: PathBuf,
}

/// Loads a checkpoint written by [`save`] for `--resume`.
pub fn load_for_resume(path: &Path, ctx: &Context) -> Result<Resumed, TrainError> {
    let dir = resolve(path)?;
    let state = read_state(&dir)?;
    let (model, tokenizer) = load_for_inference(&dir, ctx)?;
    if model.cfg != state.settings.model_config(tokenizer.vocab_size()) {
        return Err(TrainError(format!(
            "{}: config.json disagrees with the run's settings",
            dir.display()
        )));
    }
    let mut optimizer = new_optimizer(&model, &state.settings);
    read_optimizer(&dir.join(OPTIMIZER_FILE), &model, &mut optimizer)?;
    optimizer.t = state.adam_t;
    Ok(Resumed {
        model,
        tokenizer,
        optimizer,
        state,
        dir,
    })
}

/// The trainer state of the checkpoint directory `dir` (see [`resolve`]).
pub fn read_state(dir: &Path) -> Result<TrainerState, TrainError> {
    let state_path = [STATE_FILE, OLD_STATE_FILE]
        .map(|f| dir.join(f))
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| dir.join(STATE_FILE));
    if !state_path.is_file() {
        return Err(TrainError(format!(
            "{}: not a training checkpoint (no {STATE_FILE}); only scratchgpt runs can be resumed",
            dir.display()
        )));
    }
    let text = std::fs::read(&state_path).map_err(|e| io_error(&state_path, e))?;
    let state: TrainerState = serde_json::from_slice(&text).map_err(|e| {
        TrainError(format!(
            "{}: invalid trainer state: {e}",
            state_path.display()
        ))
    })?;
    if state.version != STATE_VERSION {
        return Err(TrainError(format!(
            "{}: state version {} is not supported",
            state_path.display(),
            state.version
        )));
    }
    Ok(state)
}

/// AdamW over the model's parameters in `named_parameters` order, as the settings say.
pub fn new_optimizer(model: &GptModel, settings: &TrainSettings) -> AdamW {
    AdamW::new(model.parameters(), settings.lr, settings.weight_decay)
}

fn read_optimizer(path: &Path, model: &GptModel, opt: &mut AdamW) -> Result<(), TrainError> {
    let bytes = model::weights::map_file(path).map_err(|e| io_error(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| TrainError(format!("{}: {e}", path.display())))?;
    let names: Vec<String> = model
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for (i, name) in names.iter().enumerate() {
        for (which, slot) in [("m", &mut opt.m[i]), ("v", &mut opt.v[i])] {
            let key = format!("{which}/{name}");
            let view = st.tensor(&key).map_err(|_| {
                TrainError(format!("{}: tensor {key:?} is missing", path.display()))
            })?;
            if view.dtype() != Dtype::F32 || view.data().len() != slot.len() * 4 {
                return Err(TrainError(format!(
                    "{}: tensor {key:?} has the wrong type or size",
                    path.display()
                )));
            }
            slot.copy_from_slice(&model::weights::floats(view.data()));
            bytes.release(view.data());
        }
    }
    Ok(())
}

fn write_optimizer(path: &Path, model: &GptModel, opt: &AdamW) -> Result<(), TrainError> {
    let names: Vec<String> = model
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    write_moments(path, &names, opt)
}

/// Writes AdamW's moments `m/<name>`, `v/<name>` of the optimizer's parameters, named by
/// `names` (one per parameter, in the optimizer's order).
pub fn write_moments(path: &Path, names: &[String], opt: &AdamW) -> Result<(), TrainError> {
    assert_eq!(
        names.len(),
        opt.params.len(),
        "write_moments: one name per parameter"
    );
    let mut tensors = Vec::with_capacity(2 * names.len());
    for (i, name) in names.iter().enumerate() {
        let shape = opt.params[i].shape();
        tensors.push(TensorToWrite::slice(format!("m/{name}"), shape, &opt.m[i]));
        tensors.push(TensorToWrite::slice(format!("v/{name}"), shape, &opt.v[i]));
    }
    let mut meta = HashMap::new();
    meta.insert("t".to_string(), opt.t.to_string());
    Ok(write_safetensors(path, &tensors, meta)?)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes a complete checkpoint for `state.step` under `out` and points `out/latest` at it.
/// Returns the checkpoint's directory. On error the previous checkpoint stays current.
pub fn save(
    out: &Path,
    model: &GptModel,
    tokenizer: &Tokenizer,
    opt: &AdamW,
    state: &TrainerState,
) -> Result<PathBuf, TrainError> {
    save_with(out, model, tokenizer, state, |dir| {
        write_optimizer(&dir.join(OPTIMIZER_FILE), model, opt)
    })
}

/// [`save`] with the optimizer state, and whatever else a command keeps in its checkpoints,
/// written by `write_extra` into the checkpoint's directory before it is made current.
pub fn save_with(
    out: &Path,
    model: &GptModel,
    tokenizer: &Tokenizer,
    state: &TrainerState,
    write_extra: impl Fn(&Path) -> Result<(), TrainError>,
) -> Result<PathBuf, TrainError> {
    let name = format!("step-{:08}", state.step);
    let ckpts = out.join("checkpoints");
    let final_dir = ckpts.join(&name);
    let rel = format!("checkpoints/{name}");
    let latest = out.join(LATEST_FILE);
    if final_dir.is_dir() && std::fs::read_to_string(&latest).is_ok_and(|s| s.trim() == rel) {
        return Ok(final_dir); // this very step is already the current checkpoint
    }
    std::fs::create_dir_all(&ckpts).map_err(|e| io_error(&ckpts, e))?;
    let tmp = ckpts.join(format!(".tmp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let write = || -> Result<(), TrainError> {
        std::fs::create_dir_all(&tmp).map_err(|e| io_error(&tmp, e))?;
        weights::save_model(model, &tmp)?;
        for (file, bytes) in tokenizer.files() {
            write_atomically(&tmp.join(file), &bytes)?;
        }
        write_extra(&tmp)?;
        let json =
            serde_json::to_vec(state).map_err(|e| TrainError(format!("trainer state: {e}")))?;
        write_atomically(&tmp.join(STATE_FILE), &json)?;
        sync_dir(&tmp);
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).map_err(|e| io_error(&final_dir, e))?;
        }
        std::fs::rename(&tmp, &final_dir).map_err(|e| io_error(&final_dir, e))?;
        sync_dir(&ckpts);
        write_atomically(&latest, rel.as_bytes())?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(TrainError(format!(
            "could not save the checkpoint ({e}); the previous checkpoint is kept"
        )));
    }
    prune(&ckpts, &name);
    Ok(final_dir)
}

/// Removes leftovers of interrupted saves and all checkpoints but the current and previous one.
fn prune(ckpts: &Path, current: &str) {
    let Ok(entries) = std::fs::read_dir(ckpts) else {
        return;
    };
    let mut steps: Vec<String> = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".tmp-") && !name.ends_with(&format!("-{}", std::process::id())) {
            let _ = std::fs::remove_dir_all(e.path());
        } else if name.starts_with("step-") && name.as_str() <= current {
            steps.push(name);
        }
    }
    steps.sort();
    let keep_from = steps.len().saturating_sub(2);
    for old in &steps[..keep_from] {
        let _ = std::fs::remove_dir_all(ckpts.join(old));
    }
}
