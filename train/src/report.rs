//! A training run's report page: `index.html` in the run's directory, with the loss plot, the
//! sample printed after each epoch, and the trained model's attention maps for the start
//! context (book chapter 5's figures, and chapter 3's attention weights, for your own run).
//!
//! Cheap by design: the samples are appended to `samples.jsonl` as the epochs end (one line
//! each), and the page is written once, when the run ends (also when Ctrl-C stops it).

use std::io::Write;
use std::path::Path;

use model::GptModel;
use serde::{Deserialize, Serialize};

use crate::commands::inspect::{attention_section, ShownHeads};
use crate::error::{io_error, TrainError};
use crate::figures::{self, xml_escape};
use crate::metrics::{loss_plot_svg, MetricRecord};
use crate::tokenizer::Tokenizer;

/// The run's per-epoch lines (the samples), one JSON object per line.
pub const SAMPLES_FILE: &str = "samples.jsonl";
/// The run's report page, in its directory.
pub const REPORT_FILE: &str = "index.html";

/// The attention maps of the report look at most at this many tokens of the start context.
pub const REPORT_TOKENS: usize = 32;

/// What an epoch ended with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochLine {
    pub epoch: usize,
    pub step: usize,
    /// The line printed (`Ep 3 sample: …`).
    pub line: String,
}

/// Appends the line epoch `epoch` ended with (at optimizer step `step`) to the run's
/// [`SAMPLES_FILE`].
pub fn record_epoch_line(
    out: &Path,
    epoch: usize,
    step: usize,
    line: &str,
) -> Result<(), TrainError> {
    let path = out.join(SAMPLES_FILE);
    let entry = EpochLine {
        epoch,
        step,
        line: line.to_string(),
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    let json = serde_json::to_string(&entry).expect("an epoch line serialises");
    writeln!(f, "{json}").map_err(|e| io_error(&path, e))
}

/// The recorded epoch lines, by epoch; an epoch recorded twice (a run resumed from a
/// checkpoint written before that epoch's end) keeps its last line. Unreadable lines are
/// skipped: the page is a report, not a checkpoint.
pub fn read_epoch_lines(out: &Path) -> Vec<EpochLine> {
    let text = std::fs::read_to_string(out.join(SAMPLES_FILE)).unwrap_or_default();
    let mut by_epoch = std::collections::BTreeMap::new();
    for e in text
        .lines()
        .filter_map(|l| serde_json::from_str::<EpochLine>(l).ok())
    {
        by_epoch.insert(e.epoch, e);
    }
    by_epoch.into_values().collect()
}

/// `s` with control characters (which a byte-level model may well sample) shown as `\xNN`.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                format!("\\x{:02X}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Writes `out/index.html`: the loss plot of `history`, the epoch samples, and the attention
/// maps of `model` for `start_context`.
pub fn write_run_report(
    out: &Path,
    model: &GptModel,
    tok: &Tokenizer,
    start_context: &str,
    history: &[MetricRecord],
    title: &str,
) -> Result<(), TrainError> {
    let mut body = String::new();
    body += "<section id=\"loss\">\n<h2>Loss (book section 5.2)</h2>\n";
    if history.is_empty() {
        body += "<p>No evaluation yet.</p>\n";
    } else {
        body += &format!(
            "<figure>{}</figure>\n",
            figures::inline_svg(&loss_plot_svg(history, title))
        );
    }
    body += "</section>\n<section id=\"samples\">\n<h2>Samples after each epoch</h2>\n";
    let lines = read_epoch_lines(out);
    if lines.is_empty() {
        body += "<p>No epoch finished yet.</p>\n";
    }
    for e in &lines {
        body += &format!(
            "<p><b>epoch {} (step {})</b></p>\n<pre>{}</pre>\n",
            e.epoch,
            e.step,
            xml_escape(&printable(&e.line))
        );
    }
    body += "</section>\n";
    let mut ids = tok.encode(start_context);
    if ids.is_empty() {
        body += "<p>No attention maps: the start context is empty.</p>\n";
    } else {
        let limit = REPORT_TOKENS.min(model.cfg.context_length);
        let mut about = format!(
            "the final model on the start context \"{start_context}\" ({} tokens)",
            ids.len()
        );
        if ids.len() > limit {
            about += &format!(", its last {limit} shown");
            ids.drain(..ids.len() - limit);
        }
        let heads = model.cfg.n_layers * model.cfg.n_heads;
        let shown = if heads <= 16 {
            ShownHeads::All
        } else {
            ShownHeads::Labelled
        };
        body += &attention_section(model, tok, &ids, &about, shown).html;
    }
    let page = figures::html_page(&format!("{title}: run report"), &body);
    model::weights::write_atomically(&out.join(REPORT_FILE), page.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_lines_append_and_the_last_of_an_epoch_wins() {
        let dir = std::env::temp_dir().join(format!("scratchgpt-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        record_epoch_line(&dir, 1, 5, "Ep 1 sample: a <b>").unwrap();
        record_epoch_line(&dir, 2, 10, "Ep 2 sample: old").unwrap();
        // resumed from step 8: epoch 2 ends again
        record_epoch_line(&dir, 2, 10, "Ep 2 sample: new").unwrap();
        let lines = read_epoch_lines(&dir);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].line, "Ep 1 sample: a <b>");
        assert_eq!(lines[1].line, "Ep 2 sample: new");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
