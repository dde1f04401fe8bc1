//! Classification fine-tuning's model (book chapter 6): a pretrained GPT whose output head is
//! replaced by a new one with one logit per class, read at one position of the text.
//!
//! ```text
//! ids [B, L] ──GPT body──▶ hidden [B, L, C] ──pool──▶ [B, C] ──head (C → K, with bias)──▶ logits [B, K]
//! ```
//! The book (section 6.5) keeps the GPT's last position: `model(x)[:, -1, :]`. Texts are
//! right-padded to one length, so for short texts that position holds a padding token; the
//! book's own follow-up experiments measured the last *real* token better (98.33% against
//! 95.00% test accuracy on the spam data). [`Pool`] offers both, the first token and the mean.
//! Pooling happens on the hidden states, before the head: the head is linear, so this equals
//! reading the logits at that position (or averaging them), at a fraction of the cost.
//!
//! Which parameters train ([`Trainable`]) is the other choice of section 6.5: by default only
//! the last transformer block, the final layer norm and the new head; everything else is
//! frozen, so its backward pass is never computed.
//!
//! The GPT's own language-model head stays in the model (unused here), so a classifier's
//! directory is still a GPT-2 checkpoint that other tools load; the classification head is
//! stored beside it (see the train crate's `finetune` module).

use tensor::Tensor;

use crate::gpt::GptModel;
use crate::linear::Linear;
use crate::module::{join, Context, Module};

/// Which position of a text the class is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// The last position of the padded sequence (the book's choice: `[:, -1, :]`).
    Last,
    /// The last token of the text itself, before the padding.
    LastTokenOfText,
    /// The mean over the text's tokens (padding excluded).
    Mean,
    /// The first token (the book's exercise 6.3).
    First,
}

impl Pool {
    pub const NAMES: [&'static str; 4] = ["last", "last-token-of-text", "mean", "first"];

    pub fn parse(s: &str) -> Result<Pool, String> {
        Ok(match s {
            "last" => Pool::Last,
            "last-token-of-text" => Pool::LastTokenOfText,
            "mean" => Pool::Mean,
            "first" => Pool::First,
            _ => {
                return Err(format!(
                    "unknown pooling {s:?}; choose one of {}",
                    Pool::NAMES.join(", ")
                ))
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Pool::Last => "last",
            Pool::LastTokenOfText => "last-token-of-text",
            Pool::Mean => "mean",
            Pool::First => "first",
        }
    }

    /// The pooling weights `[B, 1, L]`: row b averages the positions this pooling reads for a
    /// text of `lengths[b]` real tokens (a one-hot row for a single position).
    pub fn weights(self, lengths: &[usize], seq_len: usize) -> Tensor {
        let mut w = vec![0.0f32; lengths.len() * seq_len];
        for (row, &len) in w.chunks_mut(seq_len).zip(lengths) {
            let len = len.clamp(1, seq_len);
            match self {
                Pool::Last => row[seq_len - 1] = 1.0,
                Pool::LastTokenOfText => row[len - 1] = 1.0,
                Pool::First => row[0] = 1.0,
                Pool::Mean => row[..len].iter_mut().for_each(|x| *x = 1.0 / len as f32),
            }
        }
        Tensor::from_vec(w, &[lengths.len(), 1, seq_len])
    }
}

/// Which parameters train during fine-tuning; the rest are frozen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trainable {
    /// Only the new head.
    Head,
    /// The last `k` transformer blocks, the final layer norm and the head (the book: k = 1).
    LastBlocks(usize),
    /// Every parameter.
    All,
}

impl Trainable {
    /// `head`, `last-block`, `last:K` or `all`.
    pub fn parse(s: &str) -> Result<Trainable, String> {
        match s {
            "head" => Ok(Trainable::Head),
            "last-block" => Ok(Trainable::LastBlocks(1)),
            "all" => Ok(Trainable::All),
            _ => match s.strip_prefix("last:").map(str::parse::<usize>) {
                Some(Ok(k)) if k >= 1 => Ok(Trainable::LastBlocks(k)),
                _ => Err(format!(
                    "unknown --trainable {s:?}; use head, last-block, last:K (K ≥ 1) or all"
                )),
            },
        }
    }
}

impl std::fmt::Display for Trainable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trainable::Head => write!(f, "head"),
            Trainable::LastBlocks(1) => write!(f, "last-block"),
            Trainable::LastBlocks(k) => write!(f, "last:{k}"),
            Trainable::All => write!(f, "all"),
        }
    }
}

/// A GPT with a classification head (book listing 6.x: `model.out_head = Linear(emb_dim, 2)`).
pub struct Classifier {
    pub gpt: GptModel,
    /// `[n_classes, emb_dim]` weight and `[n_classes]` bias.
    pub head: Linear,
    pub pool: Pool,
}

impl Classifier {
    /// A new head of `n_classes` outputs on `gpt`, initialised like `nn.Linear` from `ctx`.
    pub fn new(gpt: GptModel, n_classes: usize, pool: Pool, ctx: &Context) -> Classifier {
        let head = Linear::new(gpt.cfg.emb_dim, n_classes, true, ctx);
        Classifier { gpt, head, pool }
    }

    pub fn n_classes(&self) -> usize {
        self.head.weight.shape()[0]
    }

    /// Class logits `[B, K]` for `B` rows of token ids (`ids.len() = B·L`) whose texts are
    /// `lengths[b]` tokens long before the padding.
    #[track_caller]
    pub fn forward(&self, ids: &[usize], lengths: &[usize]) -> Tensor {
        let batch = lengths.len();
        let hidden = self.gpt.hidden_states(ids, batch); // [B, L, C]
        let seq_len = hidden.shape()[1];
        let pooled = self.pool.weights(lengths, seq_len).matmul(&hidden); // [B, 1, C]
        let c = pooled.shape()[2];
        self.head.forward(&pooled.reshape(&[batch, c]))
    }

    /// Freezes every parameter, then lets `which` train again.
    pub fn set_trainable(&self, which: Trainable) {
        for p in self.gpt.parameters() {
            p.set_requires_grad(matches!(which, Trainable::All));
        }
        if let Trainable::LastBlocks(k) = which {
            let n = self.gpt.trf_blocks.len();
            for block in &self.gpt.trf_blocks[n.saturating_sub(k)..] {
                block
                    .parameters()
                    .iter()
                    .for_each(|p| p.set_requires_grad(true));
            }
            for p in self.gpt.final_norm.parameters() {
                p.set_requires_grad(true);
            }
        }
        for p in self.head.parameters() {
            p.set_requires_grad(true);
        }
    }

    /// The parameters that train, with their names (what the optimizer updates).
    pub fn trainable_parameters(&self) -> Vec<(String, Tensor)> {
        self.named_parameters()
            .into_iter()
            .filter(|(_, p)| p.is_requires_grad())
            .collect()
    }

    pub fn train(&self) {
        self.gpt.train();
    }

    pub fn eval(&self) {
        self.gpt.eval();
    }
}

impl Module for Classifier {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.gpt.visit_parameters(prefix, f);
        self.head.visit_parameters(&join(prefix, "classifier"), f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GptConfig;

    fn tiny() -> GptModel {
        let cfg = GptConfig {
            vocab_size: 20,
            context_length: 8,
            emb_dim: 8,
            n_heads: 2,
            n_layers: 2,
            drop_rate: 0.0,
            qkv_bias: true,
            tie_weights: false,
        };
        GptModel::new(&cfg, &Context::new(1)).unwrap()
    }

    #[test]
    fn pooling_reads_the_positions_it_names() {
        let w = |p: Pool| p.weights(&[2, 4], 4).to_vec();
        assert_eq!(w(Pool::Last), [0., 0., 0., 1., 0., 0., 0., 1.]);
        assert_eq!(w(Pool::LastTokenOfText), [0., 1., 0., 0., 0., 0., 0., 1.]);
        assert_eq!(w(Pool::First), [1., 0., 0., 0., 1., 0., 0., 0.]);
        assert_eq!(w(Pool::Mean), [0.5, 0.5, 0., 0., 0.25, 0.25, 0.25, 0.25]);
        for name in Pool::NAMES {
            assert_eq!(Pool::parse(name).unwrap().name(), name);
        }
        assert!(Pool::parse("max").is_err());
    }

    #[test]
    fn pooled_logits_equal_the_head_read_at_that_position() {
        // the book's way: apply the head everywhere and read position len-1
        let ctx = Context::new(2);
        let c = Classifier::new(tiny(), 3, Pool::LastTokenOfText, &ctx);
        let ids = [1, 2, 3, 0, 4, 5, 6, 7];
        let got = c.forward(&ids, &[3, 4]).to_vec();
        let all = c.head.forward(&c.gpt.hidden_states(&ids, 2)).to_vec(); // [2, 4, 3]
        let want: Vec<f32> = [&all[2 * 3..3 * 3], &all[(4 + 3) * 3..(4 + 4) * 3]].concat();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn frozen_parts_get_no_gradients_and_the_counts_add_up() {
        let ctx = Context::new(3);
        let c = Classifier::new(tiny(), 2, Pool::Last, &ctx);
        c.set_trainable(Trainable::LastBlocks(1));
        let block = c.gpt.trf_blocks[1].num_parameters();
        let norm = c.gpt.final_norm.num_parameters();
        assert_eq!(c.num_trainable_parameters(), block + norm + 8 * 2 + 2);
        let loss = c.forward(&[1, 2, 3, 4, 5, 6, 7, 8], &[8]).sum_all();
        loss.backward();
        assert!(c.gpt.trf_blocks[0]
            .parameters()
            .iter()
            .all(|p| p.grad().is_none()));
        assert!(c.gpt.tok_emb.weight.grad().is_none());
        assert!(c.gpt.trf_blocks[1]
            .parameters()
            .iter()
            .all(|p| p.grad().is_some()));
        assert!(c.head.weight.grad().is_some());
        c.set_trainable(Trainable::Head);
        assert_eq!(c.num_trainable_parameters(), 8 * 2 + 2);
        c.set_trainable(Trainable::All);
        assert_eq!(c.num_trainable_parameters(), c.num_parameters());
        assert_eq!(Trainable::parse("last:2"), Ok(Trainable::LastBlocks(2)));
        assert_eq!(
            Trainable::parse("last-block").unwrap().to_string(),
            "last-block"
        );
        assert!(Trainable::parse("last:0").is_err());
    }

    #[test]
    fn gradient_check_through_the_pooling_and_head() {
        use crate::testing::check_parameter_gradients;
        use tensor::testing::GradcheckOptions;
        let ctx = Context::new(4);
        let c = Classifier::new(tiny(), 2, Pool::Mean, &ctx);
        c.eval();
        let opts = GradcheckOptions {
            max_elements: 12,
            ..Default::default()
        };
        check_parameter_gradients(
            &c,
            || c.forward(&[1, 2, 3, 4, 5, 6, 7, 8], &[3, 8]),
            &mut tensor::Rng::seed(5),
            opts,
        )
        .unwrap();
    }
}
