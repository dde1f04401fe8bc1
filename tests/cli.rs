//! The `scratchgpt` binary: the happy path (train → generate → eval), and every bad input a
//! user can give ending in one clear `error:` line, a non-zero exit, and no half-written output.

mod common;

use common::{assert_ok, assert_one_line_error, bin};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tmp(name: &str) -> PathBuf {
    common::fresh_dir(&format!("cli-{name}"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

#[test]
fn train_generate_eval_happy_path() {
    let dir = tmp("happy");
    let out = dir.join("run");
    let out_s = out.to_str().unwrap();
    let mut args = vec!["train", "--out", out_s, "--max-steps", "3"];
    args.extend_from_slice(&common::small_model());
    args.push("--quiet");
    let r = run(&args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(out.join("latest").is_file());
    let ckpt = out.join(std::fs::read_to_string(out.join("latest")).unwrap().trim());
    for f in [
        "config.json",
        "model.safetensors",
        "optimizer.safetensors",
        "scratchgpt_state.json",
        "tokenizer.json",
    ] {
        assert!(ckpt.join(f).is_file(), "{f} missing");
    }
    let g = run(&[
        "generate",
        "--checkpoint",
        out_s,
        "--prompt",
        "Every effort",
        "--max-new-tokens",
        "10",
    ]);
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let text = String::from_utf8_lossy(&g.stdout);
    assert!(
        text.starts_with("Every effort") && text.len() > "Every effort".len(),
        "{text}"
    );
    let g2 = run(&[
        "generate",
        "--checkpoint",
        out_s,
        "--prompt",
        "Every",
        "--temperature",
        "1.0",
        "--top-k",
        "5",
        "--top-p",
        "0.9",
    ]);
    assert!(g2.status.success());
    let corpus = dir.join("eval.txt");
    std::fs::write(
        &corpus,
        "The road to the market ran for seven miles between the hills. ".repeat(4),
    )
    .unwrap();
    let e = run(&[
        "eval",
        "--checkpoint",
        out_s,
        "--data",
        corpus.to_str().unwrap(),
    ]);
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let line = String::from_utf8_lossy(&e.stdout);
    let parts: Vec<&str> = line.split_whitespace().collect();
    assert_eq!((parts[0], parts[2]), ("loss", "perplexity"), "{line}");
    let (loss, ppl): (f64, f64) = (parts[1].parse().unwrap(), parts[3].parse().unwrap());
    assert!((loss.exp() - ppl).abs() < 1e-2 * ppl, "{line}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_training_inputs_give_one_clear_line_and_write_nothing() {
    let dir = tmp("bad");
    let out = dir.join("run");
    let out_s = out.to_str().unwrap();
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let short = dir.join("short.txt");
    std::fs::write(&short, "too short").unwrap();
    let binary = dir.join("latin1.txt");
    std::fs::write(&binary, b"caf\xe9 au lait").unwrap();
    let p = |p: &Path| p.to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--data".into(), p(&dir.join("missing.txt"))],
            "missing.txt",
        ),
        (vec!["--data".into(), p(&dir)], "no token shards here"),
        (
            vec!["--data".into(), p(&empty)],
            "empty.txt: the file is empty",
        ),
        (
            vec!["--data".into(), p(&short)],
            "short.txt: the training part",
        ),
        (vec!["--data".into(), p(&binary)], "not valid UTF-8"),
        (
            vec!["--data".into(), p(&short), p(&short)],
            "given twice in --data",
        ),
        (
            vec!["--save-minutes".into(), "NaN".into()],
            "--save-minutes",
        ),
        (vec!["--preset".into(), "gpt5".into()], "unknown preset"),
        (
            vec!["--tokenizer".into(), "wordpiece".into()],
            "unknown tokenizer",
        ),
        (vec!["--tokenizer".into(), "bpe:10".into()], "bpe:N"),
        (
            vec!["--batch-size".into(), "0".into()],
            "--batch-size must be at least 1",
        ),
        (vec!["--batch-size".into(), "-3".into()], "-3"),
        (
            vec![
                "--emb-dim".into(),
                "64".into(),
                "--n-heads".into(),
                "3".into(),
            ],
            "not divisible",
        ),
        (vec!["--dropout".into(), "1.5".into()], "--dropout"),
        (vec!["--lr".into(), "-1".into()], "--lr"),
        (vec!["--epochs".into(), "0".into()], "--epochs"),
        (
            vec!["--context-length".into(), "0".into()],
            "--context-length",
        ),
        (
            vec!["--resume".into(), p(&dir.join("nothing-here"))],
            "no such directory",
        ),
        (vec!["--bogus-flag".into()], "--bogus-flag"),
        (
            vec![
                "--resume".into(),
                p(&dir),
                "--context-length".into(),
                "999".into(),
            ],
            "cannot change when resuming",
        ),
        (
            vec![
                "--lr".into(),
                "1e30".into(),
                "--tokenizer".into(),
                "bytes".into(),
                "--grad-clip".into(),
                "0".into(),
            ],
            "NaN or infinite at step",
        ),
        // a step that leaves the weights infinite with a finite loss: no checkpoint of them
        // is written (it could be neither resumed nor sampled)
        (
            vec![
                "--lr".into(),
                "1e38".into(),
                "--warmup-steps".into(),
                "0".into(),
                "--grad-clip".into(),
                "0".into(),
                "--save-every".into(),
                "1".into(),
            ],
            "the weights became NaN or infinite at step 1",
        ),
    ];
    for (extra, needle) in cases {
        let mut args: Vec<String> = vec!["train".into(), "--max-steps".into(), "2".into()];
        if !extra.contains(&"--resume".to_string()) {
            args.extend(["--out".into(), out_s.into()]);
        }
        args.extend(extra.iter().cloned());
        let r = bin().args(&args).output().unwrap();
        assert_one_line_error(&r, needle);
        assert!(!out.exists(), "{extra:?} left a run directory behind");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_generate_and_eval_inputs_give_one_clear_line() {
    let dir = tmp("badgen");
    let missing = dir.join("missing");
    let m = missing.to_str().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("model/tests/fixtures/tiny-gpt2");
    let f = fixture.to_str().unwrap();
    assert_one_line_error(
        &run(&["generate", "--checkpoint", m, "--prompt", "hi"]),
        "no such directory",
    );
    assert_one_line_error(
        &run(&[
            "generate",
            "--checkpoint",
            f,
            "--prompt",
            "hi",
            "--temperature",
            "-1",
        ]),
        "temperature",
    );
    assert_one_line_error(
        &run(&[
            "generate",
            "--checkpoint",
            f,
            "--prompt",
            "hi",
            "--top-p",
            "1.5",
        ]),
        "top-p",
    );
    assert_one_line_error(
        &run(&[
            "generate",
            "--checkpoint",
            f,
            "--prompt",
            "hi",
            "--top-k",
            "0",
        ]),
        "top-k",
    );
    assert_one_line_error(
        &run(&["generate", "--checkpoint", f, "--prompt", ""]),
        "--prompt",
    );
    // the fixture is a GPT-2 directory whose 37-token vocabulary does not fit GPT-2's tokenizer
    assert_one_line_error(
        &run(&["generate", "--checkpoint", f, "--prompt", "hi"]),
        "vocabulary",
    );
    let short = dir.join("short.txt");
    std::fs::write(&short, "hi").unwrap();
    assert_one_line_error(
        &run(&["eval", "--checkpoint", m, "--data", short.to_str().unwrap()]),
        "no such directory",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `train` with the small model in `cwd`, returning its output.
fn train_in(cwd: &Path, extra: &[&str]) -> Output {
    bin()
        .current_dir(cwd)
        .arg("train")
        .args(common::small_model())
        .args(extra)
        .output()
        .expect("binary runs")
}

fn latest_step(run: &Path) -> usize {
    let ckpt = run.join(std::fs::read_to_string(run.join("latest")).unwrap().trim());
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ckpt.join("scratchgpt_state.json")).unwrap())
            .unwrap();
    state["step"].as_u64().unwrap() as usize
}

#[test]
fn runs_get_their_own_directories_and_never_overwrite_each_other() {
    let dir = tmp("rundirs");
    // two plain runs: two numbered directories, runs/latest at the newer
    for _ in 0..2 {
        assert_ok(&train_in(&dir, &["--max-steps", "2", "--quiet"]));
    }
    let runs = dir.join("runs");
    assert!(runs.join("run-0001/latest").is_file() && runs.join("run-0002/latest").is_file());
    assert_eq!(
        std::fs::read_link(runs.join("latest")).unwrap(),
        Path::new("run-0002")
    );
    assert!(
        runs.join("latest/metrics.csv").is_file(),
        "the link resolves"
    );

    // --out on an existing run is refused, and leaves it as it was
    let first = runs.join("run-0001");
    let metrics = std::fs::read(first.join("metrics.csv")).unwrap();
    let r = train_in(&dir, &["--out", "runs/run-0001", "--max-steps", "3"]);
    assert_one_line_error(&r, "already holds a run (at step 2)");
    let msg = String::from_utf8_lossy(&r.stderr);
    assert!(msg.contains("--resume") && msg.contains("--force"), "{msg}");
    assert_eq!(std::fs::read(first.join("metrics.csv")).unwrap(), metrics);
    assert_eq!(latest_step(&first), 2);

    // --force whose new run fails before its first checkpoint: the old run is put back
    let short = dir.join("short.txt");
    std::fs::write(&short, "too short").unwrap();
    let r = train_in(
        &dir,
        &[
            "--out",
            "runs/run-0001",
            "--force",
            "--data",
            short.to_str().unwrap(),
        ],
    );
    assert_one_line_error(&r, "too short");
    assert_eq!(std::fs::read(first.join("metrics.csv")).unwrap(), metrics);
    assert_eq!(latest_step(&first), 2);

    // --force that succeeds replaces the old run: only the new run's checkpoints are left
    let r = train_in(
        &dir,
        &[
            "--out",
            "runs/run-0001",
            "--force",
            "--max-steps",
            "3",
            "--quiet",
        ],
    );
    assert_ok(&r);
    assert_eq!(latest_step(&first), 3);
    let names: Vec<String> = std::fs::read_dir(first.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["step-00000003"], "old checkpoints are gone");
    assert!(std::fs::read_dir(&first).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with('.')));

    // the folder of numbered runs is not a run: neither --out nor --resume takes it
    let r = train_in(&dir, &["--out", "runs", "--max-steps", "1"]);
    assert_one_line_error(&r, "folder of numbered runs");
    assert!(String::from_utf8_lossy(&r.stderr).contains("--resume runs/run-"));

    // contradictory or incomplete combinations are usage errors (exit 2)
    for args in [
        &["--force"][..],
        &["--out", "x", "--resume", "runs/run-0002"],
        &["--force", "--resume", "runs/run-0002"],
        &["--constant-lr", "--min-lr", "1e-5"],
    ] {
        let r = train_in(&dir, args);
        assert_one_line_error(&r, "");
        assert_eq!(r.status.code(), Some(2), "{args:?}");
    }
    assert_one_line_error(
        &train_in(&dir, &["--lr", "1e-4", "--min-lr", "1e-3", "--out", "y"]),
        "--min-lr",
    );
    assert!(!dir.join("x").exists() && !dir.join("y").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_continues_in_place_and_finds_its_data_again() {
    let dir = tmp("resume");
    let data = dir.join("story.txt");
    std::fs::write(&data, train::corpus::DEFAULT_CORPUS).unwrap();
    let run = dir.join("run");
    let (d, o) = (data.to_str().unwrap(), run.to_str().unwrap());
    assert_ok(&train_in(
        &dir,
        &["--data", d, "--out", o, "--max-steps", "3", "--quiet"],
    ));
    // no --data, no --out: it continues in place, from another working directory
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let r = bin()
        .current_dir(&elsewhere)
        .args(["train", "--resume", o, "--max-steps", "5", "--quiet"])
        .output()
        .unwrap();
    assert_ok(&r);
    assert_eq!(latest_step(&run), 5);
    assert!(!elsewhere.join("runs").exists(), "wrote nowhere else");

    // a finished run says so and fails, unless the limits are raised
    let r = bin().args(["train", "--resume", o]).output().unwrap();
    assert_one_line_error(&r, "already finished (5 steps done");
    assert!(String::from_utf8_lossy(&r.stderr).contains("--max-steps"));

    // the data moved: named in the error, and found again with --data
    let moved = dir.join("moved.txt");
    std::fs::rename(&data, &moved).unwrap();
    let r = bin()
        .args(["train", "--resume", o, "--max-steps", "6"])
        .output()
        .unwrap();
    assert_one_line_error(&r, "story.txt");
    assert!(String::from_utf8_lossy(&r.stderr).contains("--data"));
    let m = moved.to_str().unwrap();
    let r = bin()
        .args([
            "train",
            "--resume",
            o,
            "--max-steps",
            "6",
            "--data",
            m,
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_ok(&r);
    assert_eq!(latest_step(&run), 6);
    // ... and remembered there for the next resume
    let r = bin()
        .args(["train", "--resume", o, "--max-steps", "7", "--quiet"])
        .output()
        .unwrap();
    assert_ok(&r);
    // an earlier checkpoint of the run is refused (training on from it would write over the
    // later ones); the latest one, named as a checkpoint, is the run itself
    let older = run.join("checkpoints/step-00000006");
    let r = bin()
        .args([
            "train",
            "--resume",
            older.to_str().unwrap(),
            "--max-steps",
            "8",
        ])
        .output()
        .unwrap();
    assert_one_line_error(&r, "not the run's latest checkpoint");
    assert_eq!(latest_step(&run), 7);
    let newest = run.join("checkpoints/step-00000007");
    let r = bin()
        .args([
            "train",
            "--resume",
            newest.to_str().unwrap(),
            "--max-steps",
            "8",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_ok(&r);
    assert_eq!(latest_step(&run), 8);
    // --save-every may change on resume (it changes no number of the training): from 8 to 13
    // with --save-every 2, the two checkpoints kept are 12 (a periodic one) and 13 (the end)
    let r = bin()
        .args([
            "train",
            "--resume",
            o,
            "--max-steps",
            "13",
            "--save-every",
            "2",
        ])
        .args(["--quiet"])
        .output()
        .unwrap();
    assert_ok(&r);
    for step in [12, 13] {
        let ckpt = run.join(format!("checkpoints/step-{step:08}"));
        assert!(ckpt.is_dir(), "{} missing", ckpt.display());
    }
    // ... and 0 turns it off again: 13 → 17 keeps 13 and the end, 17
    let r = bin()
        .args([
            "train",
            "--resume",
            o,
            "--max-steps",
            "17",
            "--save-every",
            "0",
        ])
        .args(["--quiet"])
        .output()
        .unwrap();
    assert_ok(&r);
    assert!(run.join("checkpoints/step-00000013").is_dir());
    assert!(run.join("checkpoints/step-00000017").is_dir());
    // a damaged epoch order in the state file: one clear line, not an index out of bounds
    let state_file = run.join("checkpoints/step-00000017/scratchgpt_state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    for order in [
        serde_json::json!([1_000_000_000usize]),
        serde_json::json!([0, 1, 2]),
    ] {
        state["order"] = order;
        std::fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();
        let r = bin()
            .args(["train", "--resume", o, "--max-steps", "18"])
            .output()
            .unwrap();
        assert_one_line_error(&r, "is damaged");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn console_csv_and_checkpoints_count_steps_alike_and_samples_show_newlines() {
    let dir = tmp("steps");
    let data = dir.join("lines.txt");
    std::fs::write(&data, "one line\nand the next\n".repeat(200)).unwrap();
    let out = dir.join("run");
    let r = train_in(
        &dir,
        &[
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--max-steps",
            "6",
            "--eval-freq",
            "5",
            "--epochs",
            "1",
            "--start-context",
            "one",
        ],
    );
    assert_ok(&r);
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(
        stdout.contains("(Step 000001)") && stdout.contains("(Step 000006)"),
        "{stdout}"
    );
    assert!(stdout.contains("memory: about"), "{stdout}");
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let steps: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(steps, ["1", "6"]);
    assert_eq!(latest_step(&out), 6);
    // with 1 epoch of many batches the epoch does not end within 6 steps; train one to the end
    let r = train_in(
        &dir,
        &[
            "--data",
            data.to_str().unwrap(),
            "--out",
            dir.join("sample").to_str().unwrap(),
            "--epochs",
            "1",
            "--start-context",
            "one",
        ],
    );
    assert_ok(&r);
    let stdout = String::from_utf8_lossy(&r.stdout);
    let sample = stdout
        .lines()
        .find(|l| l.starts_with("Ep 1 sample:"))
        .unwrap();
    assert!(
        !sample.contains("  "),
        "newlines are not runs of spaces: {sample}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_documents_every_flag_with_its_default() {
    let top = run(&["--help"]);
    assert!(String::from_utf8_lossy(&top.stdout).contains("130 interrupted"));
    for sub in [
        "train",
        "generate",
        "eval",
        "finetune classify",
        "finetune instruct",
        "classify",
        "chat",
    ] {
        let mut args: Vec<&str> = sub.split(' ').collect();
        args.push("--help");
        let out = run(&args);
        assert_ok(&out);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("Exit status"), "{sub}: {help}");
        let flags: Vec<&str> = help
            .lines()
            .filter(|l| l.trim_start().starts_with("--"))
            .collect();
        assert!(flags.len() >= 3, "{sub}: {help}");
        for line in flags {
            let (flag, text) = line.trim_start().split_once("  ").unwrap_or((line, ""));
            assert!(!text.trim().is_empty(), "{sub} {flag} has no description");
            let takes_value = flag.contains('<');
            let required = ["--checkpoint", "--prompt", "--train", "--val"]
                .iter()
                .any(|r| flag.starts_with(r))
                || (["eval", "finetune instruct"].contains(&sub) && flag.starts_with("--data"));
            if takes_value && !required {
                assert!(
                    text.contains("[default"),
                    "{sub} {flag} shows no default: {text}"
                );
            }
        }
    }
    // the preset values come from the presets themselves
    let help = String::from_utf8_lossy(&run(&["train", "--help"]).stdout).into_owned();
    let lr = help.lines().find(|l| l.contains("--lr <X>")).unwrap();
    assert!(
        lr.contains("quickstart") && lr.contains("1e-3") && lr.contains("book-ch5: 4e-4"),
        "{lr}"
    );
}

#[test]
fn generate_refuses_sampling_flags_when_greedy_and_says_when_it_crops_the_prompt() {
    let dir = tmp("crop");
    let out = dir.join("run");
    assert_ok(&train_in(
        &dir,
        &[
            "--out",
            out.to_str().unwrap(),
            "--max-steps",
            "1",
            "--quiet",
        ],
    ));
    let o = out.to_str().unwrap();
    let r = run(&[
        "generate",
        "--checkpoint",
        o,
        "--prompt",
        "hi",
        "--top-k",
        "5",
    ]);
    assert_one_line_error(&r, "--top-k has no effect with --temperature 0");
    assert_eq!(r.status.code(), Some(2), "flags that contradict each other");
    // a required flag left out is named
    let r = run(&["generate", "--checkpoint", o]);
    assert_one_line_error(&r, "--prompt");
    assert_eq!(r.status.code(), Some(2));
    let long = "x".repeat(100); // 100 byte tokens, context 32
    let r = run(&[
        "generate",
        "--checkpoint",
        o,
        "--prompt",
        &long,
        "--max-new-tokens",
        "2",
    ]);
    assert_ok(&r);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(
        stderr.contains("the prompt is 100 tokens, more than the model's context of 32"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The memory estimate printed before training is within 25% of the measured peak resident
/// memory of the same run: the high-water mark of the child's own memory (`VmHWM`), read
/// while it runs. Not the `ru_maxrss` of wait4, which a child spawned with a shared address
/// space (posix_spawn, as std's `Command` does) inherits from this test process: right after
/// a build, the test binary's own pages made it 142 MB against a child's 90.
#[cfg(target_os = "linux")]
#[test]
fn memory_estimate_matches_the_measured_peak() {
    let dir = tmp("memory");
    let log = dir.join("stdout.txt");
    let mut child = bin()
        .args([
            "train",
            "--tokenizer",
            "bytes",
            "--emb-dim",
            "128",
            "--n-layers",
            "4",
        ])
        .args([
            "--n-heads",
            "4",
            "--context-length",
            "256",
            "--batch-size",
            "4",
        ])
        .args(["--stride", "64", "--max-steps", "2", "--eval-iter", "1"])
        .args(["--out", dir.join("run").to_str().unwrap()])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // `VmHWM` of the scratchgpt image (before its exec the child's status is this process's),
    // kept as the child runs: a high-water mark, so any read after the peak gives it
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(&status_file) {
            let field = |key: &str| {
                s.lines()
                    .find(|l| l.starts_with(key))
                    .map(|l| l[key.len()..].trim().to_string())
            };
            if field("Name:").as_deref() == Some("scratchgpt") {
                let kb = field("VmHWM:").and_then(|v| v.split_whitespace().next()?.parse().ok());
                peak_kb = peak_kb.max(kb.unwrap_or(0));
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    assert!(status.success(), "training failed");
    assert!(peak_kb > 0, "the child's memory was never read");
    let peak_mb = peak_kb as f64 * 1.024 / 1000.0; // KiB
    let stdout = std::fs::read_to_string(&log).unwrap();
    let line = stdout
        .lines()
        .find(|l| l.starts_with("memory: about"))
        .unwrap();
    let mut words = line.split_whitespace().skip(2);
    let (value, unit) = (words.next().unwrap(), words.next().unwrap());
    let est_mb = value.parse::<f64>().unwrap() * if unit == "GB" { 1000.0 } else { 1.0 };
    assert_eq!(unit, "MB", "{line}");
    let ratio = est_mb / peak_mb;
    assert!(
        (0.75..=1.25).contains(&ratio),
        "estimate {est_mb} MB vs peak {peak_mb} MB: {line}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn a_model_too_large_for_memory_is_one_line_not_an_abort() {
    // under a 3 GB address-space limit, a 1.2-billion-parameter model cannot fit
    let dir = tmp("toolarge");
    let out = dir.join("run");
    let cmd = format!(
        "ulimit -v 3000000 && exec {} train --emb-dim 2048 --n-layers 24 --n-heads 16 --out {}",
        env!("CARGO_BIN_EXE_scratchgpt"),
        out.display()
    );
    let r = Command::new("sh").args(["-c", &cmd]).output().unwrap();
    assert_one_line_error(&r, "this model needs about");
    assert!(String::from_utf8_lossy(&r.stderr).contains("ulimit -v"));
    assert_eq!(r.status.code(), Some(1));
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn train_names_the_kernels_and_refuses_a_path_the_cpu_lacks() {
    let dir = tmp("kernels");
    let r = train_in(&dir, &["--out", "run", "--max-steps", "1"]);
    assert_ok(&r);
    let stdout = String::from_utf8_lossy(&r.stdout);
    let first = stdout.lines().next().unwrap();
    assert!(
        first.starts_with("CPU: ") && first.contains("SGEMM: ") && first.contains("element-wise: "),
        "{first}"
    );
    let r = bin()
        .env("SCRATCHGPT_GEMM", "avx3")
        .args(["train", "--max-steps", "1"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_one_line_error(&r, "SCRATCHGPT_GEMM=avx3");
    assert_eq!(r.status.code(), Some(1));
    // every path this CPU has trains (the paths differ only in their last bits)
    for (gemm, simd) in [("matrixmultiply", "baseline"), ("avx2", "avx2")] {
        let r = bin()
            .env("SCRATCHGPT_GEMM", gemm)
            .env("SCRATCHGPT_SIMD", simd)
            .current_dir(&dir)
            .args(["train", "--out", &format!("run-{gemm}"), "--max-steps", "1"])
            .args(common::small_model())
            .output()
            .unwrap();
        let has_avx2 = cfg!(target_arch = "x86_64") && std::arch::is_x86_feature_detected!("avx2");
        if gemm == "avx2" && !has_avx2 {
            assert_one_line_error(&r, "SCRATCHGPT_GEMM=avx2");
        } else {
            assert_ok(&r);
            assert!(String::from_utf8_lossy(&r.stdout).contains("SGEMM: "));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
