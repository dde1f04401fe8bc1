//! Book chapter 4: the pieces of a GPT and the whole model.
//!
//! `cargo run --release --example ch04_gpt_model -- --book-compat`
//!
//! With `--book-compat` every random number is drawn as PyTorch draws it, so the values that
//! depend on random weights (the shortcut gradients, the generated tokens) are the book's;
//! without it they differ. Shapes, parameter counts and sizes are the book's either way.

use model::block::TransformerBlock;
use model::feed_forward::FeedForward;
use model::gelu::Gelu;
use model::generate::generate_text_simple;
use model::layer_norm::LayerNorm;
use model::linear::Linear;
use model::{Context, GptConfig, GptModel, Module};
use tensor::{Rng, Tensor};

/// The book's `ExampleDeepNeuralNetwork` (4.4): five linear layers with GELU, optional shortcuts.
struct DeepNet {
    layers: Vec<Linear>,
    shortcut: bool,
}

impl DeepNet {
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut x = x.clone();
        for l in &self.layers {
            let out = l.forward(&x).gelu();
            x = if self.shortcut && out.shape() == x.shape() {
                x.add(&out)
            } else {
                out
            };
        }
        x
    }

    /// Mean absolute gradient of each layer's weight after one backward pass (book `print_gradients`).
    fn print_gradients(&self, x: &Tensor) {
        let out = self.forward(x);
        let d = out.sub(&Tensor::zeros(&[1, 1]));
        d.mul(&d).mean_all().backward();
        for (i, l) in self.layers.iter().enumerate() {
            let g = l.weight.grad().unwrap().to_vec();
            let mean = g.iter().map(|v| v.abs()).sum::<f32>() / g.len() as f32;
            println!("    layers.{i}.0.weight has gradient mean of {mean}");
        }
    }
}

fn book_compat() -> bool {
    std::env::args().any(|a| a == "--book-compat")
}

fn ctx(seed: u64) -> Context {
    if book_compat() {
        Context::book_compat(seed)
    } else {
        Context::new(seed)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    train::cli::check_example_args(&["--book-compat"]);
    // 4.2 layer normalization
    let mut rng = if book_compat() {
        Rng::torch(123)
    } else {
        Rng::seed(123)
    };
    let batch = Tensor::randn(&[2, 5], &mut rng);
    let ln = LayerNorm::new(5);
    let out = ln.forward(&batch);
    println!(
        "4.2  after LayerNorm: mean {:?}, variance {:?}",
        out.mean(-1, false).to_vec(),
        out.var(-1, false, 0).to_vec()
    );

    // 4.3 GELU and the feed-forward network
    let xs = Tensor::from_vec(vec![-3.0, -1.0, 0.0, 1.0, 3.0], &[5]);
    println!(
        "4.3  GELU({:?}) = {:?}",
        xs.to_vec(),
        Gelu.forward(&xs).to_vec()
    );
    let ff = FeedForward::new(768, &ctx(123));
    println!(
        "     FeedForward on [2, 3, 768] -> {:?}",
        ff.forward(&Tensor::rand(&[2, 3, 768], &mut rng)).shape()
    );

    // 4.4 shortcut connections
    let sample = Tensor::from_vec(vec![1.0, 0.0, -1.0], &[1, 3]);
    for shortcut in [false, true] {
        let c = ctx(123);
        let sizes = [3, 3, 3, 3, 3, 1];
        let layers = sizes
            .windows(2)
            .map(|w| Linear::new(w[0], w[1], true, &c))
            .collect();
        println!(
            "4.4  gradients {} shortcut connections:",
            if shortcut { "with" } else { "without" }
        );
        DeepNet { layers, shortcut }.print_gradients(&sample);
    }

    // 4.5 the transformer block
    let cfg = GptConfig::gpt2_small();
    let block = TransformerBlock::new(&cfg, &ctx(123));
    let x = Tensor::rand(&[2, 4, 768], &mut rng);
    println!(
        "4.5  TransformerBlock: input {:?} -> output {:?}",
        x.shape(),
        block.forward(&x).shape()
    );

    // 4.6 the GPT model
    let model = GptModel::new(&cfg, &ctx(123))?;
    model.eval();
    let tok = train::Tokenizer::gpt2()?;
    let texts = ["Every effort moves you", "Every day holds a"];
    let ids: Vec<usize> = texts.iter().flat_map(|t| tok.encode(t)).collect();
    println!("4.6  input batch {:?}", ids);
    let logits = {
        let _g = tensor::no_grad();
        model.forward(&ids, 2)
    };
    println!("     output shape {:?}", logits.shape());
    let total = model.num_parameters();
    println!("     total number of parameters: {total}");
    println!(
        "     parameters with the output head tied to the token embedding: {}",
        total - cfg.vocab_size * cfg.emb_dim
    );
    println!("     total size of the model: {:.2} MB", model.size_mb());

    // 4.7 generating text (untrained: gibberish, as in the book)
    let encoded = tok.encode("Hello, I am");
    println!("4.7  encoded: {encoded:?}");
    let out = generate_text_simple(&model, &encoded, 6, cfg.context_length);
    println!("     output: {out:?}");
    println!("     book:   [15496, 11, 314, 716, 27018, 24086, 47843, 30961, 42348, 7267] (with --book-compat)");
    println!("     text: {:?}", tok.decode(&out)?);
    Ok(())
}
