//! Classification fine-tuning (book chapter 6): labelled texts from CSV/TSV files, padded
//! batches, the training task for the shared loop, accuracy, and the classifier's checkpoint.
//!
//! As the book does it (section 6.3–6.7):
//! - each text is tokenized and right-padded with the padding id (50256, `<|endoftext|>`, for
//!   GPT-2) to the longest *training* text; validation and test texts are truncated to that
//!   length (never past the model's context);
//! - batches of 8, the training batches shuffled each epoch with `drop_last`;
//! - the loss is the cross-entropy of one position's logits ([`model::classifier::Pool`]);
//! - AdamW (lr 5e-5, weight decay 0.1) for 5 epochs, evaluation every 50 steps on 5 batches,
//!   and the accuracy on 5 batches of training and validation data after every epoch; then
//!   the accuracy on the whole training, validation and test sets.
//!
//! Labels are any strings; their sorted order gives the class ids (`ham` → 0, `spam` → 1), and
//! the names are stored with the checkpoint, so `classify` prints names.

use std::collections::BTreeSet;
use std::path::Path;

use model::classifier::{Classifier, Pool};
use model::linear::Linear;
use model::weights::{write_atomically, write_safetensors, TensorToWrite};
use model::Context;
use safetensors::tensor::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use tensor::{no_grad, Rng, Tensor};

use crate::data::EpochOrder;
use crate::error::{io_error, TrainError};
use crate::tokenizer::Tokenizer;
use crate::trainer::{EvalOrders, Evaluation, MicroBatch, Task};

/// The classifier's own files in a checkpoint directory, beside the GPT's `config.json` and
/// `model.safetensors` (names no Hugging Face file uses).
pub const CLASSIFIER_CONFIG_FILE: &str = "classifier.json";
pub const CLASSIFIER_WEIGHTS_FILE: &str = "classifier.safetensors";

/// One labelled text, with where it came from (for error messages).
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub text: String,
    pub label: String,
    /// 1-based line of the file's record (the header is line 1).
    pub line: u64,
}

/// Which columns hold the text and the label.
#[derive(Clone, Debug)]
pub struct Columns {
    pub text: String,
    pub label: String,
}

impl Default for Columns {
    /// The book's CSV files: `Label,Text`.
    fn default() -> Self {
        Columns {
            text: "Text".into(),
            label: "Label".into(),
        }
    }
}

/// Reads a CSV (or, for `.tsv`/`.tab` files, tab-separated) file with a header row. Errors
/// name the file and the line: a missing column, an empty text or label, text that is not
/// UTF-8, a malformed record, a file without rows.
pub fn read_examples(path: &Path, columns: &Columns) -> Result<Vec<Example>, TrainError> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, e))?;
    if meta.is_dir() {
        return Err(TrainError(format!(
            "{}: is a directory, expected a CSV or TSV file",
            path.display()
        )));
    }
    let tsv = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("tsv") || e.eq_ignore_ascii_case("tab"));
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(if tsv { b'\t' } else { b',' })
        .flexible(false)
        .from_reader(&bytes[..]);
    // Lines are counted from the records' byte offsets: the csv crate's own line numbers
    // run ahead on files with CRLF line ends (Excel's and Python's default).
    // (a record's offset may point at the line end before it: those bytes count as before it)
    let record_start = |byte: u64| {
        let mut at = (byte as usize).min(bytes.len());
        while at < bytes.len() && matches!(bytes[at], b'\r' | b'\n') {
            at += 1;
        }
        at
    };
    let line_at = |byte: u64| {
        1 + bytes[..record_start(byte)]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64
    };
    let at = |e: csv::Error| {
        let line = e
            .position()
            .map(|p| format!(":{}", line_at(p.byte())))
            .unwrap_or_default();
        TrainError(format!("{}{line}: {}", path.display(), csv_reason(&e)))
    };
    let header = reader.headers().map_err(at)?.clone();
    if columns.text.trim() == columns.label.trim() {
        return Err(TrainError(format!(
            "--text-column and --label-column both name {:?}; the texts and their labels must be two columns",
            columns.text
        )));
    }
    let find = |name: &str, flag: &str| {
        let mut matching = header.iter().enumerate().filter(|(_, h)| h.trim() == name);
        if let (Some(_), Some(_)) = (matching.next(), matching.next()) {
            return Err(TrainError(format!(
                "{}: the header has two columns named {name:?}; rename one",
                path.display()
            )));
        }
        header.iter().position(|h| h.trim() == name).ok_or_else(|| {
            let tabs = !tsv && header.len() == 1 && header[0].contains('\t');
            TrainError(format!(
                "{}: no column {name:?} (the header has {}); {}",
                path.display(),
                header
                    .iter()
                    .map(|h| format!("{h:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if tabs {
                    "its columns are separated by tabs: name the file .tsv to read it as tab-separated".to_string()
                } else {
                    format!("choose the column with {flag}")
                }
            ))
        })
    };
    let text_col = find(&columns.text, "--text-column")?;
    let label_col = find(&columns.label, "--label-column")?;
    let mut out = Vec::new();
    let (mut counted_to, mut lines_before) = (0usize, 0u64);
    for record in reader.records() {
        let record = record.map_err(at)?;
        let byte = record_start(record.position().map_or(0, |p| p.byte()));
        lines_before += bytes[counted_to.min(byte)..byte]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64;
        counted_to = byte;
        let line = 1 + lines_before;
        let field = |i: usize| record.get(i).unwrap_or("").to_string();
        let (text, label) = (field(text_col), field(label_col).trim().to_string());
        if text.trim().is_empty() {
            return Err(TrainError(format!(
                "{}:{line}: the text is empty",
                path.display()
            )));
        }
        if label.is_empty() {
            return Err(TrainError(format!(
                "{}:{line}: the label is empty",
                path.display()
            )));
        }
        out.push(Example { text, label, line });
    }
    if out.is_empty() {
        return Err(TrainError(format!(
            "{}: no rows after the header",
            path.display()
        )));
    }
    Ok(out)
}

fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8 text; convert the file to UTF-8".into(),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("a record of {len} fields where the header has {expected_len}"),
        _ => e.to_string(),
    }
}

/// The class names of a training set, sorted (class id = position). Errors on a single class.
pub fn labels_of(train: &[Example], path: &Path) -> Result<Vec<String>, TrainError> {
    let labels: Vec<String> = train
        .iter()
        .map(|e| e.label.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if labels.len() < 2 {
        return Err(TrainError(format!(
            "{}: every row has the label {:?}; a classifier needs at least two classes",
            path.display(),
            labels[0]
        )));
    }
    Ok(labels)
}

/// Texts as padded token rows with their class ids.
#[derive(Clone, Debug)]
pub struct EncodedSet {
    /// `len() × max_length` token ids, row-major, right-padded.
    pub ids: Vec<usize>,
    /// Tokens of each text before the padding (at least 1).
    pub lengths: Vec<usize>,
    pub classes: Vec<usize>,
    pub max_length: usize,
}

impl EncodedSet {
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// Rows `rows` as one batch: (ids, lengths, classes).
    pub fn batch(&self, rows: &[usize]) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
        let l = self.max_length;
        let mut ids = Vec::with_capacity(rows.len() * l);
        for &r in rows {
            ids.extend_from_slice(&self.ids[r * l..(r + 1) * l]);
        }
        let lengths = rows.iter().map(|&r| self.lengths[r]).collect();
        let classes = rows.iter().map(|&r| self.classes[r]).collect();
        (ids, lengths, classes)
    }
}

/// Tokenizes and pads `examples` to `max_length` (or, when `None`, to the longest text), never
/// past `context_length`; returns the set and how many texts were truncated. A label not in
/// `labels` is an error naming the file and line.
pub fn encode(
    examples: &[Example],
    path: &Path,
    labels: &[String],
    tok: &Tokenizer,
    pad_id: usize,
    max_length: Option<usize>,
    context_length: usize,
) -> Result<(EncodedSet, usize), TrainError> {
    let mut rows = Vec::with_capacity(examples.len());
    let mut classes = Vec::with_capacity(examples.len());
    for e in examples {
        let class = labels.iter().position(|l| *l == e.label).ok_or_else(|| {
            TrainError(format!(
                "{}:{}: the label {:?} is not among the training labels ({})",
                path.display(),
                e.line,
                e.label,
                labels.join(", ")
            ))
        })?;
        let ids = tok.encode(&e.text);
        if ids.is_empty() {
            return Err(TrainError(format!(
                "{}:{}: the text has no tokens",
                path.display(),
                e.line
            )));
        }
        rows.push(ids);
        classes.push(class);
    }
    let longest = rows.iter().map(Vec::len).max().unwrap_or(1);
    let max_length = max_length.unwrap_or(longest).min(context_length).max(1);
    let mut truncated = 0;
    let mut ids = Vec::with_capacity(rows.len() * max_length);
    let mut lengths = Vec::with_capacity(rows.len());
    for mut r in rows {
        if r.len() > max_length {
            r.truncate(max_length);
            truncated += 1;
        }
        lengths.push(r.len());
        r.resize(max_length, pad_id);
        ids.extend(r);
    }
    Ok((
        EncodedSet {
            ids,
            lengths,
            classes,
            max_length,
        },
        truncated,
    ))
}

/// Mean loss and accuracy of `model` over the first `batches` batches of `set` in `order`
/// (or the whole set), dropout off, no gradients (the book's `calc_loss_loader` and
/// `calc_accuracy_loader`).
pub fn loss_and_accuracy(
    model: &Classifier,
    set: &EncodedSet,
    batch_size: usize,
    order: &[usize],
    batches: Option<usize>,
) -> (f32, f32) {
    let _g = no_grad();
    let n_batches = order.len().div_ceil(batch_size);
    let n_batches = batches.map_or(n_batches, |b| b.min(n_batches));
    let (mut loss, mut correct, mut seen) = (0.0f32, 0usize, 0usize);
    for b in 0..n_batches {
        let rows = &order[b * batch_size..((b + 1) * batch_size).min(order.len())];
        let (ids, lengths, classes) = set.batch(rows);
        let logits = model.forward(&ids, &lengths);
        correct += predictions(&logits)
            .iter()
            .zip(&classes)
            .filter(|(p, c)| p == c)
            .count();
        seen += rows.len();
        loss += logits.cross_entropy(&classes).item();
    }
    (
        loss / n_batches.max(1) as f32,
        correct as f32 / seen.max(1) as f32,
    )
}

/// The most likely class of each row of `[B, K]` logits.
pub fn predictions(logits: &Tensor) -> Vec<usize> {
    let k = logits.shape()[1];
    logits
        .to_vec()
        .chunks(k)
        .map(model::generate::argmax)
        .collect()
}

/// Classification fine-tuning as a [`Task`] of the shared training loop.
pub struct Classification<'a> {
    pub model: &'a Classifier,
    pub train: EncodedSet,
    pub val: EncodedSet,
    pub batch_size: usize,
}

impl Classification<'_> {
    /// `eval_iter` batches' accuracy on training and validation data: the book's line after
    /// every epoch.
    fn accuracies(&self, eval_iter: usize) -> (f32, f32) {
        let all = |n: usize| (0..n).collect::<Vec<_>>();
        let (_, train) = loss_and_accuracy(
            self.model,
            &self.train,
            self.batch_size,
            &all(self.train.len()),
            Some(eval_iter),
        );
        let (_, val) = loss_and_accuracy(
            self.model,
            &self.val,
            self.batch_size,
            &all(self.val.len()),
            Some(eval_iter),
        );
        (train, val)
    }
}

impl Task for Classification<'_> {
    fn batches_per_epoch(&self) -> usize {
        self.train.len() / self.batch_size // drop_last
    }

    fn epoch_order(&self, rng: &mut Rng) -> EpochOrder {
        EpochOrder::Listed(rng.epoch_permutation(self.train.len(), true))
    }

    fn batch_loss(
        &self,
        order: &EpochOrder,
        b: usize,
        part: MicroBatch,
    ) -> Result<(Tensor, u64), TrainError> {
        let rows = part.rows(order, b, self.batch_size);
        let (ids, lengths, classes) = self.train.batch(&rows);
        let loss = self.model.forward(&ids, &lengths).cross_entropy(&classes);
        Ok((part.share_of_mean(loss), ids.len() as u64))
    }

    fn eval_orders(&self, rng: &mut Rng) -> EvalOrders {
        // a fresh pass of the shuffled training loader, and of the unshuffled validation
        // loader (which still draws its seed in PyTorch)
        let train = rng.epoch_permutation(self.train.len(), true);
        let val = rng.epoch_permutation(self.val.len(), false);
        EvalOrders { train, val }
    }

    fn evaluate(
        &self,
        eval_iter: usize,
        orders: Option<&EvalOrders>,
    ) -> Result<Evaluation, TrainError> {
        let in_file_order = |n: usize| (0..n).collect::<Vec<_>>();
        let (train_order, val_order) = match orders {
            Some(o) => (o.train.clone(), o.val.clone()),
            None => (
                in_file_order(self.train.len()),
                in_file_order(self.val.len()),
            ),
        };
        let (train_loss, train_acc) = loss_and_accuracy(
            self.model,
            &self.train,
            self.batch_size,
            &train_order,
            Some(eval_iter),
        );
        let (val_loss, val_acc) = loss_and_accuracy(
            self.model,
            &self.val,
            self.batch_size,
            &val_order,
            Some(eval_iter),
        );
        Ok(Evaluation {
            train_loss,
            val_loss,
            train_accuracy: Some(train_acc),
            val_accuracy: Some(val_acc),
        })
    }

    fn end_of_epoch(&self, epoch: usize, eval_iter: usize) -> Option<String> {
        // the book evaluates accuracy on eval_iter batches (5) after every epoch
        let (train, val) = self.accuracies(eval_iter);
        Some(format!(
            "Ep {epoch}: Training accuracy: {:.2}% | Validation accuracy: {:.2}%",
            100.0 * train,
            100.0 * val
        ))
    }
}

/// What a classifier checkpoint records besides the GPT: `classifier.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifierInfo {
    /// Class names; class id = index.
    pub labels: Vec<String>,
    /// How the class is read: `last`, `last-token-of-text`, `mean` or `first`.
    pub pool: String,
    /// The padded length of the training texts; longer texts are truncated to it.
    pub max_length: usize,
    pub pad_id: usize,
    /// Which parameters were trained: `head`, `last-block`, `last:K` or `all`.
    pub trainable: String,
}

/// Writes the classification head and `classifier.json` into a checkpoint directory.
pub fn write_classifier(
    dir: &Path,
    c: &Classifier,
    info: &ClassifierInfo,
) -> Result<(), TrainError> {
    let mut tensors = vec![TensorToWrite::tensor("weight", &c.head.weight)];
    if let Some(b) = &c.head.bias {
        tensors.push(TensorToWrite::tensor("bias", b));
    }
    write_safetensors(
        &dir.join(CLASSIFIER_WEIGHTS_FILE),
        &tensors,
        Default::default(),
    )?;
    let json = serde_json::to_vec_pretty(info).expect("classifier info serialises");
    write_atomically(&dir.join(CLASSIFIER_CONFIG_FILE), &json)?;
    Ok(())
}

/// True when `dir` (a checkpoint directory) holds a classifier.
pub fn is_classifier(dir: &Path) -> bool {
    dir.join(CLASSIFIER_CONFIG_FILE).is_file()
}

/// Loads a classifier checkpoint: the GPT and its tokenizer, the head and `classifier.json`,
/// and the LoRA adapters when the checkpoint has them ([`crate::lora`]).
pub fn load_classifier(
    path: &Path,
    ctx: &Context,
) -> Result<(Classifier, Tokenizer, ClassifierInfo), TrainError> {
    let dir = crate::checkpoint::resolve(path)?;
    let info_path = dir.join(CLASSIFIER_CONFIG_FILE);
    if !info_path.is_file() {
        return Err(TrainError(format!(
            "{}: not a classifier (no {CLASSIFIER_CONFIG_FILE}); make one with `scratchgpt finetune classify`",
            dir.display()
        )));
    }
    let text = std::fs::read(&info_path).map_err(|e| io_error(&info_path, e))?;
    let info: ClassifierInfo = serde_json::from_slice(&text)
        .map_err(|e| TrainError(format!("{}: {e}", info_path.display())))?;
    let pool =
        Pool::parse(&info.pool).map_err(|e| TrainError(format!("{}: {e}", info_path.display())))?;
    if info.labels.len() < 2 {
        return Err(TrainError(format!(
            "{}: needs at least two labels",
            info_path.display()
        )));
    }
    let (gpt, tok) = crate::checkpoint::load_for_inference(&dir, ctx)?;
    let head = read_head(
        &dir.join(CLASSIFIER_WEIGHTS_FILE),
        gpt.cfg.emb_dim,
        info.labels.len(),
    )?;
    let mut classifier = Classifier { gpt, head, pool };
    crate::lora::load_adapters(&dir, &mut classifier, ctx)?;
    Ok((classifier, tok, info))
}

fn read_head(path: &Path, emb_dim: usize, n: usize) -> Result<Linear, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| TrainError(format!("{}: {e}", path.display())))?;
    Ok(Linear::from_weights(
        read_f32(&st, path, "weight", &[n, emb_dim])?,
        Some(read_f32(&st, path, "bias", &[n])?),
    ))
}

/// The tensor `name` of a `.safetensors` file (read from `path`), which must be F32 of shape
/// `shape` and finite; errors name the file and the tensor.
pub(crate) fn read_f32(
    st: &SafeTensors,
    path: &Path,
    name: &str,
    shape: &[usize],
) -> Result<Tensor, TrainError> {
    let v = st
        .tensor(name)
        .map_err(|_| TrainError(format!("{}: tensor {name:?} is missing", path.display())))?;
    if v.dtype() != Dtype::F32 || v.shape() != shape {
        return Err(TrainError(format!(
            "{}: tensor {name:?} should be F32 of shape {shape:?}, is {:?} {:?}",
            path.display(),
            v.dtype(),
            v.shape()
        )));
    }
    let values: Vec<f32> = v
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if values.iter().any(|x| !x.is_finite()) {
        return Err(TrainError(format!(
            "{}: tensor {name:?} holds NaN or infinite values",
            path.display()
        )));
    }
    Ok(Tensor::from_vec(values, shape))
}

/// Classifies texts: for each, the class id and its probability.
pub fn classify_texts(
    c: &Classifier,
    tok: &Tokenizer,
    info: &ClassifierInfo,
    texts: &[String],
) -> Vec<(usize, f32)> {
    let _g = no_grad();
    c.eval();
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(8) {
        let mut ids = Vec::new();
        let mut lengths = Vec::new();
        for t in chunk {
            let mut row = tok.encode(t);
            row.truncate(info.max_length);
            if row.is_empty() {
                row.push(info.pad_id);
            }
            lengths.push(row.len());
            row.resize(info.max_length, info.pad_id);
            ids.extend(row);
        }
        let probs = c.forward(&ids, &lengths).softmax(-1);
        let k = info.labels.len();
        for row in probs.to_vec().chunks(k) {
            let best = model::generate::argmax(row);
            out.push((best, row[best]));
        }
    }
    out
}

/// The confusion matrix of predicted against true classes: `m[true][predicted]`.
pub fn confusion_matrix(truth: &[usize], predicted: &[usize], k: usize) -> Vec<Vec<usize>> {
    let mut m = vec![vec![0; k]; k];
    for (&t, &p) in truth.iter().zip(predicted) {
        m[t][p] += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn write(name: &str, text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("scratchgpt-cls-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn lines_are_right_with_crlf_ends_and_tabs_get_a_hint() {
        // a quoted field over two lines, CRLF ends: the empty text is on line 5
        let p = write(
            "crlf.csv",
            "Label,Text\r\nham,hello\r\nspam,\"two\r\nlines\"\r\nham, \r\n",
        );
        let err = read_examples(&p, &Columns::default()).unwrap_err().0;
        assert!(err.ends_with("crlf.csv:5: the text is empty"), "{err}");
        let p = write(
            "ok.csv",
            "Label,Text\r\nham,a\r\nspam,\"b\r\nc\"\r\nham,d\r\n",
        );
        let lines: Vec<u64> = read_examples(&p, &Columns::default())
            .unwrap()
            .iter()
            .map(|e| e.line)
            .collect();
        assert_eq!(lines, [2, 3, 5]);
        // tab-separated data in a .csv file: the error says how to read it; .TSV is a TSV
        let p = write("tabs.csv", "Label\tText\nham\thello\n");
        let err = read_examples(&p, &Columns::default()).unwrap_err().0;
        assert!(err.contains("name the file .tsv"), "{err}");
        let p = write("upper.TSV", "Label\tText\nham\thello\n");
        assert_eq!(read_examples(&p, &Columns::default()).unwrap().len(), 1);
    }

    #[test]
    fn csv_with_quotes_and_tsv_read_and_bad_rows_are_named() {
        let p = write(
            "a.csv",
            "Label,Text\nham,\"Hi, there\"\nspam,\"Win \"\"big\"\" now\"\n",
        );
        let rows = read_examples(&p, &Columns::default()).unwrap();
        assert_eq!(rows[0].text, "Hi, there");
        assert_eq!(rows[1].text, "Win \"big\" now");
        assert_eq!((rows[0].line, rows[1].line), (2, 3));
        let t = write("b.tsv", "text\tclass\nhello\tx\nworld\ty\n");
        let cols = Columns {
            text: "text".into(),
            label: "class".into(),
        };
        assert_eq!(read_examples(&t, &cols).unwrap().len(), 2);
        let err = read_examples(&t, &Columns::default()).unwrap_err().0;
        assert!(
            err.contains("no column \"Text\"") && err.contains("--text-column"),
            "{err}"
        );
        let e = write("c.csv", "Label,Text\nham,hello\nspam,   \n");
        assert!(read_examples(&e, &Columns::default())
            .unwrap_err()
            .0
            .ends_with(":3: the text is empty"));
        let u = write("d.csv", "Label,Text\nham,caf\u{e9}\n");
        std::fs::write(&u, b"Label,Text\nham,caf\xe9\n").unwrap();
        assert!(read_examples(&u, &Columns::default())
            .unwrap_err()
            .0
            .contains("UTF-8"));
        let one = read_examples(&e, &Columns::default());
        assert!(one.is_err());
        let single = write("e.csv", "Label,Text\nham,a\nham,b\n");
        let rows = read_examples(&single, &Columns::default()).unwrap();
        assert!(labels_of(&rows, &single)
            .unwrap_err()
            .0
            .contains("at least two classes"));
        for p in [p, t, e, u, single] {
            let _ = std::fs::remove_file(p);
        }
    }

    #[test]
    fn padding_and_truncation_follow_the_book() {
        let tok = Tokenizer::bytes();
        let ex = |t: &str, l: &str| Example {
            text: t.into(),
            label: l.into(),
            line: 2,
        };
        let labels = vec!["a".to_string(), "b".to_string()];
        let train = [ex("abc", "a"), ex("a", "b")];
        let p = Path::new("train.csv");
        let (set, cut) = encode(&train, p, &labels, &tok, 256, None, 1024).unwrap();
        assert_eq!((set.max_length, cut), (3, 0));
        assert_eq!(set.ids, [97, 98, 99, 97, 256, 256]);
        assert_eq!(
            (set.lengths.clone(), set.classes.clone()),
            (vec![3, 1], vec![0, 1])
        );
        let (val, cut) =
            encode(&[ex("abcdef", "b")], p, &labels, &tok, 256, Some(3), 1024).unwrap();
        assert_eq!((val.ids.clone(), cut), (vec![97, 98, 99], 1));
        let err = encode(&[ex("x", "c")], p, &labels, &tok, 256, Some(3), 1024).unwrap_err();
        assert!(
            err.0.contains("train.csv:2") && err.0.contains("\"c\""),
            "{err}"
        );
        // never past the context
        let (short, _) = encode(&train, p, &labels, &tok, 256, None, 2).unwrap();
        assert_eq!(short.max_length, 2);
        assert_eq!(
            confusion_matrix(&[0, 1, 1], &[0, 0, 1], 2),
            [[1, 0], [1, 1]]
        );
    }
}
