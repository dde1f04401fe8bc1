//! `scratchgpt eval`: the mean next-token loss and perplexity of a model on a text file (book
//! section 5.1), or, for a classifier, its accuracy and confusion matrix.

use std::path::PathBuf;

use clap::Args;
use model::Context;
use tensor::no_grad;

use crate::classification::{is_classifier, Columns};
use crate::cli::read_text_file;
use crate::commands::classify::eval_classifier;
use crate::data::{DataLoader, TokenWindows};
use crate::error::TrainError;
use crate::lora::load_with_adapters;

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

pub fn eval_command(a: &EvalArgs) -> Result<i32, TrainError> {
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
    let (model, tok) = load_with_adapters(&a.checkpoint, &ctx)?;
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
