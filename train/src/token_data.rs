//! Training on tokens instead of text: which files given to `--data` are token shards, which of
//! them are for training and which for validation, and which tokenizer wrote them.
//!
//! `--data` takes, besides text files:
//! - a directory written by `scratchgpt tokenize`: its `manifest.json` lists the shards and
//!   names the tokenizer (GPT-2's, bytes, or a learned BPE stored in `tokenizer/`);
//! - a directory of llm.c shards, `*_train_*.bin` and `*_val_*.bin` (also `*_train.bin`,
//!   `*_val.bin`), GPT-2's tokenizer;
//! - nanoGPT's `train.bin` and `val.bin` (headerless uint16, GPT-2's tokenizer), as a directory
//!   or as the files themselves.
//!
//! Opening reads each shard's header and size, never its tokens, so it takes the same time
//! for a 20 KB story as for a corpus of billions of tokens; the tokens are read window by
//! window as training needs them ([`crate::data::TokenWindows`]), each id checked against the
//! vocabulary.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{io_error, TrainError};
use crate::settings::TokenizerSpec;
use crate::shards::{Checksum, Manifest, Shard, TokenWidth, MANIFEST_FILE, TOKENIZER_DIR};
use crate::tokenizer::Tokenizer;

/// Token shards ready for training: opened, checked against their headers (and the manifest),
/// split into training and validation files.
#[derive(Debug)]
pub struct TokenData {
    pub train: Vec<Arc<Shard>>,
    pub val: Vec<Arc<Shard>>,
    pub tokenizer: Tokenizer,
    /// How checkpoints name the tokenizer.
    pub tokenizer_spec: TokenizerSpec,
    /// Where the data came from, for messages.
    pub description: String,
    /// Identifies the data for `--resume` without reading it all: every shard's name and
    /// token count, and the manifest's checksums (or the first and last KB of each file).
    pub fingerprint: String,
    /// Whether some file has no header (nanoGPT's `.bin`): its ids are taken to be GPT-2's,
    /// which nothing in the file can confirm.
    pub headerless: bool,
}

impl TokenData {
    pub fn train_tokens(&self) -> u64 {
        self.train.iter().map(|s| s.tokens).sum()
    }

    pub fn val_tokens(&self) -> u64 {
        self.val.iter().map(|s| s.tokens).sum()
    }
}

/// Whether `--data` names token data (directories, or `.bin` files) rather than text files.
/// A mix of both is an error.
pub fn is_token_data(paths: &[PathBuf]) -> Result<bool, TrainError> {
    let tokens = |p: &PathBuf| p.is_dir() || p.extension().is_some_and(|e| e == "bin");
    match (paths.iter().all(tokens), paths.iter().any(tokens)) {
        (true, _) if !paths.is_empty() => Ok(true),
        (_, false) => Ok(false),
        _ => Err(TrainError(
            "--data mixes token files (directories, .bin) and text files: give one kind; tokenize the text with scratchgpt tokenize to train on both".into(),
        )),
    }
}

/// Which split a shard's file name puts it in: llm.c's `*_val_*` / `*_val.bin` and nanoGPT's
/// `val.bin` are validation; `*_train_*`, `*_train.bin` and `train.bin` are training.
fn split_of(name: &str) -> Option<Split> {
    let stem = name.strip_suffix(".bin")?;
    let has = |word: &str| {
        stem == word
            || stem.ends_with(&format!("_{word}"))
            || stem.contains(&format!("_{word}_"))
            || stem.starts_with(&format!("{word}_"))
    };
    if has("val") {
        Some(Split::Val)
    } else if has("train") {
        Some(Split::Train)
    } else {
        None
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Split {
    Train,
    Val,
}

/// One source of shards (a directory or a file) as found on disk.
struct Found {
    train: Vec<Shard>,
    val: Vec<Shard>,
    tokenizer: Tokenizer,
    spec: TokenizerSpec,
    /// The tokenizer's name for "two tokenizers mixed" errors.
    tokenizer_name: String,
    checksums: Vec<String>,
}

/// Opens the token data that `--data` names for training: shards to train on and validation
/// shards. Errors name the file at fault.
pub fn open_token_data(paths: &[PathBuf]) -> Result<TokenData, TrainError> {
    let data = open_token_shards(paths)?;
    if data.train_tokens() == 0 {
        return Err(TrainError(format!(
            "{}: no training tokens (the training shards are empty or missing)",
            data.description
        )));
    }
    if data.val.is_empty() {
        return Err(TrainError(format!(
            "{}: no validation shard (*_val_*.bin or val.bin): training reports the validation loss; tokenize with --val-fraction above 0 and more than one document (several files, or --documents blank-lines)",
            data.description
        )));
    }
    Ok(data)
}

/// The shards `--data` names, split into training and validation ones, either possibly
/// empty (`eval` measures on whichever it is given).
pub fn open_token_shards(paths: &[PathBuf]) -> Result<TokenData, TrainError> {
    let mut all: Vec<(PathBuf, Found)> = Vec::new();
    for p in paths {
        let found = if p.is_dir() {
            open_dir(p)?
        } else {
            open_files(std::slice::from_ref(p))?
        };
        all.push((p.clone(), found));
    }
    let (first_path, first) = &all[0];
    for (p, f) in &all[1..] {
        if f.tokenizer_name != first.tokenizer_name {
            return Err(TrainError(format!(
                "{}: written with the tokenizer {}, but {} with {}: shards of two tokenizers cannot be trained on together",
                p.display(),
                f.tokenizer_name,
                first_path.display(),
                first.tokenizer_name
            )));
        }
    }
    let description = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut train = Vec::new();
    let mut val = Vec::new();
    let mut fp = Checksum::default();
    let mut headerless = false;
    let (tokenizer, spec) = (first.tokenizer.clone(), first.spec.clone());
    for (_, f) in all {
        for s in &f.checksums {
            fp.update(s.as_bytes());
        }
        for (split, shards) in [("train", f.train), ("val", f.val)] {
            for s in shards {
                let name = s.path.file_name().unwrap_or_default().to_string_lossy();
                fp.update(format!("{split}:{name}:{}", s.tokens).as_bytes());
                if f.checksums.is_empty() {
                    fp.update(&edges(&s)?);
                }
                headerless |= s.offset == 0;
                match split {
                    "train" => train.push(Arc::new(s)),
                    _ => val.push(Arc::new(s)),
                }
            }
        }
    }
    let data = TokenData {
        train,
        val,
        tokenizer,
        tokenizer_spec: spec,
        description,
        fingerprint: fp.hex(),
        headerless,
    };
    Ok(data)
}

/// The first and last KB of a shard's tokens, to tell files apart without a manifest.
fn edges(s: &Shard) -> Result<Vec<u8>, TrainError> {
    let n = s.tokens.min(512) as usize;
    let mut out = Vec::with_capacity(2 * n * 8);
    let mut ids = vec![0usize; n];
    let mut buf = Vec::new();
    for start in [0, s.tokens - n as u64] {
        s.read(start, &mut ids, usize::MAX, &mut buf)?;
        out.extend(ids.iter().flat_map(|&t| (t as u64).to_le_bytes()));
    }
    Ok(out)
}

fn gpt2() -> Result<(Tokenizer, TokenizerSpec, String), TrainError> {
    Ok((Tokenizer::gpt2()?, TokenizerSpec::Gpt2, "gpt2".into()))
}

/// A directory: by its manifest if it has one, else by the names of its `.bin` files.
fn open_dir(dir: &Path) -> Result<Found, TrainError> {
    if dir.join(MANIFEST_FILE).exists() {
        return open_manifest(dir);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io_error(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(TrainError(format!(
            "{}: no token shards here (no manifest.json, no .bin files); to train on text, give the text files, or tokenize them once with scratchgpt tokenize --data FILES --out DIR",
            dir.display()
        )));
    }
    open_files(&files)
}

/// `.bin` files without a manifest: llm.c shards or nanoGPT's headerless files, GPT-2's
/// tokenizer.
fn open_files(files: &[PathBuf]) -> Result<Found, TrainError> {
    let (tokenizer, spec, tokenizer_name) = gpt2()?;
    let mut found = Found {
        train: Vec::new(),
        val: Vec::new(),
        tokenizer,
        spec,
        tokenizer_name,
        checksums: Vec::new(),
    };
    for f in files {
        let name = f.file_name().unwrap_or_default().to_string_lossy();
        let split = match (split_of(&name), files.len()) {
            (Some(s), _) => s,
            (None, 1) => Split::Train,
            (None, _) => {
                return Err(TrainError(format!(
                    "{}: cannot tell whether this is training or validation data: llm.c names its shards *_train_*.bin and *_val_*.bin, nanoGPT train.bin and val.bin",
                    f.display()
                )))
            }
        };
        let shard = Shard::open_any(f)?;
        if shard.width == TokenWidth::U32 {
            return Err(TrainError(format!(
                "{}: holds uint32 tokens (llm.c's Llama 3 format) but has no manifest naming its tokenizer; without one, scratchgpt reads GPT-2 shards (uint16)",
                f.display()
            )));
        }
        match split {
            Split::Train => found.train.push(shard),
            Split::Val => found.val.push(shard),
        }
    }
    Ok(found)
}

/// A directory written by `scratchgpt tokenize`: every shard the manifest lists, checked
/// against it.
fn open_manifest(dir: &Path) -> Result<Found, TrainError> {
    let m = Manifest::read(dir)?;
    let manifest_path = dir.join(MANIFEST_FILE);
    let (tokenizer, spec, name) = match m.tokenizer.as_str() {
        "gpt2" => gpt2()?,
        "bytes" => (Tokenizer::bytes(), TokenizerSpec::Bytes, "bytes".into()),
        other => {
            let tdir = dir.join(TOKENIZER_DIR);
            let tok = crate::shards::learned_tokenizer(dir, other)?;
            let n = tok.vocab_size();
            (
                tok,
                TokenizerSpec::Bpe(n),
                format!("{other} (from {})", tdir.display()),
            )
        }
    };
    if tokenizer.vocab_size() != m.vocab_size {
        return Err(TrainError(format!(
            "{}: says the vocabulary has {} tokens, but its tokenizer has {}",
            manifest_path.display(),
            m.vocab_size,
            tokenizer.vocab_size()
        )));
    }
    let mut found = Found {
        train: Vec::new(),
        val: Vec::new(),
        tokenizer,
        spec,
        tokenizer_name: name,
        checksums: Vec::new(),
    };
    for (split, records) in [(Split::Train, &m.train), (Split::Val, &m.val)] {
        for r in records {
            let path = dir.join(&r.file);
            if !path.exists() {
                return Err(TrainError(format!(
                    "{}: listed in {} but missing",
                    path.display(),
                    manifest_path.display()
                )));
            }
            let shard = Shard::open(&path)?;
            if shard.tokens != r.tokens || shard.width != m.token_width {
                return Err(TrainError(format!(
                    "{}: holds {} tokens of {} bytes, but {} lists {} tokens of {} bytes: the manifest and its shards disagree (rerun scratchgpt tokenize)",
                    path.display(),
                    shard.tokens,
                    shard.width.bytes(),
                    manifest_path.display(),
                    r.tokens,
                    m.token_width.bytes()
                )));
            }
            found.checksums.push(r.checksum.clone());
            match split {
                Split::Train => found.train.push(shard),
                Split::Val => found.val.push(shard),
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_say_the_split() {
        for (name, want) in [
            ("fineweb_train_000001.bin", Some(Split::Train)),
            ("fineweb_val_000000.bin", Some(Split::Val)),
            ("tiny_shakespeare_val.bin", Some(Split::Val)),
            ("tiny_shakespeare_train.bin", Some(Split::Train)),
            ("train.bin", Some(Split::Train)),
            ("val.bin", Some(Split::Val)),
            ("shard_val_000003.bin", Some(Split::Val)),
            ("interval.bin", None),
            ("trainer.bin", None),
            ("notes.txt", None),
        ] {
            assert_eq!(split_of(name), want, "{name}");
        }
    }

    #[test]
    fn text_and_token_paths_are_not_mixed() {
        let d = std::env::temp_dir();
        assert!(is_token_data(std::slice::from_ref(&d)).unwrap());
        assert!(is_token_data(&["a/train.bin".into()]).unwrap());
        assert!(!is_token_data(&["a.txt".into()]).unwrap());
        assert!(is_token_data(&[d, "a.txt".into()]).is_err());
    }
}
