//! Turning logits into text (book sections 4.7 and 5.3).
//!
//! Each step feeds the sequence so far (cropped to the context length) to the model, takes the
//! logits of the last position, picks a next token and appends it.
//! - **Greedy** (4.7, `generate_text_simple`): the arg-max token.
//! - **Temperature** (5.3.1): divide the logits by T before the softmax, then sample. T < 1
//!   sharpens the distribution, T > 1 flattens it; T = 0 means greedy.
//! - **Top-k** (5.3.2): keep only the k largest logits (the others become −∞).
//! - **Top-p / nucleus**: keep the smallest set of tokens whose probabilities add up to p.
//!
//! [`generate`] can use a KV cache so that each new token costs one position's work instead
//! of re-running the whole prefix; `model/src/gpt.rs` tests that both give the same logits.

use tensor::{no_grad, Rng, Tensor};

use crate::attention::KvCache;
use crate::gpt::GptModel;

/// How the next token is chosen from the logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0 = greedy (arg-max); otherwise the logits are divided by it before sampling.
    pub temperature: f32,
    /// Keep only the k most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches p, in (0, 1].
    pub top_p: Option<f32>,
}

impl Sampling {
    pub fn greedy() -> Sampling {
        Sampling {
            temperature: 0.0,
            top_k: None,
            top_p: None,
        }
    }

    /// Checks the values, naming the wrong one (these usually come from a command line).
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!(
                "temperature must be 0 or a positive finite number, got {}",
                self.temperature
            ));
        }
        if self.top_k == Some(0) {
            return Err("top-k must be at least 1".into());
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(format!("top-p must be in (0, 1], got {p}"));
            }
        }
        Ok(())
    }
}

/// Index of the largest value (the first on ties).
pub fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// Probabilities after temperature, top-k and top-p (zeros for excluded tokens).
pub fn next_token_probabilities(logits: &[f32], s: &Sampling) -> Vec<f32> {
    let mut l: Vec<f32> = logits.to_vec();
    if let Some(k) = s.top_k {
        if k < l.len() {
            // the k-th largest value is the threshold (book: logits < top_logits[-1] → −∞)
            let mut sorted = l.clone();
            sorted.sort_unstable_by(|a, b| b.total_cmp(a));
            let min_keep = sorted[k - 1];
            l.iter_mut()
                .filter(|x| **x < min_keep)
                .for_each(|x| *x = f32::NEG_INFINITY);
        }
    }
    let t = if s.temperature > 0.0 {
        s.temperature
    } else {
        1.0
    };
    let scaled = Tensor::from_vec(l.iter().map(|x| x / t).collect(), &[l.len()]);
    let mut p = scaled.softmax(0).to_vec();
    if let Some(top_p) = s.top_p {
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        let mut cum = 0.0;
        let mut keep = order.len();
        for (n, &i) in order.iter().enumerate() {
            cum += p[i];
            if cum >= top_p {
                keep = n + 1;
                break;
            }
        }
        for &i in &order[keep..] {
            p[i] = 0.0;
        }
        let total: f32 = p.iter().sum();
        p.iter_mut().for_each(|x| *x /= total);
    }
    p
}

/// Draws an index with probability proportional to `probs` (PyTorch: `torch.multinomial(p, 1)`).
pub fn sample_index(probs: &[f32], rng: &mut Rng) -> usize {
    rng.multinomial(probs)
}

/// Picks the next token from one row of logits.
pub fn sample_next(logits: &[f32], s: &Sampling, rng: &mut Rng) -> usize {
    if s.temperature == 0.0 && s.top_p.is_none() {
        return argmax(logits);
    }
    if s.temperature == 0.0 {
        return argmax(&next_token_probabilities(logits, s));
    }
    sample_index(&next_token_probabilities(logits, s), rng)
}

/// Book listing 4.8: greedy decoding, re-running the (cropped) sequence every step.
/// Returns the prompt followed by `max_new_tokens` new ids.
pub fn generate_text_simple(
    model: &GptModel,
    ids: &[usize],
    max_new_tokens: usize,
    context_size: usize,
) -> Vec<usize> {
    let _g = no_grad();
    let mut ids = ids.to_vec();
    for _ in 0..max_new_tokens {
        let start = ids.len().saturating_sub(context_size);
        let cond = &ids[start..];
        let logits = model.forward(cond, 1); // [1, T, V]
        let last = logits.narrow(1, cond.len() - 1, 1).to_vec();
        ids.push(argmax(&last));
    }
    ids
}

/// Settings of [`generate`].
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Stop after producing this id (GPT-2's `<|endoftext|>` is 50256).
    pub eos_id: Option<usize>,
    /// Reuse keys and values of earlier positions (faster; same result).
    pub use_cache: bool,
    /// Choose only ids below this: a model whose vocabulary was padded past its tokenizer's
    /// (nanoGPT's 50,304 rows for GPT-2's 50,257 ids) has logits for ids no tokenizer can
    /// decode. `None`: every id of the model.
    pub id_limit: Option<usize>,
}

impl GenerateOptions {
    /// The logits sampling may choose from (all of them, or the first `id_limit`).
    fn candidates<'a>(&self, logits: &'a [f32]) -> &'a [f32] {
        match self.id_limit {
            Some(n) if n < logits.len() => &logits[..n],
            _ => logits,
        }
    }
}

/// Generates up to `max_new_tokens` ids after `prompt` (book 5.3 `generate`), calling
/// `on_token` with each new id as it is chosen (for streaming). Returns prompt + new ids.
/// The model is put in eval mode. An empty prompt is a programming error (panics).
#[track_caller]
pub fn generate(
    model: &GptModel,
    prompt: &[usize],
    opts: &GenerateOptions,
    rng: &mut Rng,
    mut on_token: impl FnMut(usize),
) -> Vec<usize> {
    assert!(
        !prompt.is_empty(),
        "generate: the prompt needs at least one token"
    );
    let _g = no_grad();
    model.eval();
    let ctx_len = model.cfg.context_length;
    let mut ids = prompt.to_vec();
    let mut cache = KvCache::new(model.trf_blocks.len());
    let mut fed = 0; // how many of `ids` the cache holds
    for _ in 0..opts.max_new_tokens {
        let logits = if opts.use_cache {
            if ids.len() > ctx_len || fed == 0 {
                // (re)start: the window moved past the context, positions shift, so rebuild
                cache = KvCache::new(model.trf_blocks.len());
                let start = ids.len().saturating_sub(ctx_len);
                fed = ids.len();
                model.forward_cached(&ids[start..], 1, &mut cache)
            } else if cache.len() + (ids.len() - fed) > ctx_len {
                cache = KvCache::new(model.trf_blocks.len());
                let start = ids.len().saturating_sub(ctx_len);
                fed = ids.len();
                model.forward_cached(&ids[start..], 1, &mut cache)
            } else {
                let new = &ids[fed..];
                fed = ids.len();
                model.forward_cached(new, 1, &mut cache)
            }
        } else {
            let start = ids.len().saturating_sub(ctx_len);
            model.forward(&ids[start..], 1)
        };
        let t = logits.size(1);
        let last = logits.narrow(1, t - 1, 1).to_vec();
        let next = sample_next(opts.candidates(&last), &opts.sampling, rng);
        ids.push(next);
        on_token(next);
        if opts.eos_id == Some(next) {
            break;
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GptConfig;
    use crate::module::Context;

    fn model() -> GptModel {
        let cfg = GptConfig {
            vocab_size: 17,
            context_length: 6,
            emb_dim: 8,
            n_heads: 2,
            n_layers: 2,
            drop_rate: 0.1,
            qkv_bias: false,
            tie_weights: false,
        };
        GptModel::new(&cfg, &Context::new(7)).unwrap()
    }

    #[test]
    #[allow(clippy::approx_constant)] // 6.28 is a logit from the book, not 2π
    fn book_next_token_logits_example() {
        // Book 5.3: vocab of 9 words, next_token_logits for "forward" etc.
        let logits = [4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79];
        assert_eq!(argmax(&logits), 3); // "forward"
                                        // top-k = 3 keeps 6.75, 6.28, 4.51: book prints
                                        // tensor([0.0615, 0.0000, 0.0000, 0.5775, 0.0000, 0.0000, 0.0000, 0.3610, 0.0000])
        let p = next_token_probabilities(
            &logits,
            &Sampling {
                temperature: 1.0,
                top_k: Some(3),
                top_p: None,
            },
        );
        let want = [0.0615, 0.0, 0.0, 0.5775, 0.0, 0.0, 0.0, 0.3610, 0.0];
        assert!(
            p.iter().zip(want).all(|(a, b)| (a - b).abs() < 5e-5),
            "{p:?}"
        );
        // top-p = 0.9 keeps "forward" (0.57…) and "toward" (0.34…) at T = 1
        let p = next_token_probabilities(
            &logits,
            &Sampling {
                temperature: 1.0,
                top_k: None,
                top_p: Some(0.9),
            },
        );
        assert_eq!(p.iter().filter(|&&x| x > 0.0).count(), 2);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn sampling_frequencies_follow_the_probabilities() {
        let probs = [0.1, 0.0, 0.6, 0.3];
        let mut rng = Rng::seed(1);
        let mut counts = [0usize; 4];
        for _ in 0..20_000 {
            counts[sample_index(&probs, &mut rng)] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!((counts[2] as f32 / 20_000.0 - 0.6).abs() < 0.02);
    }

    #[test]
    fn greedy_cached_and_uncached_agree_even_past_the_context() {
        let m = model();
        m.eval(); // as the book does before generate_text_simple: dropout off
        let prompt = [1, 2, 3];
        let simple = generate_text_simple(&m, &prompt, 8, 6);
        for use_cache in [false, true] {
            let opts = GenerateOptions {
                max_new_tokens: 8,
                sampling: Sampling::greedy(),
                eos_id: None,
                use_cache,
                id_limit: None,
            };
            let mut streamed = Vec::new();
            let out = generate(&m, &prompt, &opts, &mut Rng::seed(0), |t| streamed.push(t));
            assert_eq!(out, simple, "use_cache = {use_cache}");
            assert_eq!(&out[3..], &streamed[..]);
        }
    }

    #[test]
    fn a_padded_vocabulary_is_never_sampled_past_the_id_limit() {
        let m = model(); // 17 ids; pretend the tokenizer knows only the first 5
        let free = |id_limit| {
            let opts = GenerateOptions {
                max_new_tokens: 200,
                sampling: Sampling {
                    temperature: 5.0, // nearly uniform: every id has a fair chance
                    top_k: None,
                    top_p: None,
                },
                eos_id: None,
                use_cache: true,
                id_limit,
            };
            generate(&m, &[1], &opts, &mut Rng::seed(3), |_| {})
        };
        assert!(free(None).iter().any(|&id| id >= 5), "without a limit");
        assert!(free(Some(5)).iter().all(|&id| id < 5), "with the limit");
    }

    #[test]
    fn stops_at_end_of_text_and_validates() {
        let m = model();
        m.eval();
        let first = generate_text_simple(&m, &[4], 1, 6)[1];
        let opts = GenerateOptions {
            max_new_tokens: 10,
            sampling: Sampling::greedy(),
            eos_id: Some(first),
            use_cache: true,
            id_limit: None,
        };
        assert_eq!(
            generate(&m, &[4], &opts, &mut Rng::seed(0), |_| {}).len(),
            2
        );
        assert!(Sampling {
            temperature: -1.0,
            top_k: None,
            top_p: None
        }
        .validate()
        .is_err());
        assert!(Sampling {
            temperature: 1.0,
            top_k: None,
            top_p: Some(1.5)
        }
        .validate()
        .is_err());
        assert!(Sampling {
            temperature: 1.0,
            top_k: Some(0),
            top_p: None
        }
        .validate()
        .is_err());
    }
}
