//! `scratchgpt inspect attention | logit-lens | layer-norm`: pictures of what happens inside a
//! model for one prompt, for any checkpoint `generate` loads (a run, a checkpoint, a Hugging
//! Face GPT-2 directory, `gpt2` by name).
//!
//! Each command writes into `--out DIR` its figures (SVG), the numbers behind them (CSV and
//! JSON), an HTML fragment, and `index.html`: one self-contained page (inline SVG, no scripts,
//! fonts or network; values on hover) showing every inspection written into DIR so far.
//! The numbers come from [`model::inspect`]; the drawing from [`crate::figures`].
//!
//! - **attention** (book 3.3–3.6): every head's weights for the prompt, a grid of small maps
//!   (layers × heads) and a large map per head, and per head its row entropy and its shares of
//!   attention on the previous, first and same token, labelled when a share reaches
//!   [`model::inspect::LABEL_SHARE`].
//! - **logit-lens** (4.6): the residual stream after the embeddings and after every block,
//!   through the final layer norm and the output head: the top tokens per layer and position,
//!   and the rank of the model's final prediction at each layer.
//! - **layer-norm** (4.2): the mean and standard deviation of what goes into and comes out of
//!   every layer norm, and the learned scale and shift.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use model::inspect::{self as numbers, HeadStats, FIRST_COUNTED_ROW, LABEL_SHARE};
use model::{Context, GptModel};
use serde_json::json;

use crate::cli::EXIT_STATUSES;
use crate::error::{io_error, TrainError};
use crate::figures::{
    self, html_table, xml_escape, HeatMap, HeatMapGrid, SmallMap, TextCell, TextGrid,
};
use crate::tokenizer::Tokenizer;

/// The thresholds, as the help text and the page state them.
pub const THRESHOLDS: &str = "Per head, over the query rows i >= 2 (where the first, previous and current tokens are three different keys): \
mean row entropy in bits, and the mean share of attention on the previous token (i-1), the first token (0) and the token itself (i). \
A head is labelled previous-token, first-token sink or diagonal (self) when that share is at least 0.6.";

#[derive(Subcommand, Debug)]
pub enum InspectCommand {
    /// Attention weights of every layer and head for a prompt: a grid of small maps, a large
    /// map per head, and per head its entropy, its shares on the previous, first and same
    /// token, and a label (previous-token, first-token sink, diagonal) when a share is at
    /// least 0.6, over the rows i >= 2.
    #[command(after_help = EXIT_STATUSES)]
    Attention(AttentionArgs),
    /// The logit lens: the residual stream after every block through the final layer norm and
    /// the output head, as the top next tokens per layer and position, and the rank of the
    /// model's final prediction at each layer.
    #[command(after_help = EXIT_STATUSES)]
    LogitLens(LogitLensArgs),
    /// Mean and standard deviation of the activations into and out of every layer norm (and
    /// of the normalised values before the learned scale), and of the learned scale and shift.
    #[command(after_help = EXIT_STATUSES)]
    LayerNorm(LayerNormArgs),
}

/// What every inspection reads and where it writes.
#[derive(Args, Debug)]
pub struct InspectInput {
    /// A run directory (its latest checkpoint), one checkpoint directory, a Hugging Face
    /// GPT-2 directory, or a GPT-2 name (gpt2, gpt2-medium, …).
    #[arg(long, value_name = "DIR|NAME")]
    pub checkpoint: PathBuf,
    /// The text to look at.
    #[arg(long, value_name = "TEXT")]
    pub prompt: String,
    /// Directory for the figures, the numbers and index.html (created if missing; files of the
    /// same inspection are replaced).
    #[arg(long, default_value = "inspect", value_name = "DIR")]
    pub out: PathBuf,
    /// Look at most at this many tokens (and never more than the model's context): a longer
    /// prompt keeps its last N tokens, with a note.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub max_tokens: usize,
}

#[derive(Args, Debug)]
pub struct AttentionArgs {
    #[command(flatten)]
    pub input: InspectInput,
    /// Show the large maps of this layer's heads on the page (0-based, as in the parameter
    /// names `trf_blocks.N`) [default: every head when the model has at most 16, else the
    /// labelled ones]. Every head's large map is written to its own file regardless.
    #[arg(long, value_name = "L")]
    pub layer: Option<usize>,
    /// With --layer: only this head (0-based) [default: all of the layer's heads].
    #[arg(long, value_name = "H", requires = "layer")]
    pub head: Option<usize>,
}

#[derive(Args, Debug)]
pub struct LogitLensArgs {
    #[command(flatten)]
    pub input: InspectInput,
    /// Keep the K most likely tokens of each layer and position (hover and CSV).
    #[arg(long, default_value_t = 5, value_name = "K")]
    pub top_k: usize,
}

#[derive(Args, Debug)]
pub struct LayerNormArgs {
    #[command(flatten)]
    pub input: InspectInput,
}

pub fn inspect_command(cmd: &InspectCommand) -> Result<i32, TrainError> {
    match cmd {
        InspectCommand::Attention(a) => {
            let p = prepare(&a.input)?;
            let heads = (p.model.cfg.n_layers, p.model.cfg.n_heads);
            let shown = pick_heads(heads, a.layer, a.head)?;
            check_attention_size(heads.0 * heads.1, p.ids.len())?;
            let section = attention_section(&p.model, &p.tok, &p.ids, &p.about, shown);
            finish(&p, "attention", section)
        }
        InspectCommand::LogitLens(a) => {
            if a.top_k == 0 {
                return Err(TrainError("--top-k must be at least 1".into()));
            }
            let p = prepare(&a.input)?;
            let vocab = p.model.cfg.vocab_size;
            if a.top_k > vocab {
                return Err(TrainError(format!(
                    "--top-k {} is more than the model's {vocab} tokens; give at most {vocab}",
                    a.top_k
                )));
            }
            let section = logit_lens_section(&p.model, &p.tok, &p.ids, &p.about, a.top_k);
            finish(&p, "logit-lens", section)
        }
        InspectCommand::LayerNorm(a) => {
            let p = prepare(&a.input)?;
            let section = layer_norm_section(&p.model, &p.ids, &p.about);
            finish(&p, "layer-norm", section)
        }
    }
}

/// Attention-map cells (one per query and key it may see, for every head) above which
/// `inspect attention` refuses: each cell is drawn twice (in the grid and in its head's map),
/// about 6–13 bytes each, so this is a few hundred MB of SVG.
const MAX_ATTENTION_CELLS: usize = 20_000_000;

/// Refuses an attention inspection whose maps would be too large to write or to open (GPT-2
/// small's 144 heads over its full context of 1,024 tokens: 76 million cells).
fn check_attention_size(heads: usize, t: usize) -> Result<(), TrainError> {
    let cells = |t: usize| heads * t * (t + 1) / 2;
    if cells(t) <= MAX_ATTENTION_CELLS {
        return Ok(());
    }
    let most = (1..t)
        .rev()
        .find(|&n| cells(n) <= MAX_ATTENTION_CELLS)
        .unwrap_or(1);
    Err(TrainError(format!(
        "the attention maps of {heads} heads over {t} tokens would be {:.0} million cells of SVG (the limit is {} million); give --max-tokens {most} or less (logit-lens and layer-norm have no such limit)",
        cells(t) as f64 / 1e6,
        MAX_ATTENTION_CELLS / 1_000_000
    )))
}

/// A model, its tokenizer, the prompt's ids and where the output goes.
struct Prepared {
    model: GptModel,
    tok: Tokenizer,
    ids: Vec<usize>,
    out: PathBuf,
    /// One line naming the checkpoint and the prompt (with any cropping note).
    about: String,
}

fn prepare(a: &InspectInput) -> Result<Prepared, TrainError> {
    if a.prompt.is_empty() {
        return Err(TrainError("--prompt must not be empty".into()));
    }
    if a.max_tokens == 0 {
        return Err(TrainError("--max-tokens must be at least 1".into()));
    }
    if a.out.exists() && !a.out.is_dir() {
        return Err(TrainError(format!(
            "{}: is a file; --out takes a directory",
            a.out.display()
        )));
    }
    let ctx = Context::for_loading();
    let (model, tok) = crate::lora::load_with_adapters(&a.checkpoint, &ctx)?;
    let mut ids = tok.encode(&a.prompt);
    if ids.is_empty() {
        return Err(TrainError(
            "--prompt encodes to no tokens; give some text".into(),
        ));
    }
    let limit = a.max_tokens.min(model.cfg.context_length);
    // the page may gather sections of several inspections: each names its prompt
    let shown: String = a.prompt.chars().take(60).collect();
    let ellipsis = if shown.len() < a.prompt.len() {
        "…"
    } else {
        ""
    };
    let mut about = format!(
        "checkpoint {}, prompt {:?}{ellipsis}",
        a.checkpoint.display(),
        shown
    );
    if ids.len() > limit {
        let why = if limit == model.cfg.context_length {
            format!("the model's context of {limit}")
        } else {
            format!("--max-tokens {limit}")
        };
        let note = format!(
            "{} tokens, more than {why}: the model sees only the last {limit}",
            ids.len()
        );
        eprintln!("note: the prompt is {note}");
        ids.drain(..ids.len() - limit);
        let _ = write!(about, " ({note})");
    } else {
        let _ = write!(about, " ({})", crate::counted(ids.len(), "token", "tokens"));
    }
    Ok(Prepared {
        model,
        tok,
        ids,
        out: a.out.clone(),
        about,
    })
}

/// What an inspection produces: files to write and an HTML fragment for the page.
pub struct Section {
    pub files: Vec<(String, String)>,
    pub html: String,
}

/// Writes a section's files, its fragment `<name>.part.html`, and `index.html` with every
/// fragment in the directory.
fn finish(p: &Prepared, name: &str, section: Section) -> Result<i32, TrainError> {
    std::fs::create_dir_all(&p.out).map_err(|e| io_error(&p.out, e))?;
    // figures of an earlier inspection of the same kind that this one does not replace (the
    // per-head maps of a model with more layers or heads) would otherwise stay beside it
    if let Ok(entries) = std::fs::read_dir(&p.out) {
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let stale = file.starts_with(&format!("{name}-"))
                && file.ends_with(".svg")
                && !section.files.iter().any(|(f, _)| *f == file);
            if stale {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    for (file, content) in &section.files {
        write(&p.out.join(file), content)?;
    }
    write(&p.out.join(format!("{name}.part.html")), &section.html)?;
    write_index(&p.out)?;
    println!(
        "wrote {} files and index.html to {}",
        section.files.len() + 1,
        p.out.display()
    );
    Ok(0)
}

fn write(path: &Path, content: &str) -> Result<(), TrainError> {
    std::fs::write(path, content).map_err(|e| io_error(path, e))
}

/// The sections `index.html` gathers, in page order.
pub const SECTIONS: [&str; 4] = ["attention", "logit-lens", "layer-norm", "context"];

/// Rewrites `dir/index.html` from the fragments (`<section>.part.html`) present in `dir`.
pub fn write_index(dir: &Path) -> Result<(), TrainError> {
    let mut body = String::new();
    for name in SECTIONS {
        let path = dir.join(format!("{name}.part.html"));
        if path.is_file() {
            body += &std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
        }
    }
    write(
        &dir.join("index.html"),
        &figures::html_page("scratchgpt: inside the model", &body),
    )
}

// ------------------------------------------------------------------------------- tokens

/// A token as a readable label: spaces shown as `␣` (GPT-2's `Ġ`), newlines as `↵`, tabs as
/// `⇥`, other control characters and bytes that are not whole UTF-8 characters as `\xNN`.
pub fn token_label(tok: &Tokenizer, id: usize) -> String {
    if Some(id) == tok.end_of_text() {
        return "<|endoftext|>".into();
    }
    let Ok(bytes) = tok.decode_bytes(&[id]) else {
        return format!("#{id}");
    };
    match std::str::from_utf8(&bytes) {
        Ok(s) => s
            .chars()
            .map(|c| match c {
                ' ' => "␣".to_string(),
                '\n' => "↵".to_string(),
                '\t' => "⇥".to_string(),
                c if c.is_control() => format!("\\x{:02X}", c as u32),
                c => c.to_string(),
            })
            .collect(),
        Err(_) => bytes.iter().map(|b| format!("\\x{b:02X}")).collect(),
    }
}

/// `i: token` labels of the positions.
fn position_labels(tok: &Tokenizer, ids: &[usize]) -> Vec<String> {
    ids.iter()
        .enumerate()
        .map(|(i, &id)| format!("{i}: {}", token_label(tok, id)))
        .collect()
}

fn tokens_json(tok: &Tokenizer, ids: &[usize]) -> serde_json::Value {
    json!(ids
        .iter()
        .map(|&id| json!({"id": id, "label": token_label(tok, id)}))
        .collect::<Vec<_>>())
}

/// A float for JSON: NaN (no value) becomes null.
fn num(v: f32) -> serde_json::Value {
    if v.is_finite() {
        // through f32's shortest decimal form: 0.6, not 0.6000000238418579
        json!(v.to_string().parse::<f64>().unwrap_or(v as f64))
    } else {
        serde_json::Value::Null
    }
}

fn csv_num(v: f32) -> String {
    if v.is_finite() {
        let s = format!("{v:.6}");
        if s == "-0.000000" {
            return "0.000000".into();
        }
        s
    } else {
        String::new()
    }
}

/// A text field for CSV: quoted, inner quotes doubled.
fn csv_text(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn figure(svg: &str) -> String {
    format!("<figure>\n{}</figure>\n", figures::inline_svg(svg))
}

// ------------------------------------------------------------------------------- attention

/// Which heads' large maps the page shows.
#[derive(Clone, Copy, Debug)]
pub enum ShownHeads {
    All,
    Labelled,
    Layer(usize),
    One(usize, usize),
}

/// The heads to show for `--layer`/`--head`, checked against the model's `(layers, heads)`.
pub fn pick_heads(
    (layers, heads): (usize, usize),
    layer: Option<usize>,
    head: Option<usize>,
) -> Result<ShownHeads, TrainError> {
    if let Some(l) = layer.filter(|&l| l >= layers) {
        return Err(TrainError(format!(
            "--layer {l} is out of range: the model has {layers} layers (0 to {})",
            layers - 1
        )));
    }
    if let Some(h) = head.filter(|&h| h >= heads) {
        return Err(TrainError(format!(
            "--head {h} is out of range: the model has {heads} heads per layer (0 to {})",
            heads - 1
        )));
    }
    Ok(match (layer, head) {
        (Some(l), Some(h)) => ShownHeads::One(l, h),
        (Some(l), None) => ShownHeads::Layer(l),
        _ if layers * heads <= 16 => ShownHeads::All,
        _ => ShownHeads::Labelled,
    })
}

fn head_caption(s: &HeadStats) -> String {
    let pct = |v: f32| {
        if v.is_finite() {
            format!("{:.0}%", 100.0 * v)
        } else {
            "–".into()
        }
    };
    let entropy = if s.entropy_bits.is_finite() {
        format!("{:.2} bits", s.entropy_bits)
    } else {
        "–".into()
    };
    format!(
        "layer {} head {}: entropy {entropy}, previous {}, first {}, self {}{}",
        s.layer,
        s.head,
        pct(s.previous),
        pct(s.first),
        pct(s.itself),
        s.kind.map_or(String::new(), |k| format!(" — {}", k.name()))
    )
}

/// The attention inspection of `ids`: figures, numbers and the page fragment.
pub fn attention_section(
    model: &GptModel,
    tok: &Tokenizer,
    ids: &[usize],
    about: &str,
    shown: ShownHeads,
) -> Section {
    let tr = numbers::trace(model, ids);
    let weights = numbers::attention_weights(&tr);
    let t = ids.len();
    let stats = numbers::attention_stats(&weights, t);
    let labels = position_labels(tok, ids);
    let masked = |i: usize, j: usize| j > i;
    let (nl, nh) = (weights.len(), weights.first().map_or(0, |l| l.len()));
    let mut files = Vec::new();

    let maps: Vec<Vec<SmallMap>> = weights
        .iter()
        .enumerate()
        .map(|(l, heads)| {
            heads
                .iter()
                .enumerate()
                .map(|(h, w)| {
                    let s = &stats[l * nh + h];
                    SmallMap {
                        values: w.clone(),
                        caption: head_caption(s),
                        tag: s.kind.map_or(String::new(), |k| k.name().into()),
                    }
                })
                .collect()
        })
        .collect();
    let row_names: Vec<String> = (0..nl).map(|l| format!("layer {l}")).collect();
    let col_names: Vec<String> = (0..nh).map(|h| format!("head {h}")).collect();
    let grid = figures::heat_map_grid_svg(&HeatMapGrid {
        title: &format!("Attention weights, {nl} layers × {nh} heads, {t} tokens (rows: queries, columns: keys)"),
        maps: &maps,
        n: t,
        row_names: &row_names,
        col_names: &col_names,
        row_axis: "layer",
        col_axis: "head",
        value_name: "weight",
        masked: &masked,
    });
    files.push(("attention-grid.svg".to_string(), grid.clone()));

    let mut large = Vec::new();
    for s in &stats {
        let title = format!(
            "Layer {} head {}{}",
            s.layer,
            s.head,
            s.kind.map_or(String::new(), |k| format!(" ({})", k.name()))
        );
        let svg = figures::heat_map_svg(&HeatMap {
            title: &title,
            values: &weights[s.layer][s.head],
            row_labels: &labels,
            col_labels: &labels,
            row_axis: "query",
            col_axis: "key",
            value_name: "weight",
            vmax: 1.0,
            masked: &masked,
        });
        let show = match shown {
            ShownHeads::All => true,
            ShownHeads::Labelled => s.kind.is_some(),
            ShownHeads::Layer(l) => s.layer == l,
            ShownHeads::One(l, h) => (s.layer, s.head) == (l, h),
        };
        let file = format!("attention-L{}-H{}.svg", s.layer, s.head);
        if show {
            large.push(figure(&svg));
        }
        files.push((file, svg));
    }

    let mut csv = String::from("layer,head,entropy_bits,entropy_ratio,previous,first,self,label\n");
    for s in &stats {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{}",
            s.layer,
            s.head,
            csv_num(s.entropy_bits),
            csv_num(s.entropy_ratio),
            csv_num(s.previous),
            csv_num(s.first),
            csv_num(s.itself),
            s.kind.map_or("", |k| k.name())
        );
    }
    files.push(("attention-heads.csv".into(), csv));
    let stats_json: Vec<serde_json::Value> = stats
        .iter()
        .map(|s| {
            json!({"layer": s.layer, "head": s.head, "entropy_bits": num(s.entropy_bits),
                   "entropy_ratio": num(s.entropy_ratio), "previous": num(s.previous),
                   "first": num(s.first), "self": num(s.itself),
                   "label": s.kind.map(|k| k.name())})
        })
        .collect();
    let doc = json!({
        "about": about,
        "tokens": tokens_json(tok, ids),
        "label_share": num(LABEL_SHARE),
        "first_counted_row": FIRST_COUNTED_ROW,
        "thresholds": THRESHOLDS,
        "weights": weights.iter().map(|heads| heads.iter().map(|w| w.iter().map(|&x| num(x)).collect::<Vec<_>>()).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "heads": stats_json,
    });
    files.push((
        "attention.json".into(),
        serde_json::to_string(&doc).expect("JSON"),
    ));

    let rows: Vec<Vec<String>> = stats
        .iter()
        .map(|s| {
            let pct = |v: f32| {
                if v.is_finite() {
                    format!("{:.1}%", 100.0 * v)
                } else {
                    "–".into()
                }
            };
            vec![
                s.layer.to_string(),
                s.head.to_string(),
                if s.entropy_bits.is_finite() {
                    format!("{:.2}", s.entropy_bits)
                } else {
                    "–".into()
                },
                pct(s.previous),
                pct(s.first),
                pct(s.itself),
                s.kind.map_or(String::new(), |k| k.name().into()),
            ]
        })
        .collect();
    let links: Vec<String> = stats
        .iter()
        .map(|s| {
            format!(
                "<a href=\"attention-L{l}-H{h}.svg\">L{l} H{h}</a>",
                l = s.layer,
                h = s.head
            )
        })
        .collect();
    let which = match shown {
        ShownHeads::All => "every head".to_string(),
        ShownHeads::Labelled if large.is_empty() => {
            "none: no head is labelled (choose with --layer / --head)".to_string()
        }
        ShownHeads::Labelled => "the labelled heads (choose others with --layer / --head)".into(),
        ShownHeads::Layer(l) => format!("the heads of layer {l}"),
        ShownHeads::One(l, h) => format!("layer {l} head {h}"),
    };
    let html = format!(
        "<section id=\"attention\">\n<h2>Attention weights (book chapter 3)</h2>\n<p class=\"note\">{}</p>\n\
         <p>Each map shows, for every query token (row), how its attention is spread over the tokens it may see (columns); \
         grey cells are future tokens the causal mask hides. Hover a map or a cell for its values.</p>\n{}\
         <h3>Heads at a glance</h3>\n<p>{}</p>\n{}\
         <h3>Large maps: {}</h3>\n{}<p>Every head's large map: {}</p>\n</section>\n",
        xml_escape(about),
        figure(&grid),
        xml_escape(THRESHOLDS),
        html_table(
            &["layer", "head", "entropy (bits)", "previous", "first", "self", "label"],
            &rows
        ),
        xml_escape(&which),
        large.concat(),
        links.join(" ")
    );
    Section { files, html }
}

// ------------------------------------------------------------------------------- logit lens

/// The logit-lens inspection of `ids`.
pub fn logit_lens_section(
    model: &GptModel,
    tok: &Tokenizer,
    ids: &[usize],
    about: &str,
    k: usize,
) -> Section {
    let tr = numbers::trace(model, ids);
    let lens = numbers::logit_lens(model, &tr, k);
    let layers = lens.top.len();
    let row_labels: Vec<String> = (0..layers)
        .map(|l| match l {
            0 => "embeddings".to_string(),
            l => format!("after block {}", l - 1),
        })
        .collect();
    let col_labels = position_labels(tok, ids);
    let v = model.cfg.vocab_size as f64;
    let mut top_cells = Vec::new();
    let mut rank_cells = Vec::new();
    // `layer` counts the residual streams read (0: the embeddings, l: after block l − 1), not
    // the blocks as attention-heads.csv does; `residual_stream` says which in words
    let mut csv =
        String::from("layer,residual_stream,position,input_token,rank_of_final_prediction");
    for i in 0..k {
        let _ = write!(csv, ",top{i}_id,top{i}_token,top{i}_probability");
    }
    csv.push('\n');
    for (l, row) in lens.top.iter().enumerate() {
        let mut tops = Vec::new();
        let mut ranks = Vec::new();
        for (pos, cands) in row.iter().enumerate() {
            let rank = lens.final_rank[l][pos];
            let final_label = token_label(tok, lens.final_prediction[pos]);
            let list: Vec<String> = cands
                .iter()
                .map(|&(id, p)| format!("{} {:.1}%", token_label(tok, id), 100.0 * p))
                .collect();
            let hover = format!(
                "{}, position {}: {} | final prediction {} at rank {}",
                row_labels[l],
                col_labels[pos],
                list.join(", "),
                final_label,
                rank + 1
            );
            let (best, p) = cands[0];
            tops.push(TextCell {
                text: token_label(tok, best),
                shade: p as f64,
                hover: hover.clone(),
            });
            // rank 1 darkest, the vocabulary's last rank white, on a log scale
            let shade = 1.0 - ((rank + 1) as f64).ln() / v.ln().max(1e-9);
            ranks.push(TextCell {
                text: (rank + 1).to_string(),
                shade,
                hover,
            });
            let _ = write!(
                csv,
                "{l},{},{pos},{},{}",
                row_labels[l],
                csv_text(&token_label(tok, ids[pos])),
                rank + 1
            );
            for &(id, p) in cands {
                let _ = write!(csv, ",{id},{},{p:.6}", csv_text(&token_label(tok, id)));
            }
            csv.push('\n');
        }
        top_cells.push(tops);
        rank_cells.push(ranks);
    }
    let top_svg = figures::text_grid_svg(&TextGrid {
        title: "Logit lens: the most likely next token at each layer and position",
        cells: &top_cells,
        row_labels: &row_labels,
        col_labels: &col_labels,
        row_axis: "residual stream",
        col_axis: "position (input token)",
        value_name: "probability",
    });
    let rank_svg = figures::text_grid_svg(&TextGrid {
        title: "Rank of the model's final prediction at each layer (1 = top)",
        cells: &rank_cells,
        row_labels: &row_labels,
        col_labels: &col_labels,
        row_axis: "residual stream",
        col_axis: "position (input token)",
        value_name: "1 − ln(rank)/ln(V): dark = rank 1",
    });
    let doc = json!({
        "about": about,
        "tokens": tokens_json(tok, ids),
        "layers": row_labels,
        "final_prediction": lens.final_prediction.iter().map(|&id| json!({"id": id, "label": token_label(tok, id)})).collect::<Vec<_>>(),
        "rank_of_final_prediction": lens.final_rank.iter().map(|r| r.iter().map(|x| x + 1).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "top": lens.top.iter().map(|row| row.iter().map(|c| c.iter().map(|&(id, p)| json!({"id": id, "label": token_label(tok, id), "p": num(p)})).collect::<Vec<_>>()).collect::<Vec<_>>()).collect::<Vec<_>>(),
    });
    let html = format!(
        "<section id=\"logit-lens\">\n<h2>Logit lens (book section 4.6: the output head, applied early)</h2>\n<p class=\"note\">{}</p>\n\
         <p>The residual stream after the embeddings and after each block goes through the final layer norm and the output head, \
         as if the model ended there. Each cell is the most likely next token, shaded by its probability; hover for the top {k} \
         and the rank of the model's final prediction. The last row is the model's own output.</p>\n{}{}</section>\n",
        xml_escape(about),
        figure(&top_svg),
        figure(&rank_svg)
    );
    Section {
        files: vec![
            ("logit-lens.svg".into(), top_svg),
            ("logit-lens-rank.svg".into(), rank_svg),
            ("logit-lens.csv".into(), csv),
            (
                "logit-lens.json".into(),
                serde_json::to_string(&doc).expect("JSON"),
            ),
        ],
        html,
    }
}

// ------------------------------------------------------------------------------- layer norm

/// The layer-norm inspection of `ids`.
pub fn layer_norm_section(model: &GptModel, ids: &[usize], about: &str) -> Section {
    let tr = numbers::trace(model, ids);
    let stats = numbers::layer_norm_stats(model, &tr);
    let names: Vec<(f64, String)> = stats
        .iter()
        .enumerate()
        .map(|(i, s)| (i as f64, s.name.replace("trf_blocks.", "block ")))
        .collect();
    let series =
        |label: &str, f: &dyn Fn(&numbers::NormStats) -> f32, dashed: bool| figures::Series {
            label: label.into(),
            points: stats
                .iter()
                .enumerate()
                .map(|(i, s)| (i as f64, f(s) as f64))
                .collect(),
            dashed,
        };
    let plot = |title: &str, y: &str, log_y: bool, s: &[figures::Series]| {
        figures::line_plot_svg(&figures::LinePlot {
            title,
            x_label: "layer norm",
            y_label: y,
            series: s,
            log_x: false,
            log_y,
            dots: true,
            x_names: Some(&names),
        })
    };
    let stds = plot(
        "Layer norm: standard deviation of a token's vector, averaged over tokens",
        "std (log scale)",
        true,
        &[
            series("into the norm", &|s| s.input.std, false),
            series("normalised (before scale)", &|s| s.normalized.std, true),
            series("out of the norm", &|s| s.output.std, false),
        ],
    );
    let means = plot(
        "Layer norm: mean of a token's vector, averaged over tokens",
        "mean",
        false,
        &[
            series("into the norm", &|s| s.input.mean, false),
            series("normalised (before scale)", &|s| s.normalized.mean, true),
            series("out of the norm", &|s| s.output.mean, false),
        ],
    );
    let params = plot(
        "Layer norm: the learned scale and shift over their channels",
        "value",
        false,
        &[
            series("scale: mean", &|s| s.scale.mean, false),
            series("scale: std", &|s| s.scale.std, true),
            series("shift: mean", &|s| s.shift.mean, false),
            series("shift: std", &|s| s.shift.std, true),
        ],
    );
    let mut csv = String::from("norm,input_mean,input_std,normalized_mean,normalized_std,output_mean,output_std,scale_mean,scale_std,shift_mean,shift_std\n");
    for s in &stats {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{},{}",
            s.name,
            csv_num(s.input.mean),
            csv_num(s.input.std),
            csv_num(s.normalized.mean),
            csv_num(s.normalized.std),
            csv_num(s.output.mean),
            csv_num(s.output.std),
            csv_num(s.scale.mean),
            csv_num(s.scale.std),
            csv_num(s.shift.mean),
            csv_num(s.shift.std)
        );
    }
    let html = format!(
        "<section id=\"layer-norm\">\n<h2>Layer normalization (book section 4.2)</h2>\n<p class=\"note\">{}</p>\n\
         <p>Every layer norm shifts each token's vector to mean 0 and scales it to standard deviation 1 (the dashed \
         \"normalised\" lines), then applies its learned scale and shift. Watch the residual stream's spread grow with depth \
         going in, and come out at the size the next layer expects.</p>\n{}{}{}</section>\n",
        xml_escape(about),
        figure(&stds),
        figure(&means),
        figure(&params)
    );
    Section {
        files: vec![
            ("layer-norm.svg".into(), stds),
            ("layer-norm-means.svg".into(), means),
            ("layer-norm-params.svg".into(), params),
            ("layer-norm.csv".into(), csv),
        ],
        html,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn attention_maps_of_bounded_size() {
        // GPT-2 small: its full context is refused, naming the largest length allowed
        let e = super::check_attention_size(144, 1024).unwrap_err().0;
        assert!(e.contains("--max-tokens 526"), "{e}");
        assert!(super::check_attention_size(144, 526).is_ok());
        assert!(super::check_attention_size(16, 128).is_ok());
    }

    use super::*;

    #[test]
    fn token_labels_are_visible() {
        let tok = Tokenizer::bytes();
        assert_eq!(token_label(&tok, b' ' as usize), "␣");
        assert_eq!(token_label(&tok, b'\n' as usize), "↵");
        assert_eq!(token_label(&tok, b'a' as usize), "a");
        assert_eq!(token_label(&tok, 0xE2), "\\xE2"); // a lone byte of a longer character
        if let Ok(gpt2) = Tokenizer::gpt2() {
            // GPT-2's "Ġeffort" (a leading space) shows the space
            let ids = gpt2.encode(" effort");
            assert_eq!(token_label(&gpt2, ids[0]), "␣effort");
        }
    }

    #[test]
    fn known_heads_are_labelled_on_the_grid_the_table_and_the_csv() {
        // model::testing's hand-made heads: previous-token, first-token sink, diagonal
        let model = model::testing::model_with_known_heads();
        let tok = Tokenizer::bytes(); // labels only; the model's 5 ids are bytes 0..4
        let ids = [1, 2, 3, 4, 0, 1, 2];
        let s = attention_section(&model, &tok, &ids, "test", ShownHeads::Labelled);
        let file = |name: &str| &s.files.iter().find(|(n, _)| n == name).unwrap().1;
        let csv = file("attention-heads.csv");
        let labels: Vec<&str> = csv
            .lines()
            .skip(1)
            .map(|l| l.rsplit(',').next().unwrap())
            .collect();
        assert_eq!(
            labels,
            ["previous-token", "first-token sink", "diagonal (self)"]
        );
        let grid = file("attention-grid.svg");
        for tag in ["previous-token", "first-token sink", "diagonal (self)"] {
            assert!(
                grid.contains(&format!(">{tag}</text>")),
                "{tag} under its map"
            );
        }
        // 3 small maps of 7·8/2 visible cells (other rects: the background, the 3 maps' grey
        // frames, the colour bar's 40 steps and its outline); all three heads are labelled, so
        // all three large maps are on the page, each cell with its value on hover
        assert_eq!(grid.matches("<rect").count() - 1 - 3 - 40 - 1, 3 * 28);
        assert_eq!(s.html.matches("<title>query").count(), 3 * 28);
        assert!(s.html.contains("<td>previous-token</td>"));
        assert!(s.html.contains("\\x01"), "control bytes shown as \\xNN");
    }

    #[test]
    fn heads_out_of_range_are_errors() {
        assert!(matches!(
            pick_heads((2, 4), None, None),
            Ok(ShownHeads::All)
        ));
        assert!(matches!(
            pick_heads((12, 12), None, None),
            Ok(ShownHeads::Labelled)
        ));
        let e = pick_heads((2, 4), Some(2), None).unwrap_err();
        assert!(e.0.contains("--layer 2") && e.0.contains("2 layers"), "{e}");
        let e = pick_heads((2, 4), Some(1), Some(4)).unwrap_err();
        assert!(e.0.contains("--head 4"), "{e}");
    }
}
