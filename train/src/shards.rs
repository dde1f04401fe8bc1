//! Token shards: a corpus tokenized once (`scratchgpt tokenize`) and read back window by window,
//! so a run's start-up and memory do not grow with the corpus.
//!
//! The file format is llm.c's, so shards written by llm.c's data scripts train here unchanged
//! and ours can be read by llm.c:
//! ```text
//! bytes 0..1024      header: 256 little-endian int32
//!                      [0] magic    20240520 (uint16 tokens) or 20240801 (uint32 tokens)
//!                      [1] version  1 (uint16)               or 7 (uint32)
//!                      [2] number of tokens that follow
//!                      [3..256] zero
//! bytes 1024..       the tokens, little-endian uint16 (or uint32 for vocabularies > 65,536)
//! ```
//! nanoGPT's `train.bin` / `val.bin` are the same tokens without the header (uint16, GPT-2's
//! vocabulary); they are read as they are.
//!
//! A directory written by `scratchgpt tokenize` also holds `manifest.json` ([`Manifest`]): the
//! tokenizer (with its files, for a learned BPE), the token and document counts, and every
//! shard with its size and checksum. A shard is written to a temporary name and renamed into
//! place once complete ([`ShardWriter`]), and the manifest is written last, so an interrupted
//! `tokenize` never leaves a shard or a directory that looks complete.
//!
//! Reading uses positioned reads of one window at a time ([`Shard::read`]), not a memory map:
//! the kernel's page cache still keeps the hot parts of the files in memory, but they are not
//! counted in the process's resident memory, which stays the model plus one batch of tokens
//! however large the corpus.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{io_error, TrainError};

/// Bytes of the llm.c header (256 int32).
pub const HEADER_BYTES: u64 = 1024;
/// llm.c's magic number and version for uint16 tokens (GPT-2).
pub const MAGIC_U16: i32 = 20240520;
pub const VERSION_U16: i32 = 1;
/// llm.c's magic number and version for uint32 tokens (vocabularies above 65,536).
pub const MAGIC_U32: i32 = 20240801;
pub const VERSION_U32: i32 = 7;
/// The name of a token directory's manifest.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Where a token directory keeps the files of a learned tokenizer.
pub const TOKENIZER_DIR: &str = "tokenizer";

/// The learned tokenizer a token directory's manifest names (`bpe:N`), from its
/// [`TOKENIZER_DIR`], which must hold the tokenizer's files: without them the reader of
/// checkpoints would fall back to GPT-2's table, another vocabulary under the same name.
pub fn learned_tokenizer(
    dir: &Path,
    name: &str,
) -> Result<crate::tokenizer::Tokenizer, TrainError> {
    use crate::tokenizer::files::{MERGES_FILE, TOKENIZER_FILE, VOCAB_FILE};
    let tdir = dir.join(TOKENIZER_DIR);
    let has = |f: &str| tdir.join(f).is_file();
    if !(has(TOKENIZER_FILE) || (has(VOCAB_FILE) && has(MERGES_FILE))) {
        return Err(TrainError(format!(
            "{}: names the tokenizer {name:?}, but {} does not hold its files ({TOKENIZER_FILE}, or {VOCAB_FILE} and {MERGES_FILE})",
            dir.join(MANIFEST_FILE).display(),
            tdir.display()
        )));
    }
    Ok(crate::tokenizer::Tokenizer::load(&tdir)?)
}

/// How wide one stored token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenWidth {
    U16,
    U32,
}

impl TokenWidth {
    /// The narrowest width that holds every id of a vocabulary of `vocab_size`.
    pub fn for_vocab(vocab_size: usize) -> TokenWidth {
        if vocab_size <= 1 << 16 {
            TokenWidth::U16
        } else {
            TokenWidth::U32
        }
    }

    pub fn bytes(self) -> u64 {
        match self {
            TokenWidth::U16 => 2,
            TokenWidth::U32 => 4,
        }
    }

    fn magic_and_version(self) -> (i32, i32) {
        match self {
            TokenWidth::U16 => (MAGIC_U16, VERSION_U16),
            TokenWidth::U32 => (MAGIC_U32, VERSION_U32),
        }
    }
}

/// The llm.c header of a shard holding `tokens` tokens of `width`.
pub fn header(width: TokenWidth, tokens: u64) -> Result<[u8; HEADER_BYTES as usize], String> {
    let count = i32::try_from(tokens).map_err(|_| {
        format!("{tokens} tokens do not fit in one shard (the header counts at most 2^31 - 1)")
    })?;
    let (magic, version) = width.magic_and_version();
    let mut h = [0u8; HEADER_BYTES as usize];
    h[0..4].copy_from_slice(&magic.to_le_bytes());
    h[4..8].copy_from_slice(&version.to_le_bytes());
    h[8..12].copy_from_slice(&count.to_le_bytes());
    Ok(h)
}

/// Whether the first bytes of a file are an llm.c header (magic and a matching version).
pub fn has_llmc_header(path: &Path) -> Result<bool, TrainError> {
    let mut f = File::open(path).map_err(|e| io_error(path, e))?;
    let mut first = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        match f.read(&mut first[got..]).map_err(|e| io_error(path, e))? {
            0 => return Ok(false),
            n => got += n,
        }
    }
    let magic = i32::from_le_bytes(first[0..4].try_into().unwrap());
    Ok(magic == MAGIC_U16 || magic == MAGIC_U32)
}

/// One file of tokens, open for reading.
#[derive(Debug)]
pub struct Shard {
    pub path: PathBuf,
    file: File,
    pub width: TokenWidth,
    /// Where the tokens start (the header's size, or 0 for a headerless file).
    pub offset: u64,
    /// How many tokens the file holds.
    pub tokens: u64,
}

impl Shard {
    /// Opens an llm.c shard, checking its header against the file's size. Every error names
    /// the file: a file too short for a header, an unknown magic number or version, a token
    /// count that disagrees with the size (a truncated or overlong file).
    pub fn open(path: &Path) -> Result<Shard, TrainError> {
        let bad = |why: String| TrainError(format!("{}: {why}", path.display()));
        let mut file = File::open(path).map_err(|e| io_error(path, e))?;
        let size = file.metadata().map_err(|e| io_error(path, e))?.len();
        if size < HEADER_BYTES {
            return Err(bad(format!(
                "{size} bytes is too short for a token shard's {HEADER_BYTES}-byte header (truncated, or not a shard)"
            )));
        }
        let mut h = [0u8; 12];
        file.read_exact(&mut h).map_err(|e| io_error(path, e))?;
        let int = |i: usize| i32::from_le_bytes(h[4 * i..4 * i + 4].try_into().unwrap());
        let (magic, version, count) = (int(0), int(1), int(2));
        let width = match (magic, version) {
            (MAGIC_U16, VERSION_U16) => TokenWidth::U16,
            (MAGIC_U32, VERSION_U32) => TokenWidth::U32,
            (MAGIC_U16 | MAGIC_U32, v) => {
                return Err(bad(format!(
                    "token shard version {v} is not one this program reads (magic {magic} goes with version {})",
                    if magic == MAGIC_U16 { VERSION_U16 } else { VERSION_U32 }
                )))
            }
            _ => {
                return Err(bad(format!(
                    "not a token shard: the header's magic number is {magic}, expected {MAGIC_U16} (uint16 tokens) or {MAGIC_U32} (uint32)"
                )))
            }
        };
        if count < 0 {
            return Err(bad(format!(
                "the header's token count is negative ({count})"
            )));
        }
        let expected = HEADER_BYTES + count as u64 * width.bytes();
        if size != expected {
            return Err(bad(format!(
                "the header says {count} tokens ({expected} bytes with the header) but the file has {size} bytes: {}",
                if size < expected { "truncated" } else { "extra bytes after the tokens" }
            )));
        }
        Ok(Shard {
            path: path.to_path_buf(),
            file,
            width,
            offset: HEADER_BYTES,
            tokens: count as u64,
        })
    }

    /// Opens a headerless file of uint16 tokens (nanoGPT's `train.bin` / `val.bin`).
    pub fn open_headerless(path: &Path) -> Result<Shard, TrainError> {
        let file = File::open(path).map_err(|e| io_error(path, e))?;
        let size = file.metadata().map_err(|e| io_error(path, e))?.len();
        if size % 2 != 0 {
            return Err(TrainError(format!(
                "{}: {size} bytes is not a whole number of uint16 tokens (truncated, or not a token file)",
                path.display()
            )));
        }
        Ok(Shard {
            path: path.to_path_buf(),
            file,
            width: TokenWidth::U16,
            offset: 0,
            tokens: size / 2,
        })
    }

    /// Opens `path` as an llm.c shard when it starts with an llm.c header, else as nanoGPT's
    /// headerless uint16 tokens.
    pub fn open_any(path: &Path) -> Result<Shard, TrainError> {
        if has_llmc_header(path)? {
            Shard::open(path)
        } else {
            Shard::open_headerless(path)
        }
    }

    /// Reads tokens `start..start + out.len()` into `out`, checking each id against
    /// `vocab_size`; `buf` is scratch space reused between calls.
    pub fn read(
        &self,
        start: u64,
        out: &mut [usize],
        vocab_size: usize,
        buf: &mut Vec<u8>,
    ) -> Result<(), TrainError> {
        let n = out.len() as u64;
        assert!(
            start + n <= self.tokens,
            "Shard::read: tokens {start}..{} of a shard of {}",
            start + n,
            self.tokens
        );
        let w = self.width.bytes() as usize;
        buf.resize(out.len() * w, 0);
        read_exact_at(&self.file, buf, self.offset + start * w as u64)
            .map_err(|e| io_error(&self.path, e))?;
        match self.width {
            TokenWidth::U16 => {
                for (o, b) in out.iter_mut().zip(buf.chunks_exact(2)) {
                    *o = u16::from_le_bytes([b[0], b[1]]) as usize;
                }
            }
            TokenWidth::U32 => {
                for (o, b) in out.iter_mut().zip(buf.chunks_exact(4)) {
                    *o = u32::from_le_bytes(b.try_into().unwrap()) as usize;
                }
            }
        }
        if let Some(i) = out.iter().position(|&t| t >= vocab_size) {
            return Err(TrainError(format!(
                "{}: token {} (at position {}) is outside the vocabulary of {vocab_size} ids: the shard was written with another tokenizer, or is damaged",
                self.path.display(),
                out[i],
                start + i as u64
            )));
        }
        Ok(())
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, at)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut at: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, at)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                at += n as u64;
            }
        }
    }
    Ok(())
}

/// A streaming FNV-1a (64-bit) checksum of a file's bytes, as the manifest records it.
#[derive(Clone, Copy, Debug)]
pub struct Checksum(u64);

impl Default for Checksum {
    fn default() -> Self {
        Checksum(0xcbf2_9ce4_8422_2325)
    }
}

impl Checksum {
    pub fn update(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }

    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }

    /// The checksum of a whole file.
    pub fn of_file(path: &Path) -> Result<String, TrainError> {
        let mut f = File::open(path).map_err(|e| io_error(path, e))?;
        let mut sum = Checksum::default();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| io_error(path, e))?;
            if n == 0 {
                return Ok(sum.hex());
            }
            sum.update(&buf[..n]);
        }
    }
}

/// Writes one shard: tokens go to a temporary file beside the final name; [`finish`] writes
/// the header's token count, syncs and renames the file into place. Dropped unfinished (an
/// error, Ctrl-C), it removes the temporary file, so no partial shard is ever left under a
/// shard's name.
///
/// [`finish`]: ShardWriter::finish
pub struct ShardWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    width: TokenWidth,
    tokens: u64,
    buf: Vec<u8>,
}

/// What the manifest records of one shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// The file's name inside the token directory.
    pub file: String,
    pub tokens: u64,
    /// FNV-1a 64 of the whole file, header included, as 16 hex digits.
    pub checksum: String,
}

impl ShardWriter {
    pub fn create(path: &Path, width: TokenWidth) -> Result<ShardWriter, TrainError> {
        let name = path
            .file_name()
            .ok_or_else(|| TrainError(format!("{}: not a file path", path.display())))?;
        let tmp = path.with_file_name(format!(".{}.partial", name.to_string_lossy()));
        let file = File::create(&tmp).map_err(|e| io_error(&tmp, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        // a zero header until the count is known: a partial file never passes Shard::open
        out.write_all(&[0u8; HEADER_BYTES as usize])
            .map_err(|e| io_error(&tmp, e))?;
        Ok(ShardWriter {
            path: path.to_path_buf(),
            tmp,
            out: Some(out),
            width,
            tokens: 0,
            buf: Vec::new(),
        })
    }

    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Appends tokens (each must fit the shard's width).
    pub fn write(&mut self, tokens: &[u32]) -> Result<(), TrainError> {
        self.buf.clear();
        match self.width {
            TokenWidth::U16 => {
                for &t in tokens {
                    let t = u16::try_from(t).map_err(|_| {
                        TrainError(format!(
                            "{}: token {t} does not fit a uint16 shard",
                            self.path.display()
                        ))
                    })?;
                    self.buf.extend_from_slice(&t.to_le_bytes());
                }
            }
            TokenWidth::U32 => {
                for &t in tokens {
                    self.buf.extend_from_slice(&t.to_le_bytes());
                }
            }
        }
        let out = self.out.as_mut().expect("ShardWriter::write after finish");
        out.write_all(&self.buf)
            .map_err(|e| io_error(&self.tmp, e))?;
        self.tokens += tokens.len() as u64;
        Ok(())
    }

    /// Completes the shard: header, sync, rename into place. Returns the manifest's record.
    pub fn finish(mut self) -> Result<ShardRecord, TrainError> {
        let tmp = self.tmp.clone();
        let err = |e: std::io::Error| io_error(&tmp, e);
        let h = header(self.width, self.tokens)
            .map_err(|m| TrainError(format!("{}: {m}", self.path.display())))?;
        let mut file = self
            .out
            .take()
            .expect("ShardWriter::finish twice")
            .into_inner()
            .map_err(|e| err(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(err)?;
        file.write_all(&h).map_err(err)?;
        file.sync_all().map_err(err)?;
        drop(file);
        let checksum = Checksum::of_file(&self.tmp)?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| io_error(&self.path, e))?;
        Ok(ShardRecord {
            file: self
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            tokens: self.tokens,
            checksum,
        })
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// `manifest.json` of a token directory written by `scratchgpt tokenize`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always "scratchgpt-tokens".
    pub format: String,
    pub version: u32,
    /// The tokenizer, as `--tokenizer` names it: `gpt2`, `bytes` or `bpe:N` (whose files are
    /// in the directory's `tokenizer/`).
    pub tokenizer: String,
    pub vocab_size: usize,
    pub token_width: TokenWidth,
    /// Documents (separated by end-of-text) and text bytes read.
    pub documents: u64,
    pub source_bytes: u64,
    pub train: Vec<ShardRecord>,
    pub val: Vec<ShardRecord>,
}

pub const MANIFEST_FORMAT: &str = "scratchgpt-tokens";

impl Manifest {
    pub fn train_tokens(&self) -> u64 {
        self.train.iter().map(|s| s.tokens).sum()
    }

    pub fn val_tokens(&self) -> u64 {
        self.val.iter().map(|s| s.tokens).sum()
    }

    pub fn read(dir: &Path) -> Result<Manifest, TrainError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| {
            TrainError(format!(
                "{}: not a valid token manifest: {e}",
                path.display()
            ))
        })?;
        if m.format != MANIFEST_FORMAT || m.version != 1 {
            return Err(TrainError(format!(
                "{}: not a token manifest this program reads (format {:?} version {}; expected {MANIFEST_FORMAT:?} version 1)",
                path.display(),
                m.format,
                m.version
            )));
        }
        Ok(m)
    }

    /// Writes the manifest atomically (the last file `tokenize` writes).
    pub fn write(&self, dir: &Path) -> Result<(), TrainError> {
        let text = serde_json::to_string_pretty(self).expect("manifest serializes");
        model::weights::write_atomically(&dir.join(MANIFEST_FILE), text.as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("scratchgpt-shards-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn written_shards_read_back_with_llmc_header() {
        let d = tmp_dir("roundtrip");
        for (width, ids) in [
            (TokenWidth::U16, vec![0u32, 1, 50256, 65535]),
            (TokenWidth::U32, vec![0u32, 70000, 100_276]),
        ] {
            let path = d.join("x_train_000000.bin");
            let mut w = ShardWriter::create(&path, width).unwrap();
            w.write(&ids[..1]).unwrap();
            w.write(&ids[1..]).unwrap();
            let rec = w.finish().unwrap();
            assert_eq!(rec.tokens, ids.len() as u64);
            assert_eq!(rec.checksum, Checksum::of_file(&path).unwrap());
            let bytes = std::fs::read(&path).unwrap();
            let (magic, version) = width.magic_and_version();
            assert_eq!(&bytes[0..4], &magic.to_le_bytes());
            assert_eq!(&bytes[4..8], &version.to_le_bytes());
            assert_eq!(&bytes[8..12], &(ids.len() as i32).to_le_bytes());
            assert!(bytes[12..1024].iter().all(|&b| b == 0));
            let s = Shard::open_any(&path).unwrap();
            assert_eq!((s.width, s.tokens), (width, ids.len() as u64));
            let mut out = vec![0; ids.len() - 1];
            s.read(1, &mut out, 200_000, &mut Vec::new()).unwrap();
            let want: Vec<usize> = ids[1..].iter().map(|&t| t as usize).collect();
            assert_eq!(out, want);
        }
    }

    #[test]
    fn headerless_uint16_files_read_as_nanogpt_writes_them() {
        let d = tmp_dir("nanogpt");
        let path = d.join("train.bin");
        let ids: Vec<u16> = vec![464, 1893, 50256, 7];
        std::fs::write(
            &path,
            ids.iter().flat_map(|t| t.to_le_bytes()).collect::<Vec<_>>(),
        )
        .unwrap();
        let s = Shard::open_any(&path).unwrap();
        assert_eq!((s.offset, s.tokens), (0, 4));
        let mut out = vec![0; 4];
        s.read(0, &mut out, 50257, &mut Vec::new()).unwrap();
        assert_eq!(out, vec![464, 1893, 50256, 7]);
        // an odd byte count is not a token file
        std::fs::write(&path, [1u8, 2, 3]).unwrap();
        let e = Shard::open_any(&path).unwrap_err().0;
        assert!(
            e.contains("train.bin") && e.contains("not a whole number"),
            "{e}"
        );
    }

    #[test]
    fn damaged_shards_are_refused_naming_the_file() {
        let d = tmp_dir("damaged");
        let path = d.join("s_val_000000.bin");
        let mut w = ShardWriter::create(&path, TokenWidth::U16).unwrap();
        w.write(&[1, 2, 3, 4]).unwrap();
        w.finish().unwrap();
        let good = std::fs::read(&path).unwrap();
        let check = |bytes: &[u8], want: &str| {
            std::fs::write(&path, bytes).unwrap();
            let e = Shard::open(&path).unwrap_err().0;
            assert!(e.contains("s_val_000000.bin") && e.contains(want), "{e}");
        };
        check(&good[..good.len() - 1], "truncated");
        check(&good[..100], "too short");
        let mut extra = good.clone();
        extra.extend_from_slice(&[0, 0]);
        check(&extra, "extra bytes");
        let mut magic = good.clone();
        magic[0] ^= 1;
        check(&magic, "magic number");
        let mut version = good.clone();
        version[4] = 3;
        check(&version, "version 3");
        // a token outside the vocabulary is named with its position
        std::fs::write(&path, &good).unwrap();
        let s = Shard::open(&path).unwrap();
        let e = s.read(0, &mut [0; 4], 4, &mut Vec::new()).unwrap_err().0;
        assert!(e.contains("token 4 (at position 3)"), "{e}");
    }

    #[test]
    fn an_unfinished_shard_leaves_no_file() {
        let d = tmp_dir("unfinished");
        let path = d.join("a_train_000000.bin");
        let mut w = ShardWriter::create(&path, TokenWidth::U16).unwrap();
        w.write(&[1, 2, 3]).unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        let mut w = ShardWriter::create(&path, TokenWidth::U16).unwrap();
        assert!(w.write(&[70_000]).unwrap_err().0.contains("does not fit"));
    }
}
