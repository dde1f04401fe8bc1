//! The training loop (book section 5.2, `train_model_simple`), with the additions of
//! appendix D (warm-up, cosine decay, gradient clipping) and checkpoints that can be resumed.
//!
//! For every batch: zero the gradients, compute the loss, backpropagate, (clip,) and take an
//! AdamW step. Every `eval_freq` steps, measure the loss on `eval_iter` batches of training and
//! validation data with dropout off; after every epoch, print a greedy sample from a fixed
//! prompt. Everything random (initial weights, shuffling, dropout) comes from one generator
//! seeded by `--seed`, saved in checkpoints, so a run can be repeated and resumed exactly.
//!
//! **Step numbers** count optimizer steps done: "Step 1" is the state after the first update,
//! in the console, in `metrics.csv`, in checkpoint names (`step-00000001`) and in the README
//! alike. (The book prints the 0-based index of the step just taken, so its "Step 000000" is
//! our step 1.)

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use model::generate::{generate, GenerateOptions, Sampling};
use model::{Context, GptModel, Module};
use rayon::prelude::*;
use tensor::{no_grad, AdamW, Optimizer, Rng, Tensor};

use crate::checkpoint::{self, fingerprint, TrainerState};
use crate::collective::{Collective, SingleProcess};
use crate::data::{split_text, DataLoader, EpochOrder, TokenWindows};
use crate::error::{io_error, TrainError};
use crate::memory::check_fits;
use crate::metrics::{loss_plot_svg, to_csv, MetricRecord};
use crate::settings::{TokenizerSpec, TrainSettings};
use crate::token_data::TokenData;
use crate::tokenizer::Tokenizer;
use model::memory::MemoryEstimate;

/// How a run is carried out (as opposed to what is trained: [`TrainSettings`]).
#[derive(Clone, Default)]
pub struct RunOptions {
    /// The run's directory (checkpoints, metrics, plot). The command line prepares it so that
    /// it never holds another run: see [`crate::run_dir`].
    pub out_dir: PathBuf,
    /// The text files trained on, stored in checkpoints so `--resume` finds them again (empty:
    /// the built-in corpus; `None`: not known). Also names the data in messages.
    pub data_files: Option<Vec<PathBuf>>,
    /// Called after every checkpoint is written (the command line uses the first to finish
    /// replacing an old run and to move `runs/latest`).
    pub on_checkpoint: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Continue the run saved in this directory.
    pub resume: Option<PathBuf>,
    /// With `resume`: new limits replacing the saved ones.
    pub resume_epochs: Option<usize>,
    pub resume_max_steps: Option<usize>,
    pub resume_grad_accum: Option<usize>,
    /// With `resume`: a new period of the extra checkpoints (`--save-every`; 0 turns them off).
    pub resume_save_every: Option<usize>,
    /// Set (by Ctrl-C) to stop after the current step, saving a checkpoint.
    pub stop: Arc<AtomicBool>,
    /// Stop as if interrupted once this many steps are done (for tests and experiments).
    pub stop_at_step: Option<usize>,
    /// At an epoch's end, save only if this many seconds passed since the last save (0: always).
    /// Large models take seconds to save; the final, Ctrl-C and `save_every` saves always happen.
    pub min_secs_between_epoch_saves: f64,
    /// Draw a progress bar (only on a terminal).
    pub progress: bool,
    /// Print nothing but errors.
    pub quiet: bool,
    /// The processes training together ([`crate::data_parallel`]); `None`: this one alone.
    pub collective: Option<Arc<dyn Collective>>,
}

impl RunOptions {
    /// The processes training together (one when none were given).
    pub fn collective(&self) -> &dyn Collective {
        self.collective.as_deref().unwrap_or(&SingleProcess)
    }
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub steps: usize,
    pub tokens_seen: u64,
    pub history: Vec<MetricRecord>,
    /// The loss of every optimizer step of this invocation, in order.
    pub step_losses: Vec<f32>,
    pub checkpoint: PathBuf,
    pub interrupted: bool,
    pub train_tokens_per_second: f64,
    pub elapsed_secs: f64,
}

/// Prints log lines above the progress bar (or plainly when there is none).
struct Reporter {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Reporter {
    /// A progress bar over `total` steps, starting at `done` (only on a terminal).
    /// Nothing is shown unless `root` (rank 0 of a data-parallel run, or the only process).
    fn new(opts: &RunOptions, total: usize, done: usize, root: bool) -> Reporter {
        let quiet = opts.quiet || !root;
        let show_bar = opts.progress && !quiet && std::io::stderr().is_terminal();
        let bar = show_bar.then(|| {
            let b = ProgressBar::new(total as u64);
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta}]",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_position(done as u64);
            b
        });
        Reporter { bar, quiet }
    }

    fn progress(&self, step: usize, loss: f32, tokens_per_second: f32) {
        if let Some(b) = &self.bar {
            b.set_position(step as u64);
            b.set_message(format!("loss {loss:.3}  {tokens_per_second:.0} tok/s"));
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    fn line(&self, s: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(b) => b.println(s),
            None => println!("{s}"),
        }
    }
}

/// How messages name a run's data: its files, or the built-in corpus.
pub fn describe_data(files: Option<&[PathBuf]>) -> String {
    match files {
        Some([]) => "the built-in corpus".to_string(),
        Some(files) => files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        None => "the data".to_string(),
    }
}

/// The error of a run stopped by Ctrl-C before its first step (while learning its BPE
/// vocabulary): the command line exits with status 130, having written nothing.
pub const STOPPED_BEFORE_TRAINING: &str =
    "interrupted while learning the BPE vocabulary, before the first step: nothing was written";

/// Builds the tokenizer a run asks for (learning a BPE from `train_text`, the training part of
/// `data`, if needed); `None` if `stop` was set while learning.
pub fn build_tokenizer(
    spec: &TokenizerSpec,
    train_text: &str,
    data: &str,
    report: impl Fn(&str),
    stop: &AtomicBool,
) -> Result<Option<Tokenizer>, TrainError> {
    Ok(Some(match spec {
        TokenizerSpec::Gpt2 => Tokenizer::gpt2()?,
        TokenizerSpec::Bytes => Tokenizer::bytes(),
        TokenizerSpec::Bpe(n) => {
            let t = Instant::now();
            // a progress bar for long vocabularies on big corpora (terminal only)
            let bar = (std::io::stderr().is_terminal() && train_text.len() > 1 << 20).then(|| {
                let b = ProgressBar::new(n.saturating_sub(257) as u64);
                b.set_style(
                    ProgressStyle::with_template(
                        "learning BPE merges {bar:30} {pos}/{len} [{elapsed_precise} < {eta}]",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b
            });
            let learned = Tokenizer::train_bpe_until_stopped(
                train_text,
                *n,
                |done, _| {
                    if let Some(b) = &bar {
                        b.set_position(done as u64);
                    }
                },
                stop,
            )?;
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            let Some(tok) = learned else {
                return Ok(None);
            };
            report(&format!(
                "learned a BPE vocabulary of {} tokens from the {} bytes of training text in {data} in {:.1}s",
                tok.vocab_size(),
                train_text.len(),
                t.elapsed().as_secs_f64()
            ));
            if tok.vocab_size() < *n {
                report(&format!(
                    "warning: too little text for a vocabulary of {n} in {data}: {} bytes of training text gave only {} tokens (give more text or a smaller bpe:N)",
                    train_text.len(),
                    tok.vocab_size()
                ));
            }
            tok
        }
    }))
}

/// Training and validation loaders from the text (the book's 90/10 split by characters);
/// `data` names the text in errors.
pub fn make_loaders(
    text: &str,
    data: &str,
    s: &TrainSettings,
    tok: &Tokenizer,
) -> Result<(DataLoader, DataLoader), TrainError> {
    let (train_text, val_text) = split_text(text, s.train_ratio);
    let windows = |part: &str, what: &str| {
        TokenWindows::new(tok.encode(part), s.context_length, s.stride).map_err(|e| {
            TrainError(format!(
                "{data}: the {what} part of the text is too short: {e} (use more text, a smaller --context-length, or change --train-ratio)"
            ))
        })
    };
    let train = DataLoader::new(windows(train_text, "training")?, s.batch_size, true, true);
    let val = DataLoader::new(windows(val_text, "validation")?, s.batch_size, false, false);
    if train.num_batches() == 0 {
        return Err(TrainError(format!(
            "{data}: the training part makes {} windows, fewer than one batch of {}: lower --batch-size or --context-length",
            train.data.len(),
            s.batch_size
        )));
    }
    Ok((train, val))
}

/// Mean loss over the first `eval_iter` batches of `loader` in order, dropout off, no
/// gradients (the book's `calc_loss_loader`).
pub fn evaluate(
    model: &GptModel,
    loader: &DataLoader,
    eval_iter: usize,
) -> Result<f32, TrainError> {
    evaluate_in_order(model, loader, &loader.in_order(), eval_iter)
}

/// [`evaluate`] over the batches of one pass in `order`.
pub fn evaluate_in_order(
    model: &GptModel,
    loader: &DataLoader,
    order: &EpochOrder,
    eval_iter: usize,
) -> Result<f32, TrainError> {
    let _g = no_grad();
    let n = eval_iter.min(loader.num_batches());
    let mut total = 0.0;
    for b in 0..n {
        let batch = loader.batch(order, b)?;
        total += model
            .forward(&batch.inputs, batch.batch)
            .cross_entropy(&batch.targets)
            .item();
    }
    Ok(total / n.max(1) as f32)
}

/// Global L2 norm of all gradients (appendix D clips it). Each gradient is cut into fixed
/// pieces whose squares are summed in eight f32 lanes; the pieces' sums are added in f64 in
/// order. The pieces run in parallel, and the result has the same bits on any thread count.
pub fn gradient_norm(params: &[Tensor]) -> f32 {
    /// One piece: eight running f32 sums (vectorises), then added up in f64.
    fn squares(xs: &[f32]) -> f64 {
        let mut acc = [0.0f32; 8];
        let mut chunks = xs.chunks_exact(8);
        for c in &mut chunks {
            for k in 0..8 {
                acc[k] += c[k] * c[k];
            }
        }
        let tail: f64 = chunks.remainder().iter().map(|&x| (x * x) as f64).sum();
        acc.iter().map(|&a| a as f64).sum::<f64>() + tail
    }
    const PIECE: usize = 1 << 15;
    let mut sum = 0.0f64;
    for p in params {
        p.with_grad(|g| {
            if let Some(g) = g {
                let pieces: Vec<f64> = g.par_chunks(PIECE).map(squares).collect();
                sum += pieces.iter().sum::<f64>();
            }
        });
    }
    sum.sqrt() as f32
}

/// The greedy continuation of the start context, on one line (book `generate_and_print_sample`,
/// which turns newlines into spaces; here they show as `↵`, so the text's shape stays visible).
///
/// `as_the_book`: recompute the whole window for every new token, as the book's
/// `generate_text_simple` does. `--book-compat` runs sample this way, so their samples are the
/// book's word for word. Otherwise the KV cache computes only the new position each step: the
/// same greedy tokens (the one-token layers sum in another order, which could only change a
/// choice between two logits equal to the last bits), in about a quarter of the time for
/// GPT-2 small (`generate` of 50 tokens as whole processes: 1.8 s against 4.7 s, about 0.9 s
/// of each loading the model; Intel Xeon, 2 threads). On a small corpus, where an epoch is a
/// few steps, the sample is a visible part of a run.
pub fn sample_text(
    model: &GptModel,
    tok: &Tokenizer,
    start: &str,
    n: usize,
    as_the_book: bool,
) -> String {
    let mut ids = tok.encode(start);
    if ids.is_empty() {
        ids = vec![tok.end_of_text().unwrap_or(0)];
    }
    // greedy, choosing only ids the tokenizer can decode (a model may be padded past them:
    // train --vocab-size)
    let opts = GenerateOptions {
        max_new_tokens: n,
        sampling: Sampling::greedy(),
        eos_id: None,
        use_cache: !as_the_book,
        id_limit: Some(tok.vocab_size()),
    };
    let out = generate(model, &ids, &opts, &mut Rng::seed(0), |_| {});
    on_one_line(&tok.decode(&out).unwrap_or_default())
}

/// Text on one console line: newlines shown as `↵`, and the other control characters a
/// young model emits (NUL, escape, DEL, …), which a terminal would act on, as their Unicode
/// pictures (`␀`, `␛`, `␡`; C1 controls as `�`). Tabs stay.
pub fn on_one_line(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' => '↵',
            '\t' => '\t',
            '\x7f' => '␡',
            c if (c as u32) < 0x20 => char::from_u32(0x2400 + c as u32).unwrap_or('�'),
            '\u{80}'..='\u{9f}' => '�',
            c => c,
        })
        .collect()
}

fn write_metrics(out: &Path, history: &[MetricRecord], title: &str) -> Result<(), TrainError> {
    model::weights::write_atomically(&out.join("metrics.csv"), to_csv(history).as_bytes())?;
    model::weights::write_atomically(
        &out.join("loss.svg"),
        loss_plot_svg(history, title).as_bytes(),
    )?;
    Ok(())
}

/// What a run trains on.
#[derive(Clone, Copy)]
pub enum TrainingData<'a> {
    /// Text (files joined with end-of-text, or the built-in corpus): tokenized when the run
    /// starts, split into training and validation parts by characters (`train_ratio`).
    Text(&'a str),
    /// Token shards ([`crate::token_data`]): training and validation files, read window by
    /// window; their tokenizer is the run's.
    Tokens(&'a TokenData),
}

impl<'a> From<&'a str> for TrainingData<'a> {
    fn from(text: &'a str) -> Self {
        TrainingData::Text(text)
    }
}

impl<'a> From<&'a String> for TrainingData<'a> {
    fn from(text: &'a String) -> Self {
        TrainingData::Text(text)
    }
}

impl<'a> From<&'a TokenData> for TrainingData<'a> {
    fn from(data: &'a TokenData) -> Self {
        TrainingData::Tokens(data)
    }
}

/// Training and validation loaders for `data` with the settings' windows and batches, and the
/// data's fingerprint (which `--resume` compares).
fn loaders_for(
    data: TrainingData,
    described: &str,
    s: &TrainSettings,
    tok: &Tokenizer,
) -> Result<(DataLoader, DataLoader, String), TrainError> {
    match data {
        TrainingData::Text(text) => {
            let (train, val) = make_loaders(text, described, s, tok)?;
            let ids = |l: &DataLoader| l.data.in_memory_tokens().unwrap_or_default().to_vec();
            let fp = fingerprint(&[&ids(&train), &ids(&val)]);
            Ok((train, val, fp))
        }
        TrainingData::Tokens(d) => {
            if s.book_compat {
                return Err(TrainError(
                    "--book-compat reproduces the book's text pipeline; it cannot train on token shards (give the text file instead)".into(),
                ));
            }
            if tok.vocab_size() != d.tokenizer.vocab_size() {
                return Err(TrainError(format!(
                    "{described}: the shards hold ids of a {}-token vocabulary, but the run's tokenizer has {}",
                    d.tokenizer.vocab_size(),
                    tok.vocab_size()
                )));
            }
            let windows = |shards: &[std::sync::Arc<crate::shards::Shard>], what: &str| {
                TokenWindows::from_shards(shards.to_vec(), s.context_length, s.stride, tok.vocab_size())
                    .map_err(|e| TrainError(format!("{described}: the {what} shards are too short: {e} (use more data or a smaller --context-length)")))
            };
            let train = DataLoader::new(windows(&d.train, "training")?, s.batch_size, true, true);
            let val = DataLoader::new(windows(&d.val, "validation")?, s.batch_size, false, false);
            if train.num_batches() == 0 {
                return Err(TrainError(format!(
                    "{described}: the training shards make {} windows, fewer than one batch of {}: lower --batch-size or --context-length",
                    train.data.len(),
                    s.batch_size
                )));
            }
            Ok((train, val, d.fingerprint.clone()))
        }
    }
}

/// Trains on `data` and returns how the run went. Errors are for the user: bad settings, data
/// too short or damaged, I/O, non-finite loss.
pub fn run<'a>(
    data_in: impl Into<TrainingData<'a>>,
    settings: TrainSettings,
    opts: &RunOptions,
) -> Result<RunSummary, TrainError> {
    let data_in = data_in.into();
    let start_time = Instant::now();
    let data = describe_data(opts.data_files.as_deref());
    let quiet_line = |s: &str| {
        if !opts.quiet {
            println!("{s}")
        }
    };
    // -------------------------------------------------------------- set up or resume
    let mut need = None; // the memory estimate of a new run, shown with the model summary
    let (model, tok, opt, state, ctx, train, val) = match &opts.resume {
        None => {
            settings.validate()?;
            let ctx = if settings.book_compat {
                Context::book_compat(settings.seed)
            } else {
                Context::new(settings.seed)
            };
            let tok = match data_in {
                TrainingData::Text(text) => {
                    let (train_text, _) = split_text(text, settings.train_ratio);
                    build_tokenizer(
                        &settings.tokenizer,
                        train_text,
                        &data,
                        quiet_line,
                        &opts.stop,
                    )?
                    .ok_or_else(|| TrainError(STOPPED_BEFORE_TRAINING.into()))?
                }
                TrainingData::Tokens(d) => d.tokenizer.clone(),
            };
            settings
                .check_vocab_size(tok.vocab_size(), &settings.tokenizer.to_string())
                .map_err(|e| match data_in {
                    TrainingData::Tokens(d) if d.headerless => TrainError(format!(
                        "{e}; {} holds headerless ids that are read as GPT-2's: data of another tokenizer (nanoGPT's character-level sets with their meta.pkl) cannot be decoded here, tokenize its text with scratchgpt tokenize (--tokenizer bytes for characters)",
                        d.description
                    )),
                    _ => TrainError(e),
                })?;
            let (train, val, data_fingerprint) = loaders_for(data_in, &data, &settings, &tok)?;
            let cfg = settings.model_config(tok.vocab_size());
            cfg.validate().map_err(|e| TrainError(e.to_string()))?;
            need = Some(training_memory(
                &cfg,
                settings.batch_size,
                data_in,
                &train,
                &val,
            ));
            check_fits(
                need.as_ref().unwrap(),
                "this model",
                "use a smaller model, --batch-size or --context-length",
            )?;
            let model = GptModel::new(&cfg, &ctx).map_err(|e| TrainError(e.to_string()))?;
            let opt = checkpoint::new_optimizer(&model, &settings);
            let state = TrainerState {
                version: 1,
                settings: settings.clone(),
                step: 0,
                epoch: 0,
                batch_in_epoch: 0,
                order: EpochOrder::default(),
                rng: ctx.rng().state(),
                tokens_seen: 0,
                adam_t: 0,
                data_fingerprint,
                history: Vec::new(),
                elapsed_secs: 0.0,
                data_files: opts.data_files.clone(),
            };
            (model, tok, opt, state, ctx, train, val)
        }
        Some(dir) => {
            let ctx = Context::new(0);
            let ckpt = checkpoint::resolve(dir)?;
            let saved = checkpoint::read_state(&ckpt)?;
            let cfg = model::weights::read_config(&ckpt.join(model::weights::CONFIG_FILE))?;
            let estimate = MemoryEstimate::training(&cfg, saved.settings.batch_size);
            let text_bytes = match data_in {
                TrainingData::Text(text) => text.len() as u64,
                TrainingData::Tokens(_) => 0,
            };
            check_fits(
                &estimate.with_data(9 * text_bytes),
                "this run",
                "free some memory (a resumed run keeps its model, batch and context)",
            )?;
            let r = checkpoint::load_for_resume(dir, &ctx)?;
            let mut state = r.state;
            if let Some(e) = opts.resume_epochs {
                state.settings.epochs = e;
            }
            if let Some(m) = opts.resume_max_steps {
                state.settings.max_steps = Some(m);
            }
            if let Some(n) = opts.resume_grad_accum {
                state.settings.grad_accum = n;
            }
            if let Some(k) = opts.resume_save_every {
                state.settings.save_every = (k > 0).then_some(k);
            }
            state.settings.validate()?;
            let (train, val, data_fingerprint) =
                loaders_for(data_in, &data, &state.settings, &r.tokenizer)?;
            if data_fingerprint != state.data_fingerprint {
                return Err(TrainError(format!(
                    "{}: the data differ from the data this run was trained on ({data} is not the same text); resume with the same --data",
                    r.dir.display()
                )));
            }
            let s = &state.settings;
            let total = planned_steps(s, train.num_batches());
            if state.step >= total {
                let limits = match s.max_steps {
                    Some(m) => format!("{} epochs, --max-steps {m}", s.epochs),
                    None => format!("{} epochs", s.epochs),
                };
                return Err(TrainError(format!(
                    "{}: the run is already finished ({} steps done of the {total} its limits allow: {limits}); to train it further, resume with a higher --epochs or --max-steps",
                    r.dir.display(),
                    state.step
                )));
            }
            // a damaged state file must not reach the data loader as an index past the data
            let windows = train.data.len();
            if !(state.order.is_empty() || state.order.covers(windows))
                || state.batch_in_epoch > train.num_batches()
            {
                return Err(TrainError(format!(
                    "{}: the saved position in the epoch does not fit the data's {windows} training windows; the checkpoint's {} is damaged",
                    r.dir.display(),
                    checkpoint::STATE_FILE
                )));
            }
            if opts.data_files.is_some() {
                state.data_files = opts.data_files.clone(); // found again where --data says
            }
            *ctx.rng() = Rng::from_state(&state.rng).ok_or_else(|| {
                TrainError(format!("{}: invalid generator state", r.dir.display()))
            })?;
            quiet_line(&format!(
                "resuming {} at step {}",
                r.dir.display(),
                state.step
            ));
            (r.model, r.tokenizer, r.optimizer, state, ctx, train, val)
        }
    };
    let task = LanguageModeling {
        model: &model,
        train,
        val,
        tokenizer: &tok,
        start_context: state.settings.start_context.clone(),
        sample_tokens: state.settings.sample_tokens,
        sample_as_the_book: state.settings.book_compat,
    };
    if state.step == 0 && !opts.quiet {
        let s = &state.settings;
        println!(
            "model: {} parameters ({} layers, width {}, {} heads, context {}), tokenizer {} ({} ids{})",
            model.num_parameters(),
            s.n_layers,
            s.emb_dim,
            s.n_heads,
            s.context_length,
            s.tokenizer,
            tok.vocab_size(),
            match model.cfg.vocab_size {
                v if v > tok.vocab_size() => format!(", padded to {v} in the model"),
                _ => String::new(),
            }
        );
        if let Some(need) = &need {
            println!("memory: {need} at batch {}", s.batch_size);
        }
        println!(
            "data: {} ({} of {}), {}; {} planned",
            crate::counted(task.train.data.len(), "training window", "training windows"),
            crate::counted(task.train.num_batches(), "batch", "batches"),
            s.batch_size,
            crate::counted(
                task.val.data.len(),
                "validation window",
                "validation windows"
            ),
            crate::counted(planned_steps(s, task.train.num_batches()), "step", "steps")
        );
    }
    let title = format!(
        "scratchgpt {} ({})",
        state.settings.preset, state.settings.tokenizer
    );
    let mut session = Session {
        opt,
        state,
        ctx,
        title,
        started: start_time,
        save: Box::new(|opt, state| checkpoint::save(&opts.out_dir, &model, &tok, opt, state)),
    };
    let summary = train_loop(&task, &mut session, opts)?;
    // the run's report page (crate::report): loss, samples, attention on the start context;
    // written by rank 0 alone, which evaluates and owns the run directory
    if opts.collective().rank() != 0 {
        return Ok(summary);
    }
    if let Err(e) = crate::report::write_run_report(
        &opts.out_dir,
        &model,
        &tok,
        &task.start_context,
        &summary.history,
        &session.title,
    ) {
        eprintln!("warning: the run's report page was not written: {e}");
    }
    Ok(summary)
}

/// One evaluation point's measurements: mean losses over a few batches of training and
/// validation data (and, for classification, accuracies).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Evaluation {
    pub train_loss: f32,
    pub val_loss: f32,
    pub train_accuracy: Option<f32>,
    pub val_accuracy: Option<f32>,
}

/// What one kind of training brings to the shared loop ([`train_loop`]): its batches, its
/// loss, its evaluation and what it reports after an epoch. Pretraining is
/// [`LanguageModeling`]; classification fine-tuning is `finetune::Classification`.
pub trait Task {
    /// Training batches in one epoch.
    fn batches_per_epoch(&self) -> usize;
    /// The order in which one epoch visits the training examples.
    fn epoch_order(&self, rng: &mut Rng) -> EpochOrder;
    /// The training loss of `part` of batch `b` of an epoch visiting examples in `order`, and
    /// the number of tokens that part holds. The loss of a part is weighted so that the losses
    /// (and so the gradients) of all parts of a batch add up to the loss of the whole batch.
    /// Errors come from data read as training goes (token shards).
    fn batch_loss(
        &self,
        order: &EpochOrder,
        b: usize,
        part: MicroBatch,
    ) -> Result<(Tensor, u64), TrainError>;
    /// The orders of fresh passes over the training and validation examples, drawn from the
    /// run's generator as iterating a PyTorch loader anew does: how the book's exact runs
    /// (`--book-compat`) pick the batches they evaluate on.
    fn eval_orders(&self, rng: &mut Rng) -> EvalOrders;
    /// Losses on the first `eval_iter` batches of training and validation data, in `orders`
    /// or else in file order; dropout off, no gradients.
    fn evaluate(
        &self,
        eval_iter: usize,
        orders: Option<&EvalOrders>,
    ) -> Result<Evaluation, TrainError>;
    /// A line to print after each epoch (`Ep N …`), if any; `eval_iter` as for [`Task::evaluate`].
    fn end_of_epoch(&self, epoch: usize, eval_iter: usize) -> Option<String>;
}

/// One of `count` equal parts of a training batch: gradient accumulation computes a batch as
/// several micro-batches whose gradients add up before one optimizer step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MicroBatch {
    pub index: usize,
    pub count: usize,
}

impl MicroBatch {
    /// The whole batch at once.
    pub const WHOLE: MicroBatch = MicroBatch { index: 0, count: 1 };

    /// The examples of batch `b` (of `batch_size`, which `count` divides) in `order` that this
    /// part takes: the `index`-th run of `batch_size / count` consecutive ones.
    pub fn rows(&self, order: &EpochOrder, b: usize, batch_size: usize) -> Vec<usize> {
        assert!(
            self.index < self.count && batch_size.is_multiple_of(self.count),
            "MicroBatch::rows: part {} of {} of a batch of {batch_size}",
            self.index,
            self.count
        );
        let per = batch_size / self.count;
        let start = b * batch_size + self.index * per;
        order.range(start, start + per)
    }

    /// A loss that is a mean over this part's examples, weighted as a share of the batch's
    /// mean (parts of equal size: `1 / count`, exact for powers of two).
    pub fn share_of_mean(&self, loss: Tensor) -> Tensor {
        match self.count {
            1 => loss,
            n => loss.mul_scalar(1.0 / n as f32),
        }
    }
}

/// The orders an evaluation visits the training and validation examples in.
#[derive(Clone, Debug)]
pub struct EvalOrders {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
}

/// Pretraining (chapter 5): next-token prediction over windows of one long text.
pub struct LanguageModeling<'a> {
    pub model: &'a GptModel,
    pub train: DataLoader,
    pub val: DataLoader,
    pub tokenizer: &'a Tokenizer,
    /// The prompt of the greedy sample printed after each epoch.
    pub start_context: String,
    pub sample_tokens: usize,
    /// Sample as the book does (see [`sample_text`]): `--book-compat` runs.
    pub sample_as_the_book: bool,
}

impl Task for LanguageModeling<'_> {
    fn batches_per_epoch(&self) -> usize {
        self.train.num_batches()
    }

    fn epoch_order(&self, rng: &mut Rng) -> EpochOrder {
        self.train.epoch_order(rng)
    }

    fn batch_loss(
        &self,
        order: &EpochOrder,
        b: usize,
        part: MicroBatch,
    ) -> Result<(Tensor, u64), TrainError> {
        let rows = part.rows(order, b, self.train.batch_size);
        let batch = self.train.batch_of(&rows)?;
        let loss = self
            .model
            .forward(&batch.inputs, batch.batch)
            .cross_entropy(&batch.targets);
        Ok((
            part.share_of_mean(loss),
            (batch.batch * batch.seq_len) as u64,
        ))
    }

    fn eval_orders(&self, rng: &mut Rng) -> EvalOrders {
        let listed = |o: EpochOrder| o.range(0, o.len());
        let train = listed(self.train.epoch_order(rng));
        let val = listed(self.val.epoch_order(rng));
        EvalOrders { train, val }
    }

    fn evaluate(
        &self,
        eval_iter: usize,
        orders: Option<&EvalOrders>,
    ) -> Result<Evaluation, TrainError> {
        let model = self.model;
        let (train_loss, val_loss) = match orders {
            Some(o) => (
                evaluate_in_order(
                    model,
                    &self.train,
                    &EpochOrder::Listed(o.train.clone()),
                    eval_iter,
                )?,
                evaluate_in_order(
                    model,
                    &self.val,
                    &EpochOrder::Listed(o.val.clone()),
                    eval_iter,
                )?,
            ),
            None => (
                evaluate(model, &self.train, eval_iter)?,
                evaluate(model, &self.val, eval_iter)?,
            ),
        };
        Ok(Evaluation {
            train_loss,
            val_loss,
            ..Evaluation::default()
        })
    }

    fn end_of_epoch(&self, epoch: usize, _eval_iter: usize) -> Option<String> {
        let sample = sample_text(
            self.model,
            self.tokenizer,
            &self.start_context,
            self.sample_tokens,
            self.sample_as_the_book,
        );
        Some(format!("Ep {epoch} sample: {sample}"))
    }
}

/// What the shared loop works on, assembled by each command: the optimizer (over the
/// trainable parameters only), where the run stands, the run's context (its generator, and
/// training or evaluation mode for dropout), and how a checkpoint is written.
pub struct Session<'a> {
    pub opt: AdamW,
    pub state: TrainerState,
    pub ctx: Context,
    /// Title of the loss plot.
    pub title: String,
    /// When this invocation started (for the elapsed time saved in checkpoints).
    pub started: Instant,
    /// Writes a complete checkpoint of the run as it stands; returns its directory.
    #[allow(clippy::type_complexity)]
    pub save: Box<dyn Fn(&AdamW, &TrainerState) -> Result<PathBuf, TrainError> + 'a>,
}

/// The training loop shared by every command: the book's `train_model_simple` (section 5.2)
/// with appendix D's warm-up, cosine decay and clipping, evaluation every `eval_freq` steps,
/// checkpoints (periodic, per epoch, on Ctrl-C, at the end), and resuming exactly where
/// `session.state` stands. For every batch: zero the gradients, compute the task's loss,
/// backpropagate, (clip,) take an AdamW step.
pub fn train_loop(
    task: &dyn Task,
    session: &mut Session,
    opts: &RunOptions,
) -> Result<RunSummary, TrainError> {
    let Session {
        opt,
        state,
        ctx,
        title,
        started,
        save,
    } = session;
    let s = state.settings.clone();
    // data-parallel: several processes share each batch; rank 0 alone prints and writes
    let coll = opts.collective();
    let root = coll.rank() == 0;
    let mut dp = match coll.size() {
        1 => None,
        _ => Some(crate::data_parallel::start(coll, opt, state)?),
    };
    if root {
        std::fs::create_dir_all(&opts.out_dir).map_err(|e| io_error(&opts.out_dir, e))?;
    }
    let nb = task.batches_per_epoch();
    let total = planned_steps(&s, nb);
    let params = opt.params.clone();
    let rep = Reporter::new(opts, total, state.step, root);
    let base_elapsed = state.elapsed_secs;
    let mut step_losses = Vec::new();
    let (mut train_secs, mut train_tokens) = (0.0f64, 0u64);
    let (mut window_secs, mut window_tokens) = (0.0f64, 0u64);
    let mut interrupted = false;
    let mut last_saved: Option<(usize, PathBuf)> = None;
    let last_save_time = std::cell::Cell::new(Instant::now());
    let checkpoint_now =
        |state: &mut TrainerState, opt: &AdamW| -> Result<(usize, PathBuf), TrainError> {
            // a step can leave the weights NaN or infinite with a finite loss (a huge learning
            // rate): such a checkpoint could neither be resumed nor sampled, and it would
            // replace the last good one
            if !all_finite(&params) {
                return Err(non_finite("weights", state.step, &opts.out_dir));
            }
            state.rng = ctx.rng().state();
            state.adam_t = opt.t;
            state.elapsed_secs = base_elapsed + started.elapsed().as_secs_f64();
            if !root {
                return Ok((state.step, opts.out_dir.clone())); // rank 0 writes
            }
            let path = save(opt, state)?;
            if let Some(hook) = &opts.on_checkpoint {
                hook();
            }
            last_save_time.set(Instant::now());
            Ok((state.step, path))
        };
    'outer: while state.epoch < s.epochs && state.step < total {
        if state.order.is_empty() {
            state.order = task.epoch_order(&mut ctx.rng());
        }
        while state.batch_in_epoch < nb && state.step < total {
            let t0 = Instant::now();
            ctx.train();
            let lr = s.lr_at(state.step, total);
            opt.set_lr(lr);
            opt.zero_grad();
            let (lv, n_tokens, stop_asked) = match dp.as_mut() {
                None => {
                    // the batch in `grad_accum` parts, their gradients adding up in the
                    // parameters' gradients; the step's loss is the sum of the parts' weighted
                    // losses
                    let (mut lv, mut n_tokens) = (0.0f32, 0u64);
                    for index in 0..s.grad_accum {
                        let part = MicroBatch {
                            index,
                            count: s.grad_accum,
                        };
                        let (loss, n) =
                            task.batch_loss(&state.order, state.batch_in_epoch, part)?;
                        let l = loss.item();
                        if !l.is_finite() {
                            return Err(non_finite("loss", state.step + 1, &opts.out_dir));
                        }
                        loss.backward();
                        (lv, n_tokens) = (lv + l, n_tokens + n);
                    }
                    (lv, n_tokens, false)
                }
                Some(dp) => {
                    // this rank's parts, the gradients summed over every rank
                    let t = dp.step(
                        task,
                        ctx,
                        &state.order,
                        state.batch_in_epoch,
                        state.step,
                        s.seed,
                        s.grad_accum,
                        opts.stop.load(Ordering::Relaxed),
                    )?;
                    if !t.loss.is_finite() {
                        return Err(non_finite("loss", state.step + 1, &opts.out_dir));
                    }
                    (t.loss, t.tokens, t.stop)
                }
            };
            let grad_scale = clip_scale(&params, s.grad_clip)
                .map_err(|()| non_finite("gradient", state.step + 1, &opts.out_dir))?;
            opt.step_with_grad_scale(grad_scale);
            state.step += 1;
            state.batch_in_epoch += 1;
            state.tokens_seen += n_tokens;
            step_losses.push(lv);
            let dt = t0.elapsed().as_secs_f64();
            (train_secs, train_tokens) = (train_secs + dt, train_tokens + n_tokens);
            (window_secs, window_tokens) = (window_secs + dt, window_tokens + n_tokens);
            let tps = (window_tokens as f64 / window_secs.max(1e-9)) as f32;
            rep.progress(state.step, lv, tps);
            // the book evaluates after the 1st step and then every eval_freq steps: 1, 6, 11, …
            if (state.step - 1).is_multiple_of(s.eval_freq) && !root {
                (window_secs, window_tokens) = (0.0, 0); // rank 0 evaluates
            } else if (state.step - 1).is_multiple_of(s.eval_freq) {
                ctx.eval();
                // the orders are drawn first: the generator must not stay locked while the
                // model runs (its layers take the lock)
                let orders = s.book_compat.then(|| task.eval_orders(&mut ctx.rng()));
                let e = task.evaluate(s.eval_iter, orders.as_ref())?;
                (window_secs, window_tokens) = (0.0, 0);
                let rec = MetricRecord {
                    step: state.step,
                    epoch: state.epoch + 1,
                    tokens_seen: state.tokens_seen,
                    train_loss: e.train_loss,
                    val_loss: e.val_loss,
                    lr,
                    tokens_per_second: tps,
                    train_accuracy: e.train_accuracy,
                    val_accuracy: e.val_accuracy,
                };
                rep.line(&rec.log_line());
                state.history.push(rec);
                write_metrics(&opts.out_dir, &state.history, title)?;
            }
            let stop = match dp {
                None => opts.stop.load(Ordering::Relaxed),
                Some(_) => stop_asked, // every rank stops at the same step
            } || opts.stop_at_step == Some(state.step);
            let periodic = s.save_every.is_some_and(|k| state.step.is_multiple_of(k));
            if stop || periodic {
                last_saved = Some(checkpoint_now(state, opt)?);
            }
            if stop {
                interrupted = true;
                // `train --resume` continues pretraining runs; fine-tuning runs keep their
                // checkpoint as it stands
                let next = if s.preset.starts_with("finetune-") {
                    format!("its checkpoint is in {}", opts.out_dir.display())
                } else {
                    format!("resume with --resume {}", opts.out_dir.display())
                };
                rep.line(&format!("stopped at step {}; {next}", state.step));
                break 'outer;
            }
        }
        if state.batch_in_epoch >= nb {
            ctx.eval();
            if let Some(line) = root
                .then(|| task.end_of_epoch(state.epoch + 1, s.eval_iter))
                .flatten()
            {
                rep.line(&line);
                // kept for the run's report page (crate::report)
                crate::report::record_epoch_line(
                    &opts.out_dir,
                    state.epoch + 1,
                    state.step,
                    &line,
                )?;
            }
            state.epoch += 1;
            state.batch_in_epoch = 0;
            state.order = EpochOrder::default();
            if last_save_time.get().elapsed().as_secs_f64() >= opts.min_secs_between_epoch_saves {
                last_saved = Some(checkpoint_now(state, opt)?);
            }
        }
    }
    let checkpoint = match last_saved {
        Some((step, path)) if step == state.step => path,
        _ => checkpoint_now(state, opt)?.1,
    };
    rep.finish();
    if root && !state.history.is_empty() {
        write_metrics(&opts.out_dir, &state.history, title)?;
    }
    if let Some(dp) = &dp {
        coll.barrier(); // the others end once rank 0's last checkpoint is written
        rep.line(&dp.stats.summary_line());
    }
    Ok(RunSummary {
        steps: state.step,
        tokens_seen: state.tokens_seen,
        history: state.history.clone(),
        step_losses,
        checkpoint,
        interrupted,
        train_tokens_per_second: train_tokens as f64 / train_secs.max(1e-9),
        elapsed_secs: started.elapsed().as_secs_f64(),
    })
}

/// The factor that brings the gradients' global L2 norm down to `max` (appendix D), or 1 when
/// it is below already or `max` is `None`; `Err` when the norm is not finite. The optimizer
/// applies it as it reads each gradient ([`Optimizer::step_with_grad_scale`]), the same bits
/// as scaling the gradients first without a pass over them: for GPT-2 small that pass read and
/// wrote 650 MB per step.
pub(crate) fn clip_scale(params: &[Tensor], max: Option<f32>) -> Result<f32, ()> {
    let norm = gradient_norm(params);
    if !norm.is_finite() {
        return Err(());
    }
    Ok(match max {
        Some(max) if norm > max => max / norm,
        _ => 1.0,
    })
}

/// The memory a run of `cfg` needs: one training step of `batch`, plus its text and token ids
/// (for token shards: one batch of ids, read as training goes).
fn training_memory(
    cfg: &model::GptConfig,
    batch: usize,
    data: TrainingData,
    train: &DataLoader,
    val: &DataLoader,
) -> MemoryEstimate {
    let id = std::mem::size_of::<usize>() as u64;
    let bytes = match data {
        TrainingData::Text(text) => {
            text.len() as u64 + (train.data.total_tokens() + val.data.total_tokens()) * id
        }
        TrainingData::Tokens(_) => 3 * (batch * (cfg.context_length + 1)) as u64 * id,
    };
    MemoryEstimate::training(cfg, batch).with_data(bytes)
}

/// How many optimizer steps a run's limits allow: its epochs of `batches_per_epoch` steps,
/// capped by `max_steps`.
pub fn planned_steps(s: &TrainSettings, batches_per_epoch: usize) -> usize {
    (s.epochs * batches_per_epoch).min(s.max_steps.unwrap_or(usize::MAX))
}

/// Whether every value of every parameter is finite (one parallel pass over the weights).
fn all_finite(params: &[Tensor]) -> bool {
    params.iter().all(|p| {
        p.values()
            .par_chunks(1 << 15)
            .all(|xs| xs.iter().all(|x| x.is_finite()))
    })
}

fn non_finite(what: &str, step: usize, out: &Path) -> TrainError {
    let kept = match checkpoint::resolve(out) {
        Ok(p) => format!("the last good checkpoint {} is kept", p.display()),
        Err(_) => "no checkpoint was written yet".to_string(),
    };
    TrainError(format!(
        "the {what} became NaN or infinite at step {step}; stopping ({kept}). Try a lower --lr or --grad-clip 1.0"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_show_control_characters_as_pictures_on_one_line() {
        assert_eq!(
            on_one_line("a\nb\tc\0d\x1b[2Je\x7f\u{9b}é"),
            "a↵b\tc␀d␛[2Je␡�é"
        );
    }

    #[test]
    fn clip_scale_brings_the_norm_to_the_limit() {
        // one gradient (3, 4): norm 5
        let p = Tensor::from_vec(vec![1.5, 2.0], &[2]).requires_grad();
        (&p * &p).sum_all().backward(); // grad = 2p = (3, 4)
        let params = [p.clone()];
        assert_eq!(clip_scale(&params, Some(1.0)), Ok(0.2));
        assert_eq!(
            clip_scale(&params, Some(10.0)),
            Ok(1.0),
            "below the limit: unchanged"
        );
        assert_eq!(clip_scale(&params, None), Ok(1.0), "clipping off");
        p.zero_grad();
        p.mul_scalar(f32::NAN).sum_all().backward(); // grad NaN
        assert_eq!(clip_scale(&params, Some(1.0)), Err(()));
    }

    #[test]
    fn gradient_norm_is_exact_enough_and_independent_of_threads() {
        let mut rng = Rng::seed(9);
        let params: Vec<Tensor> = [100_003usize, 7, 70_000]
            .iter()
            .map(|&n| Tensor::randn(&[n], &mut rng).requires_grad())
            .collect();
        for p in &params {
            (p * p).sum_all().backward(); // grad = 2p
        }
        let want: f64 = params
            .iter()
            .flat_map(|p| p.to_vec())
            .map(|x| (2.0 * x as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let on = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| gradient_norm(&params))
        };
        let (one, two) = (on(1), on(2));
        assert_eq!(one.to_bits(), two.to_bits());
        assert!(((one as f64 - want) / want).abs() < 1e-6, "{one} vs {want}");
    }

    #[test]
    fn epoch_samples_are_the_same_with_the_kv_cache_as_the_book_computes_them() {
        let tok = Tokenizer::bytes();
        let cfg = model::GptConfig {
            vocab_size: tok.vocab_size(),
            context_length: 24,
            emb_dim: 32,
            n_heads: 2,
            n_layers: 2,
            ..model::GptConfig::gpt2_small()
        };
        let gpt = GptModel::new(&cfg, &Context::new(5)).expect("valid config");
        gpt.eval();
        // 30 new tokens after a 12-byte prompt: past the context, so the window slides
        let as_the_book = sample_text(&gpt, &tok, "Every effort", 30, true);
        assert!(
            as_the_book.chars().count() > "Every effort".len(),
            "{as_the_book:?}"
        );
        assert_eq!(
            sample_text(&gpt, &tok, "Every effort", 30, false),
            as_the_book
        );
    }

    #[test]
    fn samples_keep_their_line_breaks_visible() {
        assert_eq!(on_one_line("a\n\nb"), "a↵↵b");
    }
}
