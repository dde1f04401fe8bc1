//! Training and evaluating on token shards: scratchgpt's own token directories, llm.c's shards
//! and nanoGPT's headerless files, all built by hand here; exact resumption; and every damaged
//! input refused in one line naming the file.

mod common;

use common::{assert_ok, bin};

use std::path::{Path, PathBuf};
use std::process::Output;

use train::shards::{Manifest, ShardWriter, TokenWidth, MANIFEST_FORMAT};
use train::token_data::open_token_data;
use train::trainer::{run, RunOptions};
use train::{Tokenizer, TokenizerSpec, TrainSettings};

fn run_bin(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

/// [`common::assert_one_line_error`] with every one of `needles` in the line.
#[track_caller]
fn assert_one_line_error(out: &Output, needles: &[&str]) {
    for needle in needles {
        common::assert_one_line_error(out, needle);
    }
}

/// Token ids of the built-in corpus with the bytes tokenizer, as `parts` documents.
fn corpus_ids(tok: &Tokenizer) -> Vec<u32> {
    tok.encode(train::corpus::DEFAULT_CORPUS)
        .into_iter()
        .map(|t| t as u32)
        .collect()
}

/// Writes `ids` into shards of at most `per_shard` tokens named `{prefix}_{split}_NNNNNN.bin`.
fn write_shards(
    dir: &Path,
    prefix: &str,
    split: &str,
    ids: &[u32],
    per_shard: usize,
    width: TokenWidth,
) -> Vec<train::shards::ShardRecord> {
    ids.chunks(per_shard)
        .enumerate()
        .map(|(k, part)| {
            let path = dir.join(format!("{prefix}_{split}_{k:06}.bin"));
            let mut w = ShardWriter::create(&path, width).unwrap();
            w.write(part).unwrap();
            w.finish().unwrap()
        })
        .collect()
}

/// A token directory as `scratchgpt tokenize` writes it: bytes tokenizer, three training
/// shards and one validation shard, and the manifest.
fn own_token_dir(name: &str) -> PathBuf {
    let dir = common::fresh_dir(&format!("shards-{name}"));
    let tok = Tokenizer::bytes();
    let ids = corpus_ids(&tok);
    let split = ids.len() * 9 / 10;
    let train = write_shards(
        &dir,
        "shard",
        "train",
        &ids[..split],
        split / 3 + 1,
        TokenWidth::U16,
    );
    let val = write_shards(
        &dir,
        "shard",
        "val",
        &ids[split..],
        ids.len(),
        TokenWidth::U16,
    );
    Manifest {
        format: MANIFEST_FORMAT.into(),
        version: 1,
        tokenizer: "bytes".into(),
        vocab_size: tok.vocab_size(),
        token_width: TokenWidth::U16,
        documents: 1,
        source_bytes: train::corpus::DEFAULT_CORPUS.len() as u64,
        train,
        val,
    }
    .write(&dir)
    .unwrap();
    dir
}

fn small_settings() -> TrainSettings {
    TrainSettings {
        tokenizer: TokenizerSpec::Bytes,
        context_length: 32,
        emb_dim: 32,
        n_heads: 2,
        n_layers: 2,
        batch_size: 4,
        stride: 32,
        epochs: 100,
        max_steps: Some(40),
        warmup_steps: 2,
        eval_freq: 7,
        eval_iter: 2,
        sample_tokens: 4,
        ..TrainSettings::preset("quickstart").unwrap()
    }
}

#[test]
fn shard_runs_resume_at_the_exact_window_across_epochs() {
    let dir = own_token_dir("resume");
    let data = open_token_data(std::slice::from_ref(&dir)).unwrap();
    assert_eq!(data.train.len(), 3);
    let opts = |out: &Path| RunOptions {
        out_dir: out.to_path_buf(),
        quiet: true,
        ..Default::default()
    };
    // 16 KB of training bytes in windows of 32: about 130 batches of 4 per epoch; a short epoch
    // count would not cross one, so cut the data with a large stride instead
    let settings = TrainSettings {
        stride: 32 * 12,
        ..small_settings()
    };
    let out = common::fresh_dir("shards-straight");
    let straight = run(&data, settings.clone(), &opts(&out)).unwrap();
    assert_eq!(straight.step_losses.len(), 40);
    assert!(straight.history.len() >= 5);

    let out = common::fresh_dir("shards-resumed");
    let first = run(
        &data,
        settings.clone(),
        &RunOptions {
            stop_at_step: Some(17),
            ..opts(&out)
        },
    )
    .unwrap();
    assert!(first.interrupted);
    let state = train::checkpoint::read_state(&train::checkpoint::resolve(&out).unwrap()).unwrap();
    assert!(
        state.epoch >= 1,
        "the stop should fall after an epoch boundary"
    );
    assert!(
        matches!(state.order, train::data::EpochOrder::Permuted { .. }),
        "a shard run's checkpoint stores a permutation key, not a list: {:?}",
        state.order
    );
    let second = run(
        &data,
        settings.clone(),
        &RunOptions {
            resume: Some(out.clone()),
            ..opts(&out)
        },
    )
    .unwrap();
    let mut joined = first.step_losses.clone();
    joined.extend(&second.step_losses);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&joined), bits(&straight.step_losses));

    // the same tokens as text train differently (text windows are listed, shards permuted),
    // but a resume against other shards is refused
    let other = own_token_dir("resume-other");
    let mut m = Manifest::read(&other).unwrap();
    let extra = write_shards(&other, "extra", "train", &[1, 2, 3, 4], 4, TokenWidth::U16);
    m.train.extend(extra);
    m.write(&other).unwrap();
    let other_data = open_token_data(&[other]).unwrap();
    let err = run(
        &other_data,
        settings,
        &RunOptions {
            resume: Some(out.clone()),
            ..opts(&out)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("differ from the data"), "{err}");
}

/// `train` flags for a tiny model over shards (the tokenizer comes from the data).
fn small() -> impl Iterator<Item = &'static str> {
    common::SMALL_SHAPE
        .iter()
        .copied()
        .chain(["--eval-iter", "2", "--quiet"])
}

fn train_on(data: &[&Path], out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train".to_string(), "--data".into()];
    args.extend(data.iter().map(|p| p.to_str().unwrap().to_string()));
    args.extend(["--out".into(), out.to_str().unwrap().into()]);
    args.extend(small().map(str::to_string));
    args.extend(extra.iter().map(|s| s.to_string()));
    bin().args(&args).output().expect("binary runs")
}

#[test]
fn train_and_eval_read_own_llmc_and_nanogpt_token_files() {
    // scratchgpt's own directory: the bytes tokenizer named in the manifest
    let own = own_token_dir("own");
    let out = common::fresh_dir("shards-own-run");
    let run_dir = out.join("run");
    let r = train_on(&[&own], &run_dir, &["--max-steps", "3"]);
    assert_ok(&r);
    let state =
        train::checkpoint::read_state(&train::checkpoint::resolve(&run_dir).unwrap()).unwrap();
    assert_eq!(state.settings.tokenizer, TokenizerSpec::Bytes);
    assert_eq!(state.step, 3);
    let e = run_bin(&[
        "eval",
        "--checkpoint",
        run_dir.to_str().unwrap(),
        "--data",
        own.to_str().unwrap(),
    ]);
    assert_ok(&e);
    let line = String::from_utf8_lossy(&e.stdout);
    assert!(
        line.starts_with("loss ") && line.contains("perplexity"),
        "{line}"
    );
    // --max-tokens: the first windows only
    let e = run_bin(&[
        "eval",
        "--checkpoint",
        run_dir.to_str().unwrap(),
        "--data",
        own.to_str().unwrap(),
        "--max-tokens",
        "64",
    ]);
    assert_ok(&e);
    assert!(String::from_utf8_lossy(&e.stdout).contains("(2 windows of 32 tokens)"));
    // fewer tokens than one window cannot be measured as asked
    let e = run_bin(&[
        "eval",
        "--checkpoint",
        run_dir.to_str().unwrap(),
        "--data",
        own.to_str().unwrap(),
        "--max-tokens",
        "10",
    ]);
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("less than one window"));
    // resuming needs no --data: the directory is recorded
    let r = bin()
        .args([
            "train",
            "--resume",
            run_dir.to_str().unwrap(),
            "--max-steps",
            "5",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_ok(&r);

    // llm.c's shards (GPT-2 ids, uint16, no manifest), and nanoGPT's headerless files
    let gpt2 = Tokenizer::gpt2().unwrap();
    let ids: Vec<u32> = gpt2
        .encode(train::corpus::DEFAULT_CORPUS)
        .into_iter()
        .map(|t| t as u32)
        .collect();
    let llmc = common::fresh_dir("shards-llmc");
    write_shards(&llmc, "story", "val", &ids[..600], 600, TokenWidth::U16);
    write_shards(&llmc, "story", "train", &ids[600..], 1500, TokenWidth::U16);
    let nano = nanogpt_dir("shards-nanogpt"); // the same ids, split at the same place
    for (name, data) in [
        ("llmc", vec![llmc.clone()]),
        ("nanogpt-dir", vec![nano.clone()]),
        (
            "nanogpt-files",
            vec![nano.join("train.bin"), nano.join("val.bin")],
        ),
    ] {
        let run_dir = out.join(name);
        let paths: Vec<&Path> = data.iter().map(|p| p.as_path()).collect();
        let r = train_on(&paths, &run_dir, &["--max-steps", "2"]);
        assert_ok(&r);
        let ckpt = train::checkpoint::resolve(&run_dir).unwrap();
        let state = train::checkpoint::read_state(&ckpt).unwrap();
        assert_eq!(state.settings.tokenizer, TokenizerSpec::Gpt2, "{name}");
    }
    // a checkpoint trained on llm.c's shards evaluates on nanoGPT's files of the same tokens
    let e = run_bin(&[
        "eval",
        "--checkpoint",
        out.join("llmc").to_str().unwrap(),
        "--data",
        nano.to_str().unwrap(),
    ]);
    assert_ok(&e);
    // ... and on one file of either split, named alone
    for file in ["train.bin", "val.bin"] {
        let e = run_bin(&[
            "eval",
            "--checkpoint",
            out.join("llmc").to_str().unwrap(),
            "--data",
            nano.join(file).to_str().unwrap(),
        ]);
        assert_ok(&e);
        assert!(String::from_utf8_lossy(&e.stdout).starts_with("loss "));
    }
}

#[test]
fn damaged_or_mismatched_token_data_is_one_line_naming_the_file() {
    let base = common::fresh_dir("shards-bad");
    let out = base.join("run");
    let check = |data: &[&Path], extra: &[&str], needles: &[&str]| {
        let r = train_on(data, &out, extra);
        assert_one_line_error(&r, needles);
        assert!(!out.exists(), "a failed run leaves no run directory");
    };
    // a truncated shard
    let d = own_token_dir("bad-truncated");
    let shard = d.join("shard_train_000001.bin");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 3]).unwrap();
    check(&[&d], &[], &["shard_train_000001.bin", "truncated"]);
    // a wrong magic number, and an unknown version
    let d = own_token_dir("bad-magic");
    let shard = d.join("shard_val_000000.bin");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[0] ^= 0x40;
    std::fs::write(&shard, &bytes).unwrap();
    check(&[&d], &[], &["shard_val_000000.bin", "magic number"]);
    bytes[0] ^= 0x40;
    bytes[4] = 9;
    std::fs::write(&shard, &bytes).unwrap();
    check(&[&d], &[], &["shard_val_000000.bin", "version 9"]);
    // a manifest that disagrees with its shards
    let d = own_token_dir("bad-manifest");
    let mut m = Manifest::read(&d).unwrap();
    m.train[0].tokens += 1;
    m.write(&d).unwrap();
    check(&[&d], &[], &["shard_train_000000.bin", "disagree"]);
    m.train[0].tokens -= 1;
    m.write(&d).unwrap();
    std::fs::remove_file(d.join("shard_train_000002.bin")).unwrap();
    check(&[&d], &[], &["shard_train_000002.bin", "missing"]);
    // a token id outside the vocabulary: found when its window is read
    let d = common::fresh_dir("shards-bad-id");
    write_shards(&d, "x", "train", &[60_000; 2000], 2000, TokenWidth::U16);
    write_shards(&d, "x", "val", &[1; 500], 500, TokenWidth::U16);
    check(
        &[&d],
        &["--max-steps", "3"],
        &[
            "x_train_000000.bin",
            "token 60000",
            "outside the vocabulary",
        ],
    );
    // shards of two tokenizers
    let bytes_dir = own_token_dir("bad-mixed");
    let gpt2_dir = common::fresh_dir("shards-bad-gpt2");
    write_shards(&gpt2_dir, "x", "train", &[1; 500], 500, TokenWidth::U16);
    write_shards(&gpt2_dir, "x", "val", &[1; 500], 500, TokenWidth::U16);
    check(&[&bytes_dir, &gpt2_dir], &[], &["two tokenizers"]);
    // --tokenizer cannot change the shards' tokenizer
    check(
        &[&bytes_dir],
        &["--tokenizer", "gpt2"],
        &["--tokenizer gpt2", "bytes"],
    );
    // a directory without shards, a file that is not a split, no validation shard, no tokens
    let empty = common::fresh_dir("shards-bad-empty");
    check(&[&empty], &[], &["no token shards", "scratchgpt tokenize"]);
    let no_val = common::fresh_dir("shards-bad-noval");
    write_shards(&no_val, "x", "train", &[1; 500], 500, TokenWidth::U16);
    check(&[&no_val], &[], &["no validation shard"]);
    let empty_train = common::fresh_dir("shards-bad-notrain");
    write_shards(&empty_train, "x", "val", &[1; 500], 500, TokenWidth::U16);
    ShardWriter::create(&empty_train.join("x_train_000000.bin"), TokenWidth::U16)
        .unwrap()
        .finish()
        .unwrap();
    check(&[&empty_train], &[], &["no training tokens"]);
    let odd = common::fresh_dir("shards-bad-odd");
    std::fs::write(odd.join("a.bin"), [0u8; 64]).unwrap();
    std::fs::write(odd.join("b.bin"), [0u8; 64]).unwrap();
    check(&[&odd], &[], &["a.bin", "cannot tell"]);
    // text and token data mixed
    let text = base.join("t.txt");
    std::fs::write(&text, "some text").unwrap();
    check(&[&bytes_dir, &text], &[], &["mixes token files"]);
}

/// nanoGPT's `train.bin` / `val.bin`: headerless little-endian uint16 GPT-2 ids of the
/// built-in corpus, the first 600 for validation.
fn nanogpt_dir(name: &str) -> PathBuf {
    let ids = Tokenizer::gpt2()
        .unwrap()
        .encode(train::corpus::DEFAULT_CORPUS);
    let raw = |part: &[usize]| {
        part.iter()
            .flat_map(|&t| (t as u16).to_le_bytes())
            .collect::<Vec<u8>>()
    };
    let dir = common::fresh_dir(name);
    std::fs::write(dir.join("train.bin"), raw(&ids[600..])).unwrap();
    std::fs::write(dir.join("val.bin"), raw(&ids[..600])).unwrap();
    dir
}

fn model_vocab(run_dir: &Path) -> usize {
    let ckpt = train::checkpoint::resolve(run_dir).unwrap();
    model::weights::read_config(&ckpt.join(model::weights::CONFIG_FILE))
        .unwrap()
        .vocab_size
}

#[test]
fn vocab_size_pads_the_model_and_generation_stays_inside_the_tokenizer() {
    let out = common::fresh_dir("shards-vocab-size");
    // bytes (257 ids) padded to 1024: three of every four rows are ids no tokenizer decodes,
    // so sampling at a high temperature would hit them at once if it were not limited
    let own = own_token_dir("vocab-own");
    let run_dir = out.join("bytes-1024");
    assert_ok(&train_on(
        &[&own],
        &run_dir,
        &["--max-steps", "2", "--vocab-size", "1024"],
    ));
    assert_eq!(model_vocab(&run_dir), 1024);
    let g = run_bin(&[
        "generate",
        "--checkpoint",
        run_dir.to_str().unwrap(),
        "--prompt",
        "Once",
        "--temperature",
        "20",
        "--max-new-tokens",
        "100",
        "--seed",
        "0",
    ]);
    assert_ok(&g);
    // each new id decodes to a byte, printed as itself or as 3 bytes of U+FFFD; an id of the
    // padding decodes to nothing, so unlimited sampling (3/4 of the ids are padding) would
    // print about 25 of them (this seed reaches no end-of-text in the first 100, measured)
    assert!(
        g.stdout.len() >= "Once".len() + 90,
        "{} bytes: {:?}",
        g.stdout.len(),
        String::from_utf8_lossy(&g.stdout)
    );
    let e = run_bin(&[
        "eval",
        "--checkpoint",
        run_dir.to_str().unwrap(),
        "--data",
        own.to_str().unwrap(),
    ]);
    assert_ok(&e);
    // the setting is the run's: resuming keeps it and refuses to change it
    let r = run_bin(&[
        "train",
        "--resume",
        run_dir.to_str().unwrap(),
        "--vocab-size",
        "2048",
    ]);
    assert_one_line_error(&r, &["--vocab-size cannot change when resuming"]);
    // smaller than the tokenizer's vocabulary: refused
    let r = train_on(&[&own], &out.join("bytes-100"), &["--vocab-size", "100"]);
    assert_one_line_error(&r, &["--vocab-size 100", "257 ids"]);
    assert!(!out.join("bytes-100").join("checkpoint").exists());

    // nanoGPT's files, padded to its 50304
    let nano = nanogpt_dir("shards-vocab-nanogpt");
    let run_dir = out.join("nanogpt-50304");
    assert_ok(&train_on(
        &[&nano],
        &run_dir,
        &["--max-steps", "1", "--vocab-size", "50304"],
    ));
    assert_eq!(model_vocab(&run_dir), 50304);
    // a character-level vocabulary cannot be read from headerless ids: the line says what to do
    let r = train_on(&[&nano], &out.join("nanogpt-65"), &["--vocab-size", "65"]);
    assert_one_line_error(&r, &["--vocab-size 65", "50257", "headerless", "meta.pkl"]);
}
