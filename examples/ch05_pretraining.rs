//! Book chapter 5: the loss of an untrained model, and decoding strategies.
//!
//! `cargo run --release --example ch05_pretraining -- --book-compat`
//!
//! The training run itself is the command line's `book-ch5` preset:
//! `cargo run --release -- train --data ../shared/data/the-verdict.txt --preset book-ch5`

use model::generate::{next_token_probabilities, sample_index, Sampling};
use model::loss::{cross_entropy, perplexity};
use model::{Context, GptConfig, GptModel};
use tensor::{no_grad, Rng};
use train::trainer::{evaluate, make_loaders};
use train::TrainSettings;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    train::cli::check_example_args(&["--book-compat"]);
    // 5.1 losses of the untrained model on the-verdict.txt (or the built-in corpus, with a
    // notice; with --book-compat the book's story is required)
    let book = std::env::args().any(|a| a == "--book-compat");
    let text = match (train::corpus::the_verdict(), book) {
        (Some(text), _) => text,
        (None, true) => {
            return Err(format!(
                "--book-compat reproduces the book's numbers on its story, and {} is missing",
                train::corpus::THE_VERDICT_PATH
            )
            .into())
        }
        (None, false) => train::corpus::the_verdict_or_notice(),
    };
    let settings = TrainSettings::preset("book-ch5")?;
    let tok = train::Tokenizer::gpt2()?;
    let (train_loader, val_loader) = make_loaders(&text, "the-verdict.txt", &settings, &tok)?;
    println!(
        "5.1  characters: {}, tokens: {}",
        text.chars().count(),
        tok.encode(&text).len()
    );
    let ctx = if book {
        Context::book_compat(123)
    } else {
        Context::new(123)
    };
    let model = GptModel::new(
        &GptConfig {
            context_length: 256,
            ..GptConfig::gpt2_small()
        },
        &ctx,
    )?;
    model.eval();
    let n = usize::MAX;
    let train_loss = evaluate(&model, &train_loader, n)?;
    let val_loss = evaluate(&model, &val_loader, n)?;
    println!(
        "     training loss {train_loss:.4}, validation loss {val_loss:.4} (ln 50257 = {:.4})",
        50257f32.ln()
    );
    let logits = {
        let _g = no_grad();
        let b = train_loader.batch(&train_loader.in_order(), 0)?;
        cross_entropy(&model.forward(&b.inputs, b.batch), &b.targets)
    };
    println!(
        "     perplexity of one batch: {:.1}",
        perplexity(logits.item())
    );

    // 5.3 decoding strategies on the book's nine-word vocabulary
    let vocab = [
        "closer", "every", "effort", "forward", "inches", "moves", "pizza", "toward", "you",
    ];
    #[allow(clippy::approx_constant)] // 6.28 is a logit from the book, not 2π
    let logits: [f32; 9] = [4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79];
    let best = (0..9)
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap();
    println!(
        "5.3  greedy next token (temperature 0: the most likely one): {}",
        vocab[best]
    );
    for t in [1.0, 0.1, 5.0] {
        let p = next_token_probabilities(
            &logits,
            &Sampling {
                temperature: t,
                top_k: None,
                top_p: None,
            },
        );
        let mut counts = [0usize; 9];
        let mut rng = if book {
            Rng::torch(123)
        } else {
            Rng::seed(123)
        };
        for _ in 0..1000 {
            counts[sample_index(&p, &mut rng)] += 1;
        }
        println!(
            "     temperature {t}: sampled 1000 times{}:",
            if t == 1.0 {
                " (book: 73 closer, 582 forward, 2 inches, 343 toward)"
            } else {
                ""
            }
        );
        for (w, c) in vocab.iter().zip(counts) {
            if c > 0 {
                println!("       {c:4} x {w}");
            }
        }
    }
    let top3 = next_token_probabilities(
        &logits,
        &Sampling {
            temperature: 1.0,
            top_k: Some(3),
            top_p: None,
        },
    );
    let shown: Vec<String> = top3.iter().map(|p| format!("{p:.4}")).collect();
    println!("     top-k = 3 probabilities: [{}]", shown.join(", "));
    Ok(())
}
