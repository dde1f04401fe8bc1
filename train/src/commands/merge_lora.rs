//! `scratchgpt merge-lora`: folds the adapters of a LoRA checkpoint into its weights,
//! `W' = W + s·(A·B)ᵀ` in every adapted layer ([`model::lora::merge_lora`]), and writes a
//! standalone checkpoint without LoRA files. It computes the same logits (to float rounding)
//! and runs as fast as the base model; `classify`, `eval` and `generate` load it as any other.

use std::path::{Path, PathBuf};

use clap::Args;
use model::lora::merge_lora;
use model::weights::{save_model, write_atomically};
use model::Context;

use crate::checkpoint::{load_for_inference, resolve};
use crate::classification::{is_classifier, load_classifier, write_classifier};
use crate::error::{io_error, TrainError};
use crate::lora::{is_lora, load_adapters, LORA_CONFIG_FILE};
use crate::tokenizer::Tokenizer;

#[derive(Args, Debug)]
pub struct MergeLoraArgs {
    /// A LoRA fine-tuning run or checkpoint directory (made with `finetune … --lora`).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// The new checkpoint directory (must not exist, or be empty).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn merge_lora_command(a: &MergeLoraArgs) -> Result<i32, TrainError> {
    let dir = resolve(&a.checkpoint)?;
    if !is_lora(&dir) {
        return Err(TrainError(format!(
            "{}: not a LoRA checkpoint (no {LORA_CONFIG_FILE}); make one with `scratchgpt finetune classify --lora RANK`",
            dir.display()
        )));
    }
    let occupied = std::fs::read_dir(&a.out).is_ok_and(|mut d| d.next().is_some());
    if occupied || a.out.is_file() {
        return Err(TrainError(format!(
            "{}: already exists; choose a new directory for the merged model",
            a.out.display()
        )));
    }
    let ctx = Context::for_loading();
    let write = |tmp: &Path| -> Result<(), TrainError> {
        if is_classifier(&dir) {
            let (mut c, tok, mut info) = load_classifier(&dir, &ctx)?;
            merge_lora(&mut c);
            info.trainable = "lora (merged)".into();
            write_checkpoint(tmp, &c.gpt, &tok)?;
            write_classifier(tmp, &c, &info)
        } else {
            let (mut gpt, tok) = load_for_inference(&dir, &ctx)?;
            load_adapters(&dir, &mut gpt, &ctx)?;
            merge_lora(&mut gpt);
            write_checkpoint(tmp, &gpt, &tok)
        }
    };
    // written beside the destination, then renamed: a failure leaves no half-written model
    let name = a
        .out
        .file_name()
        .map_or("merged".into(), |n| n.to_string_lossy().into_owned());
    let tmp = a
        .out
        .with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    // named after --out, where the user looks (the temporary name is ours)
    std::fs::create_dir_all(&tmp)
        .map_err(|e| TrainError(format!("{}: cannot write there ({e})", a.out.display())))?;
    let done = write(&tmp).and_then(|()| {
        if a.out.is_dir() {
            std::fs::remove_dir(&a.out).map_err(|e| io_error(&a.out, e))?;
        }
        std::fs::rename(&tmp, &a.out).map_err(|e| io_error(&a.out, e))
    });
    if let Err(e) = done {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    println!(
        "merged the adapters of {} into {}",
        dir.display(),
        a.out.display()
    );
    Ok(0)
}

/// `config.json`, `model.safetensors` and the tokenizer's files.
fn write_checkpoint(dir: &Path, gpt: &model::GptModel, tok: &Tokenizer) -> Result<(), TrainError> {
    save_model(gpt, dir)?;
    for (file, bytes) in tok.files() {
        write_atomically(&dir.join(file), &bytes)?;
    }
    Ok(())
}
