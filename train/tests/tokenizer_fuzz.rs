//! Tokenizers on arbitrary input: any text encodes and decodes back exactly; any byte
//! sequence encodes (byte-level) and its bytes come back; random tokenizer files give errors,
//! never panics.

use std::panic::{catch_unwind, AssertUnwindSafe};

use scratchgpt_train::tokenizer::files::from_files;
use scratchgpt_train::Tokenizer;
use tensor::Rng;

/// Random text mixing ASCII, whitespace runs, punctuation, accents, CJK, emoji, the special
/// marker and arbitrary Unicode scalar values.
fn random_text(rng: &mut Rng) -> String {
    const PIECES: [&str; 14] = [
        "the",
        " ",
        "  ",
        "\n",
        "\t",
        "'s",
        "Ab",
        "é",
        "日本",
        "🎉",
        "123",
        "?!",
        "<|endoftext|>",
        "\u{200b}",
    ];
    let mut s = String::new();
    for _ in 0..rng.below(40) {
        if rng.below(3) == 0 {
            let c = loop {
                if let Some(c) = char::from_u32(rng.below(0x11_0000) as u32) {
                    break c;
                }
            };
            s.push(c);
        } else {
            s.push_str(PIECES[rng.below(PIECES.len())]);
        }
    }
    s
}

#[test]
fn arbitrary_text_round_trips_through_every_tokenizer() {
    let mut rng = Rng::seed(7);
    let corpus: String = (0..200).map(|_| random_text(&mut rng)).collect();
    let tokenizers = [
        Tokenizer::gpt2().unwrap(),
        Tokenizer::bytes(),
        Tokenizer::train_bpe(&corpus, 400, |_, _| {}).unwrap(),
    ];
    for _ in 0..3000 {
        let text = random_text(&mut rng);
        for tok in &tokenizers {
            let ids = tok.encode(&text);
            assert!(ids.iter().all(|&i| i < tok.vocab_size()));
            assert_eq!(tok.decode(&ids).unwrap(), text, "{tok:?} on {text:?}");
        }
    }
}

#[test]
fn arbitrary_bytes_round_trip() {
    let mut rng = Rng::seed(8);
    let tok = Tokenizer::gpt2().unwrap();
    for _ in 0..2000 {
        let data: Vec<u8> = (0..rng.below(64)).map(|_| rng.below(256) as u8).collect();
        assert_eq!(tok.decode_bytes(&tok.encode_bytes(&data)).unwrap(), data);
    }
}

#[test]
fn random_tokenizer_files_fail_cleanly() {
    let dir = std::env::temp_dir().join(format!("scratchgpt-tokfuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let corpus = "low lower lowest newer wider ".repeat(30);
    let good = Tokenizer::train_bpe(&corpus, 300, |_, _| {})
        .unwrap()
        .files();
    let vocab = good
        .iter()
        .find(|(n, _)| n == "vocab.json")
        .unwrap()
        .1
        .clone();
    let merges = good
        .iter()
        .find(|(n, _)| n == "merges.txt")
        .unwrap()
        .1
        .clone();
    let mut rng = Rng::seed(9);
    for case in 0..1500 {
        let (mut v, mut m) = (vocab.clone(), merges.clone());
        let target = if case % 2 == 0 { &mut v } else { &mut m };
        match rng.below(3) {
            0 => {
                let i = rng.below(target.len());
                target[i] = rng.below(256) as u8;
            }
            1 => target.truncate(rng.below(target.len())),
            _ => target.extend((0..rng.below(16)).map(|_| rng.below(256) as u8)),
        }
        std::fs::write(dir.join("vocab.json"), &v).unwrap();
        std::fs::write(dir.join("merges.txt"), &m).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            from_files(&dir.join("vocab.json"), &dir.join("merges.txt"))
        }));
        match r {
            Ok(Ok(tok)) => assert_eq!(tok.decode(&tok.encode(&corpus)).unwrap(), corpus),
            Ok(Err(_)) => {}
            Err(_) => panic!("case {case} panicked"),
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
