//! Learning a byte-level BPE vocabulary from text (the book's "BPE from scratch" bonus).
//!
//! 1. Split the text into words with GPT-2's pattern and count each distinct word.
//! 2. Start with every word as a list of byte ids (0–255).
//! 3. Repeat until the vocabulary is big enough: find the most frequent adjacent pair of ids
//!    over all words (counting each word as often as it occurs), give the pair a new id, and
//!    replace it everywhere. The order of these merges is the tokenizer's merge list.
//!
//! Pair counts are kept up to date incrementally (only words containing the merged pair are
//! recounted), and the most frequent pair comes from a max-heap, so training scales to
//! megabytes of text. Ties go to the smallest pair of ids, so the result is deterministic.

use std::collections::{BinaryHeap, HashMap, HashSet};

use super::{for_each_word, MergeRanks, Tokenizer, TokenizerError, TokenizerKind, END_OF_TEXT};

use std::sync::atomic::{AtomicBool, Ordering};

type Pair = (u32, u32);

fn pairs_of(word: &[u32]) -> impl Iterator<Item = Pair> + '_ {
    word.windows(2).map(|w| (w[0], w[1]))
}

impl Tokenizer {
    /// Learns a vocabulary of at most `vocab_size` ids (256 bytes + merges + `<|endoftext|>`)
    /// from `text`. Stops early when no pair occurs twice. `progress(done, wanted)` is called
    /// after each merge.
    pub fn train_bpe(
        text: &str,
        vocab_size: usize,
        progress: impl FnMut(usize, usize),
    ) -> Result<Tokenizer, TokenizerError> {
        let never = AtomicBool::new(false);
        Self::train_bpe_until_stopped(text, vocab_size, progress, &never)
            .map(|t| t.expect("learning that is never stopped ends with a tokenizer"))
    }

    /// [`Tokenizer::train_bpe`] that gives up, returning `None`, once `stop` is set (by Ctrl-C:
    /// learning a large vocabulary from a large text takes minutes). `stop` is read after the
    /// words are counted and after every merge.
    pub fn train_bpe_until_stopped(
        text: &str,
        vocab_size: usize,
        mut progress: impl FnMut(usize, usize),
        stop: &AtomicBool,
    ) -> Result<Option<Tokenizer>, TokenizerError> {
        if vocab_size < 257 {
            return Err(TokenizerError(format!(
                "a byte-level BPE needs a vocabulary of at least 257 (256 bytes + <|endoftext|>), got {vocab_size}"
            )));
        }
        let wanted = vocab_size - 257;
        // 1. distinct words and their counts (in first-seen order, for determinism)
        let mut index: super::FastMap<&str, usize> = super::FastMap::default();
        let mut words: Vec<Vec<u32>> = Vec::new();
        let mut counts: Vec<i64> = Vec::new();
        for piece in text.split(END_OF_TEXT) {
            for_each_word(piece, |w| {
                let i = *index.entry(w).or_insert_with(|| {
                    words.push(w.bytes().map(u32::from).collect());
                    counts.push(0);
                    words.len() - 1
                });
                counts[i] += 1;
            });
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        // 2. pair counts and where each pair occurs
        let mut pair_count: HashMap<Pair, i64> = HashMap::new();
        let mut pair_words: HashMap<Pair, HashSet<usize>> = HashMap::new();
        for (i, w) in words.iter().enumerate() {
            for p in pairs_of(w) {
                *pair_count.entry(p).or_default() += counts[i];
                pair_words.entry(p).or_default().insert(i);
            }
        }
        let mut heap: BinaryHeap<(i64, std::cmp::Reverse<Pair>)> = pair_count
            .iter()
            .map(|(&p, &c)| (c, std::cmp::Reverse(p)))
            .collect();
        let mut decoder: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut ranks: super::FastMap<Pair, u32> = super::FastMap::default();
        // 3. merge the most frequent pair, again and again
        while ranks.len() < wanted {
            let Some((count, std::cmp::Reverse(pair))) = heap.pop() else {
                break;
            };
            if pair_count.get(&pair) != Some(&count) {
                continue; // stale heap entry
            }
            if count < 2 {
                break;
            }
            let new_id = decoder.len() as u32;
            let merged = [
                decoder[pair.0 as usize].clone(),
                decoder[pair.1 as usize].clone(),
            ]
            .concat();
            decoder.push(merged);
            ranks.insert(pair, ranks.len() as u32);
            let mut touched: Vec<usize> = pair_words
                .remove(&pair)
                .unwrap_or_default()
                .into_iter()
                .collect();
            touched.sort_unstable();
            let mut changed: HashSet<Pair> = HashSet::new();
            for wi in touched {
                let c = counts[wi];
                let old = std::mem::take(&mut words[wi]);
                for p in pairs_of(&old) {
                    *pair_count.get_mut(&p).unwrap() -= c;
                    changed.insert(p);
                }
                let mut new = Vec::with_capacity(old.len());
                let mut j = 0;
                while j < old.len() {
                    if j + 1 < old.len() && (old[j], old[j + 1]) == pair {
                        new.push(new_id);
                        j += 2;
                    } else {
                        new.push(old[j]);
                        j += 1;
                    }
                }
                for p in pairs_of(&new) {
                    *pair_count.entry(p).or_default() += c;
                    pair_words.entry(p).or_default().insert(wi);
                    changed.insert(p);
                }
                words[wi] = new;
            }
            pair_count.remove(&pair);
            let mut changed: Vec<Pair> = changed.into_iter().collect();
            changed.sort_unstable();
            for p in changed {
                if let Some(&c) = pair_count.get(&p) {
                    if c > 0 {
                        heap.push((c, std::cmp::Reverse(p)));
                    }
                }
            }
            progress(ranks.len(), wanted);
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
        }
        decoder.push(END_OF_TEXT.as_bytes().to_vec());
        Tokenizer::from_parts(TokenizerKind::Bpe, decoder, MergeRanks::ByPair(ranks), true)
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_stops_when_asked() {
        let text = "low lower lowest newer wider ".repeat(30);
        let stop = AtomicBool::new(false);
        let mut merges = 0;
        let tok = Tokenizer::train_bpe_until_stopped(
            &text,
            300,
            |done, _| {
                merges = done;
                if done == 3 {
                    stop.store(true, Ordering::Relaxed);
                }
            },
            &stop,
        )
        .unwrap();
        assert!(
            tok.is_none() && merges == 3,
            "stopped after the third merge"
        );
        // set before it starts: not even the words' pairs are counted
        let tok = Tokenizer::train_bpe_until_stopped(&text, 300, |_, _| panic!("merged"), &stop);
        assert!(tok.unwrap().is_none());
    }

    #[test]
    fn learns_frequent_pairs_and_round_trips() {
        let text = "the cat sat on the mat; the cat ate the rat. ".repeat(20);
        let tok = Tokenizer::train_bpe(&text, 300, |_, _| {}).unwrap();
        assert!(tok.vocab_size() > 257);
        let ids = tok.encode(&text);
        assert!(
            ids.len() < text.len() / 3,
            "BPE should compress: {} ids for {} bytes",
            ids.len(),
            text.len()
        );
        assert_eq!(tok.decode(&ids).unwrap(), text);
        // " the" is frequent enough to become one token
        assert_eq!(tok.encode(" the").len(), 1);
        let unseen = "zebra ñandú 🎉";
        assert_eq!(tok.decode(&tok.encode(unseen)).unwrap(), unseen);
    }

    #[test]
    fn training_is_deterministic_and_saves_and_loads() {
        let text = "low lower lowest newer wider ".repeat(30);
        let a = Tokenizer::train_bpe(&text, 280, |_, _| {}).unwrap();
        let b = Tokenizer::train_bpe(&text, 280, |_, _| {}).unwrap();
        assert_eq!(a.encode(&text), b.encode(&text));
        let dir = std::env::temp_dir().join(format!("scratchgpt-bpe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in a.files() {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        let c = Tokenizer::load(&dir).unwrap();
        assert_eq!(c.encode(&text), a.encode(&text));
        assert_eq!(c.vocab_size(), a.vocab_size());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_too_small_vocabularies() {
        assert!(Tokenizer::train_bpe("abc", 100, |_, _| {}).is_err());
    }
}
