//! Book chapter 2: from text to token ids, and the sliding window that makes training pairs.
//!
//! `cargo run --release --example ch02_tokenizer`

use train::data::TokenWindows;
use train::Tokenizer;

fn main() -> Result<(), Box<dyn std::error::Error>> {
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
    let path = std::path::Path::new("../shared/data/the-verdict.txt");
    let raw =
        std::fs::read_to_string(path).unwrap_or_else(|_| train::corpus::DEFAULT_CORPUS.to_string());
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
    Ok(())
}
