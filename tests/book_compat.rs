//! Chapters 4 and 5 with PyTorch's random stream: the untrained GPT-2 small of the book
//! continues "Hello, I am" with the book's tokens, gives the book's initial losses on
//! the-verdict.txt, samples the book's counts, and (ignored: minutes of training) follows the
//! book's loss log. Tests that need `../shared/data/the-verdict.txt` skip when it is absent.

use std::path::Path;

use model::generate::{generate_text_simple, next_token_probabilities, Sampling};
use model::{Context, GptConfig, GptModel};
use tensor::Rng;
use train::trainer::{evaluate, make_loaders, run, RunOptions};
use train::{Tokenizer, TrainSettings};

fn verdict() -> Option<String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/the-verdict.txt");
    let text = std::fs::read_to_string(&p).ok();
    if text.is_none() {
        eprintln!("skipping: {} not found", p.display());
    }
    text
}

/// The book's `GPT_CONFIG_124M` (context 1024 in chapter 4, 256 in chapter 5).
fn gpt2_small(context_length: usize) -> GptModel {
    let cfg = GptConfig {
        context_length,
        ..GptConfig::gpt2_small()
    };
    let model = GptModel::new(&cfg, &Context::book_compat(123)).unwrap();
    model.eval();
    model
}

#[test]
fn chapter_4_untrained_model_continues_hello_i_am_with_the_books_tokens() {
    let tok = Tokenizer::gpt2().unwrap();
    let model = gpt2_small(1024);
    let encoded = tok.encode("Hello, I am");
    assert_eq!(encoded, [15496, 11, 314, 716]);
    let out = generate_text_simple(&model, &encoded, 6, 1024);
    // Book 4.7: tensor([[15496, 11, 314, 716, 27018, 24086, 47843, 30961, 42348, 7267]])
    assert_eq!(
        out,
        [15496, 11, 314, 716, 27018, 24086, 47843, 30961, 42348, 7267]
    );
    assert_eq!(
        tok.decode(&out).unwrap(),
        "Hello, I am Featureiman Byeswickattribute argue"
    );
}

#[test]
fn chapter_5_initial_losses_match_the_book() {
    let Some(text) = verdict() else { return };
    let tok = Tokenizer::gpt2().unwrap();
    let settings = TrainSettings {
        book_compat: true,
        ..TrainSettings::preset("book-ch5").unwrap()
    };
    let (train, val) = make_loaders(&text, "the-verdict.txt", &settings, &tok).unwrap();
    let model = gpt2_small(256);
    let train_loss = evaluate(&model, &train, usize::MAX).unwrap();
    let val_loss = evaluate(&model, &val, usize::MAX).unwrap();
    // Book 5.1.3: Training loss: 10.98758347829183, Validation loss: 10.98110580444336
    assert!(
        (train_loss - 10.9876).abs() < 1e-3,
        "train loss {train_loss}"
    );
    assert!((val_loss - 10.9811).abs() < 1e-3, "val loss {val_loss}");
}

#[test]
fn chapter_5_multinomial_sampling_counts_match_the_book() {
    let vocab = [
        "closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you",
    ];
    #[allow(clippy::approx_constant)] // 6.28 is a logit from the book
    let logits = [4.51f32, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79];
    let probas = next_token_probabilities(
        &logits,
        &Sampling {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        },
    );
    let mut rng = Rng::torch(123);
    assert_eq!(vocab[rng.multinomial(&probas)], "forward");
    let mut rng = Rng::torch(123);
    let mut counts = [0; 9];
    for _ in 0..1000 {
        counts[rng.multinomial(&probas)] += 1;
    }
    // Book 5.3.1: 73 x closer, 0 x every, 0 x effort, 582 x forward, 2 x inches, 0 x moves,
    // 0 x pizza, 343 x toward
    assert_eq!(counts, [73, 0, 0, 582, 2, 0, 0, 343, 0]);
}

#[test]
#[ignore = "trains GPT-2 small for 16 steps (about two minutes in release); run with --release -- --ignored"]
fn chapter_5_training_follows_the_books_first_evaluation_points() {
    let Some(text) = verdict() else { return };
    let settings = TrainSettings {
        book_compat: true,
        max_steps: Some(16),
        ..TrainSettings::preset("book-ch5").unwrap()
    };
    let out = std::env::temp_dir().join(format!("scratchgpt-book-run-{}", std::process::id()));
    let r = run(
        &text,
        settings,
        &RunOptions {
            out_dir: out.clone(),
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(&out);
    // Book 5.2: Ep 1 (Step 000000): Train loss 9.781, Val loss 9.933
    //           Ep 1 (Step 000005): Train loss 8.111, Val loss 8.339
    //           Ep 2 (Step 000010): Train loss 6.661, Val loss 7.048
    //           Ep 2 (Step 000015): Train loss 5.961, Val loss 6.616
    let book = [
        (9.781, 9.933),
        (8.111, 8.339),
        (6.661, 7.048),
        (5.961, 6.616),
    ];
    assert_eq!(r.history.len(), 4);
    // our step numbers count the steps done: the book's 0-based "Step 000000" is our step 1
    let steps: Vec<usize> = r.history.iter().map(|r| r.step).collect();
    assert_eq!(steps, [1, 6, 11, 16]);
    for (rec, (t, v)) in r.history.iter().zip(book) {
        // the book prints 3 decimals
        assert!(
            (rec.train_loss - t).abs() < 0.0015 && (rec.val_loss - v).abs() < 0.0015,
            "{rec:?} vs book {t}, {v}"
        );
    }
}
