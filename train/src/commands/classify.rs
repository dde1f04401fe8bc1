//! `scratchgpt classify`: the label of a text (or of every line of a file) by a classifier
//! made with `finetune classify`, and `eval` on a classifier: accuracy and confusion matrix.

use std::path::PathBuf;

use clap::Args;
use model::Context;

use crate::classification::{
    classify_texts, confusion_matrix, load_classifier, read_examples, Columns,
};
use crate::error::{io_error, TrainError};

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).multiple(false)))]
pub struct ClassifyArgs {
    /// A classifier's run or checkpoint directory (made with `scratchgpt finetune classify`).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// The text to classify; prints its label and the label's probability [default: none; give
    /// --text or --file].
    #[arg(long, value_name = "TEXT", group = "input")]
    pub text: Option<String>,
    /// Classify every non-empty line of this UTF-8 file; writes CSV (text,label,probability)
    /// to standard output [default: none].
    #[arg(long, value_name = "FILE", group = "input")]
    pub file: Option<PathBuf>,
}

pub fn classify_command(a: &ClassifyArgs) -> Result<i32, TrainError> {
    let ctx = Context::for_loading();
    let (model, tok, info) = load_classifier(&a.checkpoint, &ctx)?;
    if let Some(text) = &a.text {
        if text.trim().is_empty() {
            return Err(TrainError("--text must not be empty".into()));
        }
        let (class, p) = classify_texts(&model, &tok, &info, std::slice::from_ref(text))[0];
        println!("{}\t{p:.4}", info.labels[class]);
        return Ok(0);
    }
    let path = a.file.as_ref().expect("clap requires --text or --file");
    let text = crate::cli::read_text_file(path)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text); // a byte-order mark is no text
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    if lines.is_empty() {
        return Err(TrainError(format!(
            "{}: no text to classify",
            path.display()
        )));
    }
    let results = classify_texts(&model, &tok, &info, &lines);
    let mut w = csv::Writer::from_writer(std::io::stdout().lock());
    let fail = |e: csv::Error| TrainError(format!("writing the results: {e}"));
    w.write_record(["text", "label", "probability"])
        .map_err(fail)?;
    for (line, (class, p)) in lines.iter().zip(results) {
        w.write_record([line.as_str(), &info.labels[class], &format!("{p:.4}")])
            .map_err(fail)?;
    }
    w.flush().map_err(|e| io_error(path, e))?;
    Ok(0)
}

/// `eval` on a classifier: accuracy and the confusion matrix over a labelled CSV/TSV file.
pub fn eval_classifier(
    checkpoint: &std::path::Path,
    data: &std::path::Path,
    columns: &Columns,
) -> Result<i32, TrainError> {
    let ctx = Context::for_loading();
    let (model, tok, info) = load_classifier(checkpoint, &ctx)?;
    let rows = read_examples(data, columns)?;
    let mut truth = Vec::with_capacity(rows.len());
    for r in &rows {
        let class = info
            .labels
            .iter()
            .position(|l| *l == r.label)
            .ok_or_else(|| {
                TrainError(format!(
                    "{}:{}: the label {:?} is not one the classifier knows ({})",
                    data.display(),
                    r.line,
                    r.label,
                    info.labels.join(", ")
                ))
            })?;
        truth.push(class);
    }
    let texts: Vec<String> = rows.into_iter().map(|r| r.text).collect();
    let predicted: Vec<usize> = classify_texts(&model, &tok, &info, &texts)
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    let correct = truth.iter().zip(&predicted).filter(|(t, p)| t == p).count();
    println!(
        "accuracy {:.4} ({correct} of {} examples)",
        correct as f64 / truth.len() as f64,
        truth.len()
    );
    let k = info.labels.len();
    let m = confusion_matrix(&truth, &predicted, k);
    let width = info
        .labels
        .iter()
        .map(|l| l.len())
        .max()
        .unwrap_or(4)
        .max(6);
    println!("confusion matrix (rows: true label, columns: predicted)");
    print!("{:width$}", "");
    for l in &info.labels {
        print!(" {l:>width$}");
    }
    println!();
    for (l, row) in info.labels.iter().zip(&m) {
        print!("{l:width$}");
        for n in row {
            print!(" {n:>width$}");
        }
        println!();
    }
    Ok(0)
}
