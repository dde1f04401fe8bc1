//! Model weights on disk (book section 5.5): `.safetensors` with GPT-2's own tensor names and
//! layouts, plus a Hugging Face style `config.json`, so a real GPT-2 checkpoint directory
//! loads as it is and a model trained here loads in other GPT-2 tools.
//!
//! | scratchgpt (book names) | GPT-2 file (`GPT2LMHeadModel`) |
//! |---|---|
//! | `tok_emb.weight` `[V, C]` | `wte.weight` `[V, C]` |
//! | `pos_emb.weight` `[T, C]` | `wpe.weight` `[T, C]` |
//! | `trf_blocks.i.norm1.scale/shift` | `h.i.ln_1.weight/bias` |
//! | `trf_blocks.i.att.W_query/W_key/W_value.weight` `[C, C]` each | `h.i.attn.c_attn.weight` `[C, 3C]` = `[W_qᵀ W_kᵀ W_vᵀ]` |
//! | their biases (or zeros without QKV bias) | `h.i.attn.c_attn.bias` `[3C]` |
//! | `trf_blocks.i.att.out_proj.weight/bias` | `h.i.attn.c_proj.weight` (transposed) / `.bias` |
//! | `trf_blocks.i.norm2.scale/shift` | `h.i.ln_2.weight/bias` |
//! | `trf_blocks.i.ff.layers.0.weight/bias` `[4C, C]` | `h.i.mlp.c_fc.weight` `[C, 4C]` (transposed) / `.bias` |
//! | `trf_blocks.i.ff.layers.2.weight/bias` `[C, 4C]` | `h.i.mlp.c_proj.weight` `[4C, C]` (transposed) / `.bias` |
//! | `final_norm.scale/shift` | `ln_f.weight/bias` |
//! | `out_head.weight` `[V, C]` | `lm_head.weight`, absent when tied to `wte` |
//!
//! GPT-2 stores its linear layers as `Conv1D`, computing `x·W` with W `[in, out]`: the
//! transpose of PyTorch's `Linear` `[out, in]` used here. Names may carry a `transformer.`
//! prefix. The causal-mask buffers `h.i.attn.bias` / `h.i.attn.masked_bias` that real files
//! contain are accepted and ignored; any other unknown, missing, mis-shaped or non-F32 tensor
//! is an error naming the file and the tensor.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::{json, Value};
use tensor::Tensor;

use crate::config::GptConfig;
use crate::gpt::GptModel;
use crate::module::Context;

/// The file names inside a checkpoint directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";

/// Largest `config.json` read (it is a few hundred bytes in practice).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Why weights or a config could not be read or written. Every variant names the file.
#[derive(Debug)]
pub enum WeightsError {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not a valid file of its kind (bad header, bad JSON, wrong field types, ...).
    Format {
        path: PathBuf,
        message: String,
    },
    Missing {
        path: PathBuf,
        name: String,
    },
    Unexpected {
        path: PathBuf,
        name: String,
    },
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    Dtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    NonFinite {
        path: PathBuf,
        name: String,
    },
}

impl fmt::Display for WeightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightsError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            WeightsError::Format { path, message } => write!(f, "{}: {message}", path.display()),
            WeightsError::Missing { path, name } => {
                write!(f, "{}: tensor {name:?} is missing", path.display())
            }
            WeightsError::Unexpected { path, name } => {
                write!(
                    f,
                    "{}: unexpected tensor {name:?} (not part of a GPT-2 model)",
                    path.display()
                )
            }
            WeightsError::Shape {
                path,
                name,
                expected,
                found,
            } => write!(
                f,
                "{}: tensor {name:?} has shape {found:?}, the config needs {expected:?}",
                path.display()
            ),
            WeightsError::Dtype { path, name, dtype } => {
                write!(
                    f,
                    "{}: tensor {name:?} is {dtype}; only F32 is supported",
                    path.display()
                )
            }
            WeightsError::NonFinite { path, name } => {
                write!(
                    f,
                    "{}: tensor {name:?} contains NaN or infinite values",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for WeightsError {}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WeightsError + '_ {
    move |source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn format_err(path: &Path, message: impl Into<String>) -> WeightsError {
    WeightsError::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

// ------------------------------------------------------------------ config.json

/// The config in Hugging Face's GPT-2 field names, plus a `scratchgpt` section for what
/// GPT-2 has no field for (other tools ignore it). `bos_token_id`/`eos_token_id` name the last
/// id, where every scratchgpt tokenizer keeps `<|endoftext|>` (50256 for GPT-2's); without
/// them Hugging Face's `GPT2Config` assumes 50256 whatever the vocabulary.
pub fn config_to_json(cfg: &GptConfig) -> Value {
    let end_of_text = cfg.vocab_size.saturating_sub(1);
    json!({
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.context_length,
        "n_ctx": cfg.context_length,
        "n_embd": cfg.emb_dim,
        "n_head": cfg.n_heads,
        "n_layer": cfg.n_layers,
        "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new",
        "resid_pdrop": cfg.drop_rate,
        "embd_pdrop": cfg.drop_rate,
        "attn_pdrop": cfg.drop_rate,
        "tie_word_embeddings": cfg.tie_weights,
        "bos_token_id": end_of_text,
        "eos_token_id": end_of_text,
        "scratchgpt": { "qkv_bias": cfg.qkv_bias },
    })
}

/// Reads a GPT-2 `config.json`. GPT-2 always has QKV biases, so `qkv_bias` is true unless the
/// file's `scratchgpt` section says otherwise; `tie_weights` is decided by the weights file
/// (`lm_head.weight` present or not) when the model is loaded.
pub fn read_config(path: &Path) -> Result<GptConfig, WeightsError> {
    let text = read_bounded(path, MAX_CONFIG_BYTES)?;
    let v: Value = serde_json::from_slice(&text)
        .map_err(|e| format_err(path, format!("invalid JSON: {e}")))?;
    config_from_json(&v).map_err(|m| format_err(path, m))
}

fn config_from_json(v: &Value) -> Result<GptConfig, String> {
    if !v.is_object() {
        return Err("expected a JSON object".into());
    }
    if let Some(t) = v.get("model_type") {
        if t != "gpt2" {
            return Err(format!("model_type is {t}, only \"gpt2\" is supported"));
        }
    }
    if let Some(a) = v.get("activation_function") {
        if a != "gelu_new" && a != "gelu_pytorch_tanh" {
            return Err(format!(
                "activation_function {a} is not supported (GPT-2 uses \"gelu_new\")"
            ));
        }
    }
    let int = |key: &str| -> Result<usize, String> {
        let x = v.get(key).ok_or(format!("field {key:?} is missing"))?;
        x.as_u64()
            .filter(|&n| n > 0 && n <= 1 << 31)
            .map(|n| n as usize)
            .ok_or(format!(
                "field {key:?} must be an integer from 1 to {}, got {x}",
                1u64 << 31
            ))
    };
    let eps = v
        .get("layer_norm_epsilon")
        .and_then(Value::as_f64)
        .unwrap_or(1e-5);
    if (eps - 1e-5).abs() > 1e-9 {
        return Err(format!(
            "layer_norm_epsilon {eps} is not supported (GPT-2 uses 1e-5)"
        ));
    }
    let drop = v.get("resid_pdrop").and_then(Value::as_f64).unwrap_or(0.1) as f32;
    let cfg = GptConfig {
        vocab_size: int("vocab_size")?,
        context_length: int("n_positions")?,
        emb_dim: int("n_embd")?,
        n_heads: int("n_head")?,
        n_layers: int("n_layer")?,
        drop_rate: drop,
        qkv_bias: v
            .pointer("/scratchgpt/qkv_bias")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        tie_weights: v
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(true),
    };
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

// ------------------------------------------------------------------ GPT-2 names

/// Where the values of a tensor to write come from. Nothing is copied until the file writer
/// asks for that tensor, so a save holds one tensor's bytes at a time, not a second copy of
/// the whole model (or of the optimizer's moments).
pub enum F32Source<'a> {
    /// A tensor or a view of one (a transpose is made contiguous when written).
    Tensor(Tensor),
    /// Tensors joined along a dimension (GPT-2's fused `c_attn`).
    Concat(Vec<Tensor>, isize),
    /// `n` zeros (the `c_attn` bias of a model without QKV bias).
    Zeros(usize),
    /// A borrowed buffer (the optimizer's moments).
    Slice(&'a [f32]),
}

/// A tensor to write to a `.safetensors` file: its name, shape and where its f32 values
/// come from.
pub struct TensorToWrite<'a> {
    pub name: String,
    pub shape: Vec<usize>,
    pub source: F32Source<'a>,
}

impl<'a> TensorToWrite<'a> {
    /// A tensor (or view) written under `name` with its own shape.
    pub fn tensor(name: impl Into<String>, t: &Tensor) -> Self {
        TensorToWrite {
            name: name.into(),
            shape: t.shape().to_vec(),
            source: F32Source::Tensor(t.clone()),
        }
    }

    /// A borrowed buffer written under `name` with `shape`.
    pub fn slice(name: impl Into<String>, shape: &[usize], values: &'a [f32]) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            values.len(),
            "TensorToWrite::slice: shape {shape:?} does not hold {} values",
            values.len()
        );
        TensorToWrite {
            name: name.into(),
            shape: shape.to_vec(),
            source: F32Source::Slice(values),
        }
    }

    fn byte_len(&self) -> usize {
        4 * self.shape.iter().product::<usize>()
    }
}

impl safetensors::View for &TensorToWrite<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        let bytes = match &self.source {
            F32Source::Tensor(t) => f32_bytes(&t.values()),
            F32Source::Concat(parts, dim) => {
                let parts: Vec<&Tensor> = parts.iter().collect();
                f32_bytes(&Tensor::concat(&parts, *dim).values())
            }
            F32Source::Zeros(n) => vec![0; 4 * n],
            F32Source::Slice(v) => f32_bytes(v),
        };
        debug_assert_eq!(bytes.len(), self.byte_len());
        bytes.into()
    }
    fn data_len(&self) -> usize {
        self.byte_len()
    }
}

/// The little-endian bytes of f32 values, as safetensors stores them.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The model's parameters under GPT-2 names and layouts (values are read only when written).
fn gpt2_tensors(model: &GptModel) -> Vec<TensorToWrite<'static>> {
    let named = |name: String, t: &Tensor| TensorToWrite::tensor(name, t);
    let mut out = vec![
        named("wte.weight".into(), &model.tok_emb.weight),
        named("wpe.weight".into(), &model.pos_emb.weight),
    ];
    let c = model.cfg.emb_dim;
    for (i, b) in model.trf_blocks.iter().enumerate() {
        let h = |s: &str| format!("h.{i}.{s}");
        let att = &b.att;
        let qkv_w = TensorToWrite {
            name: h("attn.c_attn.weight"),
            shape: vec![c, 3 * c],
            source: F32Source::Concat(
                vec![
                    att.w_query.weight.t(),
                    att.w_key.weight.t(),
                    att.w_value.weight.t(),
                ],
                1,
            ),
        };
        let qkv_b = TensorToWrite {
            name: h("attn.c_attn.bias"),
            shape: vec![3 * c],
            source: match (&att.w_query.bias, &att.w_key.bias, &att.w_value.bias) {
                (Some(q), Some(k), Some(v)) => {
                    F32Source::Concat(vec![q.clone(), k.clone(), v.clone()], 0)
                }
                _ => F32Source::Zeros(3 * c),
            },
        };
        out.push(named(h("ln_1.weight"), &b.norm1.scale));
        out.push(named(h("ln_1.bias"), &b.norm1.shift));
        out.push(qkv_w);
        out.push(qkv_b);
        out.push(named(h("attn.c_proj.weight"), &att.out_proj.weight.t()));
        out.push(named(
            h("attn.c_proj.bias"),
            att.out_proj.bias.as_ref().unwrap(),
        ));
        out.push(named(h("ln_2.weight"), &b.norm2.scale));
        out.push(named(h("ln_2.bias"), &b.norm2.shift));
        out.push(named(h("mlp.c_fc.weight"), &b.ff.fc1.weight.t()));
        out.push(named(h("mlp.c_fc.bias"), b.ff.fc1.bias.as_ref().unwrap()));
        out.push(named(h("mlp.c_proj.weight"), &b.ff.fc2.weight.t()));
        out.push(named(h("mlp.c_proj.bias"), b.ff.fc2.bias.as_ref().unwrap()));
    }
    out.push(named("ln_f.weight".into(), &model.final_norm.scale));
    out.push(named("ln_f.bias".into(), &model.final_norm.shift));
    if !model.cfg.tie_weights {
        out.push(named("lm_head.weight".into(), &model.out_head.weight));
    }
    out
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, flushed to
/// disk, then renamed over `path`. A crash leaves either the old file or the new one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), WeightsError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .ok_or_else(|| format_err(path, "not a file path"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all(); // make the rename durable where the platform allows
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

/// Writes tensors as a `.safetensors` file straight to disk, one tensor's bytes at a time (no
/// in-memory copy of the whole file), through a temporary file renamed into place, then
/// flushed to disk.
pub fn write_safetensors(
    path: &Path,
    tensors: &[TensorToWrite],
    metadata: HashMap<String, String>,
) -> Result<(), WeightsError> {
    let views = tensors.iter().map(|t| (t.name.as_str(), t));
    safetensors::serialize_to_file(views, Some(metadata), path)
        .map_err(|e| format_err(path, e.to_string()))?;
    #[cfg(unix)]
    {
        // the temporary file is created private (0600); a weights file is ordinary data
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .map_err(io_err(path))?;
    }
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))
}

/// Saves `config.json` and `model.safetensors` into `dir` (created if needed), each written
/// atomically.
pub fn save_model(model: &GptModel, dir: &Path) -> Result<(), WeightsError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let weights_path = dir.join(WEIGHTS_FILE);
    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    write_safetensors(&weights_path, &gpt2_tensors(model), metadata)?;
    let config = serde_json::to_vec_pretty(&config_to_json(&model.cfg)).expect("config serialises");
    write_atomically(&dir.join(CONFIG_FILE), &config)
}

/// Reads a whole file, refusing one larger than `limit` bytes before allocating for it.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, WeightsError> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    if meta.is_dir() {
        return Err(format_err(path, "is a directory, expected a file"));
    }
    if meta.len() > limit {
        return Err(format_err(
            path,
            format!(
                "file of {} bytes is larger than the {limit}-byte limit",
                meta.len()
            ),
        ));
    }
    std::fs::read(path).map_err(io_err(path))
}

/// A whole file, memory-mapped for reading: a large tensor file (weights, AdamW's moments) is
/// then copied once, from the page cache straight into the model or optimizer, instead of
/// first into a file-sized buffer whose fresh pages the kernel would have to clear (0.5–0.65
/// GB for GPT-2 small's weights, 1.3 GB for its moments), and nothing is allocated for
/// whatever size the file claims.
pub fn map_file(path: &Path) -> std::io::Result<MappedFile> {
    let file = std::fs::File::open(path)?;
    // SAFETY: the mapping is only read, and nothing in this process writes the file while it
    // is mapped. Another process truncating it meanwhile would fault the read; checkpoints are
    // written to a new directory and renamed into place, and downloads are complete files, so
    // none is.
    unsafe { memmap2::Mmap::map(&file) }.map(MappedFile)
}

/// A file mapped by [`map_file`]: its bytes, and a way to let go of the pages already read.
pub struct MappedFile(memmap2::Mmap);

impl std::ops::Deref for MappedFile {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl MappedFile {
    /// Takes the pages holding `part` (a slice of this file's bytes, already copied where it
    /// goes) out of this process's memory. They stay in the page cache, and reading them
    /// again maps them again; but a reader that copies tensor after tensor holds one tensor of
    /// the file at a time besides what it fills, rather than all of it: loading GPT-2 small
    /// peaked at the model plus the whole 650 MB file.
    pub fn release(&self, part: &[u8]) {
        let start = (part.as_ptr() as usize).wrapping_sub(self.0.as_ptr() as usize);
        if part.is_empty() || start >= self.0.len() {
            return;
        }
        #[cfg(unix)]
        // SAFETY: MADV_DONTNEED on a read-only mapping of a file only drops the pages from this
        // process's page tables: a later read of them maps the same bytes of the file again
        // (nothing here writes the mapping, so there are no private changes to lose). The range
        // is inside the mapping (memmap2 widens its start to a page boundary).
        unsafe {
            let _ = self.0.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                start,
                part.len().min(self.0.len() - start),
            );
        }
    }
}

/// A tensor's floats read from a [`MappedFile`]; once dropped, the pages they were read from
/// are [released](MappedFile::release).
struct Loaded<'a> {
    floats: Cow<'a, [f32]>,
    file: &'a MappedFile,
    bytes: &'a [u8],
}

impl std::ops::Deref for Loaded<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.floats
    }
}

impl Drop for Loaded<'_> {
    fn drop(&mut self) {
        self.file.release(self.bytes);
    }
}

/// A tensor's little-endian f32 bytes as floats: borrowed from the mapped file where they lie
/// on a 4-byte boundary (safetensors writers pad the header so that they do), copied otherwise.
/// Shared by the weights and the optimizer-state readers.
pub fn floats(bytes: &[u8]) -> Cow<'_, [f32]> {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: every bit pattern is a valid f32, and `align_to` hands back as f32s only a
        // middle part that is aligned for them.
        let (head, body, tail) = unsafe { bytes.align_to::<f32>() };
        if head.is_empty() && tail.is_empty() {
            return Cow::Borrowed(body);
        }
    }
    Cow::Owned(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

/// Sets the `[out, in]` weight of a `Linear` from columns `first..first + out` of GPT-2's
/// row-major `Conv1D` weight `src` (`[in, ld]`): `param[o][i] = src[i][first + o]`.
///
/// Bands of 16 output rows in parallel. Within a band, each input row `i` contributes 16
/// neighbouring floats (one cache line of `src`) to column `i` of the band's 16 rows, so every
/// line read is used whole; one output row at a time read a single float from each line
/// instead (a fifth of a GPT-2 small `generate`'s start-up went there).
fn set_transposed(param: &Tensor, src: &[f32], ld: usize, first: usize) {
    const BAND: usize = 16;
    let cols = param.size(1);
    if cols == 0 {
        return;
    }
    param.update(|dst| {
        dst.par_chunks_mut(BAND * cols)
            .enumerate()
            .for_each(|(band, out)| {
                let (o0, rows) = (band * BAND, out.len() / cols);
                for i in 0..cols {
                    let line = &src[i * ld + first + o0..][..rows];
                    for (r, &v) in line.iter().enumerate() {
                        out[r * cols + i] = v;
                    }
                }
            })
    });
}

/// Options for [`load_model_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Reject NaN and infinite values.
    pub check_finite: bool,
}

/// Loads a checkpoint directory (`config.json` + `model.safetensors`), from this project or
/// from Hugging Face's GPT-2. Dropout and sampling draw from `ctx`.
pub fn load_model(dir: &Path, ctx: &Context) -> Result<GptModel, WeightsError> {
    load_model_with(dir, ctx, LoadOptions::default())
}

pub fn load_model_with(
    dir: &Path,
    ctx: &Context,
    opts: LoadOptions,
) -> Result<GptModel, WeightsError> {
    let mut cfg = read_config(&dir.join(CONFIG_FILE))?;
    let path = dir.join(WEIGHTS_FILE);
    let meta = std::fs::metadata(&path).map_err(io_err(&path))?;
    if meta.is_dir() {
        return Err(format_err(&path, "is a directory, expected a file"));
    }
    // Before reading or allocating anything: the file must be big enough for the weights the
    // config describes (so a corrupt config cannot make us allocate more than the file
    // justifies), and not much bigger (header, QKV biases and GPT-2's mask buffers aside).
    let tied = GptConfig {
        qkv_bias: false,
        tie_weights: true,
        ..cfg.clone()
    };
    let least = 4 * tied.num_parameters();
    let untied = GptConfig {
        qkv_bias: true,
        tie_weights: false,
        ..cfg.clone()
    };
    let masks = 4 * (cfg.n_layers as u128) * (cfg.context_length as u128).pow(2);
    let most = 4 * untied.num_parameters() + masks + (100 << 20);
    if (meta.len() as u128) < least {
        return Err(format_err(
            &path,
            format!("{} bytes is too small for the model config.json describes ({least} bytes of weights)", meta.len()),
        ));
    }
    if meta.len() as u128 > most {
        return Err(format_err(
            &path,
            format!(
                "{} bytes is far larger than the model config.json describes",
                meta.len()
            ),
        ));
    }
    let bytes = map_file(&path).map_err(io_err(&path))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| format_err(&path, format!("not a valid safetensors file: {e}")))?;
    // Strip an optional "transformer." prefix; drop the causal-mask buffers GPT-2 files carry.
    let mut by_name: BTreeMap<String, TensorView> = BTreeMap::new();
    for (name, view) in st.iter() {
        let short = name.strip_prefix("transformer.").unwrap_or(name);
        if is_mask_buffer(short) {
            continue;
        }
        if by_name.insert(short.to_string(), view).is_some() {
            return Err(format_err(
                &path,
                format!("tensor {short:?} appears twice (with and without prefix)"),
            ));
        }
    }
    cfg.tie_weights = !by_name.contains_key("lm_head.weight");
    let model =
        GptModel::new(&cfg, ctx).map_err(|e| format_err(&dir.join(CONFIG_FILE), e.to_string()))?;
    let wanted = gpt2_tensors_shapes(&model);
    for name in by_name.keys() {
        if !wanted.iter().any(|(n, _)| n == name) {
            return Err(WeightsError::Unexpected {
                path: path.clone(),
                name: name.clone(),
            });
        }
    }
    // Each tensor goes from the mapped file straight into the model's parameter: no copy of
    // the file in memory, no temporary per tensor (loading is mostly first touches of fresh
    // memory, so every buffer avoided counts), and its pages of the file are let go once it
    // is in place.
    let mut get = |name: &str, shape: &[usize]| -> Result<_, WeightsError> {
        let view = by_name.remove(name).ok_or_else(|| WeightsError::Missing {
            path: path.clone(),
            name: name.into(),
        })?;
        if view.dtype() != Dtype::F32 {
            return Err(WeightsError::Dtype {
                path: path.clone(),
                name: name.into(),
                dtype: format!("{:?}", view.dtype()),
            });
        }
        if view.shape() != shape {
            return Err(WeightsError::Shape {
                path: path.clone(),
                name: name.into(),
                expected: shape.to_vec(),
                found: view.shape().to_vec(),
            });
        }
        let data = Loaded {
            floats: floats(view.data()),
            file: &bytes,
            bytes: view.data(),
        };
        if opts.check_finite && data.iter().any(|x| !x.is_finite()) {
            return Err(WeightsError::NonFinite {
                path: path.clone(),
                name: name.into(),
            });
        }
        Ok(data)
    };
    let c = cfg.emb_dim;
    let set = |param: &Tensor, value: &[f32]| param.copy_from_slice(value);
    set(
        &model.tok_emb.weight,
        &get("wte.weight", &[cfg.vocab_size, c])?,
    );
    set(
        &model.pos_emb.weight,
        &get("wpe.weight", &[cfg.context_length, c])?,
    );
    for (i, b) in model.trf_blocks.iter().enumerate() {
        let h = |s: &str| format!("h.{i}.{s}");
        set(&b.norm1.scale, &get(&h("ln_1.weight"), &[c])?);
        set(&b.norm1.shift, &get(&h("ln_1.bias"), &[c])?);
        let qkv = get(&h("attn.c_attn.weight"), &[c, 3 * c])?;
        let qkv_b = get(&h("attn.c_attn.bias"), &[3 * c])?;
        let att = &b.att;
        for (j, lin) in [&att.w_query, &att.w_key, &att.w_value]
            .into_iter()
            .enumerate()
        {
            set_transposed(&lin.weight, &qkv, 3 * c, j * c);
            let bias = &qkv_b[j * c..(j + 1) * c];
            match &lin.bias {
                Some(param) => set(param, bias),
                None if bias.iter().any(|&x| x != 0.0) => {
                    return Err(format_err(
                        &path,
                        format!(
                            "{} is not zero but the config says the model has no QKV bias",
                            h("attn.c_attn.bias")
                        ),
                    ))
                }
                None => {}
            }
        }
        set_transposed(
            &att.out_proj.weight,
            &get(&h("attn.c_proj.weight"), &[c, c])?,
            c,
            0,
        );
        set(
            att.out_proj.bias.as_ref().unwrap(),
            &get(&h("attn.c_proj.bias"), &[c])?,
        );
        set(&b.norm2.scale, &get(&h("ln_2.weight"), &[c])?);
        set(&b.norm2.shift, &get(&h("ln_2.bias"), &[c])?);
        set_transposed(
            &b.ff.fc1.weight,
            &get(&h("mlp.c_fc.weight"), &[c, 4 * c])?,
            4 * c,
            0,
        );
        set(
            b.ff.fc1.bias.as_ref().unwrap(),
            &get(&h("mlp.c_fc.bias"), &[4 * c])?,
        );
        set_transposed(
            &b.ff.fc2.weight,
            &get(&h("mlp.c_proj.weight"), &[4 * c, c])?,
            c,
            0,
        );
        set(
            b.ff.fc2.bias.as_ref().unwrap(),
            &get(&h("mlp.c_proj.bias"), &[c])?,
        );
    }
    set(&model.final_norm.scale, &get("ln_f.weight", &[c])?);
    set(&model.final_norm.shift, &get("ln_f.bias", &[c])?);
    if !cfg.tie_weights {
        set(
            &model.out_head.weight,
            &get("lm_head.weight", &[cfg.vocab_size, c])?,
        );
    }
    Ok(model)
}

/// `h.{i}.attn.bias` and `h.{i}.attn.masked_bias`: buffers (the causal mask), not weights.
fn is_mask_buffer(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("h.") else {
        return false;
    };
    let Some((layer, tail)) = rest.split_once('.') else {
        return false;
    };
    layer.parse::<usize>().is_ok() && (tail == "attn.bias" || tail == "attn.masked_bias")
}

fn gpt2_tensors_shapes(model: &GptModel) -> Vec<(String, Vec<usize>)> {
    gpt2_tensors(model)
        .into_iter()
        .map(|t| (t.name, t.shape))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::Module;
    use crate::testing::assert_close;

    fn tiny(qkv_bias: bool, tie_weights: bool) -> GptConfig {
        GptConfig {
            vocab_size: 19,
            context_length: 8,
            emb_dim: 8,
            n_heads: 2,
            n_layers: 2,
            drop_rate: 0.0,
            qkv_bias,
            tie_weights,
        }
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("scratchgpt-weights-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn save_then_load_round_trips_logits() {
        for (qkv, tie) in [(false, false), (true, true), (true, false)] {
            let m = GptModel::new(&tiny(qkv, tie), &Context::new(1)).unwrap();
            m.eval();
            let dir = tmpdir(&format!("rt-{qkv}-{tie}"));
            save_model(&m, &dir).unwrap();
            let loaded = load_model(&dir, &Context::new(2)).unwrap();
            loaded.eval();
            assert_eq!(loaded.cfg, m.cfg);
            let ids = [1, 2, 3, 4, 18, 0];
            assert_close(&loaded.forward(&ids, 2), &m.forward(&ids, 2), 1e-6);
            // built from zeros instead of random draws, then loaded: every weight the same bits
            let zeros = GptModel::new(&tiny(qkv, tie), &Context::for_loading()).unwrap();
            assert!(zeros.tok_emb.weight.to_vec().iter().all(|&x| x == 0.0));
            let from_zeros = load_model(&dir, &Context::for_loading()).unwrap();
            let params = |model: &GptModel| {
                let mut all = vec![];
                model.visit_parameters("", &mut |name, t| all.push((name, t.to_vec())));
                all
            };
            assert_eq!(params(&from_zeros), params(&m));
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn errors_name_the_file_and_the_tensor() {
        let m = GptModel::new(&tiny(false, false), &Context::new(1)).unwrap();
        let dir = tmpdir("errors");
        save_model(&m, &dir).unwrap();
        // a config describing a much bigger model than the file holds: refused before allocating
        let mut cfg = config_to_json(&m.cfg);
        cfg["n_embd"] = json!(4096);
        cfg["n_head"] = json!(4);
        std::fs::write(dir.join(CONFIG_FILE), serde_json::to_vec(&cfg).unwrap()).unwrap();
        let e = load_model(&dir, &Context::new(0)).unwrap_err().to_string();
        assert!(
            e.contains("model.safetensors") && e.contains("too small"),
            "{e}"
        );
        // a config with fewer layers than the file: the extra tensors are named
        let mut cfg = config_to_json(&m.cfg);
        cfg["n_layer"] = json!(1);
        std::fs::write(dir.join(CONFIG_FILE), serde_json::to_vec(&cfg).unwrap()).unwrap();
        let e = load_model(&dir, &Context::new(0)).unwrap_err().to_string();
        assert!(e.contains("unexpected tensor \"h.1."), "{e}");
        // a config whose vocabulary disagrees: the shape error names the tensor
        let mut cfg = config_to_json(&m.cfg);
        cfg["vocab_size"] = json!(18);
        std::fs::write(dir.join(CONFIG_FILE), serde_json::to_vec(&cfg).unwrap()).unwrap();
        let e = load_model(&dir, &Context::new(0)).unwrap_err().to_string();
        assert!(e.contains("wte.weight") && e.contains("shape"), "{e}");
        // malformed JSON
        std::fs::write(dir.join(CONFIG_FILE), b"{ not json").unwrap();
        let e = load_model(&dir, &Context::new(0)).unwrap_err().to_string();
        assert!(
            e.contains("config.json") && e.contains("invalid JSON"),
            "{e}"
        );
        // missing file
        let e = load_model(&dir.join("nope"), &Context::new(0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn set_transposed_takes_columns_of_a_conv1d_weight() {
        // 37 output rows (two bands of 16 and a short one), 23 inputs, columns 5..42 of 50
        let (out, inp, ld, first) = (37, 23, 50, 5);
        let src: Vec<f32> = (0..inp * ld).map(|x| x as f32).collect();
        let param = Tensor::zeros(&[out, inp]);
        set_transposed(&param, &src, ld, first);
        let got = param.to_vec();
        for o in 0..out {
            for i in 0..inp {
                assert_eq!(got[o * inp + i], src[i * ld + first + o], "[{o}][{i}]");
            }
        }
    }

    #[test]
    fn floats_are_read_in_place_when_aligned_and_copied_when_not() {
        let want = [1.5f32, -2.25, f32::MIN_POSITIVE, 3.0e7, f32::NAN];
        let mut buf = vec![0u8; 4 * want.len() + 8];
        let aligned = buf.as_ptr().align_offset(4);
        for start in [aligned, aligned + 1] {
            for (i, x) in want.iter().enumerate() {
                buf[start + 4 * i..start + 4 * i + 4].copy_from_slice(&x.to_le_bytes());
            }
            let got = floats(&buf[start..start + 4 * want.len()]);
            let in_place = cfg!(target_endian = "little") && start == aligned;
            assert_eq!(matches!(got, Cow::Borrowed(_)), in_place);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want));
        }
    }

    /// Pages of a mapped file read and then released leave this process's resident memory,
    /// and reading them again gives the same bytes.
    #[cfg(target_os = "linux")]
    #[test]
    fn released_pages_leave_resident_memory_and_read_back_the_same() {
        let rss_file_kb = || {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("RssFile:")).unwrap();
            line.split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<i64>()
                .unwrap()
        };
        let path =
            std::env::temp_dir().join(format!("scratchgpt-release-{}.bin", std::process::id()));
        let bytes: Vec<u8> = (0..64usize << 20).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = map_file(&path).unwrap();
        let sum = |b: &[u8]| b.iter().map(|&x| x as u64).sum::<u64>();
        let want = sum(&bytes);
        assert_eq!(sum(&file), want); // every page read: resident
        let before = rss_file_kb();
        file.release(&file[..]);
        let after = rss_file_kb();
        // other tests map files meanwhile: a wide margin under the 64 MB let go
        assert!(
            before - after > 32 << 10,
            "RssFile {before} kB -> {after} kB"
        );
        assert_eq!(sum(&file), want);
        drop(file);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn mask_buffers_are_recognised() {
        assert!(is_mask_buffer("h.0.attn.bias"));
        assert!(is_mask_buffer("h.11.attn.masked_bias"));
        assert!(!is_mask_buffer("h.0.attn.c_attn.bias"));
        assert!(!is_mask_buffer("h.x.attn.bias"));
    }
}
