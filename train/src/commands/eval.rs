//! `scratchgpt eval`: the mean next-token loss and perplexity of a model on a text file or on
//! token shards (book section 5.1), or, for a classifier, its accuracy and confusion matrix.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use model::Context;
use tensor::no_grad;

use crate::classification::{is_classifier, Columns};
use crate::cli::read_text_file;
use crate::commands::classify::eval_classifier;
use crate::data::{DataLoader, EpochOrder, TokenWindows};
use crate::error::TrainError;
use crate::lora::load_with_adapters_fitting;
use crate::token_data::{is_token_data, open_token_shards};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A run directory (its latest checkpoint), one checkpoint directory, a Hugging Face
    /// GPT-2 directory, or a GPT-2 name (as for generate).
    #[arg(long, value_name = "DIR|NAME")]
    pub checkpoint: PathBuf,
    /// What to measure the loss on, cut into non-overlapping windows of the model's context
    /// length (a short tail is dropped): a UTF-8 text file, or token shards (a directory
    /// written by scratchgpt tokenize, llm.c's or nanoGPT's: its validation shards; or one
    /// shard file, of either split); for a classifier, a labelled CSV/TSV file.
    #[arg(long, value_name = "FILE|DIR")]
    pub data: PathBuf,
    /// Measure on at most this many tokens (the first windows in file order) [default: all].
    /// Language models only: a classifier is evaluated on every row.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u64>,
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

pub fn eval_command(a: &EvalArgs) -> Result<i32, TrainError> {
    if a.batch_size == 0 {
        return Err(TrainError("--batch-size must be at least 1".into()));
    }
    if crate::checkpoint::resolve(&a.checkpoint).is_ok_and(|d| is_classifier(&d)) {
        if let Some(n) = a.max_tokens {
            return Err(TrainError(format!(
                "--max-tokens {n} counts a language model's tokens; a classifier is evaluated on every row of {} (give it a shorter file)",
                a.data.display()
            )));
        }
        let columns = Columns {
            text: a.text_column.clone(),
            label: a.label_column.clone(),
        };
        return eval_classifier(&a.checkpoint, &a.data, &columns);
    }
    let ctx = Context::for_loading();
    // forward passes of `batch_size` windows, no KV cache
    let (model, tok) = load_with_adapters_fitting(
        &a.checkpoint,
        &ctx,
        |cfg| model::memory::MemoryEstimate::evaluation(cfg, a.batch_size),
        "use a lower --batch-size, free some memory, or use a smaller model",
    )?;
    model.eval();
    let t = model.cfg.context_length;
    let windows = if is_token_data(std::slice::from_ref(&a.data))? {
        let data = open_token_shards(std::slice::from_ref(&a.data))?;
        if data.tokenizer.vocab_size() != tok.vocab_size() {
            return Err(TrainError(format!(
                "{}: the shards hold ids of a {}-token vocabulary ({}), but the model's tokenizer has {}",
                a.data.display(),
                data.tokenizer.vocab_size(),
                data.tokenizer_spec,
                tok.vocab_size()
            )));
        }
        // a directory's validation shards, or the one shard file named, whichever split
        let shards = if !data.val.is_empty() {
            data.val.clone()
        } else if a.data.is_file() {
            data.train.clone()
        } else {
            return Err(TrainError(format!(
                "{}: holds no validation shard; name a shard file to measure on it",
                a.data.display()
            )));
        };
        TokenWindows::from_shards(shards, t, t, tok.vocab_size())
    } else {
        TokenWindows::new(tok.encode(&read_text_file(&a.data)?), t, t)
    }
    .map_err(|e| TrainError(format!("{}: {e}", a.data.display())))?;
    let n_windows = match a.max_tokens {
        Some(0) => return Err(TrainError("--max-tokens must be at least 1".into())),
        Some(m) if m < t as u64 => {
            return Err(TrainError(format!(
                "--max-tokens {m} is less than one window of the model's context ({t} tokens)"
            )))
        }
        Some(m) => windows.len().min((m / t as u64) as usize),
        None => windows.len(),
    };
    let loader = DataLoader::new(windows, a.batch_size, false, false);
    let order = EpochOrder::Sequential { len: n_windows };
    let n_batches = n_windows.div_ceil(a.batch_size);
    let bar = (std::io::stderr().is_terminal() && n_batches > 20).then(|| {
        ProgressBar::new(n_batches as u64).with_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} batches [{elapsed_precise} < {eta}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    });
    let _g = no_grad();
    let mut total = 0.0f64;
    for b in 0..n_batches {
        let batch = loader.batch(&order, b)?;
        let loss = model
            .forward(&batch.inputs, batch.batch)
            .cross_entropy(&batch.targets)
            .item();
        total += loss as f64 * batch.batch as f64;
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let loss = total / n_windows as f64;
    println!(
        "loss {loss:.6} perplexity {:.4} ({} of {t} tokens)",
        loss.exp(),
        crate::counted(n_windows, "window", "windows")
    );
    Ok(0)
}
