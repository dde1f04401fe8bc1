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

use std::fmt;
use std::sync::OnceLock;

use regex_automata::{meta, Anchored, Input};

/// The end-of-text marker GPT-2 places between documents.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// GPT-2's pre-tokenization pattern: contractions, words with an optional leading space,
/// numbers, punctuation runs, and whitespace (a run of spaces keeps its last space for the
/// next word, `\s+(?!\S)`).
#[cfg_attr(not(test), allow(dead_code))]
const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// The same pattern without its lookahead (`\s+(?!\S)` dropped), for the automata of the
/// `regex` crate's engine (`regex-automata`): they have no lookaround, but find words several
/// times faster than a backtracking engine (fancy-regex, which tiktoken uses).
/// [`for_each_word`] puts the lookahead back.
const GPT2_PATTERN_NO_LOOKAHEAD: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";

/// Runs `f` with this thread's own copy of the word pattern. A regex keeps scratch space in a
/// pool that only the thread that used it first reaches without a lock; shared by all the
/// threads of a parallel encode, the pool cost a third of the time.
fn with_word_regex<R>(f: impl FnOnce(&meta::Regex) -> R) -> R {
    thread_local! {
        static RE: meta::Regex =
            meta::Regex::new(GPT2_PATTERN_NO_LOOKAHEAD).expect("GPT-2 pattern compiles");
    }
    RE.with(f)
}

/// Calls `f` with each word of `text` by GPT-2's pattern, in order (the words cover the text).
///
/// Without the lookahead, a run of whitespace is matched whole by `\s+`. With it, a run of two
/// or more whitespace characters followed by more text is matched without its last character
/// (`\s+(?!\S)` backs off until what follows is whitespace), and that character starts the
/// next word: a space joins the word after it (` ?\p{L}+`, …), anything else is a word of its
/// own (`\s+`). So: cut such a run before its last character and search on from there. Every
/// other word is the same with and without the lookahead (they all end in a non-space), and
/// the tests compare both patterns on varied text.
pub(crate) fn for_each_word<'t>(text: &'t str, mut f: impl FnMut(&'t str)) {
    with_word_regex(|re| {
        let mut at = 0;
        // anchored: a word starts where the last one ended (the pattern matches any
        // character), so one forward scan finds it, with no backward scan for its start
        let mut input = Input::new(text).anchored(Anchored::Yes);
        while at < text.len() {
            input.set_start(at);
            let Some(m) = re.search(&input) else {
                unreachable!("GPT-2's pattern matches every character");
            };
            let word = &text[at..m.end()];
            let mut end = m.end();
            if end < text.len() {
                if let Some(last) = word.chars().next_back() {
                    if last.is_whitespace() && word.len() > last.len_utf8() {
                        end -= last.len_utf8();
                    }
                }
            }
            f(&text[at..end]);
            at = end;
        }
    })
}

/// A hash map with FxHash (rustc's and tiktoken's hasher): a multiply and a rotate per 8 bytes,
/// against SipHash's rounds. Not resistant to chosen collisions, which do not matter for a
/// tokenizer's fixed tables.
pub(crate) type FastMap<K, V> = rustc_hash::FxHashMap<K, V>;

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
    ByPair(FastMap<(u32, u32), u32>),
    /// No merges at all (the byte tokenizer).
    None,
}

/// A byte-level tokenizer. Cheap to share behind `&`; all methods take `&self`.
#[derive(Clone)]
pub struct Tokenizer {
    kind: TokenizerKind,
    /// token bytes → id
    encoder: FastMap<Vec<u8>, u32>,
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
///
/// Each pair's rank is looked up once and kept; a merge changes only the pairs on either side
/// of it, so only those two are looked up again (as tiktoken's `byte_pair_merge` does).
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
    // pairs[i]: rank and merged id of parts i and i + 1, if they merge
    let mut pairs: Vec<Option<(u32, u32)>> =
        parts.windows(2).map(|w| rank(word, &w[0], &w[1])).collect();
    loop {
        // the adjacent pair with the lowest rank (learned earliest); the leftmost on a tie
        let mut best: Option<(u32, usize, u32)> = None;
        for (i, p) in pairs.iter().enumerate() {
            if let Some((r, id)) = *p {
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
        pairs.remove(i);
        if i < pairs.len() {
            pairs[i] = rank(word, &parts[i], &parts[i + 1]);
        }
        if i > 0 {
            pairs[i - 1] = rank(word, &parts[i - 1], &parts[i]);
        }
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
        let mut encoder = FastMap::default();
        encoder.reserve(decoder.len());
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

    /// [`Tokenizer::encode_ordinary`] appending to `out`.
    pub fn encode_ordinary_into(&self, text: &str, out: &mut Vec<usize>) {
        if !self.pretokenize {
            self.encode_word(text.as_bytes(), out);
            return;
        }
        for_each_word(text, |w| self.encode_word(w.as_bytes(), out));
    }

    /// The id of the token with these bytes.
    fn id_of(&self, bytes: &[u8]) -> Option<u32> {
        self.encoder.get(bytes).copied()
    }

    fn encode_word(&self, word: &[u8], out: &mut Vec<usize>) {
        if let Some(id) = self.id_of(word) {
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
                |w, l, r| self.id_of(&w[l.start..r.end]).map(|id| (id, id)),
                out,
            ),
            MergeRanks::ByPair(pairs) => bpe_merge(
                word,
                &self.byte_ids,
                |w, l, r| {
                    let rank = *pairs.get(&(l.id, r.id))?;
                    Some((rank, self.id_of(&w[l.start..r.end])?))
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
        // and on real text, when the book's short story is there
        let verdict = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/the-verdict.txt");
        if let Ok(text) = std::fs::read_to_string(&verdict) {
            let want: Vec<usize> = reference
                .encode_ordinary(&text)
                .into_iter()
                .map(|x| x as usize)
                .collect();
            assert_eq!(tok.encode_ordinary(&text), want);
        }
    }

    /// The words of `text` by the full pattern, lookahead included (fancy-regex, as tiktoken).
    fn oracle_words(text: &str) -> Vec<String> {
        static RE: OnceLock<fancy_regex::Regex> = OnceLock::new();
        let re = RE.get_or_init(|| fancy_regex::Regex::new(GPT2_PATTERN).unwrap());
        re.find_iter(text)
            .map(|m| m.unwrap().as_str().to_string())
            .collect()
    }

    fn words(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for_each_word(text, |w| out.push(w.to_string()));
        out
    }

    #[test]
    fn words_match_the_pattern_with_its_lookahead() {
        for text in [
            "a  \nb",
            "a \n\n b",
            "line one\r\nline two\r\n\r\n  indented\tand\ttabbed   \n",
            "   leading and trailing   ",
            "x\u{a0}\u{a0}y \u{3000}z\u{2028}\u{2028} w",
            "it's 'twas they'll  I'M don't's",
            "   ",
            "\n",
            "1 22  333\t\t4444",
            "naïve café — “quotes” 🎉🎉 日本語のテキスト",
        ] {
            assert_eq!(words(text), oracle_words(text), "{text:?}");
        }
        // every mix of a few characters of each kind, up to length 5
        let alphabet = [' ', '\n', '\t', 'a', '1', '.', '\'', 's', '\u{a0}', 'é'];
        let mut text = String::new();
        let mut n = 0u64;
        while n < 10u64.pow(5) {
            text.clear();
            let mut k = n;
            for _ in 0..5 {
                text.push(alphabet[(k % 10) as usize]);
                k /= 10;
            }
            assert_eq!(words(&text), oracle_words(&text), "{text:?}");
            n += 1;
        }
        let verdict = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/the-verdict.txt");
        if let Ok(text) = std::fs::read_to_string(&verdict) {
            assert_eq!(words(&text), oracle_words(&text));
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
