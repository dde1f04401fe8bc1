//! Where tokenizer tables come from and how they are stored.
//!
//! - The built-in GPT-2 table is read from the `tiktoken-rs` crate, which ships OpenAI's
//!   `r50k_base` (= `gpt2`) ranks inside the binary: no file, no download.
//! - Every tokenizer is stored in the formats Hugging Face uses for GPT-2, so that its
//!   `tokenizers` and `transformers` libraries load a scratchgpt checkpoint unchanged:
//!   `tokenizer.json` (the `tokenizers` library's single file, see [`super::hf_json`]), and
//!   `vocab.json` (token → id) with `merges.txt` (one learned pair per line, earliest first) for
//!   the older readers. Tokens are written with GPT-2's byte-to-character map, which gives each
//!   of the 256 bytes a printable character (a space becomes `Ġ`), so the files are plain
//!   UTF-8 text.
//! - All three kinds are byte-level BPEs in these files: GPT-2 with its 50,000 merges, a learned
//!   BPE with its own, and the bytes tokenizer with none (256 byte tokens + `<|endoftext|>`,
//!   the whole text as one word: exactly the one-id-per-byte rule).
//! - Checkpoints written before this format carry a `tokenizer.json` of scratchgpt's own,
//!   `{"kind": "gpt2" | "bpe" | "bytes"}`; [`Tokenizer::load`] still reads them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use serde_json::{json, Value};

use super::{
    bpe_merge, hf_json, MergeRanks, Tokenizer, TokenizerError, TokenizerKind, END_OF_TEXT,
};

pub const VOCAB_FILE: &str = "vocab.json";
pub const MERGES_FILE: &str = "merges.txt";
/// Hugging Face `tokenizers`' file (in checkpoints of older versions: scratchgpt's kind marker).
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Largest tokenizer file read (GPT-2's vocab.json is about 1 MB).
const MAX_FILE_BYTES: u64 = 64 << 20;

/// GPT-2's printable character for each byte: the printable Latin-1 bytes stand for
/// themselves, the others (controls, space, …) are moved to U+0100 onwards in byte order.
pub fn byte_to_char() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable =
            (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        map[b as usize] = if printable {
            b as char
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap()
        };
    }
    map
}

fn chars_to_bytes(s: &str, inverse: &HashMap<char, u8>) -> Option<Vec<u8>> {
    s.chars().map(|c| inverse.get(&c).copied()).collect()
}

fn bytes_to_chars(b: &[u8], map: &[char; 256]) -> String {
    b.iter().map(|&x| map[x as usize]).collect()
}

/// GPT-2's table from `tiktoken-rs`: id i is the i-th ranked byte string, and the merge
/// priority of a byte string is its id (tiktoken's rule).
pub(super) fn builtin_gpt2() -> Result<Tokenizer, TokenizerError> {
    let bpe = tiktoken_rs::r50k_base().map_err(|e| TokenizerError(format!("GPT-2 table: {e}")))?;
    let mut decoder = Vec::with_capacity(50_257);
    for id in 0..50_256u32 {
        let bytes = bpe
            .decode_bytes(&[id])
            .map_err(|e| TokenizerError(format!("GPT-2 table: {e:?}")))?;
        decoder.push(bytes);
    }
    decoder.push(END_OF_TEXT.as_bytes().to_vec());
    Tokenizer::from_parts(
        TokenizerKind::Gpt2,
        decoder,
        MergeRanks::ByMergedBytes,
        true,
    )
}

pub(super) fn read_text(path: &Path) -> Result<String, TokenizerError> {
    let err = |m: String| TokenizerError(format!("{}: {m}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.is_dir() {
        return Err(err("is a directory, expected a file".into()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(err(format!(
            "{} bytes is more than a tokenizer file can be",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    String::from_utf8(bytes).map_err(|_| err("is not UTF-8 text".into()))
}

/// A byte-level BPE as Hugging Face's files describe it, before checking: `(token, id)` entries
/// with tokens in GPT-2's byte alphabet (`<|endoftext|>` as itself), and merges as pairs of
/// token strings, earliest first. Errors name `file` (and a merge's `line` when known).
pub(super) struct BpeTables<'a> {
    pub file: &'a Path,
    pub entries: Vec<(String, u64)>,
    pub merges: Vec<(String, String, usize)>,
    pub merges_file: &'a Path,
    pub pretokenize: bool,
}

impl BpeTables<'_> {
    /// Checks the tables and builds the tokenizer. A table equal to GPT-2's or to the bytes
    /// tokenizer's gives that tokenizer (and its [`TokenizerKind`]).
    pub(super) fn build(self) -> Result<Tokenizer, TokenizerError> {
        Ok(known_table(self.build_as_read()?))
    }

    /// [`BpeTables::build`] without recognising the known tables: always a [`TokenizerKind::Bpe`]
    /// ranking merges by their position.
    fn build_as_read(self) -> Result<Tokenizer, TokenizerError> {
        let verr = |m: String| TokenizerError(format!("{}: {m}", self.file.display()));
        let merr = |line: usize, m: String| {
            let at = match line {
                0 => String::new(),
                n => format!(":{n}"),
            };
            TokenizerError(format!("{}{at}: {m}", self.merges_file.display()))
        };
        let n = self.entries.len();
        let map = byte_to_char();
        let inverse: HashMap<char, u8> =
            map.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
        let mut decoder: Vec<Option<Vec<u8>>> = vec![None; n];
        let mut ids: HashMap<&str, u32> = HashMap::new();
        for (token, id) in &self.entries {
            if (*id as usize) >= n {
                return Err(verr(format!(
                    "id of {token:?} must be an integer below {n}"
                )));
            }
            let bytes = if token == END_OF_TEXT {
                END_OF_TEXT.as_bytes().to_vec()
            } else {
                chars_to_bytes(token, &inverse).ok_or_else(|| {
                    verr(format!("token {token:?} is not in GPT-2's byte alphabet"))
                })?
            };
            if decoder[*id as usize].replace(bytes).is_some() {
                return Err(verr(format!("id {id} is used twice")));
            }
            ids.insert(token, *id as u32);
        }
        let decoder: Vec<Vec<u8>> = decoder
            .into_iter()
            .collect::<Option<_>>()
            .ok_or_else(|| verr("ids have gaps".into()))?;
        let mut pairs = super::FastMap::default();
        for (a, b, line) in &self.merges {
            let (ia, ib) = match (ids.get(a.as_str()), ids.get(b.as_str())) {
                (Some(&x), Some(&y)) => (x, y),
                _ => {
                    return Err(merr(
                        *line,
                        format!("merge \"{a} {b}\" uses a token missing from the vocabulary"),
                    ))
                }
            };
            if !ids.contains_key(format!("{a}{b}").as_str()) {
                return Err(merr(
                    *line,
                    format!("merged token {a}{b:?} is missing from the vocabulary"),
                ));
            }
            let rank = pairs.len() as u32;
            pairs.entry((ia, ib)).or_insert(rank);
        }
        let ranks = if pairs.is_empty() {
            MergeRanks::None
        } else {
            MergeRanks::ByPair(pairs)
        };
        Tokenizer::from_parts(TokenizerKind::Bpe, decoder, ranks, self.pretokenize)
            .map_err(|e| verr(e.0))
    }
}

/// The built-in tokenizer with the same ids and merges, if `tok` is GPT-2's or the bytes
/// table; else `tok` itself.
fn known_table(tok: Tokenizer) -> Tokenizer {
    let bytes = Tokenizer::bytes();
    if tok.decoder == bytes.decoder && matches!(tok.ranks, MergeRanks::None) {
        return bytes;
    }
    if tok.vocab_size() == 50_257 {
        if let Ok(gpt2) = Tokenizer::gpt2() {
            if tok.decoder == gpt2.decoder && tok.merges() == gpt2.merges() {
                return gpt2;
            }
        }
    }
    tok
}

/// Loads a byte-level BPE from `vocab.json` and `merges.txt` (Hugging Face's GPT-2 format).
pub fn from_files(vocab_path: &Path, merges_path: &Path) -> Result<Tokenizer, TokenizerError> {
    read_files(vocab_path, merges_path)?.build()
}

fn read_files<'a>(
    vocab_path: &'a Path,
    merges_path: &'a Path,
) -> Result<BpeTables<'a>, TokenizerError> {
    let verr = |m: String| TokenizerError(format!("{}: {m}", vocab_path.display()));
    let vocab: Value = serde_json::from_str(&read_text(vocab_path)?)
        .map_err(|e| verr(format!("invalid JSON: {e}")))?;
    let entries = vocab_entries(&vocab).map_err(verr)?;
    let text = read_text(merges_path)?;
    let mut merges = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("#version") || line.trim().is_empty() {
            continue;
        }
        let (a, b) = line.split_once(' ').ok_or_else(|| {
            TokenizerError(format!(
                "{}:{}: expected two tokens separated by a space",
                merges_path.display(),
                n + 1
            ))
        })?;
        merges.push((a.to_string(), b.to_string(), n + 1));
    }
    Ok(BpeTables {
        file: vocab_path,
        entries,
        merges,
        merges_file: merges_path,
        pretokenize: true,
    })
}

/// The `(token, id)` entries of a `vocab.json`-style object.
pub(super) fn vocab_entries(vocab: &Value) -> Result<Vec<(String, u64)>, String> {
    let obj = vocab
        .as_object()
        .ok_or_else(|| "expected a JSON object of token → id".to_string())?;
    obj.iter()
        .map(|(token, id)| {
            id.as_u64()
                .map(|id| (token.clone(), id))
                .ok_or_else(|| format!("id of {token:?} must be an integer below {}", obj.len()))
        })
        .collect()
}

/// GPT-2's merges, derived once from the built-in rank table.
fn gpt2_merges(tok: &Tokenizer) -> Vec<(u32, u32)> {
    static MERGES: OnceLock<Vec<(u32, u32)>> = OnceLock::new();
    MERGES.get_or_init(|| derive_merges(tok)).clone()
}

/// The merges of a rank-by-merged-bytes table (tiktoken's form): for each token of two or more
/// bytes, in rank order, the two tokens that merging with the lower ranks alone leaves.
fn derive_merges(tok: &Tokenizer) -> Vec<(u32, u32)> {
    let mut by_rank: Vec<(&Vec<u8>, u32)> = tok
        .encoder
        .iter()
        .filter(|(b, _)| b.len() >= 2)
        .map(|(b, &id)| (b, id))
        .collect();
    by_rank.sort_by_key(|&(_, id)| id);
    let mut merges = Vec::with_capacity(by_rank.len());
    let mut parts = Vec::new();
    for (bytes, rank) in by_rank {
        parts.clear();
        let below = |w: &[u8], l: &super::Part, r: &super::Part| {
            let id = *tok.encoder.get(&w[l.start..r.end])?;
            (id < rank).then_some((id, id))
        };
        bpe_merge(bytes, &tok.byte_ids, below, &mut parts);
        if let [a, b] = parts[..] {
            merges.push((a as u32, b as u32));
        }
    }
    merges
}

impl Tokenizer {
    /// The learned merges as pairs of ids, earliest first (empty for the bytes tokenizer).
    pub fn merges(&self) -> Vec<(u32, u32)> {
        match &self.ranks {
            MergeRanks::None => Vec::new(),
            MergeRanks::ByMergedBytes => gpt2_merges(self),
            MergeRanks::ByPair(pairs) => {
                let mut ordered: Vec<(&(u32, u32), &u32)> = pairs.iter().collect();
                ordered.sort_by_key(|(_, &r)| r);
                ordered.into_iter().map(|(&p, _)| p).collect()
            }
        }
    }

    /// Token `id` in GPT-2's byte alphabet (`<|endoftext|>` as itself), as the files write it.
    pub(super) fn token_string(&self, id: usize) -> String {
        let b = &self.decoder[id];
        if b == END_OF_TEXT.as_bytes() {
            END_OF_TEXT.to_string()
        } else {
            bytes_to_chars(b, &byte_to_char())
        }
    }

    /// The files that store this tokenizer in a checkpoint directory, as (name, contents):
    /// Hugging Face's `tokenizer.json`, `vocab.json` and `merges.txt` (see the module docs).
    pub fn files(&self) -> Vec<(String, Vec<u8>)> {
        let names: Vec<String> = (0..self.vocab_size())
            .map(|id| self.token_string(id))
            .collect();
        let merges = self.merges();
        let vocab: serde_json::Map<String, Value> = names
            .iter()
            .enumerate()
            .map(|(id, name)| (name.clone(), json!(id)))
            .collect();
        let mut merges_txt = String::from("#version: 0.2\n");
        for &(a, b) in &merges {
            merges_txt.push_str(&format!("{} {}\n", names[a as usize], names[b as usize]));
        }
        vec![
            (
                TOKENIZER_FILE.to_string(),
                hf_json::to_json(self, &names, &merges),
            ),
            (
                VOCAB_FILE.to_string(),
                serde_json::to_vec(&Value::Object(vocab)).unwrap(),
            ),
            (MERGES_FILE.to_string(), merges_txt.into_bytes()),
        ]
    }

    /// The tokenizer stored in a checkpoint directory: by `tokenizer.json` if present (Hugging
    /// Face's format, or scratchgpt's older kind marker); else `vocab.json` + `merges.txt`;
    /// else GPT-2's built-in table.
    pub fn load(dir: &Path) -> Result<Tokenizer, TokenizerError> {
        let json_path = dir.join(TOKENIZER_FILE);
        let files = || from_files(&dir.join(VOCAB_FILE), &dir.join(MERGES_FILE));
        if json_path.exists() {
            let v: Value = serde_json::from_str(&read_text(&json_path)?).map_err(|e| {
                TokenizerError(format!("{}: invalid JSON: {e}", json_path.display()))
            })?;
            if v.get("model").is_some() {
                return hf_json::from_value(&v, &json_path);
            }
            // scratchgpt's marker of older versions: {"kind": "gpt2" | "bytes" | "bpe"}
            return match v.get("kind").and_then(Value::as_str) {
                Some("gpt2") => Tokenizer::gpt2(),
                Some("bytes") => Ok(Tokenizer::bytes()),
                Some("bpe") => files(),
                _ => Err(TokenizerError(format!(
                    "{}: neither a Hugging Face tokenizer (no \"model\" field) nor a scratchgpt tokenizer marker (no \"kind\" field)",
                    json_path.display()
                ))),
            };
        }
        if dir.join(VOCAB_FILE).exists() && dir.join(MERGES_FILE).exists() {
            return files();
        }
        Tokenizer::gpt2()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_a_bijection_with_space_as_g_dot() {
        let m = byte_to_char();
        assert_eq!(m[b' ' as usize], 'Ġ');
        assert_eq!(m[b'A' as usize], 'A');
        let distinct: std::collections::HashSet<char> = m.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn openai_files_give_the_same_ids_as_the_builtin_table() {
        // ../shared/data/gpt2 holds OpenAI's encoder.json and vocab.bpe (same formats as
        // vocab.json and merges.txt); skip cleanly when absent.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/gpt2");
        if !dir.join("encoder.json").exists() {
            eprintln!("skipping: {} not found", dir.display());
            return;
        }
        let (encoder, bpe) = (dir.join("encoder.json"), dir.join("vocab.bpe"));
        // merges ranked by their position in vocab.bpe (Hugging Face's rule) ...
        let from = read_files(&encoder, &bpe).unwrap().build_as_read().unwrap();
        // ... give the ids of the built-in table ranked by merged bytes (tiktoken's rule)
        let builtin = Tokenizer::gpt2().unwrap();
        let text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace. naïve 🎉 1234";
        assert_eq!(from.encode(text), builtin.encode(text));
        assert_eq!(from.vocab_size(), 50257);
        // the merges derived from the built-in table are vocab.bpe's, in its order, so the
        // files load as the built-in tokenizer
        assert_eq!(builtin.merges(), from.merges());
        assert_eq!(
            *from_files(&encoder, &bpe).unwrap().kind(),
            TokenizerKind::Gpt2
        );
    }
}
