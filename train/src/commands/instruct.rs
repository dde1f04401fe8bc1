//! `scratchgpt finetune instruct` (book chapter 7) and `scratchgpt chat`: instruction
//! fine-tuning assembled from the shared parts (a checkpoint loaded as for generation, the
//! instruction data and task of [`crate::instruction`], the run directory rules, the shared
//! training loop), and a prompt for the fine-tuned model.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use model::generate::GenerateOptions;
use model::memory::MemoryEstimate;
use model::{Context, Module};
use tensor::{AdamW, Rng};

use crate::checkpoint::{self, write_moments, TrainerState, OPTIMIZER_FILE};
use crate::commands::generate::{crop_prompt, stream_to_stdout, SamplingArgs};
use crate::error::TrainError;
use crate::instruction::{
    encode, format_input, format_response, read_entries, respond, split, write_responses,
    EntryWithResponse, InstructionEntry, InstructionTuning,
};
use crate::lora::{load_with_adapters, write_adapters, LoraArgs, LoraInfo};
use crate::memory::check_fits;
use crate::run_dir::{OutDir, RUNS_ROOT};
use crate::trainer::Session;
use model::lora::add_lora;

/// Where the test split's responses go, in the run directory (the book's file name).
pub const RESPONSES_FILE: &str = "instruction-data-with-response.json";

#[derive(Args, Debug)]
pub struct InstructTrainArgs {
    /// The pretrained model: a run directory, a checkpoint directory, or a Hugging Face GPT-2
    /// directory or name (the book uses gpt2-medium).
    #[arg(long, value_name = "DIR|NAME")]
    pub checkpoint: PathBuf,
    /// Instruction data: a JSON array, or JSON Lines, of {"instruction", "input", "output"}
    /// ("input" may be empty). Split as the book does: the first 85% for training, the next 10%
    /// for testing, the last 5% for validation.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Directory of this run [default: a new numbered directory runs/run-NNNN]; an existing
    /// run there is refused unless --force.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// With --out: replace the run in that directory (after the new run's first checkpoint).
    #[arg(long, requires = "out")]
    pub force: bool,
    /// Also ignore the prompt's tokens in the loss, so only the response is learned (the book's
    /// exercise 7.2) [default: off].
    #[arg(long)]
    pub mask_prompt: bool,
    /// Truncate every batch to this many tokens [default: 1024, at most the model's context].
    #[arg(long, value_name = "TOKENS")]
    pub max_length: Option<usize>,
    /// Peak learning rate of AdamW [default: 5e-5, the book's; 8e-4 with --lora and the
    /// alpha-over-rank scaling].
    #[arg(long, value_name = "X")]
    pub lr: Option<f32>,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 0.1, value_name = "X")]
    pub weight_decay: f32,
    /// Passes over the training entries.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub epochs: usize,
    /// Stop after this many optimizer steps [default: no limit].
    #[arg(long, value_name = "N")]
    pub max_steps: Option<usize>,
    /// Entries per optimizer step (the last, incomplete batch of an epoch is dropped).
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub batch_size: usize,
    /// Compute each batch in N equal micro-batches whose gradients add up before the step
    /// (the memory of a batch N times smaller); must divide --batch-size.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub grad_accum: usize,
    /// Evaluate after the first step and then every N steps.
    #[arg(long, default_value_t = 5, value_name = "STEPS")]
    pub eval_freq: usize,
    /// Batches of training and of validation data per evaluation.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub eval_iter: usize,
    /// Dropout during fine-tuning (the book fine-tunes without).
    #[arg(
        long,
        default_value_t = 0.0,
        allow_negative_numbers = true,
        value_name = "P"
    )]
    pub dropout: f32,
    /// Seed of the shuffling (and of LoRA's adapters).
    #[arg(long, default_value_t = 123, value_name = "N")]
    pub seed: u64,
    #[command(flatten)]
    pub lora: LoraArgs,
    /// Tokens of each test response generated after training (greedy, stopping at
    /// end-of-text); 0 skips writing instruction-data-with-response.json.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub response_tokens: usize,
    /// Draw random numbers as the book's PyTorch code does [default: off].
    #[arg(long)]
    pub book_compat: bool,
    /// Print only errors.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `finetune instruct`; returns the exit status (0, or 130 when interrupted).
pub fn instruct_command(a: &InstructTrainArgs) -> Result<i32, TrainError> {
    let lora = a.lora.config()?;
    crate::lora::refuse_as_base(&a.checkpoint)?;
    let schedule = super::FineTuneSchedule {
        lr: a.lr,
        weight_decay: a.weight_decay,
        epochs: a.epochs,
        max_steps: a.max_steps,
        batch_size: a.batch_size,
        grad_accum: a.grad_accum,
        eval_freq: a.eval_freq,
        eval_iter: a.eval_iter,
        dropout: a.dropout,
        seed: a.seed,
        book_compat: a.book_compat,
    };
    let settings = super::fine_tuning_settings("finetune-instruct", &schedule, lora.as_ref())?;
    if a.max_length == Some(0) {
        return Err(TrainError("--max-length must be at least 1".into()));
    }
    let entries = read_entries(&a.data)?;
    let (train, test, val) = split(&entries);
    if train.len() < a.batch_size || val.is_empty() {
        return Err(TrainError(format!(
            "{}: {} entries give {} for training and {} for validation; need at least one batch of {} and one validation entry",
            a.data.display(),
            entries.len(),
            train.len(),
            val.len(),
            a.batch_size
        )));
    }
    let ctx = if a.book_compat {
        Context::book_compat(a.seed)
    } else {
        Context::new(a.seed)
    };
    let (mut gpt, tok) = checkpoint::load_for_inference(&a.checkpoint, &ctx)?;
    gpt.set_dropout(a.dropout);
    if a.book_compat {
        // the book calls torch.manual_seed(123) right before training; loading the base model
        // drew from the generator for its initial weights
        *ctx.rng() = Rng::torch(a.seed);
    }
    // the book's exercise 7.4: freeze the model and train adapters on every linear layer
    if let Some(cfg) = &lora {
        crate::lora::check_adapters(&mut gpt, cfg)?;
        add_lora(&mut gpt, cfg, &ctx);
    }
    let pad = tok.end_of_text().ok_or_else(|| {
        TrainError(format!(
            "{}: the tokenizer has no <|endoftext|>, which instruction fine-tuning pads and stops with",
            a.checkpoint.display()
        ))
    })?;
    let context = gpt.cfg.context_length;
    super::check_max_length(a.max_length, context)?;
    let max_length = a.max_length.unwrap_or(1024).min(context);
    let encode_all =
        |set: &[InstructionEntry]| set.iter().map(|e| encode(&tok, e)).collect::<Vec<_>>();
    let (train_set, val_set) = (encode_all(train), encode_all(val));
    if a.mask_prompt {
        // with the prompt's targets ignored, an entry whose prompt fills the allowed length
        // has no target left to learn from
        let unscored = train_set
            .iter()
            .filter(|e| e.prompt_len.saturating_sub(1) >= max_length)
            .count();
        if unscored == train_set.len() {
            return Err(TrainError(format!(
                "{}: with --mask-prompt no training entry keeps a response token within {max_length} tokens (every prompt fills them), so nothing would be learned; raise --max-length (at most the context, {context}) or shorten the prompts",
                a.data.display()
            )));
        }
        if unscored > 0 && !a.quiet {
            eprintln!(
                "warning: {unscored} training entries of {} keep no response token within {max_length} tokens and teach nothing with --mask-prompt",
                a.data.display()
            );
        }
    }
    let longer = train_set
        .iter()
        .filter(|e| e.ids.len() + 1 > max_length)
        .count();
    if longer > 0 && !a.quiet {
        eprintln!(
            "warning: {longer} training entries of {} are longer than {max_length} tokens and are truncated",
            a.data.display()
        );
    }
    let n_params = gpt.num_parameters();
    let trainable: Vec<(String, tensor::Tensor)> = gpt
        .named_parameters()
        .into_iter()
        .filter(|(_, p)| p.is_requires_grad())
        .collect();
    let n_trainable: usize = trainable.iter().map(|(_, p)| p.numel()).sum();
    let need = MemoryEstimate::fine_tuning(
        &gpt.cfg,
        a.batch_size,
        max_length.min(train_set.iter().map(|e| e.ids.len() + 1).max().unwrap_or(1)),
        n_trainable as u64,
        gpt.cfg.vocab_size,
    );
    check_fits(
        &need,
        "this fine-tuning run",
        "use a smaller model, --batch-size or --max-length",
    )?;
    let out = Arc::new(match &a.out {
        Some(dir) => OutDir::at(dir, a.force, false)?,
        None => OutDir::new_numbered(Path::new(RUNS_ROOT))?,
    });
    if !a.quiet {
        println!(
            "instruction fine-tuning {} on {}, writing to {}",
            a.checkpoint.display(),
            a.data.display(),
            out.path.display()
        );
        match &lora {
            Some(cfg) => println!(
                "model: {n_params} parameters, {n_trainable} trainable (LoRA rank {}, alpha {}, scaling {})",
                cfg.rank,
                cfg.alpha,
                cfg.scaling.name()
            ),
            None => println!("model: {n_params} parameters, all trainable"),
        }
        println!("memory: {need} at batch {}", a.batch_size);
        println!(
            "data: {} training, {} test, {} validation entries{}",
            train.len(),
            test.len(),
            val.len(),
            if a.mask_prompt {
                "; prompts masked out of the loss"
            } else {
                ""
            }
        );
    }
    let task = InstructionTuning {
        model: &gpt,
        tokenizer: &tok,
        train: train_set,
        val: val_set,
        batch_size: a.batch_size,
        pad,
        max_length,
        mask_prompt: a.mask_prompt,
        sample_prompt: format_input(&val[0]),
        sample_as_the_book: a.book_compat,
    };
    let names: Vec<String> = trainable.iter().map(|(n, _)| n.clone()).collect();
    let opt = AdamW::new(
        trainable.into_iter().map(|(_, p)| p).collect(),
        settings.lr,
        settings.weight_decay,
    );
    let lora_info = lora.map(|cfg| LoraInfo::new(&cfg, &a.checkpoint));
    let state = TrainerState {
        version: 1,
        settings,
        step: 0,
        epoch: 0,
        batch_in_epoch: 0,
        order: crate::data::EpochOrder::default(),
        rng: ctx.rng().state(),
        tokens_seen: 0,
        adam_t: 0,
        data_fingerprint: String::new(),
        history: Vec::new(),
        elapsed_secs: 0.0,
        data_files: Some(vec![a.data.clone()]),
    };
    let out_dir = out.path.clone();
    let mut session = Session {
        opt,
        state,
        ctx: ctx.clone(),
        title: "instruction fine-tuning".into(),
        started: Instant::now(),
        save: Box::new(|opt: &AdamW, state: &TrainerState| {
            checkpoint::save_with(&out_dir, &gpt, &tok, state, |dir| {
                write_moments(&dir.join(OPTIMIZER_FILE), &names, opt)?;
                match &lora_info {
                    Some(info) => write_adapters(dir, &gpt, info),
                    None => Ok(()),
                }
            })
        }),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let summary = super::run_in(
        &out,
        &task,
        &mut session,
        vec![a.data.clone()],
        a.quiet,
        &stop,
    )?;
    if !a.quiet {
        println!(
            "{} after {} steps in {:.1}s; checkpoint: {}",
            if summary.interrupted {
                "stopped"
            } else {
                "done"
            },
            summary.steps,
            summary.elapsed_secs,
            summary.checkpoint.display()
        );
    }
    if !summary.interrupted && a.response_tokens > 0 && !test.is_empty() {
        let started = Instant::now();
        let mut responses = Vec::with_capacity(test.len());
        for (i, e) in test.iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                eprintln!(
                    "\ninterrupted: the test responses were not written (the checkpoint is saved)"
                );
                return Ok(130);
            }
            if !a.quiet && std::io::stderr().is_terminal() {
                eprint!("\rgenerating test responses {}/{}", i + 1, test.len());
            }
            responses.push(EntryWithResponse {
                instruction: &e.instruction,
                input: &e.input,
                output: &e.output,
                model_response: respond(&gpt, &tok, e, a.response_tokens),
            });
        }
        let path = out.path.join(RESPONSES_FILE);
        write_responses(&path, &responses)?;
        if !a.quiet {
            if std::io::stderr().is_terminal() {
                eprintln!();
            }
            println!(
                "responses to the {} test entries ({:.1}s): {}",
                test.len(),
                started.elapsed().as_secs_f64(),
                path.display()
            );
        }
    }
    if !a.quiet {
        println!(
            "try:        scratchgpt chat --checkpoint {}",
            out.path.display()
        );
    }
    Ok(if summary.interrupted { 130 } else { 0 })
}

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// An instruction-tuned model: a run or checkpoint directory (made with `scratchgpt
    /// finetune instruct`).
    #[arg(long, value_name = "DIR|NAME")]
    pub checkpoint: PathBuf,
    /// Answer this one instruction and exit [default: read instructions from the terminal, one
    /// per line, until end of input].
    #[arg(long, value_name = "TEXT")]
    pub instruction: Option<String>,
    /// The input that goes with --instruction [default: none].
    #[arg(long, value_name = "TEXT", requires = "instruction")]
    pub input: Option<String>,
    /// Tokens of each response, at most (it stops at end-of-text).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_new_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// Runs `chat`: every instruction is wrapped in the book's template (with the response
/// header), and the response is streamed until end-of-text.
pub fn chat_command(a: &ChatArgs) -> Result<i32, TrainError> {
    let sampling = a.sampling.sampling()?;
    let ctx = Context::for_loading();
    let (model, tok) = load_with_adapters(&a.checkpoint, &ctx)?;
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        sampling,
        eos_id: tok.end_of_text(),
        use_cache: true,
        id_limit: Some(tok.vocab_size()),
    };
    let mut rng = Rng::seed(a.sampling.seed);
    let mut answer = |instruction: &str, input: &str| {
        let entry = InstructionEntry {
            instruction: instruction.to_string(),
            input: input.to_string(),
            output: String::new(),
        };
        let prompt = format_input(&entry) + &format_response("");
        let ids = crop_prompt(tok.encode(&prompt), model.cfg.context_length);
        stream_to_stdout(&model, &tok, &ids, &opts, &mut rng);
    };
    if let Some(instruction) = &a.instruction {
        if instruction.trim().is_empty() {
            return Err(TrainError("--instruction must not be empty".into()));
        }
        answer(instruction, a.input.as_deref().unwrap_or(""));
        return Ok(0);
    }
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("type an instruction and press Enter (Ctrl-D to quit)");
    }
    let stdin = std::io::stdin();
    loop {
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(TrainError(format!("reading the instruction: {e}"))),
        }
        let line = line.trim();
        if !line.is_empty() {
            answer(line, "");
        }
    }
    Ok(0)
}
