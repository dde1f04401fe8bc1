//! Looking inside the model for one prompt: the numbers behind `scratchgpt inspect`'s figures,
//! as pure functions of a model and token ids.
//!
//! - [`trace`] runs the model's own forward pass (the same layers and the same fused kernels
//!   training uses) and keeps what each block computes inside.
//! - **Attention** (book sections 3.3–3.6): every head's weights, and per head a few numbers
//!   that describe its pattern ([`head_stats`]): the entropy of its rows, the share of
//!   attention on the previous token, on the first token and on the token itself, and a label
//!   ([`HeadKind`]) when one of those shares is at least [`LABEL_SHARE`].
//! - **Logit lens** ([`logit_lens`]; the output head of section 4.6 applied early): the
//!   residual stream after the embeddings and after every block, passed through the final
//!   layer norm and the output head, as if the model stopped there: the top next tokens at
//!   each layer and position, and the rank of the model's final prediction at each layer.
//! - **Layer norm** ([`layer_norm_stats`], section 4.2): the mean and standard deviation of the
//!   activations going into and out of every layer norm, before and after the learned scale
//!   and shift, and those parameters' own statistics.

use tensor::{no_grad, Tensor};

use crate::block::BlockTrace;
use crate::gpt::GptModel;
use crate::layer_norm::LayerNorm;

/// What the model computed for one sequence of ids (batch 1).
pub struct Trace {
    /// Each block's inside, in order.
    pub blocks: Vec<BlockTrace>,
    /// The residual stream `[1, T, C]` after the embeddings (index 0) and after each block
    /// (index l + 1): `n_layers + 1` entries; the last is the final layer norm's input.
    pub residuals: Vec<Tensor>,
    /// The final layer norm's output `[1, T, C]`.
    pub final_norm_out: Tensor,
    /// The model's logits `[1, T, V]`.
    pub logits: Tensor,
}

/// Runs `model` on `ids` (one sequence, at most the context length) with dropout off and no
/// gradients, keeping every block's inside. Leaves the model in evaluation mode.
pub fn trace(model: &GptModel, ids: &[usize]) -> Trace {
    let _g = no_grad();
    model.eval();
    let mut x = model.drop_emb.forward(&model.embed(ids, 1, 0));
    let mut residuals = vec![x.clone()];
    let mut blocks = Vec::with_capacity(model.trf_blocks.len());
    for block in &model.trf_blocks {
        let (out, t) = block.forward_traced(&x);
        blocks.push(t);
        residuals.push(out.clone());
        x = out;
    }
    let final_norm_out = model.final_norm.forward(&x);
    let logits = model.out_head.forward(&final_norm_out);
    Trace {
        blocks,
        residuals,
        final_norm_out,
        logits,
    }
}

// ------------------------------------------------------------------------------- attention

/// A head is labelled with a kind ([`HeadKind`]) when its mean share of attention on that kind
/// of key ([`HeadStats`]) is at least this: most of the attention, and (since from row 2 on the
/// first, previous and current tokens are three different keys) at most one kind can reach it.
pub const LABEL_SHARE: f32 = 0.6;

/// Query rows from this one on count in [`HeadStats`]: rows 0 and 1 have fewer than three
/// distinct keys (row 0 sees only itself; in row 1 the previous token is the first token).
pub const FIRST_COUNTED_ROW: usize = 2;

/// The pattern a head clearly follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadKind {
    /// Attends to the token just before the query (position i − 1).
    PreviousToken,
    /// Attends to the first token whatever the query: an "attention sink".
    FirstToken,
    /// Attends to the query's own token (the diagonal).
    SelfToken,
}

impl HeadKind {
    pub fn name(self) -> &'static str {
        match self {
            HeadKind::PreviousToken => "previous-token",
            HeadKind::FirstToken => "first-token sink",
            HeadKind::SelfToken => "diagonal (self)",
        }
    }
}

/// Numbers describing one head's attention weights over a prompt, each a mean over the query
/// rows `i ≥ FIRST_COUNTED_ROW` (NaN when the prompt is shorter than 3 tokens).
#[derive(Clone, Debug, PartialEq)]
pub struct HeadStats {
    pub layer: usize,
    pub head: usize,
    /// Entropy of a row, −Σ p·log₂ p, in bits: 0 for a head that looks at one token, log₂(i+1)
    /// for one that spreads evenly over the i + 1 keys row i may see.
    pub entropy_bits: f32,
    /// That entropy as a share of the uniform row's (1: evenly spread, 0: one key).
    pub entropy_ratio: f32,
    /// Weight on key i − 1.
    pub previous: f32,
    /// Weight on key 0.
    pub first: f32,
    /// Weight on key i.
    pub itself: f32,
    /// The kind whose share is at least [`LABEL_SHARE`], if any.
    pub kind: Option<HeadKind>,
}

/// [`HeadStats`] of one head's `T×T` weights `w` (row-major, row i = query i).
pub fn head_stats(w: &[f32], t: usize, layer: usize, head: usize) -> HeadStats {
    assert_eq!(
        w.len(),
        t * t,
        "head_stats: {} weights for T = {t}",
        w.len()
    );
    let rows: Vec<usize> = (FIRST_COUNTED_ROW..t).collect();
    let mean = |f: &dyn Fn(usize, &[f32]) -> f64| -> f32 {
        if rows.is_empty() {
            return f32::NAN;
        }
        let s: f64 = rows.iter().map(|&i| f(i, &w[i * t..(i + 1) * t])).sum();
        (s / rows.len() as f64) as f32
    };
    let entropy = |row: &[f32]| -> f64 {
        row.iter()
            .filter(|&&p| p > 0.0)
            .map(|&p| -(p as f64) * (p as f64).log2())
            .sum()
    };
    let entropy_bits = mean(&|_, row| entropy(row));
    let uniform_bits = mean(&|i, _| ((i + 1) as f64).log2());
    let previous = mean(&|i, row| row[i - 1] as f64);
    let first = mean(&|_, row| row[0] as f64);
    let itself = mean(&|i, row| row[i] as f64);
    let kind = [
        (HeadKind::PreviousToken, previous),
        (HeadKind::FirstToken, first),
        (HeadKind::SelfToken, itself),
    ]
    .into_iter()
    .find(|&(_, share)| share >= LABEL_SHARE)
    .map(|(k, _)| k);
    HeadStats {
        layer,
        head,
        entropy_bits,
        entropy_ratio: entropy_bits / uniform_bits,
        previous,
        first,
        itself,
        kind,
    }
}

/// Every head's weights as `[layer][head]` → `T×T` row-major, from a [`Trace`].
pub fn attention_weights(trace: &Trace) -> Vec<Vec<Vec<f32>>> {
    trace
        .blocks
        .iter()
        .map(|b| {
            let w = &b.attn_weights; // [1, NH, T, T]
            let (nh, t) = (w.size(1), w.size(2));
            let v = w.to_vec();
            (0..nh)
                .map(|h| v[h * t * t..(h + 1) * t * t].to_vec())
                .collect()
        })
        .collect()
}

/// [`head_stats`] of every head, layer by layer.
pub fn attention_stats(weights: &[Vec<Vec<f32>>], t: usize) -> Vec<HeadStats> {
    weights
        .iter()
        .enumerate()
        .flat_map(|(l, heads)| {
            heads
                .iter()
                .enumerate()
                .map(move |(h, w)| head_stats(w, t, l, h))
        })
        .collect()
}

// ------------------------------------------------------------------------------- logit lens

/// The logit lens over a prompt: rows are layers (0 = the embeddings alone, l = after block
/// l), columns positions.
#[derive(Clone, Debug)]
pub struct LogitLens {
    /// `[layer][position]` → the `k` most likely next tokens `(id, probability)`, best first.
    pub top: Vec<Vec<Vec<(usize, f32)>>>,
    /// `[layer][position]` → the rank (0 = most likely) of the model's final prediction at
    /// that position, among the layer's next-token probabilities.
    pub final_rank: Vec<Vec<usize>>,
    /// The model's final prediction (its most likely next token) at each position.
    pub final_prediction: Vec<usize>,
}

/// Logits `[1, T, V]` the model would give if the residual stream `residual` `[1, T, C]` were
/// the last block's output: the final layer norm, then the output head.
pub fn lens_logits(model: &GptModel, residual: &Tensor) -> Tensor {
    let _g = no_grad();
    model.out_head.forward(&model.final_norm.forward(residual))
}

/// The logit lens of a [`Trace`], keeping the `k` most likely tokens per cell.
pub fn logit_lens(model: &GptModel, trace: &Trace, k: usize) -> LogitLens {
    let v = model.cfg.vocab_size;
    let final_logits = trace.logits.to_vec();
    let final_prediction: Vec<usize> = final_logits.chunks(v).map(argmax).collect();
    let mut top = Vec::new();
    let mut final_rank = Vec::new();
    for residual in &trace.residuals {
        // one layer at a time: T·V values, not layers·T·V
        let probs = lens_logits(model, residual).softmax(-1).to_vec();
        let rows: Vec<&[f32]> = probs.chunks(v).collect();
        top.push(rows.iter().map(|p| top_k(p, k)).collect());
        final_rank.push(
            rows.iter()
                .zip(&final_prediction)
                .map(|(p, &id)| p.iter().filter(|&&q| q > p[id]).count())
                .collect(),
        );
    }
    LogitLens {
        top,
        final_rank,
        final_prediction,
    }
}

fn argmax(xs: &[f32]) -> usize {
    xs.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv {
                (i, x)
            } else {
                (bi, bv)
            }
        })
        .0
}

/// The `k` largest entries `(index, value)`, largest first (ties: lower index first).
pub fn top_k(xs: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..xs.len()).collect();
    let k = k.min(xs.len());
    if k == 0 {
        return Vec::new();
    }
    let by_value = |a: &usize, b: &usize| xs[*b].total_cmp(&xs[*a]).then(a.cmp(b));
    idx.select_nth_unstable_by(k - 1, by_value);
    idx.truncate(k);
    idx.sort_by(by_value);
    idx.into_iter().map(|i| (i, xs[i])).collect()
}

// ------------------------------------------------------------------------------- layer norm

/// A mean and a standard deviation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeanStd {
    pub mean: f32,
    pub std: f32,
}

/// The mean and the (biased, as layer norm uses) standard deviation of `xs`, in f64.
pub fn mean_std(xs: &[f32]) -> MeanStd {
    let n = xs.len().max(1) as f64;
    let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    MeanStd {
        mean: mean as f32,
        std: var.sqrt() as f32,
    }
}

/// Per-token statistics averaged over the tokens: for each row of `x` (`[.., C]`: one token's
/// vector, what layer norm normalises) its mean and std over the C channels, then the average
/// of those over the rows.
pub fn token_mean_std(x: &[f32], c: usize) -> MeanStd {
    let per: Vec<MeanStd> = x.chunks(c).map(mean_std).collect();
    let n = per.len().max(1) as f32;
    MeanStd {
        mean: per.iter().map(|m| m.mean).sum::<f32>() / n,
        std: per.iter().map(|m| m.std).sum::<f32>() / n,
    }
}

/// One layer norm's statistics over a prompt ([`token_mean_std`] of each activation).
#[derive(Clone, Debug, PartialEq)]
pub struct NormStats {
    /// The layer norm's parameter name prefix (`trf_blocks.0.norm1`, …, `final_norm`).
    pub name: String,
    /// What goes in: the residual stream.
    pub input: MeanStd,
    /// `(x − mean)/√(var + ε)`, before the learned scale and shift: mean 0, std ≈ 1.
    pub normalized: MeanStd,
    /// What comes out: `scale · normalized + shift`.
    pub output: MeanStd,
    /// The learned scale (PyTorch's `weight`) over its C entries.
    pub scale: MeanStd,
    /// The learned shift (PyTorch's `bias`) over its C entries.
    pub shift: MeanStd,
}

/// `(x − mean)/√(var + ε)` row by row (rows of `c` values): layer norm before its scale and
/// shift (book listing 4.2's `norm_x`).
pub fn normalize_rows(x: &[f32], c: usize, eps: f32) -> Vec<f32> {
    x.chunks(c)
        .flat_map(|row| {
            let m = mean_std(row);
            let inv = 1.0 / ((m.std as f64).powi(2) + eps as f64).sqrt();
            row.iter()
                .map(move |&v| ((v as f64 - m.mean as f64) * inv) as f32)
        })
        .collect()
}

fn norm_stats(name: String, ln: &LayerNorm, input: &Tensor, output: &Tensor) -> NormStats {
    let c = input.size(-1);
    let x = input.to_vec();
    NormStats {
        name,
        input: token_mean_std(&x, c),
        normalized: token_mean_std(&normalize_rows(&x, c, ln.eps), c),
        output: token_mean_std(&output.to_vec(), c),
        scale: mean_std(&ln.scale.to_vec()),
        shift: mean_std(&ln.shift.to_vec()),
    }
}

/// [`NormStats`] of every layer norm in model order: each block's `norm1` and `norm2`, then
/// `final_norm`.
pub fn layer_norm_stats(model: &GptModel, trace: &Trace) -> Vec<NormStats> {
    let mut out = Vec::new();
    for (l, (block, t)) in model.trf_blocks.iter().zip(&trace.blocks).enumerate() {
        let name = |n: &str| format!("trf_blocks.{l}.{n}");
        out.push(norm_stats(
            name("norm1"),
            &block.norm1,
            &t.norm1_in,
            &t.norm1_out,
        ));
        out.push(norm_stats(
            name("norm2"),
            &block.norm2,
            &t.norm2_in,
            &t.norm2_out,
        ));
    }
    let last = trace.residuals.last().expect("the embeddings at least");
    out.push(norm_stats(
        "final_norm".into(),
        &model.final_norm,
        last,
        &trace.final_norm_out,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GptConfig;
    use crate::module::Context;
    use crate::testing::assert_close;

    use crate::testing::{
        model_with_known_heads, KNOWN_HEADS_BETA as BETA, KNOWN_HEADS_THETA as THETA,
    };

    /// The hand formula: row i of a head whose scores are `score(i, j)`, softmax over j ≤ i,
    /// with the 1/√HS = 1/√2 scaling.
    fn expected_row(i: usize, score: impl Fn(usize, usize) -> f64) -> Vec<f64> {
        let s: Vec<f64> = (0..=i).map(|j| score(i, j) / 2f64.sqrt()).collect();
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
        let z: f64 = e.iter().sum();
        e.iter().map(|x| x / z).collect()
    }

    #[test]
    fn hand_made_heads_have_the_expected_weights_and_labels() {
        let model = model_with_known_heads();
        let t = 7;
        let tr = trace(&model, &[1, 2, 3, 4, 0, 1, 2]);
        let w = attention_weights(&tr);
        let b = BETA as f64;
        let scores: [&dyn Fn(usize, usize) -> f64; 3] = [
            &|i, j| 3.0 * b * (THETA * (i as f64 - 1.0 - j as f64)).cos(),
            &|_, j| 3f64.sqrt() * b * (THETA * j as f64).cos(),
            &|i, j| 3.0 * b * (THETA * (i as f64 - j as f64)).cos(),
        ];
        for (h, score) in scores.iter().enumerate() {
            for i in 0..t {
                let want = expected_row(i, score);
                for j in 0..t {
                    let got = w[0][h][i * t + j] as f64;
                    let want = want.get(j).copied().unwrap_or(0.0); // masked keys are 0
                    assert!(
                        (got - want).abs() < 1e-3,
                        "head {h} row {i} key {j}: {got} vs {want}"
                    );
                }
            }
        }
        let stats = attention_stats(&w, t);
        let kinds: Vec<Option<HeadKind>> = stats.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                Some(HeadKind::PreviousToken),
                Some(HeadKind::FirstToken),
                Some(HeadKind::SelfToken)
            ]
        );
        // the shares are the hand weights averaged over rows 2..T
        let mean_over_rows = |h: usize, key: &dyn Fn(usize) -> usize| -> f64 {
            (2..t)
                .map(|i| expected_row(i, scores[h])[key(i)])
                .sum::<f64>()
                / (t - 2) as f64
        };
        assert!((stats[0].previous as f64 - mean_over_rows(0, &|i| i - 1)).abs() < 1e-3);
        assert!((stats[1].first as f64 - mean_over_rows(1, &|_| 0)).abs() < 1e-3);
        assert!((stats[2].itself as f64 - mean_over_rows(2, &|i| i)).abs() < 1e-3);
        assert!(stats[0].previous > 0.95 && stats[0].entropy_bits < 0.5);
    }

    #[test]
    fn stats_of_small_hand_matrices() {
        // T = 3, rows 0 and 1 are not counted; row 2 = [0.25, 0.25, 0.5]
        let w = [1.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.25, 0.25, 0.5];
        let s = head_stats(&w, 3, 0, 0);
        assert_eq!((s.first, s.previous, s.itself), (0.25, 0.25, 0.5));
        // −(2·0.25·log₂ 0.25 + 0.5·log₂ 0.5) = 1 + 0.5 = 1.5 bits, of log₂ 3 for uniform
        assert!((s.entropy_bits - 1.5).abs() < 1e-6);
        assert!((s.entropy_ratio - 1.5 / 3f32.log2()).abs() < 1e-6);
        assert_eq!(s.kind, None, "no share reaches {LABEL_SHARE}");
        // too short to say anything
        let s = head_stats(&[1.0, 0.0, 0.5, 0.5], 2, 0, 0);
        assert!(s.previous.is_nan() && s.kind.is_none());
    }

    #[test]
    fn the_lens_at_the_last_layer_is_the_models_own_output() {
        let cfg = GptConfig {
            vocab_size: 17,
            context_length: 8,
            emb_dim: 8,
            n_heads: 2,
            n_layers: 3,
            drop_rate: 0.1,
            qkv_bias: false,
            tie_weights: false,
        };
        let model = GptModel::new(&cfg, &Context::new(4)).unwrap();
        let ids = [3, 1, 4, 1, 5, 9, 2];
        let tr = trace(&model, &ids);
        assert_eq!(tr.residuals.len(), 4);
        let logits = model.forward(&ids, 1);
        assert_close(&tr.logits, &logits, 1e-6);
        assert_close(
            &lens_logits(&model, tr.residuals.last().unwrap()),
            &logits,
            1e-6,
        );
        let lens = logit_lens(&model, &tr, 3);
        assert_eq!(lens.top.len(), 4);
        let probs = logits.softmax(-1).to_vec();
        for (pos, p) in probs.chunks(17).enumerate() {
            // last layer: the final prediction is rank 0, its probability the softmax's
            assert_eq!(lens.final_rank[3][pos], 0);
            let (id, prob) = lens.top[3][pos][0];
            assert_eq!(id, lens.final_prediction[pos]);
            assert!((prob - p[id]).abs() < 1e-6);
            assert!(lens.top[3][pos][1].1 <= prob);
        }
    }

    #[test]
    fn top_k_and_ranks_by_hand() {
        assert_eq!(
            top_k(&[0.1, 0.5, 0.2, 0.5], 3),
            [(1, 0.5), (3, 0.5), (2, 0.2)]
        );
        assert_eq!(argmax(&[0.1, 0.7, 0.2]), 1);
    }

    #[test]
    fn layer_norm_statistics_by_hand() {
        // one token [1, 2, 3, 4]: mean 2.5, variance (2.25 + 0.25 + 0.25 + 2.25)/4 = 1.25
        let m = mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m.mean, 2.5);
        assert!((m.std - 1.25f32.sqrt()).abs() < 1e-6);
        let n = normalize_rows(&[1.0, 2.0, 3.0, 4.0], 4, 0.0);
        let want = [-1.5, -0.5, 0.5, 1.5].map(|v: f32| v / 1.25f32.sqrt());
        assert!(n.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6));

        // in a model with a learned scale of 2 and shift of 3 in norm1: before the scale every
        // token has mean 0 and std 1; after, mean 3 and std 2
        let model = model_with_known_heads();
        let ln = &model.trf_blocks[0].norm1;
        ln.scale.copy_from_slice(&[2.0; 6]);
        ln.shift.copy_from_slice(&[3.0; 6]);
        let tr = trace(&model, &[0, 1, 2, 3]);
        let stats = layer_norm_stats(&model, &tr);
        let names: Vec<&str> = stats.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["trf_blocks.0.norm1", "trf_blocks.0.norm2", "final_norm"]
        );
        let s = &stats[0];
        // the input: positions embedded with mean 0 and std 1/√3
        assert!(s.input.mean.abs() < 1e-6 && (s.input.std - 1.0 / 3f32.sqrt()).abs() < 1e-6);
        assert!(s.normalized.mean.abs() < 1e-5, "{:?}", s.normalized);
        // ε = 1e-5 against a variance of 1/3: std = √(var/(var + ε)) = 1 − 1.5e-5
        assert!((s.normalized.std - 1.0).abs() < 1e-4, "{:?}", s.normalized);
        assert!((s.output.mean - 3.0).abs() < 1e-4 && (s.output.std - 2.0).abs() < 1e-4);
        assert_eq!(
            s.scale,
            MeanStd {
                mean: 2.0,
                std: 0.0
            }
        );
        assert_eq!(
            s.shift,
            MeanStd {
                mean: 3.0,
                std: 0.0
            }
        );
        for s in &stats {
            assert!(s.normalized.mean.abs() < 1e-4 && (s.normalized.std - 1.0).abs() < 1e-2);
        }
    }
}
