//! Instruction fine-tuning (book chapter 7): instruction–response pairs in the Alpaca prompt
//! template, batched with the book's collate rule, trained with the shared loop.
//!
//! The template (section 7.2), exactly:
//! ```text
//! Below is an instruction that describes a task. Write a response that appropriately completes the request.
//!
//! ### Instruction:
//! {instruction}
//!
//! ### Input:            ← only when the input is not empty
//! {input}
//!
//! ### Response:
//! {output}
//! ```
//! The collate rule (section 7.3, [`collate`]): append one end-of-text to every sequence, pad
//! with end-of-text to the longest in the batch plus one, inputs drop the last token, targets
//! are the inputs shifted by one, and every padding target but the first becomes
//! [`IGNORE_INDEX`] (so the model learns to *stop* once, and padding is otherwise ignored by
//! the loss); then truncate to the allowed length. With `mask_prompt` (the book's exercise
//! 7.2) the targets of the prompt are ignored too, so only the response is learned.

use std::path::Path;

use model::generate::{generate, GenerateOptions, Sampling};
use model::loss::IGNORE_INDEX;
use model::GptModel;
use serde::{Deserialize, Serialize};
use tensor::{no_grad, Rng, Tensor};

use crate::data::EpochOrder;
use crate::error::{io_error, TrainError};
use crate::tokenizer::Tokenizer;
use crate::trainer::{EvalOrders, Evaluation, MicroBatch, Task};

/// One entry of an instruction data set (the book's `instruction-data.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstructionEntry {
    pub instruction: String,
    /// May be empty.
    pub input: String,
    pub output: String,
}

/// The prompt of an entry: the template up to (not including) the response (`format_input`).
pub fn format_input(e: &InstructionEntry) -> String {
    let mut s = format!(
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{}",
        e.instruction
    );
    if !e.input.is_empty() {
        s += &format!("\n\n### Input:\n{}", e.input);
    }
    s
}

/// The response part of the template, which follows [`format_input`].
pub fn format_response(output: &str) -> String {
    format!("\n\n### Response:\n{output}")
}

/// Reads a JSON array of `{"instruction", "input", "output"}` objects, or JSON Lines of them.
/// `input` may be missing (taken as empty); every error names the file and the entry.
pub fn read_entries(path: &Path) -> Result<Vec<InstructionEntry>, TrainError> {
    let text = crate::cli::read_text_file(path)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text); // a byte-order mark
    let trimmed = text.trim_start();
    // The whole file as one JSON object: one entry (even pretty-printed), or, without an
    // "instruction", a wrapper such as {"data": [...]} that is neither layout: say so.
    let whole: Option<serde_json::Value> = trimmed
        .starts_with('{')
        .then(|| serde_json::from_str(text).ok())
        .flatten();
    let values: Vec<(String, serde_json::Value)> = if let Some(v) = whole {
        let obj = v.as_object().expect("starts with {");
        if !obj.contains_key("instruction") {
            let keys: Vec<&String> = obj.keys().take(4).collect();
            return Err(TrainError(format!(
                "{}: is one JSON object (keys {keys:?}), not an entry; expected a JSON array of entries, or JSON Lines (one entry per line)",
                path.display()
            )));
        }
        // named as JSON Lines name it when it is one line
        let at = if trimmed.trim_end().lines().count() == 1 {
            "line 1"
        } else {
            "the entry"
        };
        vec![(at.to_string(), v)]
    } else if trimmed.starts_with('[') {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| TrainError(format!("{}: not valid JSON: {e}", path.display())))?;
        v.as_array()
            .expect("starts with [")
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("entry {i}"), v.clone()))
            .collect()
    } else if trimmed.starts_with('{') {
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                TrainError(format!("{}:{}: not valid JSON: {e}", path.display(), n + 1))
            })?;
            out.push((format!("line {}", n + 1), v));
        }
        out
    } else {
        return Err(TrainError(format!(
            "{}: expected a JSON array of objects or JSON Lines (one object per line)",
            path.display()
        )));
    };
    let mut entries = Vec::with_capacity(values.len());
    for (at, v) in values {
        let obj = v
            .as_object()
            .ok_or_else(|| TrainError(format!("{}: {at} is not a JSON object", path.display())))?;
        let field = |key: &str, required: bool| -> Result<String, TrainError> {
            match obj.get(key) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                None | Some(serde_json::Value::Null) if !required => Ok(String::new()),
                None => Err(TrainError(format!(
                    "{}: {at} has no {key:?}",
                    path.display()
                ))),
                Some(other) => Err(TrainError(format!(
                    "{}: {at}: {key:?} must be a string, got {other}",
                    path.display()
                ))),
            }
        };
        let e = InstructionEntry {
            instruction: field("instruction", true)?,
            input: field("input", false)?,
            output: field("output", true)?,
        };
        if e.instruction.trim().is_empty() {
            return Err(TrainError(format!(
                "{}: {at}: the instruction is empty",
                path.display()
            )));
        }
        entries.push(e);
    }
    if entries.is_empty() {
        return Err(TrainError(format!("{}: no entries", path.display())));
    }
    Ok(entries)
}

/// The book's split (section 7.2): the first 85% for training, the next 10% for testing, the
/// rest for validation (test comes before validation). Returns (train, test, validation).
pub fn split(
    entries: &[InstructionEntry],
) -> (
    &[InstructionEntry],
    &[InstructionEntry],
    &[InstructionEntry],
) {
    let n = entries.len();
    let train_end = (n as f64 * 0.85) as usize;
    let test_end = train_end + (n as f64 * 0.1) as usize;
    (
        &entries[..train_end],
        &entries[train_end..test_end],
        &entries[test_end..],
    )
}

/// A tokenized entry: prompt + response ids, and how many of them are the prompt.
#[derive(Clone, Debug)]
pub struct Encoded {
    pub ids: Vec<usize>,
    pub prompt_len: usize,
}

pub fn encode(tok: &Tokenizer, e: &InstructionEntry) -> Encoded {
    let prompt = format_input(e);
    let prompt_len = tok.encode(&prompt).len();
    let ids = tok.encode(&(prompt + &format_response(&e.output)));
    Encoded { ids, prompt_len }
}

/// One collated batch: `batch` rows of `seq_len` inputs and targets.
#[derive(Clone, Debug, PartialEq)]
pub struct Collated {
    pub inputs: Vec<usize>,
    pub targets: Vec<usize>,
    pub batch: usize,
    pub seq_len: usize,
}

/// The book's `custom_collate_fn` (see the module docs); `prompt_lens` masks the prompts'
/// targets (exercise 7.2: `targets[:instruction_length - 1] = -100`).
pub fn collate(
    items: &[&[usize]],
    pad: usize,
    allowed_max_length: Option<usize>,
    prompt_lens: Option<&[usize]>,
) -> Collated {
    let longest = items.iter().map(|i| i.len() + 1).max().unwrap_or(1);
    let mut rows: Vec<(Vec<usize>, Vec<usize>)> = Vec::with_capacity(items.len());
    for (k, item) in items.iter().enumerate() {
        let mut padded = item.to_vec();
        padded.push(pad);
        padded.resize(longest, pad);
        let mut inputs = padded[..longest - 1].to_vec();
        let mut targets = padded[1..].to_vec();
        // every padding target but the first is ignored: the model learns to stop once
        let mut seen_pad = false;
        for t in targets.iter_mut() {
            if *t == pad {
                if seen_pad {
                    *t = IGNORE_INDEX;
                }
                seen_pad = true;
            }
        }
        if let Some(lens) = prompt_lens {
            let n = lens[k].saturating_sub(1).min(targets.len());
            targets[..n].iter_mut().for_each(|t| *t = IGNORE_INDEX);
        }
        if let Some(max) = allowed_max_length {
            inputs.truncate(max);
            targets.truncate(max);
        }
        rows.push((inputs, targets));
    }
    let seq_len = rows.first().map_or(0, |r| r.0.len());
    Collated {
        inputs: rows.iter().flat_map(|r| r.0.iter().copied()).collect(),
        targets: rows.iter().flat_map(|r| r.1.iter().copied()).collect(),
        batch: rows.len(),
        seq_len,
    }
}

/// Instruction fine-tuning as a [`Task`] of the shared training loop.
pub struct InstructionTuning<'a> {
    pub model: &'a GptModel,
    pub tokenizer: &'a Tokenizer,
    pub train: Vec<Encoded>,
    pub val: Vec<Encoded>,
    pub batch_size: usize,
    pub pad: usize,
    /// Truncate batches to this many tokens (the model's context at most).
    pub max_length: usize,
    pub mask_prompt: bool,
    /// The prompt of the sample printed after each epoch (the book: the first validation
    /// entry's).
    pub sample_prompt: String,
    /// Sample as the book does (see [`crate::trainer::sample_text`]): `--book-compat` runs.
    pub sample_as_the_book: bool,
}

impl InstructionTuning<'_> {
    fn batch(&self, set: &[Encoded], rows: &[usize]) -> Collated {
        let items: Vec<&[usize]> = rows.iter().map(|&r| set[r].ids.as_slice()).collect();
        let lens: Vec<usize> = rows.iter().map(|&r| set[r].prompt_len).collect();
        collate(
            &items,
            self.pad,
            Some(self.max_length),
            self.mask_prompt.then_some(lens.as_slice()),
        )
    }

    fn loss(&self, c: &Collated) -> Tensor {
        self.model
            .forward(&c.inputs, c.batch)
            .cross_entropy(&c.targets)
    }

    /// The mean of the batch losses over the first `n` batches in `order` (`calc_loss_loader`).
    fn mean_loss(&self, set: &[Encoded], order: &[usize], n: usize) -> f32 {
        let _g = no_grad();
        let batches: Vec<&[usize]> = order.chunks(self.batch_size).take(n).collect();
        let total: f32 = batches
            .iter()
            .map(|rows| self.loss(&self.batch(set, rows)).item())
            .sum();
        total / batches.len().max(1) as f32
    }
}

impl Task for InstructionTuning<'_> {
    fn batches_per_epoch(&self) -> usize {
        self.train.len() / self.batch_size
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
        let c = self.batch(&self.train, &rows);
        let loss = self.loss(&c);
        if part.count == 1 {
            return Ok((loss, c.inputs.len() as u64));
        }
        // the batch's loss is a mean over its scored (not ignored) targets, which parts hold in
        // different numbers: weight each part by its share of them
        let scored = |c: &Collated| c.targets.iter().filter(|&&t| t != IGNORE_INDEX).count();
        let whole = order.range(b * self.batch_size, (b + 1) * self.batch_size);
        let share = scored(&c) as f32 / scored(&self.batch(&self.train, &whole)).max(1) as f32;
        Ok((loss.mul_scalar(share), c.inputs.len() as u64))
    }

    fn eval_orders(&self, rng: &mut Rng) -> EvalOrders {
        let train = rng.epoch_permutation(self.train.len(), true);
        let val = rng.epoch_permutation(self.val.len(), false);
        EvalOrders { train, val }
    }

    fn evaluate(
        &self,
        eval_iter: usize,
        orders: Option<&EvalOrders>,
    ) -> Result<Evaluation, TrainError> {
        let in_order = |n: usize| (0..n).collect::<Vec<_>>();
        let (t, v) = match orders {
            Some(o) => (o.train.clone(), o.val.clone()),
            None => (in_order(self.train.len()), in_order(self.val.len())),
        };
        Ok(Evaluation {
            train_loss: self.mean_loss(&self.train, &t, eval_iter),
            val_loss: self.mean_loss(&self.val, &v, eval_iter),
            ..Evaluation::default()
        })
    }

    fn end_of_epoch(&self, epoch: usize, _eval_iter: usize) -> Option<String> {
        let sample = crate::trainer::sample_text(
            self.model,
            self.tokenizer,
            &self.sample_prompt,
            50,
            self.sample_as_the_book,
        );
        Some(format!("Ep {epoch} sample: {sample}"))
    }
}

/// The model's greedy response to an entry's prompt (the book's section 7.7): up to
/// `max_new_tokens`, stopping at end-of-text, with the `### Response:` header removed.
pub fn respond(
    model: &GptModel,
    tok: &Tokenizer,
    e: &InstructionEntry,
    max_new_tokens: usize,
) -> String {
    let prompt = tok.encode(&format_input(e));
    let context = model.cfg.context_length;
    let prompt = &prompt[prompt.len().saturating_sub(context)..];
    let opts = GenerateOptions {
        max_new_tokens,
        sampling: Sampling::greedy(),
        eos_id: tok.end_of_text(),
        use_cache: true,
        id_limit: Some(tok.vocab_size()),
    };
    let out = generate(model, prompt, &opts, &mut Rng::seed(0), |_| {});
    let mut new = out[prompt.len()..].to_vec();
    if new.last() == tok.end_of_text().as_ref() {
        new.pop();
    }
    let text = tok.decode(&new).unwrap_or_default();
    text.replace("### Response:", "").trim().to_string()
}

/// An entry with the model's response, as the book writes `instruction-data-with-response.json`.
#[derive(Clone, Debug, Serialize)]
pub struct EntryWithResponse<'a> {
    pub instruction: &'a str,
    pub input: &'a str,
    pub output: &'a str,
    pub model_response: String,
}

/// Writes the test entries with the model's responses (pretty JSON, as the book's `indent=4`).
pub fn write_responses(path: &Path, entries: &[EntryWithResponse]) -> Result<(), TrainError> {
    let json = serde_json::to_vec_pretty(entries).expect("responses serialise");
    model::weights::write_atomically(path, &json)
        .map_err(|e| io_error(path, std::io::Error::other(e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bom_one_pretty_entry_and_a_wrapper_object() {
        let dir = std::env::temp_dir();
        let file = |name: &str, text: &str| {
            let p = dir.join(format!("scratchgpt-instr-{}-{name}", std::process::id()));
            std::fs::write(&p, text).unwrap();
            p
        };
        let entry = r#"{"instruction": "Say hi.", "input": "", "output": "Hi."}"#;
        // a byte-order mark before an array
        let p = file("bom.json", &format!("\u{feff}[{entry}]"));
        assert_eq!(read_entries(&p).unwrap().len(), 1);
        // one entry, pretty-printed over several lines
        let p = file("one.json", &entry.replace(", ", ",\n  "));
        assert_eq!(read_entries(&p).unwrap()[0].output, "Hi.");
        // a wrapper object is named as such
        let p = file("wrapped.json", &format!("{{\n  \"data\": [{entry}]\n}}"));
        let err = read_entries(&p).unwrap_err().0;
        assert!(
            err.contains("is one JSON object") && err.contains("\"data\""),
            "{err}"
        );
    }

    #[test]
    fn the_book_collate_example() {
        // book section 7.3: inputs [0,1,2,3,4], [5,6], [7,8,9]
        let c = collate(&[&[0, 1, 2, 3, 4], &[5, 6], &[7, 8, 9]], 50256, None, None);
        assert_eq!((c.batch, c.seq_len), (3, 5));
        assert_eq!(
            c.inputs,
            [0, 1, 2, 3, 4, 5, 6, 50256, 50256, 50256, 7, 8, 9, 50256, 50256]
        );
        let x = IGNORE_INDEX;
        assert_eq!(
            c.targets,
            [1, 2, 3, 4, 50256, 6, 50256, x, x, x, 8, 9, 50256, x, x]
        );
        // truncation after masking, and prompt masking (exercise 7.2)
        let t = collate(&[&[0, 1, 2, 3, 4], &[5, 6]], 50256, Some(3), Some(&[3, 1]));
        assert_eq!(t.seq_len, 3);
        assert_eq!(t.targets, [x, x, 3, 6, 50256, x]);
    }

    #[test]
    fn the_template_is_the_books() {
        let e = InstructionEntry {
            instruction: "Identify the correct spelling of the following word.".into(),
            input: "Ocassion".into(),
            output: "The correct spelling is 'Occasion.'".into(),
        };
        let full = format_input(&e) + &format_response(&e.output);
        assert_eq!(
            full,
            "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nIdentify the correct spelling of the following word.\n\n### Input:\nOcassion\n\n### Response:\nThe correct spelling is 'Occasion.'"
        );
        let no_input = InstructionEntry {
            input: String::new(),
            ..e
        };
        assert!(!format_input(&no_input).contains("### Input:"));
        // the book's split of its 1,100 entries: 935 / 110 / 55, test before validation
        let many = vec![no_input; 1100];
        let (train, test, val) = split(&many);
        assert_eq!((train.len(), test.len(), val.len()), (935, 110, 55));
    }

    #[test]
    fn json_and_jsonl_read_and_errors_name_the_entry() {
        let dir = std::env::temp_dir();
        let p = dir.join(format!("scratchgpt-instr-{}.json", std::process::id()));
        std::fs::write(&p, r#"[{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c", "output": "d"}]"#).unwrap();
        assert_eq!(read_entries(&p).unwrap().len(), 2);
        std::fs::write(&p, "{\"instruction\": \"a\", \"output\": \"b\"}\n\n{\"instruction\": \"c\", \"input\": \"x\", \"output\": \"d\"}\n").unwrap();
        assert_eq!(read_entries(&p).unwrap()[1].input, "x");
        for (text, needle) in [
            (r#"{"a": 1}"#, "is one JSON object"),
            ("{\"a\": 1}\n{\"b\": 2}", "line 1 has no \"instruction\""),
            (r#"[{"instruction": "a"}]"#, "entry 0 has no \"output\""),
            (r#"[{"instruction": 3, "output": "b"}]"#, "must be a string"),
            (r#"[1]"#, "entry 0 is not a JSON object"),
            (r#"[{"instruction": "a", "output": "b"}"#, "not valid JSON"),
            ("hello", "expected a JSON array"),
            ("[]", "no entries"),
        ] {
            std::fs::write(&p, text).unwrap();
            let err = read_entries(&p).unwrap_err().0;
            assert!(err.contains(needle), "{text}: {err}");
        }
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn micro_batch_losses_add_up_to_the_batch_loss_whatever_their_lengths() {
        use crate::data::EpochOrder;
        use crate::trainer::{MicroBatch, Task};
        use model::{Context, GptConfig};
        let cfg = GptConfig {
            vocab_size: 257,
            context_length: 64,
            emb_dim: 16,
            n_heads: 2,
            n_layers: 1,
            drop_rate: 0.0,
            ..GptConfig::gpt2_small()
        };
        let model = GptModel::new(&cfg, &Context::new(3)).unwrap();
        let tok = Tokenizer::bytes();
        // entries of very different lengths, so the parts score different numbers of targets
        let set: Vec<Encoded> = [3usize, 40, 7, 25, 1, 12, 30, 5]
            .iter()
            .map(|&n| Encoded {
                ids: (0..n + 4).map(|i| (i * 7 + n) % 256).collect(),
                prompt_len: 2,
            })
            .collect();
        let task = InstructionTuning {
            model: &model,
            tokenizer: &tok,
            train: set.clone(),
            val: set,
            batch_size: 8,
            pad: 256,
            max_length: 64,
            mask_prompt: true,
            sample_prompt: String::new(),
            sample_as_the_book: false,
        };
        let order = EpochOrder::Listed(vec![4, 1, 7, 0, 3, 6, 2, 5]);
        let whole = task
            .batch_loss(&order, 0, MicroBatch::WHOLE)
            .unwrap()
            .0
            .item();
        for count in [2, 4, 8] {
            let sum: f32 = (0..count)
                .map(|index| {
                    let part = MicroBatch { index, count };
                    task.batch_loss(&order, 0, part).unwrap().0.item()
                })
                .sum();
            assert!(
                (sum - whole).abs() < 1e-5 * whole,
                "{count} parts: {sum} vs {whole}"
            );
        }
    }
}
