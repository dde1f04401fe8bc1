//! Book chapter 2: from text to token ids, the sliding window that makes training pairs, and
//! the token and position embeddings the model starts from.
//!
//! `cargo run --release --example ch02_tokenizer`

use model::embedding::Embedding;
use model::Context;
use train::data::TokenWindows;
use train::Tokenizer;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    train::cli::check_example_args(&[]);
    // 2.5 Byte pair encoding with GPT-2's vocabulary
    let tok = Tokenizer::gpt2()?;
    let text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace.";
    let ids = tok.encode(text);
    println!("2.5  ids:     {ids:?}");
    println!("     decoded: {}", tok.decode(&ids)?);
    // Unknown words are split into known pieces instead of becoming <|unk|>:
    for piece in tok.encode("Akwirw ier") {
        println!("     {piece:>6} -> {:?}", tok.decode(&[piece])?);
    }

    // 2.6 Data sampling with a sliding window
    let raw = train::corpus::the_verdict_or_notice();
    let enc = tok.encode(&raw);
    println!("2.6  {} tokens in the text", enc.len());
    let sample = &enc[50..];
    let context_size = 4;
    println!("     x: {:?}", &sample[..context_size]);
    println!("     y:      {:?}", &sample[1..context_size + 1]);
    for i in 1..=context_size {
        println!(
            "     {:?} ----> {}",
            tok.decode(&sample[..i])?,
            tok.decode(&sample[i..i + 1])?
        );
    }
    let windows = TokenWindows::new(enc, 4, 4)?;
    let (x, y) = windows.window(0)?;
    println!(
        "     first window: inputs {x:?}, targets {y:?} ({} windows of 4 with stride 4)",
        windows.len()
    );

    // 2.7 Token embeddings: a lookup table of N(0, 1) rows, drawn as torch.manual_seed(123)
    // then nn.Embedding(6, 3) draws them
    let ctx = Context::book_compat(123);
    let table = Embedding::new(6, 3, &ctx);
    println!("2.7  embedding weights (6 ids × 3):");
    for row in table.weight.to_vec().chunks(3) {
        println!("     {row:>8.4?}");
    }
    println!("     id 3 -> {:.4?}", table.forward(&[3], &[1]).to_vec());
    // 2.8 Positions: a second table indexed by 0..T, added to the tokens' rows
    let (vocab, dim, t) = (50257, 256, 4);
    let tokens = Embedding::new(vocab, dim, &ctx);
    let positions = Embedding::new(t, dim, &ctx);
    let ids: Vec<usize> = windows
        .window(0)?
        .0
        .iter()
        .copied()
        .cycle()
        .take(8 * t)
        .collect();
    let token_emb = tokens.forward(&ids, &[8, t]);
    let pos_emb = positions.forward(&(0..t).collect::<Vec<_>>(), &[t]);
    let input_emb = &token_emb + &pos_emb;
    println!(
        "2.8  token embeddings {:?} + position embeddings {:?} = input embeddings {:?}",
        token_emb.shape(),
        pos_emb.shape(),
        input_emb.shape()
    );
    Ok(())
}
