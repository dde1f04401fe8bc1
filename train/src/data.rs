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

use tensor::Rng;

/// The book's `GPTDatasetV1`: overlapping or disjoint windows over one token sequence.
#[derive(Clone, Debug)]
pub struct TokenWindows {
    tokens: Vec<usize>,
    pub max_length: usize,
    pub stride: usize,
    starts: Vec<usize>,
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
        let starts = (0..tokens.len() - max_length).step_by(stride).collect();
        Ok(TokenWindows {
            tokens,
            max_length,
            stride,
            starts,
        })
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Window `i`: (input ids, target ids), each `max_length` long.
    pub fn get(&self, i: usize) -> (&[usize], &[usize]) {
        let s = self.starts[i];
        (
            &self.tokens[s..s + self.max_length],
            &self.tokens[s + 1..s + 1 + self.max_length],
        )
    }

    pub fn tokens(&self) -> &[usize] {
        &self.tokens
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

    /// The order in which one epoch visits the windows: shuffled with `rng` when `shuffle` is
    /// set (one Fisher–Yates pass), else 0, 1, 2, ….
    pub fn epoch_order(&self, rng: &mut Rng) -> Vec<usize> {
        rng.epoch_permutation(self.data.len(), self.shuffle)
    }

    /// Batch `b` of an epoch visiting windows in `order`.
    pub fn batch(&self, order: &[usize], b: usize) -> Batch {
        let start = b * self.batch_size;
        let end = (start + self.batch_size).min(order.len());
        let l = self.data.max_length;
        let mut inputs = Vec::with_capacity((end - start) * l);
        let mut targets = Vec::with_capacity((end - start) * l);
        for &i in &order[start..end] {
            let (x, y) = self.data.get(i);
            inputs.extend_from_slice(x);
            targets.extend_from_slice(y);
        }
        Batch {
            inputs,
            targets,
            batch: end - start,
            seq_len: l,
        }
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
        assert_eq!(ds.get(0), (&[0, 1, 2, 3][..], &[1, 2, 3, 4][..]));
        assert_eq!(ds.get(5), (&[5, 6, 7, 8][..], &[6, 7, 8, 9][..]));
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
        let b = dl.batch(&order, 0);
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
        assert_ne!(a, (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn split_counts_characters() {
        let (a, b) = split_text("ab—cdefghij", 0.3); // 11 chars → 3 in training
        assert_eq!((a, b), ("ab—", "cdefghij"));
    }
}
