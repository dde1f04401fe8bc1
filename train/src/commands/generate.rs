//! `scratchgpt generate`: continue a prompt (book sections 4.7 and 5.3), streaming the tokens;
//! the sampling flags, prompt cropping and streaming are shared with `chat`.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use model::generate::{generate, GenerateOptions, Sampling};
use model::{Context, GptModel};
use tensor::Rng;

use crate::error::TrainError;
use crate::lora::load_with_adapters;
use crate::tokenizer::Tokenizer;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A run directory (its latest checkpoint), one checkpoint directory, a Hugging Face
    /// GPT-2 directory (config.json + model.safetensors), or a GPT-2 name (gpt2, gpt2-medium,
    /// gpt2-large, gpt2-xl: from the Hugging Face cache, downloaded when missing).
    #[arg(long, value_name = "DIR|NAME")]
    pub checkpoint: PathBuf,
    /// The text to continue. A prompt longer than the model's context keeps its last tokens
    /// (with a notice).
    #[arg(long, value_name = "TEXT")]
    pub prompt: String,
    /// Tokens to generate, at most (generation stops early at end-of-text).
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub max_new_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Recompute the whole prefix for every token instead of using the KV cache (slower, same
    /// tokens).
    #[arg(long)]
    pub no_cache: bool,
}

/// How the next token is chosen: the flags `generate` and `chat` share.
#[derive(Args, Debug)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 is greedy decoding (always the most likely token), as in the
    /// book.
    #[arg(
        long,
        default_value_t = 0.0,
        allow_negative_numbers = true,
        value_name = "T"
    )]
    pub temperature: f32,
    /// Sample only among the K most likely tokens; needs --temperature above 0 [default: all].
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probabilities add up to P (0 < P ≤ 1);
    /// needs --temperature above 0 [default: off].
    #[arg(long, allow_negative_numbers = true, value_name = "P")]
    pub top_p: Option<f32>,
    /// Seed of the sampling generator.
    #[arg(long, default_value_t = 123, value_name = "N")]
    pub seed: u64,
}

impl SamplingArgs {
    /// The sampling rule, checked (see [`sampling_from_flags`]).
    pub fn sampling(&self) -> Result<Sampling, TrainError> {
        sampling_from_flags(self.temperature, self.top_k, self.top_p)
    }

    /// `--top-k` or `--top-p` beside greedy decoding (`--temperature 0`, the default), which
    /// they could not change: flags that contradict each other, a usage error (exit 2).
    pub fn contradiction(&self) -> Option<String> {
        greedy_contradiction(self.temperature, self.top_k, self.top_p)
    }
}

fn greedy_contradiction(
    temperature: f32,
    top_k: Option<usize>,
    top_p: Option<f32>,
) -> Option<String> {
    let flag = [("--top-k", top_k.is_some()), ("--top-p", top_p.is_some())]
        .into_iter()
        .find(|&(_, given)| given && temperature == 0.0)?
        .0;
    Some(format!(
        "{flag} has no effect with --temperature 0 (greedy decoding always takes the most likely token); give a temperature above 0 to sample"
    ))
}

/// The sampling rule the flags ask for: greedy at temperature 0 (where `--top-k`/`--top-p`
/// would have no effect, so giving them is an error), else temperature with top-k / top-p.
pub fn sampling_from_flags(
    temperature: f32,
    top_k: Option<usize>,
    top_p: Option<f32>,
) -> Result<Sampling, TrainError> {
    if let Some(e) = greedy_contradiction(temperature, top_k, top_p) {
        return Err(TrainError(e));
    }
    let sampling = Sampling {
        temperature,
        top_k,
        top_p,
    };
    sampling.validate()?;
    Ok(sampling)
}

/// The prompt's ids, keeping the last `context` of them with a notice when it is longer.
pub fn crop_prompt(mut prompt: Vec<usize>, context: usize) -> Vec<usize> {
    if prompt.len() > context {
        eprintln!(
            "note: the prompt is {} tokens, more than the model's context of {context}; only its last {context} tokens are used",
            prompt.len()
        );
        prompt.drain(..prompt.len() - context);
    }
    prompt
}

/// Generates after `prompt`, printing each token to standard output as soon as its bytes form
/// whole UTF-8 characters (end-of-text ends the text and is not printed).
pub fn stream_to_stdout(
    model: &GptModel,
    tok: &Tokenizer,
    prompt: &[usize],
    opts: &GenerateOptions,
    rng: &mut Rng,
) {
    let mut out = std::io::stdout().lock();
    let mut pending: Vec<u8> = Vec::new();
    let mut stream = |id: usize| {
        if Some(id) == tok.end_of_text() {
            return;
        }
        if let Ok(b) = tok.decode_bytes(&[id]) {
            pending.extend_from_slice(&b);
        }
        let valid = match std::str::from_utf8(&pending) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(), // wait for the rest of a character
            Err(_) => pending.len(),
        };
        let _ = out.write_all(String::from_utf8_lossy(&pending[..valid]).as_bytes());
        let _ = out.flush();
        pending.drain(..valid);
    };
    generate(model, prompt, opts, rng, &mut stream);
    let _ = writeln!(std::io::stdout());
}

pub fn generate_command(a: &GenerateArgs) -> Result<i32, TrainError> {
    let sampling = a.sampling.sampling()?;
    if a.prompt.is_empty() {
        return Err(TrainError("--prompt must not be empty".into()));
    }
    let ctx = Context::for_loading();
    let (model, tok) = load_with_adapters(&a.checkpoint, &ctx)?;
    let prompt = crop_prompt(tok.encode(&a.prompt), model.cfg.context_length);
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        sampling,
        eos_id: tok.end_of_text(),
        use_cache: !a.no_cache,
        id_limit: Some(tok.vocab_size()),
    };
    print!("{}", a.prompt);
    stream_to_stdout(
        &model,
        &tok,
        &prompt,
        &opts,
        &mut Rng::seed(a.sampling.seed),
    );
    Ok(0)
}
