//! Classification fine-tuning (book chapter 6) through the binary, on a task built offline:
//! sentences of the book's short story (`the-verdict.txt`, from `../shared/data/`; the test
//! skips when it is absent) against sentences of the built-in corpus. A small GPT is pretrained
//! on both texts, then fine-tuned to tell them apart.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tensor::Rng;
use train::corpus::sentences;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scratchgpt"))
}

fn verdict_path() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/the-verdict.txt");
    p.is_file().then_some(p)
}

fn write_csv(path: &Path, rows: &[(String, &str)]) {
    let mut s = String::from("Label,Text\n");
    for (text, label) in rows {
        s += &format!("{label},\"{}\"\n", text.replace('"', "\"\""));
    }
    std::fs::write(path, s).unwrap();
}

/// train.csv, val.csv, test.csv (70/10/20, shuffled with a fixed seed) in `dir`.
fn make_task(dir: &Path, verdict: &Path) {
    let v = std::fs::read_to_string(verdict).unwrap();
    let mut rows: Vec<(String, &str)> = sentences(&v).into_iter().map(|s| (s, "verdict")).collect();
    rows.extend(
        sentences(train::corpus::DEFAULT_CORPUS)
            .into_iter()
            .map(|s| (s, "stories")),
    );
    let order = Rng::seed(1).epoch_permutation(rows.len(), true);
    let rows: Vec<(String, &str)> = order.into_iter().map(|i| rows[i].clone()).collect();
    let (a, b) = (rows.len() * 7 / 10, rows.len() * 8 / 10);
    write_csv(&dir.join("train.csv"), &rows[..a]);
    write_csv(&dir.join("val.csv"), &rows[a..b]);
    write_csv(&dir.join("test.csv"), &rows[b..]);
}

#[track_caller]
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[track_caller]
fn one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure: {stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("warning:"))
        .collect();
    assert_eq!(errors.len(), 1, "one line expected: {stderr}");
    assert!(
        errors[0].starts_with("error: ") && errors[0].contains(needle),
        "{needle:?} in {stderr}"
    );
}

fn finetune(dir: &Path, out: &str, extra: &[&str]) -> Output {
    bin()
        .current_dir(dir)
        .args([
            "finetune",
            "classify",
            "--checkpoint",
            "base",
            "--train",
            "train.csv",
        ])
        .args(["--val", "val.csv", "--test", "test.csv", "--out", out])
        .args(["--lr", "1e-3", "--epochs", "6", "--eval-freq", "50"])
        .args(extra)
        .output()
        .unwrap()
}

fn test_accuracy(run: &Path) -> f64 {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("accuracy.json")).unwrap()).unwrap();
    v["test_accuracy"].as_f64().unwrap()
}

/// The same tensor in two checkpoints' model.safetensors.
fn same_weights(a: &Path, b: &Path, name: &str) -> bool {
    let read = |dir: &Path| {
        let latest = std::fs::read_to_string(dir.join("latest")).unwrap();
        std::fs::read(dir.join(latest.trim()).join("model.safetensors")).unwrap()
    };
    let (fa, fb) = (read(a), read(b));
    let ta = safetensors::SafeTensors::deserialize(&fa).unwrap();
    let tb = safetensors::SafeTensors::deserialize(&fb).unwrap();
    ta.tensor(name).unwrap().data() == tb.tensor(name).unwrap().data()
}

#[test]
fn a_pretrained_gpt_learns_to_tell_the_verdict_from_the_stories() {
    let Some(verdict) = verdict_path() else {
        eprintln!("skipping: ../shared/data/the-verdict.txt is absent");
        return;
    };
    let dir = common::fresh_dir("finetune");
    make_task(&dir, &verdict);
    let corpus = dir.join("stories.txt");
    std::fs::write(&corpus, train::corpus::DEFAULT_CORPUS).unwrap();
    ok(&bin()
        .current_dir(&dir)
        .args([
            "train",
            "--out",
            "base",
            "--data",
            verdict.to_str().unwrap(),
        ])
        .arg(corpus.to_str().unwrap())
        .args([
            "--tokenizer",
            "bpe:512",
            "--context-length",
            "64",
            "--emb-dim",
            "64",
        ])
        .args([
            "--n-layers",
            "2",
            "--n-heads",
            "2",
            "--max-steps",
            "300",
            "--quiet",
        ])
        .output()
        .unwrap());

    // everything trains: the stated accuracy (measured 83.6%)
    let log = ok(&finetune(&dir, "all", &["--trainable", "all"]));
    assert!(log.contains("Ep 6: Training accuracy:"), "{log}");
    assert!(log.contains("| Test accuracy:"), "{log}");
    let acc = test_accuracy(&dir.join("all"));
    assert!(acc >= 0.75, "test accuracy {acc}");
    for f in ["metrics.csv", "loss.svg", "accuracy.svg"] {
        assert!(dir.join("all").join(f).is_file(), "{f}");
    }

    // the book's choice: only the last block, the final norm and the head train; the rest
    // keeps the base model's exact weights
    let log = ok(&finetune(&dir, "last", &[]));
    let line = log.lines().find(|l| l.starts_with("model:")).unwrap();
    assert!(line.contains("trainable (last-block)"), "{line}");
    let (base, last) = (dir.join("base"), dir.join("last"));
    assert!(same_weights(&base, &last, "wte.weight"));
    assert!(same_weights(&base, &last, "h.0.attn.c_attn.weight"));
    assert!(!same_weights(&base, &last, "h.1.attn.c_attn.weight"));

    // classify one text, a file of lines, and evaluate
    let run = dir.join("all");
    let r = run.to_str().unwrap();
    let out = ok(&bin()
        .args([
            "classify",
            "--checkpoint",
            r,
            "--text",
            "I had always thought Jack Gisburn rather a cheap genius.",
        ])
        .output()
        .unwrap());
    let (label, p) = out.trim().split_once('\t').unwrap();
    assert!(["verdict", "stories"].contains(&label), "{out}");
    assert!((0.5..=1.0).contains(&p.parse::<f64>().unwrap()), "{out}");
    let lines = dir.join("lines.txt");
    std::fs::write(
        &lines,
        "The sea was calm that morning.\n\nMrs. Gisburn smiled at me.\n",
    )
    .unwrap();
    let csv = ok(&bin()
        .args([
            "classify",
            "--checkpoint",
            r,
            "--file",
            lines.to_str().unwrap(),
        ])
        .output()
        .unwrap());
    assert_eq!(csv.lines().count(), 3, "a header and two rows: {csv}");
    let e = ok(&bin()
        .args([
            "eval",
            "--checkpoint",
            r,
            "--data",
            dir.join("test.csv").to_str().unwrap(),
        ])
        .output()
        .unwrap());
    let printed: f64 = e.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        (printed - acc).abs() < 1e-3,
        "eval {printed} vs training's {acc}: {e}"
    );
    assert!(e.contains("confusion matrix"), "{e}");

    // appendix E: LoRA adapters of rank 8 on every linear layer and on the head; nothing else
    // trains. Per block 4·8·(64+64) + 8·(64+256) + 8·(256+64), twice, plus the head 8·(64+2).
    let log = ok(&finetune(&dir, "lora", &["--lora", "8"]));
    let line = log.lines().find(|l| l.starts_with("model:")).unwrap();
    assert!(
        line.contains("18960 trainable (LoRA rank 8, alpha 8, scaling alpha-over-rank)"),
        "{line}"
    );
    let lora_acc = test_accuracy(&dir.join("lora"));
    assert!(
        lora_acc >= LORA_MIN_ACCURACY,
        "LoRA test accuracy {lora_acc}"
    );
    let lora = dir.join("lora");
    for name in [
        "wte.weight",
        "h.0.attn.c_attn.weight",
        "h.1.mlp.c_fc.weight",
    ] {
        assert!(same_weights(&base, &lora, name), "{name} changed");
    }
    let latest = std::fs::read_to_string(lora.join("latest")).unwrap();
    let ckpt = lora.join(latest.trim());
    assert!(ckpt.join("lora.json").is_file() && ckpt.join("lora.safetensors").is_file());
    let eval = |run: &Path| {
        let e = ok(&bin()
            .args(["eval", "--checkpoint", run.to_str().unwrap(), "--data"])
            .arg(dir.join("test.csv"))
            .output()
            .unwrap());
        e.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap()
    };
    assert!((eval(&lora) - lora_acc).abs() < 1e-3);
    // a classifier has rows, not a token budget: --max-tokens is refused, not ignored
    let refused = bin()
        .args([
            "eval",
            "--checkpoint",
            lora.to_str().unwrap(),
            "--max-tokens",
            "10",
        ])
        .arg("--data")
        .arg(dir.join("test.csv"))
        .output()
        .unwrap();
    one_line_error(&refused, "a classifier is evaluated on every row");
    // merged into a standalone model: the same classifications, no LoRA files
    let merged = dir.join("merged");
    ok(&bin()
        .args([
            "merge-lora",
            "--checkpoint",
            lora.to_str().unwrap(),
            "--out",
        ])
        .arg(&merged)
        .output()
        .unwrap());
    assert!(!merged.join("lora.json").exists());
    assert!((eval(&merged) - lora_acc).abs() < 1e-3);
    let text = "Mrs. Gisburn smiled at me.";
    let classify = |run: &Path| {
        ok(&bin()
            .args([
                "classify",
                "--checkpoint",
                run.to_str().unwrap(),
                "--text",
                text,
            ])
            .output()
            .unwrap())
    };
    assert_eq!(classify(&lora), classify(&merged));
    one_line_error(
        &bin()
            .args([
                "merge-lora",
                "--checkpoint",
                lora.to_str().unwrap(),
                "--out",
            ])
            .arg(&merged)
            .output()
            .unwrap(),
        "already exists",
    );
    one_line_error(
        &bin()
            .args(["merge-lora", "--checkpoint", r, "--out"])
            .arg(dir.join("merged2"))
            .output()
            .unwrap(),
        "not a LoRA checkpoint",
    );
    // a classifier is no language model: generate refuses it
    one_line_error(
        &bin()
            .args(["generate", "--checkpoint", r, "--prompt", "Mrs. Gisburn"])
            .output()
            .unwrap(),
        "is a classifier",
    );
    // `train --resume` continues pretraining runs only
    one_line_error(
        &bin()
            .args(["train", "--resume", r, "--max-steps", "99"])
            .output()
            .unwrap(),
        "is a `finetune classify` run",
    );
    // fine-tuning starts from a model's own weights: a LoRA checkpoint must be merged first
    one_line_error(
        &bin()
            .args([
                "finetune",
                "classify",
                "--checkpoint",
                lora.to_str().unwrap(),
            ])
            .args(["--train", "x.csv", "--val", "y.csv"])
            .output()
            .unwrap(),
        "merge-lora --checkpoint",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The LoRA run's test accuracy is at least this (measured 72.6%, against 75.3% for the
/// full fine-tuning of the same run, at the same learning rate).
const LORA_MIN_ACCURACY: f64 = 0.65;

#[test]
fn bad_classification_data_gives_one_line_naming_the_file_and_row() {
    let dir = common::fresh_dir("finetune-bad");
    let base = dir.join("base");
    ok(&bin()
        .args([
            "train",
            "--out",
            base.to_str().unwrap(),
            "--max-steps",
            "1",
            "--quiet",
        ])
        .args(common::small_model())
        .output()
        .unwrap());
    let good = "Label,Text\na,one text\nb,another text\na,a third\nb,and a fourth\n";
    std::fs::write(dir.join("val.csv"), good).unwrap();
    let cases: [(&str, &[u8], &str); 6] = [
        ("nocol.csv", b"Class,Text\na,x\n", "no column \"Label\""),
        (
            "empty.csv",
            b"Label,Text\na,x\nb,\n",
            "empty.csv:3: the text is empty",
        ),
        (
            "single.csv",
            b"Label,Text\na,x\na,y\n",
            "at least two classes",
        ),
        ("latin1.csv", b"Label,Text\na,caf\xe9\nb,y\n", "UTF-8"),
        ("header.csv", b"Label,Text\n", "no rows"),
        (
            "ragged.csv",
            b"Label,Text\na,x,extra\nb,y\n",
            "ragged.csv:2",
        ),
    ];
    for (name, bytes, needle) in cases {
        std::fs::write(dir.join(name), bytes).unwrap();
        let r = bin()
            .current_dir(&dir)
            .args([
                "finetune",
                "classify",
                "--checkpoint",
                "base",
                "--train",
                name,
            ])
            .args(["--val", "val.csv", "--out", "run", "--batch-size", "1"])
            .output()
            .unwrap();
        one_line_error(&r, needle);
        assert!(!dir.join("run").exists(), "{name} left a run behind");
    }
    // a validation label the training set lacks
    std::fs::write(dir.join("train.csv"), good).unwrap();
    std::fs::write(dir.join("val2.csv"), "Label,Text\nc,x\n").unwrap();
    let r = bin()
        .current_dir(&dir)
        .args([
            "finetune",
            "classify",
            "--checkpoint",
            "base",
            "--train",
            "train.csv",
        ])
        .args(["--val", "val2.csv", "--out", "run", "--batch-size", "1"])
        .output()
        .unwrap();
    one_line_error(
        &r,
        "val2.csv:2: the label \"c\" is not among the training labels",
    );
    // a text longer than the context is truncated with a warning, not an error
    std::fs::write(
        dir.join("long.csv"),
        format!("Label,Text\na,{}\nb,short\n", "x".repeat(100)),
    )
    .unwrap();
    let r = bin()
        .current_dir(&dir)
        .args([
            "finetune",
            "classify",
            "--checkpoint",
            "base",
            "--train",
            "long.csv",
        ])
        .args([
            "--val",
            "val.csv",
            "--out",
            "run",
            "--batch-size",
            "1",
            "--max-steps",
            "1",
        ])
        .output()
        .unwrap();
    ok(&r);
    assert!(String::from_utf8_lossy(&r.stderr).contains("truncated"));
    // unknown choices
    for (flag, value, needle) in [
        ("--pool", "max", "unknown pooling"),
        ("--trainable", "some", "unknown --trainable"),
        // values the model or the file cannot take
        ("--trainable", "last:99", "the model has"),
        ("--max-length", "100000", "longer than the model's context"),
        ("--text-column", "Label", "both name \"Label\""),
    ] {
        let r = bin()
            .current_dir(&dir)
            .args([
                "finetune",
                "classify",
                "--checkpoint",
                "base",
                "--train",
                "train.csv",
            ])
            .args(["--val", "val.csv", "--out", "run2", flag, value])
            .output()
            .unwrap();
        one_line_error(&r, needle);
    }
    // LoRA flags: a rank of 0, a bad alpha or scaling, and --trainable beside --lora
    for (flags, needle) in [
        (&["--lora", "0"][..], "--lora: the rank must be at least 1"),
        // refused before a single adapter is allocated (this one would take 25 GB)
        (
            &["--lora", "100000000", "--batch-size", "2"],
            "is larger than the model's width",
        ),
        (
            &["--grad-accum", "3"],
            "--grad-accum 3 must be at least 1 and divide",
        ),
        (&["--lora", "4", "--lora-alpha", "-2"], "--lora-alpha"),
        (
            &["--lora", "4", "--lora-scaling", "rank"],
            "unknown LoRA scaling",
        ),
    ] {
        let r = bin()
            .current_dir(&dir)
            .args(["finetune", "classify", "--checkpoint", "base"])
            .args(["--train", "train.csv", "--val", "val.csv", "--out", "run3"])
            .args(flags)
            .output()
            .unwrap();
        one_line_error(&r, needle);
    }
    let r = bin()
        .current_dir(&dir)
        .args(["finetune", "classify", "--checkpoint", "base"])
        .args(["--train", "train.csv", "--val", "val.csv", "--lora", "4"])
        .args(["--trainable", "all"])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("cannot be used with"));
    // classify on a model that is no classifier
    let r = bin()
        .args([
            "classify",
            "--checkpoint",
            base.to_str().unwrap(),
            "--text",
            "hi",
        ])
        .output()
        .unwrap();
    one_line_error(&r, "not a classifier");
    std::fs::remove_dir_all(&dir).unwrap();
}
