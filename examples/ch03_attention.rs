//! Book chapter 3: attention, from the simplified version to multi-head attention.
//!
//! `cargo run --release --example ch03_attention -- --book-compat`
//!
//! Section 3.3 uses no random numbers, so its values equal the book's exactly. Later sections
//! initialise weights randomly: with `--book-compat` they draw from PyTorch's generator and
//! print the book's numbers (shown beside them); without it, scratchgpt's own generator gives
//! other values with the same shapes and properties.

use model::attention::simplified::{
    attention_for_query, simplified_self_attention, your_journey_inputs,
};
use model::attention::{
    causal_mask, CausalAttention, MultiHeadAttention, MultiHeadAttentionWrapper,
};
use model::attention::{SelfAttentionV1, SelfAttentionV2};
use model::Context;
use tensor::{Rng, Tensor};

fn show(label: &str, t: &Tensor) {
    let cols = *t.shape().last().unwrap_or(&1);
    let rows: Vec<String> = t
        .to_vec()
        .chunks(cols.max(1))
        .map(|r| {
            r.iter()
                .map(|v| format!("{v:7.4}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    println!("{label} {:?}:", t.shape());
    for r in rows {
        println!("    [{r}]");
    }
}

/// A context seeded like `torch.manual_seed(seed)` with `--book-compat`, else scratchgpt's own.
fn ctx(seed: u64) -> Context {
    if book_compat() {
        Context::book_compat(seed)
    } else {
        Context::new(seed)
    }
}

fn book_compat() -> bool {
    std::env::args().any(|a| a == "--book-compat")
}

fn rng(seed: u64) -> Rng {
    if book_compat() {
        Rng::torch(seed)
    } else {
        Rng::seed(seed)
    }
}

fn main() {
    train::cli::check_example_args(&["--book-compat"]);
    println!(
        "random numbers: {}",
        if book_compat() {
            "PyTorch's (--book-compat)"
        } else {
            "scratchgpt's own (add --book-compat for the book's)"
        }
    );
    let inputs = your_journey_inputs();

    // 3.3.1 one query
    let (w, z) = attention_for_query(&inputs, 1);
    show("3.3.1 attention weights for \"journey\" (book: 0.1385, 0.2379, 0.2333, 0.1240, 0.1082, 0.1581)", &w);
    show(
        "      context vector z(2) (book: 0.4419, 0.6515, 0.5683)",
        &z,
    );

    // 3.3.2 all queries
    let (all_w, all_z) = simplified_self_attention(&inputs);
    show("3.3.2 all attention weights", &all_w);
    show("      all context vectors", &all_z);

    // 3.4 trainable weights
    let v1 = SelfAttentionV1::new(3, 2, &ctx(123));
    show(
        "3.4.1 SelfAttentionV1 context vectors",
        &v1.forward(&inputs),
    );
    let v2 = SelfAttentionV2::new(3, 2, false, &ctx(789));
    show(
        "3.4.2 SelfAttentionV2 attention weights",
        &v2.attention_weights(&inputs),
    );
    show(
        "      SelfAttentionV2 context vectors",
        &v2.forward(&inputs),
    );

    // 3.5 causal mask and dropout
    show("3.5.1 the causal mask (1 = hidden)", &causal_mask(6));
    let c = ctx(789);
    c.eval();
    let ca = CausalAttention::new(3, 2, 6, 0.0, false, &c);
    show(
        "      masked attention weights",
        &ca.attention_weights(&inputs.unsqueeze(0)).squeeze(0),
    );
    let ones = Tensor::ones(&[6, 6]);
    show(
        "3.5.2 dropout(0.5) on a matrix of ones: kept values are scaled to 2",
        &ones.dropout(0.5, true, &mut rng(123)),
    );
    let batch = Tensor::concat(&[&inputs.unsqueeze(0), &inputs.unsqueeze(0)], 0);
    let c123 = ctx(123);
    let ca = CausalAttention::new(3, 2, 6, 0.0, false, &c123);
    let context_vecs = ca.forward(&batch);
    println!(
        "3.5.3 CausalAttention on a batch {:?} -> context vectors {:?}",
        batch.shape(),
        context_vecs.shape()
    );
    show(
        "      the first sequence's context vectors (book, first row: [-0.4519, 0.2216])",
        &context_vecs.narrow(0, 0, 1).squeeze(0),
    );

    // 3.6 multi-head attention
    let wrapper = MultiHeadAttentionWrapper::new(3, 2, 6, 0.0, 2, false, &ctx(123));
    show(
        "3.6.1 MultiHeadAttentionWrapper (2 heads of 2) on the batch",
        &wrapper.forward(&batch),
    );
    let mha = MultiHeadAttention::new(3, 2, 6, 0.0, 2, false, &ctx(123));
    show(
        "3.6.2 MultiHeadAttention (d_out 2, 2 heads)",
        &mha.forward(&batch),
    );
    let composed = mha.forward_composed(&batch);
    let diff = mha.forward(&batch).sub(&composed).abs_max();
    println!("      fused and composed paths differ by at most {diff:.2e}");
}

trait AbsMax {
    fn abs_max(&self) -> f32;
}

impl AbsMax for Tensor {
    fn abs_max(&self) -> f32 {
        self.to_vec().iter().fold(0.0f32, |a, b| a.max(b.abs()))
    }
}
