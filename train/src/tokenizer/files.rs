//! Where tokenizer tables come from and how they are stored.
//!
//! - The built-in GPT-2 table is read from the `tiktoken-rs` crate, which ships OpenAI's
//!   `r50k_base` (= `gpt2`) ranks inside the binary: no file, no download.
//! - BPE vocabularies are stored in the format Hugging Face uses for GPT-2: `vocab.json`
//!   (token → id) and `merges.txt` (one learned pair per line, earliest first). Tokens are
//!   written with GPT-2's byte-to-character map, which gives each of the 256 bytes a printable
//!   character (a space becomes `Ġ`), so the files are plain UTF-8 text.
//! - A checkpoint also carries `tokenizer.json` saying which kind it uses.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value};

use super::{MergeRanks, Tokenizer, TokenizerError, TokenizerKind, END_OF_TEXT};

pub const VOCAB_FILE: &str = "vocab.json";
pub const MERGES_FILE: &str = "merges.txt";
pub const KIND_FILE: &str = "tokenizer.json";

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

fn read_text(path: &Path) -> Result<String, TokenizerError> {
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

/// Loads a byte-level BPE from `vocab.json` and `merges.txt` (Hugging Face's GPT-2 format).
pub fn from_files(vocab_path: &Path, merges_path: &Path) -> Result<Tokenizer, TokenizerError> {
    let verr = |m: String| TokenizerError(format!("{}: {m}", vocab_path.display()));
    let merr =
        |line: usize, m: String| TokenizerError(format!("{}:{line}: {m}", merges_path.display()));
    let vocab: Value = serde_json::from_str(&read_text(vocab_path)?)
        .map_err(|e| verr(format!("invalid JSON: {e}")))?;
    let obj = vocab
        .as_object()
        .ok_or_else(|| verr("expected a JSON object of token → id".into()))?;
    let map = byte_to_char();
    let inverse: HashMap<char, u8> = map.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
    let mut decoder: Vec<Option<Vec<u8>>> = vec![None; obj.len()];
    let mut ids: HashMap<&str, u32> = HashMap::new();
    for (token, id) in obj {
        let id = id
            .as_u64()
            .filter(|&i| (i as usize) < obj.len())
            .ok_or_else(|| {
                verr(format!(
                    "id of {token:?} must be an integer below {}",
                    obj.len()
                ))
            })?;
        let bytes = if token == END_OF_TEXT {
            END_OF_TEXT.as_bytes().to_vec()
        } else {
            chars_to_bytes(token, &inverse)
                .ok_or_else(|| verr(format!("token {token:?} is not in GPT-2's byte alphabet")))?
        };
        if decoder[id as usize].replace(bytes).is_some() {
            return Err(verr(format!("id {id} is used twice")));
        }
        ids.insert(token, id as u32);
    }
    let decoder: Vec<Vec<u8>> = decoder
        .into_iter()
        .collect::<Option<_>>()
        .ok_or_else(|| verr("ids have gaps".into()))?;
    let text = read_text(merges_path)?;
    let mut pairs = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("#version") || line.trim().is_empty() {
            continue;
        }
        let (a, b) = line
            .split_once(' ')
            .ok_or_else(|| merr(n + 1, "expected two tokens separated by a space".into()))?;
        let (ia, ib) = match (ids.get(a), ids.get(b)) {
            (Some(&x), Some(&y)) => (x, y),
            _ => {
                return Err(merr(
                    n + 1,
                    format!("merge {line:?} uses a token missing from the vocabulary"),
                ))
            }
        };
        if !ids.contains_key(format!("{a}{b}").as_str()) {
            return Err(merr(
                n + 1,
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
    Tokenizer::from_parts(TokenizerKind::Bpe, decoder, ranks, true)
}

impl Tokenizer {
    /// The files that store this tokenizer in a checkpoint directory, as (name, contents):
    /// `tokenizer.json` always, and for a learned BPE also `vocab.json` + `merges.txt`.
    pub fn files(&self) -> Vec<(String, Vec<u8>)> {
        let kind = match self.kind {
            TokenizerKind::Gpt2 => "gpt2",
            TokenizerKind::Bpe => "bpe",
            TokenizerKind::Bytes => "bytes",
        };
        let mut files = vec![(
            KIND_FILE.to_string(),
            serde_json::to_vec_pretty(&json!({ "kind": kind })).unwrap(),
        )];
        if self.kind == TokenizerKind::Bpe {
            let map = byte_to_char();
            let name = |id: usize| {
                let b = &self.decoder[id];
                if b == END_OF_TEXT.as_bytes() {
                    END_OF_TEXT.to_string()
                } else {
                    bytes_to_chars(b, &map)
                }
            };
            let vocab: serde_json::Map<String, Value> = (0..self.decoder.len())
                .map(|id| (name(id), json!(id)))
                .collect();
            let mut merges = String::from("#version: 0.2\n");
            if let MergeRanks::ByPair(pairs) = &self.ranks {
                let mut ordered: Vec<(&(u32, u32), &u32)> = pairs.iter().collect();
                ordered.sort_by_key(|(_, &r)| r);
                for ((a, b), _) in ordered {
                    merges.push_str(&format!("{} {}\n", name(*a as usize), name(*b as usize)));
                }
            }
            files.push((
                VOCAB_FILE.to_string(),
                serde_json::to_vec(&Value::Object(vocab)).unwrap(),
            ));
            files.push((MERGES_FILE.to_string(), merges.into_bytes()));
        }
        files
    }

    /// The tokenizer stored in a checkpoint directory: by `tokenizer.json` if present; else
    /// `vocab.json` + `merges.txt` (a Hugging Face GPT-2 directory); else GPT-2's built-in table.
    pub fn load(dir: &Path) -> Result<Tokenizer, TokenizerError> {
        let kind_path = dir.join(KIND_FILE);
        let files = || from_files(&dir.join(VOCAB_FILE), &dir.join(MERGES_FILE));
        if kind_path.exists() {
            let v: Value = serde_json::from_str(&read_text(&kind_path)?).map_err(|e| {
                TokenizerError(format!("{}: invalid JSON: {e}", kind_path.display()))
            })?;
            return match v.get("kind").and_then(Value::as_str) {
                Some("gpt2") => Tokenizer::gpt2(),
                Some("bytes") => Ok(Tokenizer::bytes()),
                Some("bpe") => files(),
                other => Err(TokenizerError(format!(
                    "{}: unknown tokenizer kind {other:?}",
                    kind_path.display()
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
        let from = from_files(&dir.join("encoder.json"), &dir.join("vocab.bpe")).unwrap();
        let builtin = Tokenizer::gpt2().unwrap();
        let text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace. naïve 🎉 1234";
        assert_eq!(from.encode(text), builtin.encode(text));
        assert_eq!(from.vocab_size(), 50257);
    }
}
