//! Hugging Face `tokenizers`' `tokenizer.json`, for byte-level BPEs (GPT-2's kind).
//!
//! The parts of the file that matter here, as the `openai-community/gpt2` repository has them:
//! ```text
//! added_tokens   [{"id": 50256, "content": "<|endoftext|>", "special": true, ...}]
//! normalizer     null
//! pre_tokenizer  {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true, ...}
//! decoder        {"type": "ByteLevel", ...}
//! model          {"type": "BPE", "vocab": {token: id, ...}, "merges": ["Ġ t", ...], ...}
//! ```
//! `use_regex: true` splits text into words with GPT-2's pattern first (scratchgpt's
//! pre-tokenization); `false` takes the whole text as one word, which is how the bytes
//! tokenizer is written (with no merges). Merges are `"a b"` strings, or `["a", "b"]` arrays in
//! files of newer `tokenizers` versions; both are read, strings are written (every version
//! reads them). Anything this crate's tokenizer cannot reproduce exactly (another model type,
//! a normalizer, added tokens other than `<|endoftext|>`, ...) is an error naming the field.

use std::path::Path;

use serde_json::{json, Value};

use super::files::{vocab_entries, BpeTables};
use super::{Tokenizer, TokenizerError, END_OF_TEXT};

/// The `tokenizer.json` of `tok`, whose tokens written out are `names` and merges `merges`.
/// The fields are those of the published GPT-2 file, which every `tokenizers` version reads
/// (no `ignore_merges`, which versions before 0.19 do not know; it defaults to false).
pub(super) fn to_json(tok: &Tokenizer, names: &[String], merges: &[(u32, u32)]) -> Vec<u8> {
    let byte_level = |add_prefix_space: bool, trim_offsets: bool| {
        json!({
            "type": "ByteLevel",
            "add_prefix_space": add_prefix_space,
            "trim_offsets": trim_offsets,
            "use_regex": tok.pretokenize,
        })
    };
    let vocab: serde_json::Map<String, Value> = names
        .iter()
        .enumerate()
        .map(|(id, name)| (name.clone(), json!(id)))
        .collect();
    let merges: Vec<String> = merges
        .iter()
        .map(|&(a, b)| format!("{} {}", names[a as usize], names[b as usize]))
        .collect();
    let added: Vec<Value> = tok
        .specials
        .iter()
        .map(|(content, id)| {
            json!({
                "id": id, "content": content, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": true, "special": true,
            })
        })
        .collect();
    let file = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": byte_level(false, true),
        "post_processor": byte_level(true, false),
        "decoder": byte_level(true, true),
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": false,
            "byte_fallback": false,
            "vocab": vocab,
            "merges": merges,
        },
    });
    serde_json::to_vec_pretty(&file).expect("JSON values serialize")
}

/// The tokenizer a parsed `tokenizer.json` (at `path`, for messages) describes.
pub(super) fn from_value(v: &Value, path: &Path) -> Result<Tokenizer, TokenizerError> {
    let err = |m: String| TokenizerError(format!("{}: {m}", path.display()));
    let unsupported = |field: &str, found: &Value| {
        err(format!(
            "{field} is {found}; only byte-level BPE tokenizers (GPT-2's kind) are supported"
        ))
    };
    let model = &v["model"];
    if model["type"] != "BPE" {
        return Err(unsupported("model.type", &model["type"]));
    }
    for (field, empty) in [
        ("continuing_subword_prefix", json!("")),
        ("end_of_word_suffix", json!("")),
    ] {
        let x = &model[field];
        if !x.is_null() && *x != empty {
            return Err(unsupported(&format!("model.{field}"), x));
        }
    }
    if !model["dropout"].is_null() && model["dropout"] != json!(0.0) {
        return Err(unsupported("model.dropout", &model["dropout"]));
    }
    if !v["normalizer"].is_null() {
        return Err(unsupported("normalizer", &v["normalizer"]));
    }
    let pre = &v["pre_tokenizer"];
    if pre["type"] != "ByteLevel" || pre["add_prefix_space"] == true {
        return Err(unsupported("pre_tokenizer", pre));
    }
    let pretokenize = pre["use_regex"].as_bool().unwrap_or(true);
    let mut entries =
        vocab_entries(&model["vocab"]).map_err(|m| err(format!("model.vocab: {m}")))?;
    let added = match &v["added_tokens"] {
        Value::Null => &Vec::new(),
        Value::Array(a) => a,
        other => return Err(unsupported("added_tokens", other)),
    };
    for t in added {
        let (Some(content), Some(id)) = (t["content"].as_str(), t["id"].as_u64()) else {
            return Err(err(format!(
                "added token {t} needs a \"content\" and an \"id\""
            )));
        };
        if content != END_OF_TEXT {
            return Err(err(format!(
                "added token {content:?} is not supported (only {END_OF_TEXT})"
            )));
        }
        match entries.iter().find(|(tok, _)| tok == END_OF_TEXT) {
            Some(&(_, in_vocab)) if in_vocab != id => {
                return Err(err(format!(
                    "{END_OF_TEXT} is id {in_vocab} in model.vocab but {id} in added_tokens"
                )))
            }
            Some(_) => {}
            None => entries.push((END_OF_TEXT.to_string(), id)),
        }
    }
    let merges = match &model["merges"] {
        Value::Null => Vec::new(),
        Value::Array(list) => list
            .iter()
            .map(|m| {
                let pair = match m {
                    Value::String(s) => s.split_once(' '),
                    Value::Array(ab) => match &ab[..] {
                        [Value::String(a), Value::String(b)] => Some((a.as_str(), b.as_str())),
                        _ => None,
                    },
                    _ => None,
                };
                pair.map(|(a, b)| (a.to_string(), b.to_string(), 0))
                    .ok_or_else(|| {
                        err(format!(
                            "model.merges: {m} is neither \"a b\" nor [\"a\", \"b\"]"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?,
        other => return Err(unsupported("model.merges", other)),
    };
    BpeTables {
        file: path,
        entries,
        merges,
        merges_file: path,
        pretokenize,
    }
    .build()
}

#[cfg(test)]
mod tests {
    use super::super::TokenizerKind;
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("scratchgpt-hfjson-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Writes `tok.files()` into a fresh directory and loads it back.
    fn save_and_load(tok: &Tokenizer, name: &str) -> Tokenizer {
        let dir = temp_dir(name);
        for (file, bytes) in tok.files() {
            std::fs::write(dir.join(file), bytes).unwrap();
        }
        let back = Tokenizer::load(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        back
    }

    fn parse(v: Value) -> Result<Tokenizer, TokenizerError> {
        from_value(&v, Path::new("tokenizer.json"))
    }

    const TEXT: &str = "low lower lowest newer wider <|endoftext|> naïve 🎉\n\n  spaces";

    #[test]
    fn every_kind_is_written_as_a_hugging_face_file_and_read_back_as_itself() {
        let bpe = Tokenizer::train_bpe(&"low lower lowest newer wider ".repeat(30), 280, |_, _| {})
            .unwrap();
        for tok in [Tokenizer::gpt2().unwrap(), Tokenizer::bytes(), bpe] {
            let files = tok.files();
            let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["tokenizer.json", "vocab.json", "merges.txt"]);
            let json: Value = serde_json::from_slice(&files[0].1).unwrap();
            assert_eq!(json["model"]["type"], "BPE");
            assert_eq!(json["added_tokens"][0]["content"], END_OF_TEXT);
            let back = save_and_load(&tok, "kinds");
            assert_eq!(back.kind(), tok.kind());
            assert_eq!(back.vocab_size(), tok.vocab_size());
            assert_eq!(back.encode(TEXT), tok.encode(TEXT), "{tok:?}");
        }
    }

    #[test]
    fn gpt2_file_has_its_50000_merges_and_the_bytes_file_none() {
        let gpt2 = Tokenizer::gpt2().unwrap();
        let json: Value = serde_json::from_slice(&gpt2.files()[0].1).unwrap();
        let merges = json["model"]["merges"].as_array().unwrap();
        assert_eq!(merges.len(), 50_000);
        assert_eq!(merges[0], "Ġ t"); // GPT-2's first merge
        assert_eq!(json["model"]["vocab"]["<|endoftext|>"], 50256);
        assert_eq!(json["pre_tokenizer"]["use_regex"], true);
        let bytes: Value = serde_json::from_slice(&Tokenizer::bytes().files()[0].1).unwrap();
        assert_eq!(bytes["model"]["merges"], json!([]));
        assert_eq!(bytes["model"]["vocab"].as_object().unwrap().len(), 257);
        assert_eq!(bytes["model"]["vocab"]["Ġ"], 32); // the space byte keeps id 32
        assert_eq!(bytes["pre_tokenizer"]["use_regex"], false); // the whole text is one word
    }

    #[test]
    fn merges_are_read_as_strings_or_as_pairs() {
        let tok = Tokenizer::train_bpe(&"low lower lowest ".repeat(30), 270, |_, _| {}).unwrap();
        let mut json: Value = serde_json::from_slice(&tok.files()[0].1).unwrap();
        let pairs: Vec<Value> = json["model"]["merges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let (a, b) = m.as_str().unwrap().split_once(' ').unwrap();
                json!([a, b])
            })
            .collect();
        json["model"]["merges"] = Value::Array(pairs);
        assert_eq!(parse(json).unwrap().encode(TEXT), tok.encode(TEXT));
    }

    #[test]
    fn what_cannot_be_reproduced_exactly_is_refused_naming_the_field() {
        let good: Value = serde_json::from_slice(&Tokenizer::bytes().files()[0].1).unwrap();
        let cases: [(&str, Value, &str); 6] = [
            (
                "/model/type",
                json!("WordPiece"),
                "model.type is \"WordPiece\"",
            ),
            ("/normalizer", json!({"type": "NFC"}), "normalizer is"),
            (
                "/pre_tokenizer",
                json!({"type": "Whitespace"}),
                "pre_tokenizer is",
            ),
            ("/model/merges", json!([["a"]]), "neither \"a b\" nor"),
            (
                "/added_tokens/0/content",
                json!("<pad>"),
                "added token \"<pad>\"",
            ),
            (
                "/added_tokens/0/id",
                json!(3),
                "is id 256 in model.vocab but 3",
            ),
        ];
        for (pointer, value, message) in cases {
            let mut v = good.clone();
            *v.pointer_mut(pointer).unwrap() = value;
            let e = parse(v).unwrap_err().to_string();
            assert!(e.starts_with("tokenizer.json: "), "{e}");
            assert!(e.contains(message), "{pointer}: {e}");
        }
    }

    #[test]
    fn mutated_files_load_or_fail_with_an_error_never_a_panic() {
        let tok = Tokenizer::train_bpe(&"low lower lowest ".repeat(30), 270, |_, _| {}).unwrap();
        let good = tok.files().swap_remove(0).1;
        let dir = temp_dir("mutated");
        let path = dir.join("tokenizer.json");
        let mut rng = tensor::Rng::seed(13);
        for case in 0..600 {
            let mut bytes = good.clone();
            for _ in 0..=rng.below(3) {
                let i = rng.below(bytes.len());
                match rng.below(3) {
                    0 => bytes[i] = b"\"0123456789[]{},: abz"[rng.below(20)],
                    1 => drop(bytes.drain(i..(i + rng.below(40)).min(bytes.len()))),
                    _ => bytes.insert(i, rng.below(256) as u8),
                }
            }
            std::fs::write(&path, &bytes).unwrap();
            let r = std::panic::catch_unwind(|| Tokenizer::load(&dir));
            match r {
                Ok(Ok(t)) => assert_eq!(t.decode(&t.encode(TEXT)).unwrap(), TEXT),
                Ok(Err(e)) => assert!(e.to_string().contains("tokenizer.json"), "{e}"),
                Err(_) => panic!("case {case} panicked"),
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn older_checkpoints_kind_markers_still_load() {
        let dir = temp_dir("marker");
        let bpe = Tokenizer::train_bpe(&"low lower lowest ".repeat(30), 270, |_, _| {}).unwrap();
        for (kind, want) in [
            ("gpt2", TokenizerKind::Gpt2),
            ("bytes", TokenizerKind::Bytes),
            ("bpe", TokenizerKind::Bpe),
        ] {
            std::fs::write(
                dir.join("tokenizer.json"),
                format!("{{\n  \"kind\": \"{kind}\"\n}}"),
            )
            .unwrap();
            if kind == "bpe" {
                for (file, bytes) in bpe.files().into_iter().skip(1) {
                    std::fs::write(dir.join(file), bytes).unwrap(); // vocab.json, merges.txt
                }
            }
            assert_eq!(*Tokenizer::load(&dir).unwrap().kind(), want);
        }
        std::fs::write(dir.join("tokenizer.json"), "{\"kind\": \"other\"}").unwrap();
        let e = Tokenizer::load(&dir).unwrap_err().to_string();
        assert!(e.contains("neither a Hugging Face tokenizer"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
