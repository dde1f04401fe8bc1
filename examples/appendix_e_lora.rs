//! Book appendix E: parameter-efficient fine-tuning with LoRA — the parameter counts of
//! GPT-2 small before and after adding adapters (section E.4), an adapter that changes nothing
//! until it is trained, and, beyond the book (its repository's bonus code has it), merging the
//! trained adapters back into plain weights.
//!
//! `cargo run --release --example appendix_e_lora`
//!
//! The appendix's fine-tuning run (the chapter-6 spam classifier with rank-16 adapters) is the
//! command line's `scratchgpt finetune classify --checkpoint gpt2 --lora 16 --train train.csv
//! --val validation.csv --test test.csv`, and `scratchgpt merge-lora` folds a run's adapters
//! into its weights (README, "Fine-tuning with LoRA").

use model::classifier::{Classifier, Pool, Trainable};
use model::lora::{add_lora, merge_lora, LoraConfig};
use model::module::with_commas as count;
use model::{Context, GptConfig, GptModel, Module};
use tensor::{AdamW, Optimizer, Rng, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    train::cli::check_example_args(&[]);
    // E.4 the counts on the book's model: GPT-2 small with chapter 6's two-class head
    let (before, frozen, adapters) = gpt2_small_counts()?;
    println!("E.4  GPT-2 small with a 2-class head");
    println!("     trainable parameters before: {}", count(before));
    println!("     after freezing everything:   {}", count(frozen));
    println!(
        "     with rank-16 adapters on every linear layer: {} trainable ({:.0}× fewer)",
        count(adapters),
        before as f64 / adapters as f64
    );

    // E.4 on a small model: B starts at zero, so adding the adapters changes no output
    let ctx = Context::new(123);
    let mut model = small_classifier(&ctx)?;
    let ids: Vec<usize> = {
        let mut rng = Rng::seed(1);
        (0..4 * 16).map(|_| rng.below(256)).collect()
    };
    let lengths = [16; 4];
    let plain = logits(&model, &ids, &lengths);
    let trainable = add_lora(&mut model, &LoraConfig::new(4), &ctx);
    println!(
        "     a small classifier with rank-4 adapters ({} trainable values): largest change of \
         its logits after adding them: {}",
        count(trainable),
        max_abs_diff(&plain, &logits(&model, &ids, &lengths))
    );

    // a few steps that teach it to call every text class 1: only A and B change
    let params: Vec<Tensor> = model
        .trainable_parameters()
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let mut opt = AdamW::new(params, 1e-2, 0.1);
    for step in 1..=20 {
        opt.zero_grad();
        let loss = model.forward(&ids, &lengths).cross_entropy(&[1; 4]);
        loss.backward();
        opt.step();
        if step == 1 || step % 10 == 0 {
            println!("     step {step:>2}: loss {:.4}", loss.item());
        }
    }
    let adapted = logits(&model, &ids, &lengths);

    // beyond the book: merging, W' = W + (alpha/rank)·(A·B)ᵀ, after which the model is a plain
    // one again (as fast as the base model)
    let with_adapters = model.num_parameters();
    merge_lora(&mut model);
    println!(
        "     merged (beyond the book): {} parameters (was {} with the adapters); largest change of the logits: {:.1e}",
        count(model.num_parameters()),
        count(with_adapters),
        max_abs_diff(&adapted, &logits(&model, &ids, &lengths))
    );
    Ok(())
}

/// (trainable parameters of GPT-2 small with a 2-class head, trainable after freezing all,
/// trainable after adding rank-16 adapters) — 124,441,346, 0, 2,666,528 in the book.
fn gpt2_small_counts() -> Result<(usize, usize, usize), Box<dyn std::error::Error>> {
    let ctx = Context::for_loading(); // zeros: only the counts matter here
    let cfg = GptConfig {
        qkv_bias: true,
        tie_weights: true,
        ..GptConfig::gpt2_small()
    };
    let mut m = Classifier::new(GptModel::new(&cfg, &ctx)?, 2, Pool::Last, &ctx);
    m.set_trainable(Trainable::All);
    let before = m.num_trainable_parameters();
    for p in m.parameters() {
        p.set_requires_grad(false);
    }
    let frozen = m.num_trainable_parameters();
    add_lora(&mut m, &LoraConfig::new(16), &ctx);
    Ok((before, frozen, m.num_trainable_parameters()))
}

fn small_classifier(ctx: &Context) -> Result<Classifier, Box<dyn std::error::Error>> {
    let cfg = GptConfig {
        vocab_size: 256,
        context_length: 16,
        emb_dim: 32,
        n_heads: 4,
        n_layers: 2,
        drop_rate: 0.0,
        ..GptConfig::gpt2_small()
    };
    Ok(Classifier::new(
        GptModel::new(&cfg, ctx)?,
        2,
        Pool::Last,
        ctx,
    ))
}

fn logits(m: &Classifier, ids: &[usize], lengths: &[usize]) -> Vec<f32> {
    let _g = tensor::no_grad();
    m.forward(ids, lengths).to_vec()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_books_counts() {
        // appendix E: "Total trainable parameters before: 124,441,346", "after: 0",
        // "Total trainable LoRA parameters: 2,666,528"
        let (before, frozen, adapters) = gpt2_small_counts().unwrap();
        assert_eq!(
            [count(before), count(frozen), count(adapters)],
            ["124,441,346", "0", "2,666,528"]
        );
    }
}
