//! Hostile and broken weight files: thousands of mutations of a valid checkpoint (flipped
//! bytes, truncations, edited header fields, edited config values) under a fixed seed. Every
//! load must either succeed (a flipped data byte still makes a valid file) or return an error;
//! never panic, abort or allocate without bound.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use scratchgpt_model::weights::{
    load_model_with, save_model, LoadOptions, CONFIG_FILE, WEIGHTS_FILE,
};
use scratchgpt_model::{Context, GptConfig, GptModel};
use tensor::Rng;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scratchgpt-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn valid_checkpoint(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let cfg = GptConfig {
        vocab_size: 23,
        context_length: 8,
        emb_dim: 8,
        n_heads: 2,
        n_layers: 1,
        drop_rate: 0.0,
        qkv_bias: true,
        tie_weights: false,
    };
    save_model(&GptModel::new(&cfg, &Context::new(0)).unwrap(), dir).unwrap();
    (
        std::fs::read(dir.join(WEIGHTS_FILE)).unwrap(),
        std::fs::read(dir.join(CONFIG_FILE)).unwrap(),
    )
}

/// Replaces every occurrence of `from` in `data` with `to` (byte strings).
fn replace(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

/// One random mutation of a file's bytes; `header_len` bounds the JSON header area.
fn mutate(data: &[u8], header_len: usize, rng: &mut Rng) -> Vec<u8> {
    let mut d = data.to_vec();
    match rng.below(9) {
        0 => {
            // flip a few bytes anywhere
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
        }
        1 => d.truncate(rng.below(d.len())),
        2 => {
            // a byte in the header (JSON) area
            let i = rng.below(header_len.min(d.len()));
            let alphabet = b"{}[]\":,0123456789-eE.FIUBx ";
            d[i] = alphabet[rng.below(alphabet.len())];
        }
        3 => {
            // the 8-byte header length: huge, zero, or off by a little
            let v: u64 = match rng.below(3) {
                0 => u64::MAX - rng.below(1000) as u64,
                1 => 0,
                _ => (header_len as u64)
                    .wrapping_add(rng.below(64) as u64)
                    .wrapping_sub(32),
            };
            d[..8].copy_from_slice(&v.to_le_bytes());
        }
        4 => {
            d = replace(
                &d,
                b"\"F32\"",
                [&b"\"F16\""[..], b"\"BF16\"", b"\"I64\"", b"\"F64\""][rng.below(4)],
            )
        }
        5 => {
            // shapes and offsets to large or overflowing numbers
            let big: &[u8] = [
                &b"4294967296"[..],
                b"18446744073709551615",
                b"99999999999",
                b"0",
            ][rng.below(4)];
            d = replace(
                &d,
                [&b"[8,"[..], b",8]", b"[23,", b"24]"][rng.below(4)],
                &[b"[", big, b","].concat(),
            );
        }
        6 => d = replace(&d, b"h.0.", b"h.7."),
        7 => d.extend((0..rng.below(64)).map(|_| rng.below(256) as u8)),
        _ => {
            // duplicate a name: two keys the same
            d = replace(&d, b"ln_1.bias", b"ln_1.weight");
        }
    }
    d
}

fn config_mutation(cfg: &[u8], rng: &mut Rng) -> Vec<u8> {
    let text = String::from_utf8_lossy(cfg).to_string();
    let out = match rng.below(6) {
        0 => text[..rng.below(text.len())].to_string(),
        1 => text.replace(
            "\"n_embd\": 8",
            [
                "\"n_embd\": 4096",
                "\"n_embd\": -8",
                "\"n_embd\": \"8\"",
                "\"n_embd\": 1e30",
                "\"n_embd\": 0",
            ][rng.below(5)],
        ),
        2 => text.replace(
            "\"n_layer\": 1",
            ["\"n_layer\": 100000", "\"n_layer\": 2", "\"n_layer\": null"][rng.below(3)],
        ),
        3 => text.replace(
            "\"vocab_size\": 23",
            [
                "\"vocab_size\": 18446744073709551615",
                "\"vocab_size\": 22",
                "\"vocab_size\": 4294967297",
            ][rng.below(3)],
        ),
        4 => text.replace("\"n_positions\": 8", "\"n_positions\": 1000000000"),
        _ => text.replace("gelu_new", "relu"),
    };
    out.into_bytes()
}

#[test]
fn mutated_weight_files_load_or_fail_cleanly() {
    let dir = tmp("weights");
    let (weights, config) = valid_checkpoint(&dir);
    let header_len = 8 + u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let mut rng = Rng::seed(2024);
    let (mut ok, mut err) = (0, 0);
    for case in 0..2000 {
        let (w, c) = if case % 4 == 3 {
            (weights.clone(), config_mutation(&config, &mut rng))
        } else {
            (mutate(&weights, header_len, &mut rng), config.clone())
        };
        std::fs::write(dir.join(WEIGHTS_FILE), &w).unwrap();
        std::fs::write(dir.join(CONFIG_FILE), &c).unwrap();
        let result = catch_unwind(AssertUnwindSafe(|| {
            load_model_with(&dir, &Context::new(0), LoadOptions { check_finite: true })
        }));
        match result {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&dir.display().to_string()),
                    "error does not name the file: {msg}"
                );
                err += 1;
            }
            Err(_) => panic!("case {case} panicked (files left in {})", dir.display()),
        }
    }
    assert!(
        ok > 50 && err > 500,
        "ok {ok}, err {err}: the mutations should produce both"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn non_finite_values_are_reported_when_asked() {
    let dir = tmp("nan");
    let (weights, _) = valid_checkpoint(&dir);
    let mut w = weights.clone();
    let n = w.len();
    w[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(dir.join(WEIGHTS_FILE), &w).unwrap();
    let e = load_model_with(&dir, &Context::new(0), LoadOptions { check_finite: true })
        .unwrap_err()
        .to_string();
    assert!(e.contains("NaN or infinite"), "{e}");
    assert!(load_model_with(
        &dir,
        &Context::new(0),
        LoadOptions {
            check_finite: false
        }
    )
    .is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}
