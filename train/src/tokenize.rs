//! `scratchgpt tokenize`: a corpus streamed through a tokenizer into token shards
//! ([`crate::shards`]), in bounded memory and in parallel, with the same shards on any number
//! of threads.
//!
//! The text flows through three stages:
//! 1. **Reading** ([`PieceReader`]): each input file is read in chunks of a few MB, checked to
//!    be UTF-8 (an error names the file and the byte offset), and cut into documents (the
//!    files themselves, or also at blank lines or at a literal `<|endoftext|>`, see
//!    [`Documents`]). A document's leading and trailing whitespace is dropped; a document with
//!    no text is skipped.
//! 2. **Pieces**: a document longer than about 1 MB is cut into pieces at places where the
//!    tokenizer's pre-tokenizer would end a word anyway ([`split_point`]), so tokenizing the
//!    pieces one by one gives exactly the tokens of the whole document. Each document is
//!    assigned to the training or the validation split when it starts ([`ValSplit`]).
//! 3. **Tokenizing** ([`write_shards`]): batches of pieces are encoded on all cores (rayon),
//!    and their tokens written in the pieces' order, so the output does not depend on the
//!    thread count. Every document is written as `<|endoftext|>` followed by its tokens
//!    (llm.c's convention: the delimiter starts each document, so every split begins on one).
//!
//! Memory stays bounded whatever the corpus size: one read buffer, one document's unwritten
//! text (at most a piece plus a read), a queue of pieces, and one batch of tokens.
//!
//! # Why the pieces give the whole document's tokens
//! GPT-2's pre-tokenizer pattern (`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
//! ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`) splits text into words, which BPE then encodes one by
//! one. The words cover the text without gaps, and a word is found by looking only forward.
//! Take a whitespace character `w` followed by a non-whitespace character, and the run of
//! whitespace `R` that ends with `w`:
//! - the word before `R` ends where `R` starts (only the two whitespace alternatives match
//!   whitespace after a word's first character), whether or not the text goes on;
//! - if `R` is longer than `w`, the pattern matches `R` without `w` as one word: in the whole
//!   text `\s+(?!\S)` backs off by one character so as not to be followed by the non-space,
//!   and at the end of a piece `\s+` takes the same characters because the piece ends there;
//! - so a word starts at `w` in the whole text, and from there on both see the same text.
//!
//! Cutting just before `w` is therefore safe; the cut is placed at the last such place before
//! the piece size. (Cutting *after* a newline, the obvious choice, is not safe: in `"a  \nb"`
//! the whole text has the words `"  "` and `"\n"`, but a piece ending at `"a  \n"` has
//! `"  \n"`, and text with Windows line ends always has `"\r"` before `"\n"`.) The bytes
//! tokenizer has no pre-tokenizer and any cut is safe. A document with no such place in 16 MB
//! (no whitespace before a non-space: not text) is cut at a character boundary, the one case
//! where the tokens near a cut may differ from those of the whole document.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::time::Duration;

use rayon::prelude::*;

use crate::error::{io_error, TrainError};
use crate::shards::{ShardRecord, ShardWriter, TokenWidth, MANIFEST_FILE, TOKENIZER_DIR};
use crate::tokenizer::{Tokenizer, END_OF_TEXT};

/// The file extensions a directory given to `--data` is searched for (case-insensitive);
/// files named on the command line or matched by a glob are read whatever their name.
pub const TEXT_EXTENSIONS: [&str; 5] = ["txt", "text", "md", "markdown", "rst"];
/// Tokens per shard unless `--shard-tokens` says otherwise (llm.c's shard size).
pub const DEFAULT_SHARD_TOKENS: u64 = 100_000_000;
/// The share of the text (by bytes, in whole documents) that goes to validation.
pub const DEFAULT_VAL_FRACTION: f64 = 0.005;
/// How much training text a `bpe:N` vocabulary is learned from.
pub const DEFAULT_BPE_SAMPLE_BYTES: u64 = 256_000_000;

/// Where documents end (besides the end of each file, always one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Documents {
    /// Each file is one document.
    Files,
    /// Also at every blank line (a line holding only whitespace).
    BlankLines,
    /// Also at every literal `<|endoftext|>` in the text (as TinyStories ships it).
    #[value(name = "endoftext")]
    EndOfText,
}

/// Which split a document goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

/// The validation split: a document goes to validation when it starts while validation holds
/// less than `fraction` of the document bytes seen so far, else to training. Deterministic,
/// by whole documents, spread evenly over the corpus (not only its first files), and the first
/// document always trains, so a one-document corpus has no validation split. Validation can
/// exceed its share by at most one document.
#[derive(Clone, Debug)]
pub struct ValSplit {
    fraction: f64,
    train_bytes: u64,
    val_bytes: u64,
}

impl ValSplit {
    pub fn new(fraction: f64) -> ValSplit {
        ValSplit {
            fraction,
            train_bytes: 0,
            val_bytes: 0,
        }
    }

    /// The split of the document starting now.
    pub fn assign(&self) -> Split {
        let seen = (self.train_bytes + self.val_bytes) as f64;
        if self.fraction > 0.0 && (self.val_bytes as f64) < self.fraction * seen {
            Split::Val
        } else {
            Split::Train
        }
    }

    /// Records a finished document of `bytes` bytes.
    pub fn add(&mut self, split: Split, bytes: u64) {
        match split {
            Split::Train => self.train_bytes += bytes,
            Split::Val => self.val_bytes += bytes,
        }
    }
}

/// One input: a file (or a pipe such as `/dev/stdin`), and its size when known.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    pub path: PathBuf,
    /// 0 for a pipe.
    pub bytes: u64,
}

/// The files `--data` names, in order: a file as it is; a directory's text files (see
/// [`TEXT_EXTENSIONS`]) recursively in name order, skipping hidden entries, symbolic links to
/// directories and `exclude` (the output directory); a glob (`*` and `?` in the file name)
/// its matching files in name order. A file named twice is read once.
pub fn list_inputs(args: &[PathBuf], exclude: Option<&Path>) -> Result<Vec<Input>, TrainError> {
    let exclude = exclude.and_then(|p| p.canonicalize().ok());
    let mut inputs = Vec::new();
    let mut seen = HashSet::new();
    let mut add = |path: PathBuf, bytes: u64| {
        let key = path.canonicalize().unwrap_or_else(|_| path.clone());
        if seen.insert(key) {
            inputs.push(Input { path, bytes });
        }
    };
    for arg in args {
        if !arg.exists() && arg.to_string_lossy().contains(['*', '?']) {
            for (path, bytes) in glob(arg)? {
                add(path, bytes);
            }
            continue;
        }
        let meta = std::fs::metadata(arg).map_err(|e| io_error(arg, e))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(arg, exclude.as_deref(), &mut found)?;
            if found.is_empty() {
                return Err(TrainError(format!(
                    "{}: holds no text files (*.{}); name other files one by one or with a glob",
                    arg.display(),
                    TEXT_EXTENSIONS.join(", *.")
                )));
            }
            for (path, bytes) in found {
                add(path, bytes);
            }
        } else {
            add(arg.clone(), if meta.is_file() { meta.len() } else { 0 });
        }
    }
    Ok(inputs)
}

fn sorted_entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>, TrainError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io_error(dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| io_error(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

fn walk(
    dir: &Path,
    exclude: Option<&Path>,
    found: &mut Vec<(PathBuf, u64)>,
) -> Result<(), TrainError> {
    for entry in sorted_entries(dir)? {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let kind = entry.file_type().map_err(|e| io_error(&path, e))?;
        if kind.is_dir() {
            let is_out = |d: &Path| exclude.is_some_and(|x| d.canonicalize().is_ok_and(|p| p == x));
            // the output directory, and its own tokenizer files when it is the one walked
            // (an --out inside --data: its vocabulary and merges are no training text)
            if is_out(&path) || (entry.file_name() == crate::shards::TOKENIZER_DIR && is_out(dir)) {
                continue;
            }
            walk(&path, exclude, found)?;
            continue;
        }
        let is_text = path.extension().is_some_and(|e| {
            let e = e.to_string_lossy().to_lowercase();
            TEXT_EXTENSIONS.contains(&e.as_str())
        });
        // a symbolic link counts when it leads to a file (links to directories are not
        // followed: no cycles)
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() && is_text => found.push((path, meta.len())),
            _ => {}
        }
    }
    Ok(())
}

/// The files matching `pattern`, whose file name may hold `*` (any characters) and `?` (one
/// character); hidden files only when the pattern starts with a dot.
fn glob(pattern: &Path) -> Result<Vec<(PathBuf, u64)>, TrainError> {
    let name: Vec<char> = pattern
        .file_name()
        .map(|n| n.to_string_lossy().chars().collect())
        .unwrap_or_default();
    let dir = match pattern.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if dir.to_string_lossy().contains(['*', '?']) {
        return Err(TrainError(format!(
            "{}: only the file name may hold wildcards (* and ?); give a directory to read all its text files",
            pattern.display()
        )));
    }
    let mut found = Vec::new();
    for entry in sorted_entries(&dir)? {
        let file: Vec<char> = entry.file_name().to_string_lossy().chars().collect();
        if file.first() == Some(&'.') && name.first() != Some(&'.') {
            continue;
        }
        if wildcard_match(&name, &file) {
            let path = entry.path();
            if let Ok(meta) = std::fs::metadata(&path) {
                if meta.is_file() {
                    found.push((path, meta.len()));
                }
            }
        }
    }
    if found.is_empty() {
        return Err(TrainError(format!(
            "{}: matches no file",
            pattern.display()
        )));
    }
    Ok(found)
}

/// Whether `name` matches `pattern` (`*` any run of characters, `?` one character).
fn wildcard_match(pattern: &[char], name: &[char]) -> bool {
    let (mut p, mut n) = (0, 0);
    // where the last `*` was, and the name position it is currently made to cover up to
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            // let the last `*` take one more character and try again
            star = Some((sp, sn + 1));
            p = sp + 1;
            n = sn + 1;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// The last place at or before `max` (and after 0) where `text` may be cut without changing
/// its tokens: just before a whitespace character that is followed by a non-whitespace one
/// (see the module docs). `None` if there is none, or if the character after `max` is not in
/// `text` yet (the answer could change as text is added).
pub fn split_point(text: &str, max: usize) -> Option<usize> {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    // the character after the one looked at
    let mut after = text[end..].chars().next()?;
    for (i, c) in text[..end].char_indices().rev() {
        if i > 0 && c.is_whitespace() && !after.is_whitespace() {
            return Some(i);
        }
        after = c;
    }
    None
}

/// The first place after `min` where `text` may be cut (see [`split_point`]).
fn split_point_after(text: &str, min: usize) -> Option<usize> {
    let mut start = min.min(text.len());
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let mut chars = text[start..].char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if start + i > 0
            && c.is_whitespace()
            && chars.peek().is_some_and(|&(_, a)| !a.is_whitespace())
        {
            return Some(start + i);
        }
    }
    None
}

/// A piece of one document's text, ready to encode.
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    pub text: String,
    /// The first piece of a document: `<|endoftext|>` goes before it.
    pub doc_start: bool,
    pub split: Split,
    /// Input bytes read when the piece was made (for progress).
    pub read_bytes: u64,
}

/// Sizes of the reader's buffers; the defaults suit real corpora, the tests use tiny ones to
/// cut everything everywhere.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Bytes asked of each `read` call.
    pub read: usize,
    /// A document is cut into pieces of about this many bytes.
    pub piece: usize,
    /// A piece with no safe place to cut is cut anyway at this size.
    pub max_piece: usize,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes {
            read: 4 << 20,
            piece: 1 << 20,
            max_piece: 16 << 20,
        }
    }
}

/// The first stages: files → documents → pieces (see the module docs). Pull pieces with
/// [`PieceReader::next_piece`].
pub struct PieceReader {
    inputs: Vec<Input>,
    next_file: usize,
    documents: Documents,
    sizes: Sizes,
    /// the file being read, with its name for errors
    file: Option<(File, PathBuf)>,
    /// bytes read and not yet passed on (an incomplete UTF-8 character, a possible start of
    /// `<|endoftext|>`), and the file offset of its first byte
    carry: Vec<u8>,
    carry_at: u64,
    buf: Vec<u8>,
    at_file_start: bool,
    /// blank-lines mode: whether the line being read holds only whitespace so far
    line_blank: bool,
    /// the open document's text not yet made into pieces
    pending: String,
    doc_open: bool,
    doc_split: Split,
    doc_bytes: u64,
    first_piece: bool,
    val: ValSplit,
    ready: VecDeque<Piece>,
    /// input bytes read so far
    pub read_bytes: u64,
    /// documents started so far
    pub documents_read: u64,
}

impl PieceReader {
    pub fn new(
        inputs: Vec<Input>,
        documents: Documents,
        val_fraction: f64,
        sizes: Sizes,
    ) -> PieceReader {
        PieceReader {
            inputs,
            next_file: 0,
            documents,
            sizes,
            file: None,
            carry: Vec::new(),
            carry_at: 0,
            buf: vec![0; sizes.read],
            at_file_start: true,
            line_blank: true,
            pending: String::new(),
            doc_open: false,
            doc_split: Split::Train,
            doc_bytes: 0,
            first_piece: false,
            val: ValSplit::new(val_fraction),
            ready: VecDeque::new(),
            read_bytes: 0,
            documents_read: 0,
        }
    }

    /// The next piece, or `None` once every file has been read.
    pub fn next_piece(&mut self) -> Result<Option<Piece>, TrainError> {
        loop {
            if let Some(p) = self.ready.pop_front() {
                return Ok(Some(p));
            }
            if self.file.is_none() && self.next_file == self.inputs.len() {
                return Ok(None);
            }
            self.step()?;
        }
    }

    /// Opens the next file, or reads one chunk of the current one and passes it on.
    fn step(&mut self) -> Result<(), TrainError> {
        let Some((file, path)) = &mut self.file else {
            let path = self.inputs[self.next_file].path.clone();
            self.next_file += 1;
            let file = File::open(&path).map_err(|e| io_error(&path, e))?;
            self.file = Some((file, path));
            self.carry.clear();
            self.carry_at = 0;
            self.at_file_start = true;
            self.line_blank = true;
            return Ok(());
        };
        let n = loop {
            match file.read(&mut self.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(path, e)),
            }
        };
        let path = path.clone();
        let eof = n == 0;
        self.read_bytes += n as u64;
        self.carry.extend_from_slice(&self.buf[..n]);
        if self.at_file_start {
            if self.carry.len() < 3 && !eof {
                return Ok(());
            }
            // a UTF-8 byte-order mark is no part of the text
            if self.carry.starts_with(&[0xEF, 0xBB, 0xBF]) {
                self.carry.drain(..3);
                self.carry_at += 3;
            }
            self.at_file_start = false;
        }
        let valid = match std::str::from_utf8(&self.carry) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_none() && !eof => e.valid_up_to(),
            Err(e) => {
                return Err(TrainError(format!(
                "{}: not valid UTF-8 text (invalid byte at offset {}); convert it to UTF-8 first",
                path.display(),
                self.carry_at + e.valid_up_to() as u64
            )))
            }
        };
        let carry = std::mem::take(&mut self.carry);
        let text = std::str::from_utf8(&carry[..valid]).expect("checked above");
        let settled = match self.documents {
            // keep back what could be the start of an `<|endoftext|>` cut by the read
            Documents::EndOfText if !eof => {
                let marker = END_OF_TEXT.as_bytes();
                let held = (1..marker.len())
                    .rev()
                    .find(|&k| text.as_bytes().ends_with(&marker[..k]))
                    .unwrap_or(0);
                text.len() - held
            }
            _ => text.len(),
        };
        self.feed(&text[..settled]);
        self.carry = carry;
        self.carry.drain(..settled);
        self.carry_at += settled as u64;
        if eof {
            self.end_document();
            self.file = None;
        }
        Ok(())
    }

    /// Passes on settled text of the current file, cutting documents where the mode says.
    fn feed(&mut self, text: &str) {
        match self.documents {
            Documents::Files => self.text(text),
            Documents::EndOfText => {
                let mut parts = text.split(END_OF_TEXT);
                self.text(parts.next().unwrap_or(""));
                for part in parts {
                    self.end_document();
                    self.text(part);
                }
            }
            Documents::BlankLines => {
                let mut from = 0; // start of the text not yet passed on
                let mut line = 0; // start of the current line's part in `text`
                for (i, b) in text.bytes().enumerate() {
                    if b != b'\n' {
                        continue;
                    }
                    if self.line_blank && !text[line..i].chars().all(char::is_whitespace) {
                        self.line_blank = false;
                    }
                    if self.line_blank {
                        self.text(&text[from..=i]);
                        self.end_document();
                        from = i + 1;
                    }
                    self.line_blank = true;
                    line = i + 1;
                }
                if self.line_blank && !text[line..].chars().all(char::is_whitespace) {
                    self.line_blank = false;
                }
                self.text(&text[from..]);
            }
        }
    }

    /// Adds text to the open document (opening one at its first non-whitespace character)
    /// and makes pieces of what can be cut.
    fn text(&mut self, mut s: &str) {
        if !self.doc_open {
            s = s.trim_start();
            if s.is_empty() {
                return;
            }
            self.doc_open = true;
            self.doc_split = self.val.assign();
            self.doc_bytes = 0;
            self.first_piece = true;
            self.documents_read += 1;
        }
        self.pending.push_str(s);
        let Sizes {
            piece, max_piece, ..
        } = self.sizes;
        // cut only when the cut cannot depend on how much text has been read: the place
        // before `piece` and the character after it are in `pending`
        while self.pending.len() >= piece + 4 {
            let cut = split_point(&self.pending, piece)
                .or_else(|| split_point_after(&self.pending, piece))
                .or_else(|| {
                    (self.pending.len() >= max_piece).then(|| {
                        let mut at = piece.max(1);
                        while !self.pending.is_char_boundary(at) {
                            at += 1;
                        }
                        at
                    })
                });
            match cut {
                Some(at) => self.emit(at),
                None => break,
            }
        }
    }

    fn emit(&mut self, at: usize) {
        let rest = self.pending.split_off(at);
        let text = std::mem::replace(&mut self.pending, rest);
        self.doc_bytes += text.len() as u64;
        self.ready.push_back(Piece {
            text,
            doc_start: std::mem::take(&mut self.first_piece),
            split: self.doc_split,
            read_bytes: self.read_bytes,
        });
    }

    /// Ends the open document, if any: drops its trailing whitespace and passes on the rest.
    fn end_document(&mut self) {
        if !self.doc_open {
            return;
        }
        let len = self.pending.trim_end().len();
        self.pending.truncate(len);
        if !self.pending.is_empty() || self.first_piece {
            self.emit(self.pending.len());
        }
        self.val.add(self.doc_split, self.doc_bytes);
        self.doc_open = false;
    }
}

/// The training text a `bpe:N` vocabulary is learned from: the first `max_bytes` bytes of the
/// training documents (validation documents are left out, so validation loss is measured on
/// text the tokenizer never saw), joined with `<|endoftext|>`, which the BPE trainer never
/// merges across.
pub fn bpe_sample(
    inputs: &[Input],
    documents: Documents,
    val_fraction: f64,
    max_bytes: u64,
    stop: &AtomicBool,
) -> Result<String, TrainError> {
    let mut reader = PieceReader::new(inputs.to_vec(), documents, val_fraction, Sizes::default());
    let mut sample = String::new();
    while let Some(p) = reader.next_piece()? {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if p.split == Split::Val {
            continue;
        }
        if p.doc_start && !sample.is_empty() {
            sample.push_str(END_OF_TEXT);
        }
        sample.push_str(&p.text);
        if sample.len() as u64 >= max_bytes {
            let mut at = max_bytes as usize;
            while !sample.is_char_boundary(at) {
                at -= 1;
            }
            sample.truncate(at);
            break;
        }
    }
    Ok(sample)
}

/// The name of shard `index` of a split: `shard_train_000000.bin`, `shard_val_000000.bin`.
pub fn shard_name(split: Split, index: usize) -> String {
    format!("shard_{}_{index:06}.bin", split.name())
}

/// Whether a file in a token directory is part of what `tokenize` writes (what `--force`
/// replaces): the manifest, the tokenizer's folder, shards (`*_train_*.bin`, `*_val_*.bin`)
/// and their temporary files.
pub fn is_token_file(name: &str) -> bool {
    name == MANIFEST_FILE
        || name == TOKENIZER_DIR
        || ((name.ends_with(".bin") || name.ends_with(".bin.partial"))
            && (name.contains("_train_") || name.contains("_val_")))
}

/// What [`write_shards`] wrote.
#[derive(Clone, Debug, Default)]
pub struct Written {
    pub train: Vec<ShardRecord>,
    pub val: Vec<ShardRecord>,
    pub documents: u64,
    pub source_bytes: u64,
}

impl Written {
    pub fn tokens(&self, split: Split) -> u64 {
        match split {
            Split::Train => self.train.iter().map(|s| s.tokens).sum(),
            Split::Val => self.val.iter().map(|s| s.tokens).sum(),
        }
    }
}

/// How [`write_shards`] ended.
#[derive(Debug)]
pub enum Outcome {
    Done(Written),
    /// `stop` was set: the shards written were removed.
    Interrupted,
}

/// The open shard of each split, and the shards completed so far.
struct ShardSet<'a> {
    dir: &'a Path,
    width: TokenWidth,
    shard_tokens: u64,
    open: [Option<ShardWriter>; 2],
    written: Written,
}

impl ShardSet<'_> {
    fn records(&mut self, split: Split) -> &mut Vec<ShardRecord> {
        match split {
            Split::Train => &mut self.written.train,
            Split::Val => &mut self.written.val,
        }
    }

    fn write(&mut self, split: Split, mut tokens: &[u32]) -> Result<(), TrainError> {
        let slot = split as usize;
        while !tokens.is_empty() {
            if self.open[slot].is_none() {
                let name = shard_name(split, self.records(split).len());
                self.open[slot] = Some(ShardWriter::create(&self.dir.join(name), self.width)?);
            }
            let w = self.open[slot].as_mut().unwrap();
            let n = (self.shard_tokens - w.tokens()).min(tokens.len() as u64) as usize;
            w.write(&tokens[..n])?;
            tokens = &tokens[n..];
            if w.tokens() == self.shard_tokens {
                self.finish(split)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self, split: Split) -> Result<(), TrainError> {
        if let Some(w) = self.open[split as usize].take() {
            let record = w.finish()?;
            self.records(split).push(record);
        }
        Ok(())
    }

    /// Removes every shard completed so far (unfinished ones remove themselves on drop).
    fn abandon(mut self) {
        self.open = [None, None];
        for r in self.written.train.iter().chain(&self.written.val) {
            let _ = std::fs::remove_file(self.dir.join(&r.file));
        }
    }
}

/// What the reading thread sends: pieces in groups of about a piece's size, so that a corpus
/// of many small documents costs few messages and few tasks.
enum Msg {
    Pieces(Vec<Piece>),
    Done { read_bytes: u64, documents: u64 },
    Failed(TrainError),
}

/// Tokenizes `inputs` into shards of at most `shard_tokens` tokens in `dir` (see the module
/// docs): pieces are read on a thread of their own and encoded in parallel in batches on the
/// current rayon pool. `progress(input bytes read, tokens written)` is called after each
/// batch. On an error, or once `stop` is set, every shard this call wrote is removed.
#[allow(clippy::too_many_arguments)]
pub fn write_shards(
    inputs: &[Input],
    documents: Documents,
    val_fraction: f64,
    sizes: Sizes,
    tok: &Tokenizer,
    dir: &Path,
    shard_tokens: u64,
    stop: &AtomicBool,
    progress: &dyn Fn(u64, u64),
) -> Result<Outcome, TrainError> {
    let eot = tok.end_of_text().ok_or_else(|| {
        TrainError(format!(
            "the tokenizer has no {END_OF_TEXT} token to separate documents with"
        ))
    })? as u32;
    // enough groups per batch to keep every thread busy while the sizes of pieces vary
    let batch_groups = 4 * rayon::current_num_threads();
    let (tx, rx) = sync_channel::<Msg>(batch_groups);
    let mut reader = PieceReader::new(inputs.to_vec(), documents, val_fraction, sizes);
    // a thread of its own, not a scoped one: if `stop` is set while it waits on a pipe,
    // this function returns without it (it ends at its next send)
    std::thread::spawn(move || {
        let mut group = Vec::new();
        let mut bytes = 0;
        loop {
            let msg = match reader.next_piece() {
                Ok(Some(p)) => {
                    bytes += p.text.len();
                    group.push(p);
                    if bytes < sizes.piece {
                        continue;
                    }
                    bytes = 0;
                    Msg::Pieces(std::mem::take(&mut group))
                }
                Ok(None) => Msg::Done {
                    read_bytes: reader.read_bytes,
                    documents: reader.documents_read,
                },
                Err(e) => Msg::Failed(e),
            };
            let last = !matches!(msg, Msg::Pieces(_));
            if last
                && !group.is_empty()
                && tx.send(Msg::Pieces(std::mem::take(&mut group))).is_err()
            {
                break;
            }
            if tx.send(msg).is_err() || last {
                break;
            }
        }
    });
    let mut shards = ShardSet {
        dir,
        width: TokenWidth::for_vocab(tok.vocab_size()),
        shard_tokens,
        open: [None, None],
        written: Written::default(),
    };
    match encode_all(&rx, tok, eot, batch_groups, &mut shards, stop, progress) {
        Ok(true) => {
            shards.finish(Split::Train)?;
            shards.finish(Split::Val)?;
            Ok(Outcome::Done(shards.written))
        }
        Ok(false) => {
            shards.abandon();
            Ok(Outcome::Interrupted)
        }
        Err(e) => {
            shards.abandon();
            Err(e)
        }
    }
}

/// The tokens of a group of pieces, per split, in order: `<|endoftext|>` before each document.
fn encode_group(tok: &Tokenizer, eot: u32, group: &[Piece]) -> [Vec<u32>; 2] {
    let mut ids: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
    let mut buf = Vec::new();
    for p in group {
        let out = &mut ids[p.split as usize];
        if p.doc_start {
            out.push(eot);
        }
        buf.clear();
        tok.encode_ordinary_into(&p.text, &mut buf);
        out.extend(buf.iter().map(|&t| t as u32));
    }
    ids
}

/// The encoding loop of [`write_shards`]: `Ok(false)` when stopped.
fn encode_all(
    rx: &Receiver<Msg>,
    tok: &Tokenizer,
    eot: u32,
    batch_groups: usize,
    shards: &mut ShardSet,
    stop: &AtomicBool,
    progress: &dyn Fn(u64, u64),
) -> Result<bool, TrainError> {
    let mut tokens_written = 0u64;
    let mut batch: Vec<Vec<Piece>> = Vec::with_capacity(batch_groups);
    loop {
        // wait for the first group of a batch, looking at `stop` now and then
        let mut msg = loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(m) => break Some(m),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(TrainError("the reading thread stopped unexpectedly".into()))
                }
            }
        };
        // then take what is already there, up to a batch
        let mut last = None;
        while let Some(m) = msg.take() {
            match m {
                Msg::Pieces(g) => batch.push(g),
                other => {
                    last = Some(other);
                    break;
                }
            }
            if batch.len() < batch_groups {
                msg = rx.try_recv().ok();
            }
        }
        let encoded: Vec<[Vec<u32>; 2]> = batch
            .par_iter()
            .map(|g| encode_group(tok, eot, g))
            .collect();
        for [train, val] in &encoded {
            shards.write(Split::Train, train)?;
            shards.write(Split::Val, val)?;
            tokens_written += (train.len() + val.len()) as u64;
        }
        if let Some(p) = batch.last().and_then(|g| g.last()) {
            progress(p.read_bytes, tokens_written);
        }
        batch.clear();
        match last {
            Some(Msg::Done {
                read_bytes,
                documents,
            }) => {
                shards.written.documents = documents;
                shards.written.source_bytes = read_bytes;
                progress(read_bytes, tokens_written);
                return Ok(true);
            }
            Some(Msg::Failed(e)) => return Err(e),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("scratchgpt-tokenize-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Text with every kind of whitespace run the pattern cares about (spaces before newlines,
    /// Windows line ends, tabs, no-break and ideographic spaces, blank lines), contractions,
    /// numbers, punctuation and non-ASCII letters; deterministic.
    fn odd_text(words: usize, seed: u64) -> String {
        let vocab = [
            "the",
            "story's",
            "I'll",
            "naïve",
            "café",
            "42",
            "3.14",
            "—",
            "“quoted”",
            "日本語",
            "🎉",
            "x",
            "don't",
            "end.",
            "(paren)",
            "A",
        ];
        let seps = [
            " ", " ", " ", "  ", "\n", "\n\n", "\r\n", "\r\n\r\n", "\t", " \n", "  \n  ", "\u{a0}",
            "\u{3000}", "\n \n", "   ",
        ];
        let mut state = seed;
        let mut next = |n: usize| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize % n
        };
        let mut s = String::new();
        for _ in 0..words {
            s.push_str(vocab[next(vocab.len())]);
            s.push_str(seps[next(seps.len())]);
        }
        s
    }

    fn write(dir: &Path, name: &str, text: &str) -> Input {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        Input {
            path,
            bytes: text.len() as u64,
        }
    }

    fn pieces(inputs: Vec<Input>, documents: Documents, val: f64, sizes: Sizes) -> Vec<Piece> {
        let mut r = PieceReader::new(inputs, documents, val, sizes);
        let mut out = Vec::new();
        while let Some(p) = r.next_piece().unwrap() {
            out.push(p);
        }
        out
    }

    const TINY: Sizes = Sizes {
        read: 7,
        piece: 16,
        max_piece: 1 << 20,
    };

    #[test]
    fn cuts_go_before_the_last_whitespace_ahead_of_text() {
        assert_eq!(split_point("a  \nb", 4), Some(3)); // "a  " | "\nb", not after the \n
        assert_eq!(split_point("a\r\nb", 3), Some(2));
        assert_eq!(split_point("one two", 6), Some(3)); // " two" keeps its space
        assert_eq!(split_point("one two three", 5), Some(3));
        assert_eq!(split_point("abc   x", 6), Some(5)); // the run's first spaces stay before
        assert_eq!(split_point("abc   x", 5), None);
        assert_eq!(split_point("abc   ", 5), None); // nothing follows the spaces
        assert_eq!(split_point("one two", 7), None); // what follows is not known yet
        assert_eq!(split_point("abcdef", 3), None);
        assert_eq!(split_point(" abc", 3), None); // never an empty piece
        assert_eq!(split_point_after("abcdef ghi", 2), Some(6));
        assert_eq!(split_point("x\u{3000}y", 4), Some(1)); // Unicode whitespace counts
    }

    #[test]
    fn pieces_encode_to_the_whole_documents_tokens() {
        let gpt2 = Tokenizer::gpt2().unwrap();
        let d = tmp_dir("pieces");
        let mut texts: Vec<String> = (0..4).map(|i| odd_text(400, i)).collect();
        let verdict =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/the-verdict.txt");
        if let Ok(t) = std::fs::read_to_string(&verdict) {
            texts.push(t);
        }
        for (i, text) in texts.iter().enumerate() {
            let doc = text.trim();
            let want = gpt2.encode_ordinary(doc);
            for sizes in [
                TINY,
                Sizes {
                    read: 1,
                    piece: 1,
                    max_piece: 1 << 20,
                },
                Sizes {
                    read: 1000,
                    piece: 300,
                    max_piece: 1 << 20,
                },
            ] {
                let input = write(&d, &format!("{i}.txt"), text);
                let ps = pieces(vec![input], Documents::Files, 0.0, sizes);
                assert!(ps.len() > 3, "cut into pieces");
                assert!(ps[0].doc_start && ps[1..].iter().all(|p| !p.doc_start));
                let joined: String = ps.iter().map(|p| p.text.as_str()).collect();
                assert_eq!(joined, doc);
                let got: Vec<usize> = ps
                    .iter()
                    .flat_map(|p| gpt2.encode_ordinary(&p.text))
                    .collect();
                assert_eq!(got, want, "text {i}, sizes {sizes:?}");
            }
        }
        // cutting after a newline instead would change the tokens (why the cut is before it):
        // the whole text has "\n", "\n" (198, 198), the piece "a\n\n" ends in "\n\n" (628)
        let text = "a\n\nb";
        let after: Vec<usize> = ["a\n\n", "b"]
            .iter()
            .flat_map(|p| gpt2.encode_ordinary(p))
            .collect();
        assert_ne!(after, gpt2.encode_ordinary(text));
    }

    #[test]
    fn text_without_a_safe_cut_is_cut_anyway_at_the_hard_limit() {
        let d = tmp_dir("hard");
        let text = "x".repeat(100) + "é".repeat(50).as_str();
        let sizes = Sizes {
            read: 9,
            piece: 10,
            max_piece: 40,
        };
        let ps = pieces(
            vec![write(&d, "a.txt", &text)],
            Documents::Files,
            0.0,
            sizes,
        );
        assert!(ps.iter().all(|p| p.text.len() <= 41), "{ps:?}");
        assert_eq!(ps.iter().map(|p| p.text.as_str()).collect::<String>(), text);
    }

    #[test]
    fn documents_are_files_blank_line_paragraphs_or_endoftext_separated() {
        let d = tmp_dir("docs");
        let a = write(
            &d,
            "a.txt",
            "\u{feff}  first para\nstill first\n \t\nsecond<|endoftext|>same\r\n\r\n\n\nthird  \n",
        );
        let b = write(&d, "b.txt", "<|endoftext|>\n\nfourth<|endoftext|>");
        let c = write(&d, "c.txt", " \n\n ");
        let docs = |mode| {
            let ps = pieces(vec![a.clone(), b.clone(), c.clone()], mode, 0.0, TINY);
            let mut docs: Vec<String> = Vec::new();
            for p in ps {
                if p.doc_start {
                    docs.push(String::new());
                }
                docs.last_mut().unwrap().push_str(&p.text);
            }
            docs
        };
        assert_eq!(
            docs(Documents::Files),
            [
                "first para\nstill first\n \t\nsecond<|endoftext|>same\r\n\r\n\n\nthird",
                "<|endoftext|>\n\nfourth<|endoftext|>"
            ]
        );
        assert_eq!(
            docs(Documents::BlankLines),
            [
                "first para\nstill first",
                "second<|endoftext|>same",
                "third",
                "<|endoftext|>",
                "fourth<|endoftext|>"
            ]
        );
        assert_eq!(
            docs(Documents::EndOfText),
            [
                "first para\nstill first\n \t\nsecond",
                "same\r\n\r\n\n\nthird",
                "fourth"
            ]
        );
    }

    #[test]
    fn validation_takes_whole_documents_spread_by_bytes() {
        let mut v = ValSplit::new(0.25);
        let mut got = Vec::new();
        for _ in 0..12 {
            let s = v.assign();
            got.push(s);
            v.add(s, 100);
        }
        use Split::{Train as T, Val as V};
        // the first trains; then validation whenever it holds under a quarter of the bytes
        assert_eq!(got, [T, V, T, T, T, V, T, T, T, V, T, T]);
        let none = ValSplit::new(0.0);
        assert_eq!(none.assign(), T);
    }

    #[test]
    fn invalid_utf8_is_named_with_its_file_offset_across_reads() {
        let d = tmp_dir("utf8");
        let mut bytes = "héllo wörld ".repeat(10).into_bytes();
        let at = bytes.len();
        bytes.extend_from_slice(&[b'a', 0xC3, b'(', b'b']);
        std::fs::write(d.join("bad.txt"), &bytes).unwrap();
        let input = Input {
            path: d.join("bad.txt"),
            bytes: bytes.len() as u64,
        };
        let mut r = PieceReader::new(vec![input.clone()], Documents::Files, 0.0, TINY);
        let e = loop {
            match r.next_piece() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("invalid UTF-8 not seen"),
                Err(e) => break e.0,
            }
        };
        assert!(
            e.contains("bad.txt") && e.contains(&format!("offset {}", at + 1)),
            "{e}"
        );
        // a character cut by the end of the file is invalid too
        std::fs::write(d.join("bad.txt"), [b'o', b'k', 0xE6, 0x97]).unwrap();
        let mut r = PieceReader::new(vec![input], Documents::Files, 0.0, TINY);
        let e = r.next_piece().unwrap_err().0;
        assert!(e.contains("offset 2"), "{e}");
    }

    #[test]
    fn globs_and_directories_list_files_in_name_order() {
        assert!(wildcard_match(&['*'], &['a', 'b']));
        let m = |p: &str, n: &str| {
            wildcard_match(
                &p.chars().collect::<Vec<_>>(),
                &n.chars().collect::<Vec<_>>(),
            )
        };
        assert!(m("*.txt", "a.txt") && m("a?c*", "abc") && m("*a*b", "xxaxxb"));
        assert!(!m("*.txt", "a.md") && !m("a?c", "ac") && !m("*a*b", "xxaxxbc"));
        let d = tmp_dir("list");
        for f in [
            "b.txt",
            "a.md",
            "c.bin",
            ".hidden.txt",
            "sub/z.txt",
            "sub/y.rst",
            "out/o.txt",
        ] {
            let p = d.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "text").unwrap();
        }
        let names = |inputs: Vec<Input>| -> Vec<String> {
            inputs
                .iter()
                .map(|i| i.path.strip_prefix(&d).unwrap().display().to_string())
                .collect()
        };
        let listed = list_inputs(std::slice::from_ref(&d), Some(&d.join("out"))).unwrap();
        assert_eq!(names(listed), ["a.md", "b.txt", "sub/y.rst", "sub/z.txt"]);
        let globbed = list_inputs(&[d.join("*.*"), d.join("b.txt")], None).unwrap();
        assert_eq!(names(globbed), ["a.md", "b.txt", "c.bin"]); // b.txt once
        let e = list_inputs(&[d.join("*.nothing")], None).unwrap_err().0;
        assert!(e.contains("matches no file"), "{e}");
        let e = list_inputs(&[d.join("s*/z.txt")], None).unwrap_err().0;
        assert!(e.contains("only the file name"), "{e}");
        let e = list_inputs(&[d.join("sub/missing.txt")], None)
            .unwrap_err()
            .0;
        assert!(e.contains("missing.txt"), "{e}");
        std::fs::create_dir_all(d.join("empty")).unwrap();
        std::fs::write(d.join("empty/data.csv"), "x").unwrap();
        let e = list_inputs(&[d.join("empty")], None).unwrap_err().0;
        assert!(e.contains("holds no text files"), "{e}");
    }

    fn shard_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn the_same_shards_on_one_and_two_threads() {
        let d = tmp_dir("threads");
        let inputs: Vec<Input> = (0..5)
            .map(|i| {
                write(
                    &d,
                    &format!("{i}.txt"),
                    &odd_text(300 + 200 * i, 10 + i as u64),
                )
            })
            .collect();
        let tok = Tokenizer::gpt2().unwrap();
        let sizes = Sizes {
            read: 100,
            piece: 64,
            max_piece: 1 << 20,
        };
        let run = |threads: usize| {
            let out = d.join(format!("out{threads}"));
            std::fs::create_dir_all(&out).unwrap();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let stop = AtomicBool::new(false);
            let w = pool.install(|| {
                write_shards(
                    &inputs,
                    Documents::BlankLines,
                    0.1,
                    sizes,
                    &tok,
                    &out,
                    500,
                    &stop,
                    &|_, _| {},
                )
                .unwrap()
            });
            let Outcome::Done(w) = w else { panic!() };
            assert!(w.train.len() > 3 && !w.val.is_empty(), "{w:?}");
            shard_bytes(&out)
        };
        assert_eq!(run(1), run(2));
    }

    #[test]
    fn a_failure_removes_the_shards_already_written() {
        let d = tmp_dir("fail");
        let good = write(&d, "a.txt", &odd_text(3000, 3));
        let bad = d.join("b.txt");
        std::fs::write(&bad, [b'x', 0xFF]).unwrap();
        let out = d.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let seen = std::sync::atomic::AtomicU64::new(0);
        let e = write_shards(
            &[
                good,
                Input {
                    path: bad,
                    bytes: 2,
                },
            ],
            Documents::Files,
            0.0,
            Sizes {
                read: 64,
                piece: 64,
                max_piece: 1 << 20,
            },
            &Tokenizer::bytes(),
            &out,
            100,
            &AtomicBool::new(false),
            &|_, tokens| seen.store(tokens, Ordering::Relaxed),
        )
        .unwrap_err();
        assert!(e.0.contains("b.txt"), "{e}");
        assert!(
            seen.load(Ordering::Relaxed) > 1000,
            "shards were written before the error"
        );
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    }
}
