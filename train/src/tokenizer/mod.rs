//! Tokenizers (book chapter 2): text → token ids → text.
//!
//! All three tokenizers here are *byte-level*: text is first turned into its UTF-8 bytes, so
//! every string can be encoded (no unknown-word token), and decoding the ids gives back exactly
//! the original bytes.
//!
//! - [`Tokenizer::gpt2`]: GPT-2's byte-pair encoding (BPE, section 2.5), giving the same ids as
//!   OpenAI's `tiktoken` `gpt2` encoding, with `<|endoftext|>` = 50256. The rank table comes
//!   from the `tiktoken-rs` crate, which ships it; the merge loop is `bpe_merge` below.
//! - [`Tokenizer::train_bpe`]: a BPE vocabulary learned from your own text (the book's "BPE
//!   from scratch" bonus), see [`trainer`].
//! - [`Tokenizer::bytes`]: one id per byte (256 ids, plus `<|endoftext|>`), for the smallest
//!   experiments.
//!
//! How BPE encodes a piece of text (after splitting it into words with GPT-2's pattern):
//! start from single bytes, then repeatedly merge the adjacent pair that was learned earliest
//! (lowest rank), until no learned pair is left. Frequent words end as one token; rare words
//! as several.

pub mod files;
pub mod hf_json;
pub mod trainer;

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use fancy_regex::Regex;

/// The end-of-text marker GPT-2 places between documents.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// GPT-2's pre-tokenization pattern: contractions, words with an optional leading space,
/// numbers, punctuation runs, and whitespace (a run of spaces keeps its last space for the
/// next word, `\s+(?!\S)`).
const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

fn gpt2_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(GPT2_PATTERN).expect("GPT-2 pattern compiles"))
}

/// Why a tokenizer could not be built, loaded or used.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerError(pub String);

impl fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TokenizerError {}

/// Which tokenizer this is (saved with checkpoints).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenizerKind {
    /// GPT-2's built-in table.
    Gpt2,
    /// A byte-level BPE with its own merges (trained here or loaded from files).
    Bpe,
    /// One id per byte.
    Bytes,
}

/// How the merge loop ranks a candidate pair.
#[derive(Clone)]
enum MergeRanks {
    /// tiktoken's rule: the rank of the merged token's bytes (GPT-2's table is stored this way).
    ByMergedBytes,
    /// The classic rule: the position of the pair `(left id, right id)` in the merge list.
    ByPair(HashMap<(u32, u32), u32>),
    /// No merges at all (the byte tokenizer).
    None,
}

/// A byte-level tokenizer. Cheap to share behind `&`; all methods take `&self`.
#[derive(Clone)]
pub struct Tokenizer {
    kind: TokenizerKind,
    /// token bytes → id
    encoder: HashMap<Vec<u8>, u32>,
    /// id → token bytes (specials included)
    decoder: Vec<Vec<u8>>,
    ranks: MergeRanks,
    /// special tokens matched literally in the text before BPE, with their ids
    specials: Vec<(String, u32)>,
    /// ids of the single bytes 0..=255
    byte_ids: [u32; 256],
    /// whether text is split into words first (BPE) or not (bytes)
    pretokenize: bool,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokenizer({:?}, vocab {})", self.kind, self.vocab_size())
    }
}

/// A piece of the word being merged: its byte range and its current token id.
#[derive(Clone, Copy)]
struct Part {
    start: usize,
    end: usize,
    id: u32,
}

/// The BPE merge loop on one word: starts from single bytes and merges the best-ranked adjacent
/// pair until none is mergeable. `rank(left, right)` gives the pair's rank and merged id.
/// Writes the ids into `out`.
fn bpe_merge(
    word: &[u8],
    byte_ids: &[u32; 256],
    rank: impl Fn(&[u8], &Part, &Part) -> Option<(u32, u32)>,
    out: &mut Vec<usize>,
) {
    let mut parts: Vec<Part> = word
        .iter()
        .enumerate()
        .map(|(i, &b)| Part {
            start: i,
            end: i + 1,
            id: byte_ids[b as usize],
        })
        .collect();
    while parts.len() > 1 {
        // the adjacent pair with the lowest rank (learned earliest)
        let mut best: Option<(u32, usize, u32)> = None;
        for i in 0..parts.len() - 1 {
            if let Some((r, id)) = rank(word, &parts[i], &parts[i + 1]) {
                if best.is_none_or(|(br, _, _)| r < br) {
                    best = Some((r, i, id));
                }
            }
        }
        let Some((_, i, id)) = best else { break };
        parts[i] = Part {
            start: parts[i].start,
            end: parts[i + 1].end,
            id,
        };
        parts.remove(i + 1);
    }
    out.extend(parts.iter().map(|p| p.id as usize));
}

impl Tokenizer {
    /// GPT-2's tokenizer (the `gpt2` / `r50k_base` encoding): 50,257 ids.
    pub fn gpt2() -> Result<Tokenizer, TokenizerError> {
        static GPT2: OnceLock<Result<Tokenizer, TokenizerError>> = OnceLock::new();
        GPT2.get_or_init(files::builtin_gpt2).clone()
    }

    /// One id per byte, and `<|endoftext|>` = 256.
    pub fn bytes() -> Tokenizer {
        let decoder: Vec<Vec<u8>> = (0..=255u8)
            .map(|b| vec![b])
            .chain([END_OF_TEXT.as_bytes().to_vec()])
            .collect();
        Tokenizer::from_parts(TokenizerKind::Bytes, decoder, MergeRanks::None, false)
            .expect("the byte table is valid")
    }

    /// Assembles a tokenizer from its id → bytes table (specials included, recognised by
    /// being `<|…|>` strings at the end) and merge ranks.
    fn from_parts(
        kind: TokenizerKind,
        decoder: Vec<Vec<u8>>,
        ranks: MergeRanks,
        pretokenize: bool,
    ) -> Result<Tokenizer, TokenizerError> {
        let mut encoder = HashMap::with_capacity(decoder.len());
        let mut specials = Vec::new();
        let mut byte_ids = [u32::MAX; 256];
        for (id, bytes) in decoder.iter().enumerate() {
            let id = id as u32;
            if bytes == END_OF_TEXT.as_bytes() {
                specials.push((END_OF_TEXT.to_string(), id));
                continue;
            }
            if bytes.len() == 1 {
                byte_ids[bytes[0] as usize] = id;
            }
            if encoder.insert(bytes.clone(), id).is_some() {
                return Err(TokenizerError(format!(
                    "token {:?} appears twice in the vocabulary",
                    String::from_utf8_lossy(bytes)
                )));
            }
        }
        if let Some(b) = byte_ids.iter().position(|&id| id == u32::MAX) {
            return Err(TokenizerError(format!(
                "the vocabulary has no token for byte {b}; a byte-level vocabulary needs all 256"
            )));
        }
        Ok(Tokenizer {
            kind,
            encoder,
            decoder,
            ranks,
            specials,
            byte_ids,
            pretokenize,
        })
    }

    pub fn kind(&self) -> &TokenizerKind {
        &self.kind
    }

    /// Number of ids (the model's `vocab_size`).
    pub fn vocab_size(&self) -> usize {
        self.decoder.len()
    }

    /// The id of `<|endoftext|>`, if the vocabulary has it.
    pub fn end_of_text(&self) -> Option<usize> {
        self.specials
            .iter()
            .find(|(s, _)| s == END_OF_TEXT)
            .map(|&(_, id)| id as usize)
    }

    /// Encodes text, treating `<|endoftext|>` as its special id (tiktoken's
    /// `allowed_special={"<|endoftext|>"}`).
    pub fn encode(&self, text: &str) -> Vec<usize> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut rest = text;
        while !rest.is_empty() {
            let next = self
                .specials
                .iter()
                .filter_map(|(s, id)| rest.find(s.as_str()).map(|pos| (pos, s.len(), *id)))
                .min_by_key(|&(pos, _, _)| pos);
            match next {
                Some((pos, len, id)) => {
                    self.encode_ordinary_into(&rest[..pos], &mut out);
                    out.push(id as usize);
                    rest = &rest[pos + len..];
                }
                None => {
                    self.encode_ordinary_into(rest, &mut out);
                    break;
                }
            }
        }
        out
    }

    /// Encodes text with no special tokens: `<|endoftext|>` is just characters.
    pub fn encode_ordinary(&self, text: &str) -> Vec<usize> {
        let mut out = Vec::new();
        self.encode_ordinary_into(text, &mut out);
        out
    }

    /// Encodes raw bytes that need not be UTF-8 (byte-level BPE handles any byte sequence).
    /// Words are split on the bytes' lossy text view; each word's own bytes are then merged.
    pub fn encode_bytes(&self, data: &[u8]) -> Vec<usize> {
        match std::str::from_utf8(data) {
            Ok(s) => self.encode_ordinary(s),
            Err(_) => {
                let mut out = Vec::new();
                for chunk in data.utf8_chunks() {
                    self.encode_ordinary_into(chunk.valid(), &mut out);
                    for &b in chunk.invalid() {
                        self.encode_word(&[b], &mut out);
                    }
                }
                out
            }
        }
    }

    fn encode_ordinary_into(&self, text: &str, out: &mut Vec<usize>) {
        if !self.pretokenize {
            self.encode_word(text.as_bytes(), out);
            return;
        }
        let mut last = 0;
        for m in gpt2_regex().find_iter(text) {
            match m {
                Ok(m) => {
                    self.encode_word(m.as_str().as_bytes(), out);
                    last = m.end();
                }
                Err(_) => {
                    // backtracking limit hit on pathological input: fall back to plain bytes
                    // for the rest, which still round-trips exactly
                    self.encode_word(&text.as_bytes()[last..], out);
                    return;
                }
            }
        }
    }

    fn encode_word(&self, word: &[u8], out: &mut Vec<usize>) {
        if let Some(&id) = self.encoder.get(word) {
            out.push(id as usize); // whole word is one token: the common case
            return;
        }
        match &self.ranks {
            MergeRanks::None => {
                out.extend(word.iter().map(|&b| self.byte_ids[b as usize] as usize))
            }
            MergeRanks::ByMergedBytes => bpe_merge(
                word,
                &self.byte_ids,
                |w, l, r| self.encoder.get(&w[l.start..r.end]).map(|&id| (id, id)),
                out,
            ),
            MergeRanks::ByPair(pairs) => bpe_merge(
                word,
                &self.byte_ids,
                |w, l, r| {
                    let rank = *pairs.get(&(l.id, r.id))?;
                    Some((rank, *self.encoder.get(&w[l.start..r.end])?))
                },
                out,
            ),
        }
    }

    /// The bytes of a sequence of ids, or an error naming an id outside the vocabulary.
    pub fn decode_bytes(&self, ids: &[usize]) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let bytes = self.decoder.get(id).ok_or_else(|| {
                TokenizerError(format!(
                    "token id {id} is outside the vocabulary of {}",
                    self.vocab_size()
                ))
            })?;
            out.extend_from_slice(bytes);
        }
        Ok(out)
    }

    /// Decodes ids to text. Ids that cut a multi-byte character in half (possible when
    /// decoding a prefix) show as U+FFFD; ids from `encode` always decode to the exact text.
    pub fn decode(&self, ids: &[usize]) -> Result<String, TokenizerError> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn book_example_ids_match_tiktoken() {
        // Book 2.5: tiktoken's gpt2 encoding of this text, allowing <|endoftext|>
        let tok = Tokenizer::gpt2().unwrap();
        let text =
            "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace.";
        let ids = tok.encode(text);
        let book = [
            15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114, 286,
            617, 34680, 27271, 13,
        ];
        assert_eq!(ids, book);
        assert_eq!(tok.decode(&ids).unwrap(), text);
        assert_eq!(tok.vocab_size(), 50257);
        assert_eq!(tok.end_of_text(), Some(50256));
    }

    #[test]
    fn matches_tiktoken_on_varied_text() {
        let tok = Tokenizer::gpt2().unwrap();
        let reference = tiktoken_rs::r50k_base().unwrap();
        for text in [
            "Akwirw ier",
            "  leading spaces,\ttabs\n\nand newlines   \n",
            "naïve café — “quotes” and emoji 🎉🎉 in 日本語のテキスト",
            "numbers 1234567 and 3.14159, contractions: I'm you're we'll they'd it's",
            "CamelCaseWordsAndsomeunknownPlace!!!???",
            "",
        ] {
            let want: Vec<usize> = reference
                .encode_with_special_tokens(text)
                .into_iter()
                .map(|x| x as usize)
                .collect();
            assert_eq!(tok.encode(text), want, "{text:?}");
            assert_eq!(tok.decode(&tok.encode(text)).unwrap(), text);
        }
    }

    #[test]
    fn bytes_tokenizer_round_trips() {
        let tok = Tokenizer::bytes();
        let text = "héllo <|endoftext|>";
        let ids = tok.encode(text);
        assert_eq!(ids.last(), Some(&256));
        assert_eq!(tok.decode(&ids).unwrap(), text);
        assert_eq!(tok.vocab_size(), 257);
        assert!(tok
            .decode(&[999])
            .unwrap_err()
            .to_string()
            .contains("outside the vocabulary"));
    }

    #[test]
    fn invalid_utf8_bytes_round_trip() {
        let tok = Tokenizer::gpt2().unwrap();
        let data = [b'a', 0xff, 0xfe, b' ', b'x', 0xc3];
        assert_eq!(tok.decode_bytes(&tok.encode_bytes(&data)).unwrap(), data);
    }
}
