//! LoRA for the fine-tuning commands (book appendix E): the flags, and the adapters' files in
//! a checkpoint. The layers themselves are [`model::lora`].
//!
//! A LoRA checkpoint is an ordinary checkpoint directory (the base GPT's `config.json` and
//! `model.safetensors`, the tokenizer, for a classifier its head) plus two files:
//! - `lora.json`: rank, alpha, scaling, and the checkpoint that was fine-tuned (for the record);
//! - `lora.safetensors`: every adapter's `A` and `B`, by parameter name
//!   (`trf_blocks.0.att.W_query.lora.A`, …, `classifier.lora.B`).
//!
//! The base weights are stored too, although LoRA leaves them unchanged: the directory then
//! stands on its own (it still loads when the base checkpoint is moved, deleted, or was a
//! Hugging Face cache entry), and it is written by the same code as every other checkpoint.
//! The price is disk space (500 MB for GPT-2 small, against 10 MB of adapters).

use std::path::Path;

use clap::Args;
use model::lora::{add_lora, lora_parameters, LoraConfig, LoraModel, LoraScaling};
use model::weights::{write_atomically, write_safetensors, TensorToWrite};
use model::{Context, Module};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::classification::read_f32;
use crate::error::{io_error, TrainError};

pub const LORA_CONFIG_FILE: &str = "lora.json";
pub const LORA_WEIGHTS_FILE: &str = "lora.safetensors";

/// The LoRA flags of a fine-tuning command (flattened into its arguments).
#[derive(Args, Debug, Clone, Default)]
pub struct LoraArgs {
    /// Train low-rank adapters of this rank on every linear layer (book appendix E) instead of
    /// the model's weights, which stay frozen [default: off]. The book uses 16.
    #[arg(long, value_name = "RANK")]
    pub lora: Option<usize>,
    /// LoRA's alpha [default: the rank].
    #[arg(
        long,
        requires = "lora",
        allow_negative_numbers = true,
        value_name = "A"
    )]
    pub lora_alpha: Option<f32>,
    /// How the adapters' output is scaled: alpha-over-rank (the LoRA paper and the book's
    /// repository today) or alpha (the book as first printed) [default: alpha-over-rank].
    #[arg(long, requires = "lora", value_name = "HOW")]
    pub lora_scaling: Option<String>,
}

impl LoraArgs {
    /// The adapters asked for, or `None` without `--lora`. Errors name the flag.
    pub fn config(&self) -> Result<Option<LoraConfig>, TrainError> {
        let Some(rank) = self.lora else {
            return Ok(None);
        };
        if rank == 0 {
            return Err(TrainError("--lora: the rank must be at least 1".into()));
        }
        let scaling = match &self.lora_scaling {
            Some(s) => {
                LoraScaling::parse(s).map_err(|e| TrainError(format!("--lora-scaling: {e}")))?
            }
            None => LoraScaling::AlphaOverRank,
        };
        let cfg = LoraConfig {
            rank,
            alpha: self.lora_alpha.unwrap_or(rank as f32),
            scaling,
        };
        cfg.validate()
            .map_err(|e| TrainError(format!("--lora-alpha: {e}")))?;
        Ok(Some(cfg))
    }
}

/// Checks, before any adapter is made, that `cfg`'s rank suits `model` (at most its width:
/// a larger rank adds numbers, not capacity, since no adapted weight has a higher rank) and
/// that the adapters, their gradients and AdamW's two moments fit in memory. Returns how many
/// trainable numbers the adapters will have.
pub fn check_adapters(model: &mut dyn LoraModel, cfg: &LoraConfig) -> Result<usize, TrainError> {
    let width = model.gpt_mut().cfg.emb_dim;
    if cfg.rank > width {
        return Err(TrainError(format!(
            "--lora: rank {} is larger than the model's width {width}; choose a rank from 1 to {width} (the book uses 16)",
            cfg.rank
        )));
    }
    let count: usize = model
        .linears_mut()
        .into_iter()
        .map(|l| {
            let [out, inp] = l.weight.shape() else {
                unreachable!("a linear weight is [out, in]")
            };
            cfg.parameters_for(*inp, *out)
        })
        .sum();
    let floats = 4 * count as u64; // the adapters, their gradients, two moments
    let need = model::memory::MemoryEstimate {
        weights: 4 * floats,
        ..Default::default()
    };
    crate::memory::check_fits(
        &need,
        &format!("LoRA adapters of rank {}", cfg.rank),
        "choose a lower --lora rank",
    )?;
    Ok(count)
}

/// `lora.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraInfo {
    pub rank: usize,
    pub alpha: f32,
    /// `alpha-over-rank` or `alpha`.
    pub scaling: String,
    /// The checkpoint that was fine-tuned, as given (its weights are stored here too).
    pub base: String,
}

impl LoraInfo {
    pub fn new(cfg: &LoraConfig, base: &Path) -> LoraInfo {
        LoraInfo {
            rank: cfg.rank,
            alpha: cfg.alpha,
            scaling: cfg.scaling.name().to_string(),
            base: base.display().to_string(),
        }
    }

    fn config(&self, path: &Path) -> Result<LoraConfig, TrainError> {
        let scaling = LoraScaling::parse(&self.scaling)
            .map_err(|e| TrainError(format!("{}: {e}", path.display())))?;
        let cfg = LoraConfig {
            rank: self.rank,
            alpha: self.alpha,
            scaling,
        };
        cfg.validate()
            .map_err(|e| TrainError(format!("{}: {e}", path.display())))?;
        Ok(cfg)
    }
}

/// A GPT for generation (`generate`, `chat`, `eval`): [`crate::checkpoint::load_for_inference`],
/// then its LoRA adapters when the checkpoint has them.
pub fn load_with_adapters(
    path: &Path,
    ctx: &Context,
) -> Result<(model::GptModel, crate::tokenizer::Tokenizer), TrainError> {
    load_with_adapters_fitting(
        path,
        ctx,
        |cfg| model::memory::MemoryEstimate::inference(cfg, 1),
        crate::memory::INFERENCE_REMEDY,
    )
}

/// [`load_with_adapters`] with the memory check of [`crate::checkpoint::load_fitting`].
pub fn load_with_adapters_fitting(
    path: &Path,
    ctx: &Context,
    need: impl Fn(&model::GptConfig) -> model::memory::MemoryEstimate,
    remedy: &str,
) -> Result<(model::GptModel, crate::tokenizer::Tokenizer), TrainError> {
    // (a local checkpoint; a GPT-2 name is neither a classifier nor adapted)
    let local = crate::checkpoint::resolve(path).ok();
    // a classifier's GPT keeps the language-model head it was given, untrained with the
    // blocks it fine-tuned: its next-token predictions mean nothing
    if local
        .as_deref()
        .is_some_and(crate::classification::is_classifier)
    {
        return Err(TrainError(format!(
            "{}: is a classifier (made by `finetune classify`), not a language model; use `scratchgpt classify` or `scratchgpt eval` with it",
            path.display()
        )));
    }
    let (mut gpt, tok) = crate::checkpoint::load_fitting(path, ctx, need, remedy)?;
    if let Some(dir) = &local {
        load_adapters(dir, &mut gpt, ctx)?;
    }
    Ok((gpt, tok))
}

/// Errors when `path` is a LoRA checkpoint given as the model to fine-tune: fine-tuning
/// starts from the base weights alone, so its adapters would silently be left out.
pub fn refuse_as_base(path: &Path) -> Result<(), TrainError> {
    match crate::checkpoint::resolve(path) {
        Ok(dir) if is_lora(&dir) => Err(TrainError(format!(
            "{}: is a LoRA checkpoint, and fine-tuning starts from a model's own weights (its adapters would be left out); fold them in first with `scratchgpt merge-lora --checkpoint {} --out MERGED` and fine-tune MERGED",
            path.display(),
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// True when the checkpoint directory `dir` holds LoRA adapters.
pub fn is_lora(dir: &Path) -> bool {
    dir.join(LORA_CONFIG_FILE).is_file()
}

/// Writes `lora.json` and the adapters of `model` (`lora.safetensors`) into `dir`.
pub fn write_adapters(dir: &Path, model: &dyn Module, info: &LoraInfo) -> Result<(), TrainError> {
    let params = lora_parameters(model);
    let tensors: Vec<TensorToWrite> = params
        .iter()
        .map(|(name, p)| TensorToWrite::tensor(name.clone(), p))
        .collect();
    write_safetensors(&dir.join(LORA_WEIGHTS_FILE), &tensors, Default::default())?;
    let json = serde_json::to_vec_pretty(info).expect("LoRA info serialises");
    write_atomically(&dir.join(LORA_CONFIG_FILE), &json)?;
    Ok(())
}

/// When `dir` holds adapters: adds adapters to `model` (as [`add_lora`] does) and reads their
/// values from `lora.safetensors`. Returns their configuration, or `None` for a checkpoint
/// without LoRA (the model is then left as it is).
pub fn load_adapters(
    dir: &Path,
    model: &mut dyn LoraModel,
    ctx: &Context,
) -> Result<Option<LoraConfig>, TrainError> {
    let info_path = dir.join(LORA_CONFIG_FILE);
    if !info_path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read(&info_path).map_err(|e| io_error(&info_path, e))?;
    let info: LoraInfo = serde_json::from_slice(&text)
        .map_err(|e| TrainError(format!("{}: {e}", info_path.display())))?;
    let cfg = info.config(&info_path)?;
    add_lora(model, &cfg, ctx);
    let path = dir.join(LORA_WEIGHTS_FILE);
    let bytes = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| TrainError(format!("{}: {e}", path.display())))?;
    let params = lora_parameters(model);
    if st.len() != params.len() {
        return Err(TrainError(format!(
            "{}: holds {} tensors, the model's adapters are {}",
            path.display(),
            st.len(),
            params.len()
        )));
    }
    for (name, p) in params {
        let values = read_f32(&st, &path, &name, p.shape())?.to_vec();
        p.update(|w| w.copy_from_slice(&values));
    }
    Ok(Some(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::lora::merge_lora;
    use model::{GptConfig, GptModel};
    use tensor::{no_grad, Tensor};

    #[test]
    fn adapters_of_a_gpt_round_trip_and_merge() {
        // what a LoRA language-model checkpoint (instruction fine-tuning) stores and loads
        let cfg = GptConfig {
            vocab_size: 20,
            context_length: 8,
            emb_dim: 8,
            n_heads: 2,
            n_layers: 2,
            drop_rate: 0.0,
            qkv_bias: true,
            tie_weights: true,
        };
        let ctx = Context::new(7);
        let mut gpt = GptModel::new(&cfg, &ctx).unwrap();
        let lora = LoraConfig {
            rank: 2,
            alpha: 4.0,
            scaling: LoraScaling::Alpha,
        };
        add_lora(&mut gpt, &lora, &ctx);
        for (_, p) in lora_parameters(&gpt) {
            let r = Tensor::randn(p.shape(), &mut ctx.rng()).to_vec();
            p.update(|w| w.iter_mut().zip(&r).for_each(|(w, r)| *w = 0.3 * r));
        }
        let dir = std::env::temp_dir().join(format!("scratchgpt-lora-{}", std::process::id()));
        model::weights::save_model(&gpt, &dir).unwrap();
        write_adapters(&dir, &gpt, &LoraInfo::new(&lora, Path::new("base"))).unwrap();
        assert!(is_lora(&dir));
        let ids = [1, 5, 2, 7, 3, 3, 0, 12];
        let want = {
            let _g = no_grad();
            gpt.forward(&ids, 2).to_vec()
        };
        let mut loaded = model::weights::load_model(&dir, &ctx).unwrap();
        assert_eq!(load_adapters(&dir, &mut loaded, &ctx).unwrap(), Some(lora));
        let _g = no_grad();
        assert_eq!(loaded.forward(&ids, 2).to_vec(), want);
        merge_lora(&mut loaded);
        let merged = loaded.forward(&ids, 2).to_vec();
        let worst = merged
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "merged logits differ by {worst} (relative)");
        // a missing adapter tensor is an error naming the file
        std::fs::write(dir.join(LORA_WEIGHTS_FILE), b"\x08\0\0\0\0\0\0\0{}      ").unwrap();
        let mut again = model::weights::load_model(&dir, &ctx).unwrap();
        let e = load_adapters(&dir, &mut again, &ctx).unwrap_err().0;
        assert!(e.contains(LORA_WEIGHTS_FILE), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn flags_give_the_config_or_one_error() {
        let args = |lora, alpha, scaling: Option<&str>| LoraArgs {
            lora,
            lora_alpha: alpha,
            lora_scaling: scaling.map(str::to_string),
        };
        assert_eq!(args(None, None, None).config().unwrap(), None);
        let cfg = args(Some(16), None, None).config().unwrap().unwrap();
        assert_eq!((cfg.alpha, cfg.scale()), (16.0, 1.0));
        let book = args(Some(16), Some(16.0), Some("alpha")).config().unwrap();
        assert_eq!(book.unwrap().scale(), 16.0);
        let e = args(Some(0), None, None).config().unwrap_err().0;
        assert!(e.contains("--lora") && e.contains("at least 1"), "{e}");
        let e = args(Some(4), Some(-1.0), None).config().unwrap_err().0;
        assert!(e.starts_with("--lora-alpha"), "{e}");
        let e = args(Some(4), None, Some("rank")).config().unwrap_err().0;
        assert!(e.contains("alpha-over-rank, alpha"), "{e}");
    }
}
