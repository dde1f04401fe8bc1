//! Data for next-token prediction (book section 2.6).
//!
//! A long sequence of token ids is cut into windows of `max_length` ids; the target of each
//! window is the same window shifted one token to the right, so position i learns to predict
//! token i + 1. Windows start every `stride` tokens (stride = max_length: no overlap).
//! ```text
//! ids:     [ 40, 367, 2885, 1464, 1807, 3619, 402, 271, ... ]
//! input:   [ 40, 367, 2885, 1464 ]          max_length = 4
//! target:  [367, 2885, 1464, 1807 ]
//! ```
//! [`DataLoader`] groups windows into batches, optionally shuffled each epoch with the run's
//! generator, and drops a last short batch if asked (the book's `drop_last=True` for training).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tensor::Rng;

use crate::error::TrainError;
use crate::shards::Shard;

/// Where the windows' tokens live.
#[derive(Clone, Debug)]
enum Source {
    /// One sequence in memory (a tokenized text file).
    Memory(Vec<usize>),
    /// Token shards read window by window; windows never cross from one shard into the next.
    /// `first_window[k]` is the index of shard k's first window (one more entry at the end:
    /// the total).
    Shards {
        shards: Vec<Arc<Shard>>,
        first_window: Vec<usize>,
        vocab_size: usize,
    },
}

/// The book's `GPTDatasetV1`: overlapping or disjoint windows over a token sequence, in memory
/// or in token shards ([`crate::shards`]).
#[derive(Clone, Debug)]
pub struct TokenWindows {
    source: Source,
    pub max_length: usize,
    pub stride: usize,
    len: usize,
}

/// Windows in a sequence of `n` tokens: the starts `range(0, n - max_length, stride)`.
fn windows_in(n: u64, max_length: usize, stride: usize) -> usize {
    (n.saturating_sub(max_length as u64)).div_ceil(stride as u64) as usize
}

impl TokenWindows {
    /// Windows of `max_length` over `tokens`, starting every `stride` tokens, as the book's
    /// `range(0, len(ids) - max_length, stride)`. Errors (as text for the user) when the
    /// sizes are zero or the sequence is too short for even one window.
    pub fn new(
        tokens: Vec<usize>,
        max_length: usize,
        stride: usize,
    ) -> Result<TokenWindows, String> {
        if max_length == 0 || stride == 0 {
            return Err("max_length and stride must be at least 1".into());
        }
        if tokens.len() <= max_length {
            return Err(format!(
                "{} tokens are not enough for one window of {max_length} tokens plus its next-token target",
                tokens.len()
            ));
        }
        let len = windows_in(tokens.len() as u64, max_length, stride);
        Ok(TokenWindows {
            source: Source::Memory(tokens),
            max_length,
            stride,
            len,
        })
    }

    /// Windows over token shards, each shard cut as [`TokenWindows::new`] cuts a sequence
    /// (a shard's tail shorter than a window plus its target is not used). Ids are checked
    /// against `vocab_size` as windows are read. Errors when no shard holds one window.
    pub fn from_shards(
        shards: Vec<Arc<Shard>>,
        max_length: usize,
        stride: usize,
        vocab_size: usize,
    ) -> Result<TokenWindows, String> {
        if max_length == 0 || stride == 0 {
            return Err("max_length and stride must be at least 1".into());
        }
        let mut first_window = vec![0];
        for s in &shards {
            let n = first_window.last().unwrap() + windows_in(s.tokens, max_length, stride);
            first_window.push(n);
        }
        let len = *first_window.last().unwrap();
        if len == 0 {
            let tokens: u64 = shards.iter().map(|s| s.tokens).sum();
            return Err(format!(
                "{tokens} tokens are not enough for one window of {max_length} tokens plus its next-token target"
            ));
        }
        Ok(TokenWindows {
            source: Source::Shards {
                shards,
                first_window,
                vocab_size,
            },
            max_length,
            stride,
            len,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Window `i`: (input ids, target ids), each `max_length` long.
    pub fn window(&self, i: usize) -> Result<(Vec<usize>, Vec<usize>), TrainError> {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        self.append_window(i, &mut x, &mut y, &mut Vec::new())?;
        Ok((x, y))
    }

    /// Appends window `i`'s inputs and targets to `inputs` and `targets` (`buf`: scratch
    /// space for reading shards).
    fn append_window(
        &self,
        i: usize,
        inputs: &mut Vec<usize>,
        targets: &mut Vec<usize>,
        buf: &mut Vec<u8>,
    ) -> Result<(), TrainError> {
        assert!(i < self.len, "TokenWindows: window {i} of {}", self.len);
        let l = self.max_length;
        match &self.source {
            Source::Memory(tokens) => {
                let s = i * self.stride;
                inputs.extend_from_slice(&tokens[s..s + l]);
                targets.extend_from_slice(&tokens[s + 1..s + 1 + l]);
            }
            Source::Shards {
                shards,
                first_window,
                vocab_size,
            } => {
                // the shard holding window i: the last k with first_window[k] <= i
                let k = first_window.partition_point(|&w| w <= i) - 1;
                let start = ((i - first_window[k]) * self.stride) as u64;
                let at = inputs.len();
                inputs.resize(at + l + 1, 0);
                shards[k].read(start, &mut inputs[at..], *vocab_size, buf)?;
                targets.extend_from_slice(&inputs[at + 1..]);
                inputs.pop();
            }
        }
        Ok(())
    }

    /// The whole token sequence, when it is in memory (text data).
    pub fn in_memory_tokens(&self) -> Option<&[usize]> {
        match &self.source {
            Source::Memory(t) => Some(t),
            Source::Shards { .. } => None,
        }
    }

    /// Tokens in the sequence or shards (used or not by a window).
    pub fn total_tokens(&self) -> u64 {
        match &self.source {
            Source::Memory(t) => t.len() as u64,
            Source::Shards { shards, .. } => shards.iter().map(|s| s.tokens).sum(),
        }
    }
}

/// The order in which one pass visits a data set's examples.
///
/// Text data keep the book's explicit list (drawn as PyTorch's `DataLoader` draws it under
/// `--book-compat`). Token shards can hold billions of windows: their epochs visit a
/// pseudo-random permutation computed from a 64-bit key ([`EpochOrder::Permuted`]), so neither
/// memory nor checkpoints hold a list, and a resumed run continues at the same window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EpochOrder {
    /// Every index, in visiting order.
    Listed(Vec<usize>),
    /// A permutation of `0..len` given by `key` ([`permuted_index`]).
    Permuted { len: usize, key: u64 },
    /// `0, 1, …, len - 1`.
    Sequential { len: usize },
}

impl Default for EpochOrder {
    fn default() -> Self {
        EpochOrder::Listed(Vec::new())
    }
}

impl EpochOrder {
    pub fn len(&self) -> usize {
        match self {
            EpochOrder::Listed(v) => v.len(),
            EpochOrder::Permuted { len, .. } | EpochOrder::Sequential { len } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this is a whole pass over `n` examples: each index visited below `n` (what a
    /// saved order read back must be before it is used).
    pub fn covers(&self, n: usize) -> bool {
        self.len() == n
            && match self {
                EpochOrder::Listed(v) => v.iter().all(|&i| i < n),
                EpochOrder::Permuted { .. } | EpochOrder::Sequential { .. } => true,
            }
    }

    /// The `i`-th example visited.
    pub fn get(&self, i: usize) -> usize {
        match self {
            EpochOrder::Listed(v) => v[i],
            &EpochOrder::Permuted { len, key } => permuted_index(i, len, key),
            EpochOrder::Sequential { .. } => i,
        }
    }

    /// The examples visited `start..end` (clipped to the pass).
    pub fn range(&self, start: usize, end: usize) -> Vec<usize> {
        (start..end.min(self.len())).map(|i| self.get(i)).collect()
    }
}

/// Position `i` of a pseudo-random permutation of `0..n` chosen by `key`, in O(1) time and
/// memory: a four-round Feistel network is a bijection on the `2^(2h)` numbers of `2h` bits
/// (the smallest such power of four ≥ n); values that land at n or above are encrypted again
/// ("cycle walking") until they fall below n, which keeps it a bijection on `0..n`. Fewer than
/// four rounds of walking are needed on average.
pub fn permuted_index(i: usize, n: usize, key: u64) -> usize {
    assert!(i < n, "permuted_index: index {i} of a permutation of {n}");
    let bits = (usize::BITS - (n.max(2) - 1).leading_zeros())
        .div_ceil(2)
        .max(1);
    let mask = (1u64 << bits) - 1;
    let round = |r: u64, x: u64| {
        // SplitMix64's finaliser as the round function
        let mut z = x ^ key.rotate_left(17 * r as u32) ^ r.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) & mask
    };
    let mut x = i as u64;
    loop {
        let (mut left, mut right) = (x >> bits, x & mask);
        for r in 0..4 {
            (left, right) = (right, left ^ round(r, right));
        }
        x = (left << bits) | right;
        if (x as usize) < n {
            return x as usize;
        }
    }
}

/// One batch: `batch` rows of `seq_len` ids, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub inputs: Vec<usize>,
    pub targets: Vec<usize>,
    pub batch: usize,
    pub seq_len: usize,
}

/// Batches over a [`TokenWindows`] dataset.
#[derive(Clone, Debug)]
pub struct DataLoader {
    pub data: TokenWindows,
    pub batch_size: usize,
    pub shuffle: bool,
    pub drop_last: bool,
}

impl DataLoader {
    pub fn new(
        data: TokenWindows,
        batch_size: usize,
        shuffle: bool,
        drop_last: bool,
    ) -> DataLoader {
        assert!(batch_size > 0, "DataLoader: batch_size must be at least 1");
        DataLoader {
            data,
            batch_size,
            shuffle,
            drop_last,
        }
    }

    /// Number of batches per epoch.
    pub fn num_batches(&self) -> usize {
        if self.drop_last {
            self.data.len() / self.batch_size
        } else {
            self.data.len().div_ceil(self.batch_size)
        }
    }

    /// The order in which one epoch visits the windows. Text: shuffled with `rng` when
    /// `shuffle` is set (one Fisher–Yates pass), else 0, 1, 2, …. Shards: a permutation drawn
    /// as one 64-bit key, or in file order.
    pub fn epoch_order(&self, rng: &mut Rng) -> EpochOrder {
        let len = self.data.len();
        match (&self.data.source, self.shuffle) {
            (Source::Memory(_), shuffle) => EpochOrder::Listed(rng.epoch_permutation(len, shuffle)),
            (Source::Shards { .. }, true) => EpochOrder::Permuted {
                len,
                key: rng.next_u64(),
            },
            (Source::Shards { .. }, false) => EpochOrder::Sequential { len },
        }
    }

    /// Every window in file order.
    pub fn in_order(&self) -> EpochOrder {
        EpochOrder::Sequential {
            len: self.data.len(),
        }
    }

    /// Batch `b` of an epoch visiting windows in `order`. Errors only for shards (a read
    /// error, an id outside the vocabulary), naming the file.
    pub fn batch(&self, order: &EpochOrder, b: usize) -> Result<Batch, TrainError> {
        let start = b * self.batch_size;
        self.batch_of(&order.range(start, start + self.batch_size))
    }

    /// The batch of the windows `rows`.
    pub fn batch_of(&self, rows: &[usize]) -> Result<Batch, TrainError> {
        let l = self.data.max_length;
        let mut inputs = Vec::with_capacity(rows.len() * (l + 1));
        let mut targets = Vec::with_capacity(rows.len() * l);
        let mut buf = Vec::new();
        for &i in rows {
            self.data
                .append_window(i, &mut inputs, &mut targets, &mut buf)?;
        }
        Ok(Batch {
            inputs,
            targets,
            batch: rows.len(),
            seq_len: l,
        })
    }
}

/// Splits text into a training and a validation part at `train_ratio` of its characters
/// (the book's `split_idx = int(train_ratio * len(text))`).
pub fn split_text(text: &str, train_ratio: f64) -> (&str, &str) {
    let n_chars = text.chars().count();
    let split_chars = (train_ratio * n_chars as f64) as usize;
    let byte = text
        .char_indices()
        .nth(split_chars)
        .map(|(b, _)| b)
        .unwrap_or(text.len());
    text.split_at(byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_targets_shift_by_one() {
        let ds = TokenWindows::new((0..10).collect(), 4, 1).unwrap();
        assert_eq!(ds.len(), 6); // starts 0..=5
        assert_eq!(ds.window(0).unwrap(), (vec![0, 1, 2, 3], vec![1, 2, 3, 4]));
        assert_eq!(ds.window(5).unwrap(), (vec![5, 6, 7, 8], vec![6, 7, 8, 9]));
        let ds = TokenWindows::new((0..10).collect(), 4, 4).unwrap();
        assert_eq!(ds.len(), 2);
        assert!(TokenWindows::new((0..4).collect(), 4, 4)
            .unwrap_err()
            .contains("not enough"));
    }

    #[test]
    fn loader_batches_drop_last_and_shuffles_deterministically() {
        let ds = TokenWindows::new((0..50).collect(), 4, 4).unwrap(); // 12 windows
        let dl = DataLoader::new(ds.clone(), 5, false, true);
        assert_eq!(dl.num_batches(), 2);
        let order = dl.epoch_order(&mut Rng::seed(0));
        let b = dl.batch(&order, 0).unwrap();
        assert_eq!((b.batch, b.seq_len), (5, 4));
        assert_eq!(&b.inputs[..4], &[0, 1, 2, 3]);
        assert_eq!(
            DataLoader::new(ds.clone(), 5, false, false).num_batches(),
            3
        );
        let sh = DataLoader::new(ds, 5, true, true);
        let (a, b) = (
            sh.epoch_order(&mut Rng::seed(1)),
            sh.epoch_order(&mut Rng::seed(1)),
        );
        assert_eq!(a, b);
        assert_ne!(a, EpochOrder::Listed((0..12).collect()));
    }

    #[test]
    fn split_counts_characters() {
        let (a, b) = split_text("ab—cdefghij", 0.3); // 11 chars → 3 in training
        assert_eq!((a, b), ("ab—", "cdefghij"));
    }

    #[test]
    fn permuted_orders_visit_every_window_once() {
        for n in [1, 2, 3, 7, 64, 100, 1000, 4097] {
            for key in [0, 1, 0xdead_beef] {
                let mut seen: Vec<usize> = (0..n).map(|i| permuted_index(i, n, key)).collect();
                seen.sort();
                assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n {n} key {key}");
            }
        }
        let a = EpochOrder::Permuted { len: 1000, key: 1 }.range(0, 1000);
        let b = EpochOrder::Permuted { len: 1000, key: 2 }.range(0, 1000);
        assert_ne!(a, b);
        assert_ne!(a, (0..1000).collect::<Vec<_>>());
        // neighbours in the order are far apart in the data, on average
        let jumps: usize = a.windows(2).map(|w| w[0].abs_diff(w[1])).sum::<usize>() / 999;
        assert!(jumps > 200, "mean jump {jumps}");
    }

    #[test]
    fn orders_keep_their_checkpoint_form() {
        // older checkpoints store the order as a plain list
        let old: EpochOrder = serde_json::from_str("[2, 0, 1]").unwrap();
        assert_eq!(old, EpochOrder::Listed(vec![2, 0, 1]));
        for o in [
            EpochOrder::Permuted {
                len: 10,
                key: u64::MAX,
            },
            EpochOrder::Sequential { len: 10 },
            EpochOrder::Listed(vec![3, 1]),
        ] {
            let text = serde_json::to_string(&o).unwrap();
            assert_eq!(
                serde_json::from_str::<EpochOrder>(&text).unwrap(),
                o,
                "{text}"
            );
        }
    }

    #[test]
    fn shard_windows_are_the_windows_of_each_shard() {
        use crate::shards::{ShardWriter, TokenWidth};
        let dir = std::env::temp_dir().join(format!("scratchgpt-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let parts: [Vec<u32>; 3] = [
            (0..23).collect(),
            (100..103).collect(),
            (200..230).collect(),
        ];
        let shards: Vec<Arc<Shard>> = parts
            .iter()
            .enumerate()
            .map(|(k, ids)| {
                let path = dir.join(format!("t_train_{k:06}.bin"));
                let mut w = ShardWriter::create(&path, TokenWidth::U16).unwrap();
                w.write(ids).unwrap();
                w.finish().unwrap();
                Arc::new(Shard::open(&path).unwrap())
            })
            .collect();
        let ds = TokenWindows::from_shards(shards.clone(), 4, 3, 1000).unwrap();
        // the same windows as each shard's tokens cut in memory, shard after shard
        let mut want = Vec::new();
        for ids in &parts {
            let ids: Vec<usize> = ids.iter().map(|&t| t as usize).collect();
            if let Ok(w) = TokenWindows::new(ids, 4, 3) {
                want.extend((0..w.len()).map(|i| w.window(i).unwrap()));
            }
        }
        assert_eq!(ds.len(), want.len());
        assert_eq!(ds.len(), 7 + 9); // the 3-token shard is too short for a window
        let got: Vec<_> = (0..ds.len()).map(|i| ds.window(i).unwrap()).collect();
        assert_eq!(got, want);
        let dl = DataLoader::new(ds, 4, true, true);
        let order = dl.epoch_order(&mut Rng::seed(3));
        assert!(matches!(order, EpochOrder::Permuted { len: 16, .. }));
        let b = dl.batch(&order, 1).unwrap();
        assert_eq!((b.batch, b.inputs.len(), b.targets.len()), (4, 16, 16));
        // an id outside the vocabulary is an error naming the shard
        let small = TokenWindows::from_shards(shards, 4, 3, 150).unwrap();
        let e = small.window(10).unwrap_err().0;
        assert!(
            e.contains("t_train_000002.bin") && e.contains("outside the vocabulary"),
            "{e}"
        );
    }
}
