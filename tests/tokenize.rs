//! `scratchgpt tokenize` through the binary: the shards hold exactly the documents' tokens
//! (each after an <|endoftext|>, validation documents in their own shards), the output
//! directory rules, `--verify`, and every bad input or interruption ending in one line with
//! no shard left behind.

mod common;

use common::{assert_ok, assert_one_line_error, bin};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use train::shards::{Manifest, Shard};
use train::tokenize::{Split, ValSplit};
use train::Tokenizer;

fn tmp(name: &str) -> PathBuf {
    common::fresh_dir(&format!("tokenize-{name}"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Generated prose with odd whitespace (Windows line ends, tabs, runs of spaces before
/// newlines, no-break spaces) and paragraphs separated by blank lines; deterministic.
fn odd_text(paragraphs: usize, seed: u64) -> String {
    let words = [
        "the",
        "story's",
        "I'll",
        "naïve",
        "café",
        "42",
        "3.14",
        "—",
        "“quoted”",
        "日本語",
        "🎉",
        "x",
        "don't",
        "end.",
        "(paren)",
        "A",
    ];
    let seps = [
        " ", " ", " ", "  ", "\n", "\r\n", "\t", " \n", "\u{a0}", "   ",
    ];
    let mut state = seed;
    let mut next = |n: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize % n
    };
    let mut text = String::new();
    for _ in 0..paragraphs {
        for _ in 0..5 + next(60) {
            text.push_str(words[next(words.len())]);
            text.push_str(seps[next(seps.len())]);
        }
        text.push_str(["\n\n", "\r\n\r\n", "\n \n\n", "\n\t\n"][next(4)]);
    }
    text
}

/// The documents of `--documents blank-lines`: the text cut at lines holding only whitespace,
/// each trimmed, empty ones dropped.
fn blank_line_docs(text: &str) -> Vec<String> {
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in text.split_inclusive('\n') {
        if line.chars().all(char::is_whitespace) && line.ends_with('\n') {
            docs.push(std::mem::take(&mut current));
        } else {
            current.push_str(line);
        }
    }
    docs.push(current);
    docs.into_iter()
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .collect()
}

/// The tokens of a split, shard after shard, checking every header on the way.
fn split_tokens(dir: &Path, m: &Manifest, split: Split) -> Vec<usize> {
    let records = match split {
        Split::Train => &m.train,
        Split::Val => &m.val,
    };
    let mut all = Vec::new();
    for r in records {
        let shard = Shard::open(&dir.join(&r.file)).expect("a complete llm.c shard");
        assert_eq!(shard.tokens, r.tokens);
        let mut ids = vec![0; shard.tokens as usize];
        shard
            .read(0, &mut ids, m.vocab_size, &mut Vec::new())
            .unwrap();
        all.extend(ids);
    }
    all
}

/// What the shards of documents `docs` must hold with `fraction` to validation: each
/// document after <|endoftext|>, in the split [`ValSplit`] gives it.
fn expected(tok: &Tokenizer, docs: &[String], fraction: f64) -> (Vec<usize>, Vec<usize>) {
    let eot = tok.end_of_text().unwrap();
    let mut val_split = ValSplit::new(fraction);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for d in docs {
        let split = val_split.assign();
        let out = if split == Split::Val {
            &mut val
        } else {
            &mut train
        };
        out.push(eot);
        out.extend(tok.encode_ordinary(d));
        val_split.add(split, d.len() as u64);
    }
    (train, val)
}

fn shard_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("shard_") || n == "manifest.json")
        .collect();
    v.sort();
    v
}

#[test]
fn shards_hold_each_documents_tokens_after_an_end_of_text() {
    let dir = tmp("happy");
    let data = dir.join("corpus");
    std::fs::create_dir_all(data.join("more")).unwrap();
    let texts = [odd_text(30, 1), odd_text(50, 2), odd_text(20, 3)];
    for (name, text) in ["a.txt", "b.md", "more/c.txt"].iter().zip(&texts) {
        std::fs::write(data.join(name), text).unwrap();
    }
    std::fs::write(data.join("notes.csv"), "not, read").unwrap();
    let mut args = vec!["tokenize", "--data", s(&data)];
    let verdict = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/the-verdict.txt");
    let verdict_text = std::fs::read_to_string(&verdict).ok();
    if verdict_text.is_some() {
        args.push(s(&verdict));
    }
    let out = dir.join("tokens");
    args.extend([
        "--out",
        s(&out),
        "--documents",
        "blank-lines",
        "--shard-tokens",
        "1000",
        "--val-fraction",
        "0.1",
    ]);
    let r = run(&args);
    assert_ok(&r);
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(
        stdout.contains("tokenized") && stdout.contains("MB/s"),
        "{stdout}"
    );

    let mut docs: Vec<String> = texts.iter().flat_map(|t| blank_line_docs(t)).collect();
    let mut source = texts.iter().map(String::len).sum::<usize>();
    if let Some(v) = &verdict_text {
        docs.extend(blank_line_docs(v));
        source += v.len();
    }
    let tok = Tokenizer::gpt2().unwrap();
    let (want_train, want_val) = expected(&tok, &docs, 0.1);
    let m = Manifest::read(&out).unwrap();
    assert_eq!(m.tokenizer, "gpt2");
    assert_eq!(m.vocab_size, 50257);
    assert_eq!(m.documents, docs.len() as u64);
    assert_eq!(m.source_bytes, source as u64);
    assert!(m.train.len() > 2 && !m.val.is_empty(), "{m:?}");
    assert!(m.train[..m.train.len() - 1]
        .iter()
        .all(|r| r.tokens == 1000));
    assert_eq!(m.train[0].file, "shard_train_000000.bin");
    assert_eq!(m.val[0].file, "shard_val_000000.bin");
    let (train, val) = (
        split_tokens(&out, &m, Split::Train),
        split_tokens(&out, &m, Split::Val),
    );
    assert_eq!(train, want_train);
    assert_eq!(val, want_val);
    let val_share = val.len() as f64 / (train.len() + val.len()) as f64;
    assert!((0.05..0.2).contains(&val_share), "{val_share}");

    let v = run(&["tokenize", "--verify", s(&out)]);
    assert_ok(&v);
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("ok:"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn files_and_endoftext_documents_bytes_and_a_learned_bpe() {
    let dir = tmp("kinds");
    let a = dir.join("a.txt");
    let b = dir.join("b.txt");
    let text_a = odd_text(40, 7);
    std::fs::write(&a, &text_a).unwrap();
    std::fs::write(
        &b,
        "Once upon a time.<|endoftext|>\nThe end.\n<|endoftext|>  ",
    )
    .unwrap();

    // files, bytes tokenizer, no validation: exactly <eot> a <eot> b
    let out = dir.join("bytes");
    let glob = dir.join("*.txt");
    assert_ok(&run(&[
        "tokenize",
        "--data",
        s(&glob),
        "--tokenizer",
        "bytes",
        "--out",
        s(&out),
        "--val-fraction",
        "0",
    ]));
    let m = Manifest::read(&out).unwrap();
    assert_eq!(
        (m.tokenizer.as_str(), m.vocab_size, m.documents),
        ("bytes", 257, 2)
    );
    assert!(m.val.is_empty() && !out.join("tokenizer").exists());
    let bytes = Tokenizer::bytes();
    let b_text = std::fs::read_to_string(&b).unwrap();
    let want = expected(&bytes, &[text_a.trim().into(), b_text.trim().into()], 0.0).0;
    assert_eq!(split_tokens(&out, &m, Split::Train), want);

    // endoftext documents, a BPE learned from the training text and stored with the shards
    let out = dir.join("bpe");
    let r = run(&[
        "tokenize",
        "--data",
        s(&a),
        s(&b),
        "--tokenizer",
        "bpe:300",
        "--out",
        s(&out),
        "--documents",
        "endoftext",
        "--val-fraction",
        "0",
    ]);
    assert_ok(&r);
    let m = Manifest::read(&out).unwrap();
    assert_eq!(
        (m.tokenizer.as_str(), m.vocab_size, m.documents),
        ("bpe:300", 300, 3)
    );
    let learned = Tokenizer::load(&out.join("tokenizer")).unwrap();
    assert_eq!(learned.vocab_size(), 300);
    let docs = [
        text_a.trim().into(),
        "Once upon a time.".into(),
        "The end.".into(),
    ];
    assert_eq!(
        split_tokens(&out, &m, Split::Train),
        expected(&learned, &docs, 0.0).0
    );

    // that tokenizer's directory as --tokenizer: copied, named "files"
    let out2 = dir.join("again");
    let r = run(&[
        "tokenize",
        "--data",
        s(&a),
        "--tokenizer",
        s(&out.join("tokenizer")),
        "--out",
        s(&out2),
    ]);
    assert_ok(&r);
    let m2 = Manifest::read(&out2).unwrap();
    assert_eq!(m2.tokenizer, "files");
    assert_eq!(
        Tokenizer::load(&out2.join("tokenizer"))
            .unwrap()
            .vocab_size(),
        300
    );
    assert!(String::from_utf8_lossy(&r.stdout).contains("warning: no validation shard"));
    assert_ok(&run(&["tokenize", "--verify", s(&out2)]));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn train_and_eval_read_what_tokenize_wrote() {
    let dir = tmp("train");
    let a = dir.join("a.txt");
    std::fs::write(&a, odd_text(200, 8)).unwrap();
    for tokenizer in ["bytes", "bpe:300"] {
        let tokens = dir.join(format!("tokens-{tokenizer}"));
        assert_ok(&run(&[
            "tokenize",
            "--data",
            s(&a),
            "--out",
            s(&tokens),
            "--tokenizer",
            tokenizer,
            "--documents",
            "blank-lines",
            "--val-fraction",
            "0.2",
            "--shard-tokens",
            "2000",
        ]));
        let run_dir = dir.join(format!("run-{tokenizer}"));
        let mut args = vec![
            "train",
            "--data",
            s(&tokens),
            "--out",
            s(&run_dir),
            "--max-steps",
            "2",
            "--eval-iter",
            "2",
            "--quiet",
        ];
        args.extend(common::SMALL_SHAPE);
        assert_ok(&run(&args));
        let e = run(&["eval", "--checkpoint", s(&run_dir), "--data", s(&tokens)]);
        assert_ok(&e);
        assert!(String::from_utf8_lossy(&e.stdout).starts_with("loss "));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn out_directory_rules_and_force() {
    let dir = tmp("force");
    let a = dir.join("a.txt");
    std::fs::write(&a, odd_text(20, 4)).unwrap();
    let out = dir.join("tokens");
    let first = [
        "tokenize",
        "--data",
        s(&a),
        "--out",
        s(&out),
        "--tokenizer",
        "bytes",
    ];
    assert_ok(&run(&first));
    let before = std::fs::read(out.join("manifest.json")).unwrap();
    // a second run is refused and changes nothing
    let r = run(&first);
    assert_one_line_error(&r, "already holds token shards");
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), before);
    // --force that fails (bad UTF-8) puts the old shards back
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, [b'o', b'k', 0xFF]).unwrap();
    let r = run(&[
        "tokenize",
        "--data",
        s(&a),
        s(&bad),
        "--out",
        s(&out),
        "--force",
    ]);
    assert_one_line_error(&r, "bad.txt");
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), before);
    assert_ok(&run(&["tokenize", "--verify", s(&out)]));
    // --force that succeeds replaces them
    let r = run(&["tokenize", "--data", s(&a), "--out", s(&out), "--force"]);
    assert_ok(&r);
    assert_eq!(Manifest::read(&out).unwrap().tokenizer, "gpt2");
    let hidden: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
    // a directory with other files needs --force, and keeps them
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.md"), "mine").unwrap();
    let r = run(&["tokenize", "--data", s(&a), "--out", s(&other)]);
    assert_one_line_error(&r, "not empty");
    assert_ok(&run(&[
        "tokenize",
        "--data",
        s(&a),
        "--out",
        s(&other),
        "--force",
    ]));
    assert_eq!(
        std::fs::read_to_string(other.join("notes.md")).unwrap(),
        "mine"
    );
    // shards written into the text's own directory: a second run takes the texts again, not
    // the first run's learned tokenizer files (merges.txt is a .txt file)
    let inside = dir.join("inside");
    std::fs::create_dir_all(&inside).unwrap();
    std::fs::write(inside.join("a.txt"), odd_text(20, 4)).unwrap();
    for tokenizer in ["bpe:300", "bpe:280"] {
        let r = run(&[
            "tokenize",
            "--data",
            s(&inside),
            "--out",
            s(&inside),
            "--force",
            "--tokenizer",
            tokenizer,
        ]);
        assert_ok(&r);
        let said = String::from_utf8_lossy(&r.stdout);
        assert!(said.contains("tokenized 1 file,"), "{said}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn verify_names_a_damaged_shard() {
    let dir = tmp("verify");
    let a = dir.join("a.txt");
    std::fs::write(&a, odd_text(40, 5)).unwrap();
    let out = dir.join("tokens");
    assert_ok(&run(&[
        "tokenize",
        "--data",
        s(&a),
        "--out",
        s(&out),
        "--shard-tokens",
        "300",
        "--val-fraction",
        "0",
    ]));
    let shard = out.join("shard_train_000001.bin");
    let good = std::fs::read(&shard).unwrap();
    let mut bad = good.clone();
    bad[1024 + 17] ^= 0x01; // one token's low bit
    std::fs::write(&shard, &bad).unwrap();
    assert_one_line_error(
        &run(&["tokenize", "--verify", s(&out)]),
        "shard_train_000001.bin: checksum",
    );
    std::fs::write(&shard, &good[..good.len() - 2]).unwrap();
    assert_one_line_error(&run(&["tokenize", "--verify", s(&out)]), "truncated");
    std::fs::write(&shard, &good).unwrap();
    std::fs::copy(&shard, out.join("shard_train_000099.bin")).unwrap();
    assert_one_line_error(&run(&["tokenize", "--verify", s(&out)]), "does not list");
    std::fs::remove_file(out.join("shard_train_000099.bin")).unwrap();
    assert_ok(&run(&["tokenize", "--verify", s(&out)]));
    assert_one_line_error(&run(&["tokenize", "--verify", s(&dir)]), "manifest.json");
    // a manifest naming a learned tokenizer whose files are not there: not GPT-2's table in
    // its place
    let manifest = out.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let edited = text.replace("\"gpt2\"", "\"bpe:300\"");
    assert_ne!(edited, text);
    std::fs::write(&manifest, edited).unwrap();
    assert_one_line_error(
        &run(&["tokenize", "--verify", s(&out)]),
        "does not hold its files",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Starts `tokenize` reading a pipe, writes `text` into it and waits (keeping the pipe open)
/// until a first shard is complete.
fn start_on_a_pipe(out: &Path, text: &str) -> std::process::Child {
    let mut child = bin()
        .args(["tokenize", "--data", "/dev/stdin", "--out", s(out)])
        .args(["--shard-tokens", "1000", "--tokenizer", "bytes"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let start = Instant::now();
    while !out.join("shard_train_000000.bin").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no shard appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

#[test]
fn an_interrupted_or_failed_run_leaves_no_shard() {
    let dir = tmp("interrupt");
    let text = odd_text(20_000, 6); // several MB, so that pieces are cut while the pipe is open
                                    // Ctrl-C: exit status 130, nothing left
    let out = dir.join("ctrl-c");
    let child = start_on_a_pipe(&out, &text);
    common::interrupt(&child);
    let r = child.wait_with_output().unwrap();
    assert_eq!(
        r.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(!out.exists(), "{:?}", shard_files(&out));
    // a read error after complete shards: one line naming the offset, nothing left
    let out = dir.join("bad-utf8");
    let mut child = start_on_a_pipe(&out, &text);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&[b'x', 0xFF]).unwrap();
    drop(stdin);
    let r = child.wait_with_output().unwrap();
    assert_one_line_error(
        &r,
        &format!(
            "/dev/stdin: not valid UTF-8 text (invalid byte at offset {})",
            text.len() + 1
        ),
    );
    assert!(!out.exists(), "{:?}", shard_files(&out));
    // learning bpe:N reads the text twice, which a pipe cannot give: refused, not cut short
    let out = dir.join("bpe-pipe");
    let mut child = bin()
        .args(["tokenize", "--data", "/dev/stdin", "--out", s(&out)])
        .args(["--tokenizer", "bpe:300"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // (the pipe may be refused before it is written: a broken pipe here is fine)
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(&text.as_bytes()[..4000]);
    let r = child.wait_with_output().unwrap();
    assert_one_line_error(&r, "a pipe is read once");
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_one_error_line_and_writes_nothing() {
    let dir = tmp("bad");
    let good = dir.join("good.txt");
    std::fs::write(&good, "Some text.").unwrap();
    let bad_utf8 = dir.join("latin1.txt");
    std::fs::write(&bad_utf8, b"caf\xe9 au lait").unwrap();
    let blank = dir.join("blank.txt");
    std::fs::write(&blank, " \n\t\n").unwrap();
    let no_text = dir.join("no-text");
    std::fs::create_dir_all(&no_text).unwrap();
    std::fs::write(no_text.join("data.csv"), "a,b").unwrap();
    let out = dir.join("out");
    let (missing, json) = (dir.join("missing.txt"), dir.join("*.json"));
    let o = s(&out);
    let g = s(&good);
    let cases: &[(&[&str], &str)] = &[
        (&["--data", s(&missing), "--out", o], "missing.txt"),
        (&["--data", s(&no_text), "--out", o], "holds no text files"),
        (
            &["--data", s(&bad_utf8), "--out", o],
            "latin1.txt: not valid UTF-8 text (invalid byte at offset 3)",
        ),
        (&["--data", s(&blank), "--out", o], "no text to tokenize"),
        (&["--data", s(&json), "--out", o], "matches no file"),
        (
            &["--data", g, "--out", o, "--val-fraction", "1"],
            "--val-fraction",
        ),
        (
            &["--data", g, "--out", o, "--val-fraction=-0.1"],
            "--val-fraction",
        ),
        (
            &["--data", g, "--out", o, "--shard-tokens", "0"],
            "--shard-tokens",
        ),
        (
            &["--data", g, "--out", o, "--shard-tokens", "3000000000"],
            "--shard-tokens",
        ),
        (
            &["--data", g, "--out", o, "--tokenizer", "bpe:100"],
            "from 257",
        ),
        (
            &["--data", g, "--out", o, "--tokenizer", "gpt3"],
            "neither gpt2",
        ),
        (
            &["--data", g, "--out", o, "--bpe-sample-bytes", "0"],
            "--bpe-sample-bytes",
        ),
        (&["--data", g, "--out", g], "is a file"),
    ];
    for (args, needle) in cases {
        let mut all = vec!["tokenize"];
        all.extend_from_slice(args);
        let r = run(&all);
        assert_one_line_error(&r, needle);
        assert_eq!(r.status.code(), Some(1), "{args:?}");
        assert!(!out.exists(), "{args:?} left {:?}", shard_files(&out));
    }
    // usage errors exit with 2
    let r = run(&["tokenize", "--data", g]);
    assert_eq!(r.status.code(), Some(2));
    let r = run(&["tokenize", "--verify", o, "--data", g]);
    assert_eq!(r.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_describes_every_flag_with_its_default() {
    let r = run(&["tokenize", "--help"]);
    assert_ok(&r);
    let help = String::from_utf8_lossy(&r.stdout);
    assert!(help.contains("Exit status"), "{help}");
    // a flag's line, and its description on the same line or the next (clap moves it there
    // when the flag names are wide)
    let lines: Vec<&str> = help.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim_start();
        if !line.starts_with("--") {
            continue;
        }
        let (flag, rest) = line.split_once("  ").unwrap_or((line, ""));
        let text = match lines.get(i + 1) {
            Some(next) if rest.trim().is_empty() && !next.trim_start().starts_with('-') => next,
            _ => rest,
        };
        assert!(!text.trim().is_empty(), "{flag} has no description");
        let required = ["--data", "--out", "--verify"]
            .iter()
            .any(|f| flag.starts_with(f));
        if flag.contains('<') && !required {
            assert!(text.contains("[default"), "{flag} shows no default: {text}");
        }
    }
}
