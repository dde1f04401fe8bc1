//! `scratchgpt tokenize`: a corpus tokenized once into token shards plus `manifest.json`
//! (see [`crate::tokenize`] for the stages and [`crate::shards`] for the format);
//! `scratchgpt tokenize --verify DIR` checks such a directory against its manifest.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use model::memory::human_bytes;

use crate::error::{io_error, TrainError};
use crate::settings::TokenizerSpec;
use crate::shards::{
    Checksum, Manifest, Shard, TokenWidth, MANIFEST_FILE, MANIFEST_FORMAT, TOKENIZER_DIR,
};
use crate::tokenize::{
    self, is_token_file, Documents, Outcome, Sizes, Split, DEFAULT_BPE_SAMPLE_BYTES,
    DEFAULT_SHARD_TOKENS, DEFAULT_VAL_FRACTION,
};
use crate::tokenizer::{Tokenizer, TokenizerKind};
use crate::trainer::build_tokenizer;

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// UTF-8 text to tokenize: files (any name; /dev/stdin reads a pipe), directories (their
    /// *.txt, *.text, *.md, *.markdown, *.rst files, recursively, in name order, hidden ones
    /// skipped) and globs (* and ? in the file name: 'data/*.json'), read in the order given.
    #[arg(long, num_args = 1.., value_name = "FILE|DIR|GLOB", required_unless_present = "verify")]
    pub data: Vec<PathBuf>,
    /// gpt2 (GPT-2's 50,257 tokens), bytes (one id per byte), bpe:N (a BPE of N tokens learned
    /// from the first --bpe-sample-bytes of the training text, stored in DIR/tokenizer/), or a
    /// directory holding tokenizer files (tokenizer.json, or vocab.json + merges.txt, e.g. a
    /// checkpoint), copied to DIR/tokenizer/.
    #[arg(long, default_value = "gpt2", value_name = "gpt2|bytes|bpe:N|DIR")]
    pub tokenizer: String,
    /// Directory to write the shards and manifest.json into. One that already holds shards is
    /// refused unless --force.
    #[arg(long, value_name = "DIR", required_unless_present = "verify")]
    pub out: Option<PathBuf>,
    /// Share of the text (by bytes, in whole documents spread over the corpus) written to the
    /// validation shards; 0 writes none.
    #[arg(long, default_value_t = DEFAULT_VAL_FRACTION, value_name = "F")]
    pub val_fraction: f64,
    /// Tokens per shard (llm.c's default; at most 2^31 - 1, the header's limit).
    #[arg(long, default_value_t = DEFAULT_SHARD_TOKENS, value_name = "N")]
    pub shard_tokens: u64,
    /// Where documents end (an <|endoftext|> goes before each): at the end of each file
    /// (files); also at lines holding only whitespace (blank-lines); or also at a literal
    /// <|endoftext|> in the text (endoftext, as TinyStories ships). Otherwise the text
    /// <|endoftext|> is just characters.
    #[arg(
        long,
        value_enum,
        default_value_t = Documents::Files,
        value_name = "files|blank-lines|endoftext",
        hide_possible_values = true
    )]
    pub documents: Documents,
    /// With --tokenizer bpe:N: bytes of training text the vocabulary is learned from.
    #[arg(long, default_value_t = DEFAULT_BPE_SAMPLE_BYTES, value_name = "BYTES")]
    pub bpe_sample_bytes: u64,
    /// Replace the shards already in --out (they are kept until the new ones are complete,
    /// and restored if tokenizing fails), or write into a directory holding other files.
    #[arg(long, requires = "out")]
    pub force: bool,
    /// Check a directory written by tokenize: every shard's header, token count and checksum
    /// against manifest.json.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["data", "out", "force"])]
    pub verify: Option<PathBuf>,
}

/// What `--tokenizer` asks for.
enum Source {
    Spec(TokenizerSpec),
    /// Loaded from a directory of tokenizer files.
    Files(Box<Tokenizer>),
}

fn parse_tokenizer(s: &str) -> Result<Source, TrainError> {
    match TokenizerSpec::parse(s) {
        Ok(spec) => Ok(Source::Spec(spec)),
        Err(e) if s.starts_with("bpe:") => Err(TrainError(format!("--tokenizer: {e}"))),
        Err(_) => {
            let dir = Path::new(s);
            let files = ["tokenizer.json", "vocab.json"];
            if !dir.is_dir() || !files.iter().any(|f| dir.join(f).is_file()) {
                return Err(TrainError(format!(
                    "--tokenizer {s:?}: neither gpt2, bytes, bpe:N nor a directory holding tokenizer files (tokenizer.json, or vocab.json + merges.txt)"
                )));
            }
            Ok(Source::Files(Box::new(Tokenizer::load(dir)?)))
        }
    }
}

pub fn tokenize_command(a: &TokenizeArgs) -> Result<i32, TrainError> {
    if let Some(dir) = &a.verify {
        return verify_command(dir);
    }
    let out = a
        .out
        .as_ref()
        .expect("clap requires --out without --verify");
    if !(0.0..1.0).contains(&a.val_fraction) {
        return Err(TrainError(format!(
            "--val-fraction must be at least 0 and below 1, got {}",
            a.val_fraction
        )));
    }
    if a.shard_tokens == 0 || a.shard_tokens > i32::MAX as u64 {
        return Err(TrainError(format!(
            "--shard-tokens must be from 1 to {} (the shard header's limit), got {}",
            i32::MAX,
            a.shard_tokens
        )));
    }
    if a.bpe_sample_bytes == 0 {
        return Err(TrainError("--bpe-sample-bytes must be at least 1".into()));
    }
    let source = parse_tokenizer(&a.tokenizer)?;
    let inputs = tokenize::list_inputs(&a.data, Some(out))?;
    let dir = TokenDir::prepare(out, a.force)?;
    let stop = Arc::new(AtomicBool::new(false));
    crate::cli::on_ctrl_c(
        stop.clone(),
        "stopping: removing the shards written so far (Ctrl-C again to quit now)",
        "interrupted again: exiting now (no manifest was written)",
    );
    match run(a, source, &inputs, &dir.path, &stop) {
        Ok(Some(())) => {
            dir.commit();
            Ok(0)
        }
        Ok(None) => {
            dir.abandon();
            eprintln!("interrupted: nothing written");
            Ok(130)
        }
        Err(e) => {
            dir.abandon();
            Err(e)
        }
    }
}

/// Tokenizes into `out`; `None` when interrupted. The caller cleans up on anything but success.
fn run(
    a: &TokenizeArgs,
    source: Source,
    inputs: &[tokenize::Input],
    out: &Path,
    stop: &AtomicBool,
) -> Result<Option<()>, TrainError> {
    let start = Instant::now();
    // learning a vocabulary reads a sample first, and a pipe cannot be read again: the
    // tokenizing pass would start after the sample, silently losing it
    let pipe = inputs.iter().find(|i| is_a_pipe(&i.path));
    let (tok, name) = match source {
        Source::Spec(TokenizerSpec::Bpe(_)) if pipe.is_some() => {
            return Err(TrainError(format!(
                "{}: a pipe is read once, and --tokenizer bpe:N reads the text twice (a sample to learn from, then all of it); write the text to a file first, or use gpt2, bytes or a tokenizer directory",
                pipe.unwrap().path.display()
            )));
        }
        Source::Spec(TokenizerSpec::Bpe(n)) => {
            let sample = tokenize::bpe_sample(
                inputs,
                a.documents,
                a.val_fraction,
                a.bpe_sample_bytes,
                stop,
            )?;
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            if sample.is_empty() {
                return Err(TrainError(format!(
                    "{}: no training text to learn a BPE from",
                    describe(inputs)
                )));
            }
            let spec = TokenizerSpec::Bpe(n);
            let learned =
                build_tokenizer(&spec, &sample, &describe(inputs), |m| println!("{m}"), stop)?;
            let Some(tok) = learned else {
                return Ok(None);
            };
            (tok, spec.to_string())
        }
        Source::Spec(spec) => match build_tokenizer(&spec, "", "", |_| {}, stop)? {
            Some(tok) => (tok, spec.to_string()),
            None => return Ok(None),
        },
        Source::Files(tok) => {
            let name = match tok.kind() {
                TokenizerKind::Gpt2 => "gpt2",
                TokenizerKind::Bytes => "bytes",
                TokenizerKind::Bpe => "files",
            };
            (*tok, name.to_string())
        }
    };
    if name != "gpt2" && name != "bytes" {
        let tdir = out.join(TOKENIZER_DIR);
        std::fs::create_dir_all(&tdir).map_err(|e| io_error(&tdir, e))?;
        for (file, bytes) in tok.files() {
            model::weights::write_atomically(&tdir.join(file), &bytes)?;
        }
    }
    let total: u64 = inputs.iter().map(|i| i.bytes).sum();
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {bytes_per_sec}  {msg}  [{elapsed_precise} < {eta}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    });
    let t0 = Instant::now();
    let outcome = tokenize::write_shards(
        inputs,
        a.documents,
        a.val_fraction,
        Sizes::default(),
        &tok,
        out,
        a.shard_tokens,
        stop,
        &|bytes, tokens| {
            if let Some(b) = &bar {
                b.set_position(bytes);
                b.set_message(format!("{tokens} tokens"));
            }
        },
    )?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let secs = t0.elapsed().as_secs_f64();
    let w = match outcome {
        Outcome::Interrupted => return Ok(None),
        Outcome::Done(w) => w,
    };
    if w.documents == 0 {
        return Err(TrainError(format!(
            "{}: no text to tokenize (empty, or only whitespace)",
            describe(inputs)
        )));
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        version: 1,
        tokenizer: name,
        vocab_size: tok.vocab_size(),
        token_width: TokenWidth::for_vocab(tok.vocab_size()),
        documents: w.documents,
        source_bytes: w.source_bytes,
        train: w.train.clone(),
        val: w.val.clone(),
    };
    if stop.load(Ordering::Relaxed) {
        return Ok(None);
    }
    manifest.write(out)?;
    let (train, val) = (w.tokens(Split::Train), w.tokens(Split::Val));
    let shards = |n: usize| crate::counted(n, "shard", "shards");
    println!(
        "tokenized {}, {}, {}: {} tokens (train {train} in {}, val {val} in {}) at {:.1} MB/s in {:.1} s ({:.1} s in all) into {}",
        crate::counted(inputs.len(), "file", "files"),
        crate::counted(w.documents as usize, "document", "documents"),
        human_bytes(w.source_bytes),
        train + val,
        shards(w.train.len()),
        shards(w.val.len()),
        w.source_bytes as f64 / 1e6 / secs.max(1e-9),
        secs,
        start.elapsed().as_secs_f64(),
        out.display()
    );
    if a.val_fraction > 0.0 && val == 0 {
        println!(
            "warning: no validation shard: the first document always goes to training, and there is only one; cut the text into documents with --documents blank-lines (or endoftext), or add files"
        );
    }
    Ok(Some(()))
}

fn describe(inputs: &[tokenize::Input]) -> String {
    match inputs {
        [one] => one.path.display().to_string(),
        _ => format!("the {} input files", inputs.len()),
    }
}

/// The output directory: refuses one holding shards unless `--force`, which moves them aside
/// until the new ones are complete (and back if tokenizing fails), as run directories do.
struct TokenDir {
    path: PathBuf,
    created: bool,
    stash: Option<PathBuf>,
}

impl TokenDir {
    fn prepare(dir: &Path, force: bool) -> Result<TokenDir, TrainError> {
        let mut out = TokenDir {
            path: dir.to_path_buf(),
            created: false,
            stash: None,
        };
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
            out.created = true;
            return Ok(out);
        }
        if !dir.is_dir() {
            return Err(TrainError(format!(
                "{}: is a file; --out takes a directory",
                dir.display()
            )));
        }
        let names: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| io_error(dir, e))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let ours: Vec<&String> = names.iter().filter(|n| is_token_file(n)).collect();
        if !ours.is_empty() {
            if !force {
                return Err(TrainError(format!(
                    "{}: already holds token shards ({}); choose a new --out, or replace them with --force",
                    dir.display(),
                    crate::counted(ours.len(), "file", "files")
                )));
            }
            let stash = dir.join(format!(".replaced-{}", std::process::id()));
            std::fs::create_dir(&stash).map_err(|e| io_error(&stash, e))?;
            // the manifest first: from here on the directory no longer looks complete
            let mut ours = ours;
            ours.sort_by_key(|n| *n != MANIFEST_FILE);
            for name in ours {
                let from = dir.join(name);
                std::fs::rename(&from, stash.join(name)).map_err(|e| io_error(&from, e))?;
            }
            out.stash = Some(stash);
        } else if !names.is_empty() && !force {
            return Err(TrainError(format!(
                "{}: is not empty (and holds no token shards); choose a new --out, or pass --force to write into it anyway",
                dir.display()
            )));
        }
        Ok(out)
    }

    /// The new shards are complete: the replaced ones go.
    fn commit(&self) {
        if let Some(stash) = &self.stash {
            let _ = std::fs::remove_dir_all(stash);
        }
    }

    /// Tokenizing failed (its shards are already removed): removes the rest of what it wrote
    /// and puts back what `--force` moved aside.
    fn abandon(&self) {
        if self.created {
            let _ = std::fs::remove_dir_all(&self.path);
            return;
        }
        let _ = std::fs::remove_dir_all(self.path.join(TOKENIZER_DIR));
        let _ = std::fs::remove_file(self.path.join(MANIFEST_FILE));
        if let Some(stash) = &self.stash {
            if let Ok(entries) = std::fs::read_dir(stash) {
                for e in entries.flatten() {
                    let _ = std::fs::rename(e.path(), self.path.join(e.file_name()));
                }
            }
            let _ = std::fs::remove_dir(stash);
        }
    }
}

/// `--verify DIR`: every shard of the manifest opens (header and size agree), holds the
/// manifest's token count and has its checksum; no other shard lies in the directory; the
/// tokenizer loads with the manifest's vocabulary size.
fn verify_command(dir: &Path) -> Result<i32, TrainError> {
    let t0 = Instant::now();
    let m = Manifest::read(dir)?;
    let mut listed = std::collections::HashSet::new();
    let mut bytes = 0u64;
    for (split, records) in [(Split::Train, &m.train), (Split::Val, &m.val)] {
        for r in records {
            let path = dir.join(&r.file);
            let bad = |why: String| TrainError(format!("{}: {why}", path.display()));
            let shard = Shard::open(&path)?;
            if shard.width != m.token_width {
                return Err(bad(format!(
                    "{:?} tokens, but the manifest says {:?}",
                    shard.width, m.token_width
                )));
            }
            if shard.tokens != r.tokens {
                return Err(bad(format!(
                    "{} tokens, but the manifest lists {} for this {} shard",
                    shard.tokens,
                    r.tokens,
                    split.name()
                )));
            }
            let sum = Checksum::of_file(&path)?;
            bytes += std::fs::metadata(&path)
                .map_err(|e| io_error(&path, e))?
                .len();
            if sum != r.checksum {
                return Err(bad(format!(
                    "checksum {sum} differs from the manifest's {}: the file changed after tokenize wrote it",
                    r.checksum
                )));
            }
            listed.insert(r.file.clone());
        }
    }
    for e in std::fs::read_dir(dir)
        .map_err(|e| io_error(dir, e))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".bin") && is_token_file(&name) && !listed.contains(&name) {
            return Err(TrainError(format!(
                "{}: a shard that {} does not list (left from another run?)",
                e.path().display(),
                dir.join(MANIFEST_FILE).display()
            )));
        }
    }
    let vocab = match m.tokenizer.as_str() {
        "gpt2" => Tokenizer::gpt2()?.vocab_size(),
        "bytes" => Tokenizer::bytes().vocab_size(),
        other => crate::shards::learned_tokenizer(dir, other)?.vocab_size(),
    };
    if vocab != m.vocab_size {
        return Err(TrainError(format!(
            "{}: vocab_size {} but the tokenizer {:?} has {vocab} tokens",
            dir.join(MANIFEST_FILE).display(),
            m.vocab_size,
            m.tokenizer
        )));
    }
    println!(
        "ok: {} train and {} val shards, {} tokens (train {}, val {}), {} checked in {:.1} s; tokenizer {} ({} tokens), {} documents",
        m.train.len(),
        m.val.len(),
        m.train_tokens() + m.val_tokens(),
        m.train_tokens(),
        m.val_tokens(),
        human_bytes(bytes),
        t0.elapsed().as_secs_f64(),
        m.tokenizer,
        m.vocab_size,
        m.documents
    );
    Ok(0)
}

/// Whether `path` is a pipe or another stream that can be read only once (not a regular file).
fn is_a_pipe(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.is_file())
}
