//! End-to-end training through the library: the loss falls, a resumed run repeats the
//! uninterrupted one exactly, checkpoints survive failed and interrupted saves.

use std::path::{Path, PathBuf};

use train::checkpoint;
use train::trainer::{run, RunOptions};
use train::{TokenizerSpec, TrainSettings};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scratchgpt-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A small, fast configuration: bytes tokenizer, 2 layers of width 32.
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
        max_steps: Some(12),
        warmup_steps: 2,
        eval_freq: 4,
        eval_iter: 2,
        sample_tokens: 8,
        ..TrainSettings::preset("quickstart").unwrap()
    }
}

fn opts(out: &Path) -> RunOptions {
    RunOptions {
        out_dir: out.to_path_buf(),
        quiet: true,
        ..Default::default()
    }
}

fn verdict() -> Option<String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/the-verdict.txt");
    std::fs::read_to_string(p).ok()
}

#[test]
fn cut_down_book_run_loss_falls_well_below_its_start() {
    // The book's chapter-5 run in miniature: the-verdict.txt (or the built-in corpus when the
    // shared data is absent), a small model, GPT-2-like settings, 60 steps.
    let text = verdict().unwrap_or_else(|| train::corpus::DEFAULT_CORPUS.to_string());
    let s = TrainSettings {
        tokenizer: TokenizerSpec::Bpe(400),
        context_length: 64,
        emb_dim: 64,
        n_heads: 4,
        n_layers: 2,
        batch_size: 8,
        stride: 32,
        max_steps: Some(200),
        lr: 3e-3,
        min_lr: 3e-4,
        eval_freq: 25,
        eval_iter: 3,
        ..small_settings()
    };
    let out = tmp("loss-falls");
    let r = run(&text, s, &opts(&out)).unwrap();
    let first = r.history.first().unwrap().train_loss;
    let last = r.history.last().unwrap().train_loss;
    assert!(
        first > 5.5,
        "an untrained model starts near ln(vocab): {first}"
    );
    assert!(
        last < first - 2.0,
        "train loss should fall well below its start: {first} -> {last}"
    );
    assert!(out.join("loss.svg").is_file() && out.join("metrics.csv").is_file());
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), r.history.len() + 1);
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn resume_gives_the_same_losses_as_an_uninterrupted_run() {
    let text = train::corpus::DEFAULT_CORPUS;
    let straight = run(text, small_settings(), &opts(&tmp("straight"))).unwrap();
    assert_eq!(straight.step_losses.len(), 12);

    let out = tmp("resumed");
    let first = run(
        text,
        small_settings(),
        &RunOptions {
            stop_at_step: Some(5),
            ..opts(&out)
        },
    )
    .unwrap();
    assert!(first.interrupted);
    assert_eq!(first.steps, 5);
    let second = run(
        text,
        small_settings(),
        &RunOptions {
            resume: Some(out.clone()),
            ..opts(&out)
        },
    )
    .unwrap();
    let mut joined = first.step_losses.clone();
    joined.extend(&second.step_losses);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&joined),
        bits(&straight.step_losses),
        "resumed {joined:?} vs straight {:?}",
        straight.step_losses
    );
    let without_speed = |h: &[train::metrics::MetricRecord]| {
        h.iter()
            .map(|r| {
                (
                    r.step,
                    r.tokens_seen,
                    r.train_loss.to_bits(),
                    r.val_loss.to_bits(),
                    r.lr.to_bits(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        without_speed(&second.history),
        without_speed(&straight.history)
    );
    // resuming on other data is refused
    let err = run(
        "other text entirely ".repeat(200).as_str(),
        small_settings(),
        &RunOptions {
            resume: Some(out.clone()),
            ..opts(&out)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("data differ"), "{err}");
    for d in [tmp("straight"), out] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn same_seed_same_run_and_threads_do_not_matter() {
    let text = train::corpus::DEFAULT_CORPUS;
    let s = TrainSettings {
        max_steps: Some(4),
        ..small_settings()
    };
    let go = |threads: usize, name: &str| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let out = tmp(name);
        let r = pool.install(|| run(text, s.clone(), &opts(&out)).unwrap());
        let _ = std::fs::remove_dir_all(&out);
        r.step_losses
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>()
    };
    let a = go(1, "t1");
    assert_eq!(a, go(2, "t2"));
    assert_eq!(a, go(1, "t1b"));
}

#[test]
fn a_failed_or_interrupted_save_keeps_the_previous_checkpoint() {
    let text = train::corpus::DEFAULT_CORPUS;
    let out = tmp("atomic");
    let s = TrainSettings {
        max_steps: Some(3),
        ..small_settings()
    };
    let r = run(text, s.clone(), &opts(&out)).unwrap();
    let good = checkpoint::resolve(&out).unwrap();
    assert_eq!(good, r.checkpoint);

    // A crash in the middle of a save leaves a temporary directory: ignored and cleaned up.
    let partial = out.join("checkpoints/.tmp-step-00000099-1");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("model.safetensors"), b"half a fi").unwrap();
    assert_eq!(checkpoint::resolve(&out).unwrap(), good);

    // A save that fails (here: its target path is blocked by a file) reports an error and
    // leaves `latest` on the previous checkpoint.
    std::fs::write(out.join("checkpoints/step-00000006"), b"in the way").unwrap();
    let resume = RunOptions {
        resume: Some(out.clone()),
        resume_max_steps: Some(6),
        ..opts(&out)
    };
    let err = run(text, s, &resume).unwrap_err().to_string();
    assert!(err.contains("previous checkpoint is kept"), "{err}");
    assert_eq!(checkpoint::resolve(&out).unwrap(), good);
    let ctx = model::Context::new(0);
    checkpoint::load_for_resume(&out, &ctx).expect("the previous checkpoint still loads");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn disk_full_on_save_is_reported_and_the_previous_checkpoint_kept() {
    // Simulate a full disk: the temporary file the `latest` pointer is written through is a
    // symlink to /dev/full, where every write fails with ENOSPC.
    if !Path::new("/dev/full").exists() {
        eprintln!("skipping: no /dev/full");
        return;
    }
    let text = train::corpus::DEFAULT_CORPUS;
    let out = tmp("diskfull");
    let s = TrainSettings {
        max_steps: Some(2),
        ..small_settings()
    };
    run(text, s.clone(), &opts(&out)).unwrap();
    let good = checkpoint::resolve(&out).unwrap();
    let trap = out.join(format!(".latest.tmp-{}", std::process::id()));
    std::os::unix::fs::symlink("/dev/full", &trap).unwrap();
    let resume = RunOptions {
        resume: Some(out.clone()),
        resume_max_steps: Some(4),
        ..opts(&out)
    };
    let err = run(text, s, &resume).unwrap_err().to_string();
    assert!(
        err.contains("No space left on device") && err.contains("previous checkpoint is kept"),
        "{err}"
    );
    assert_eq!(checkpoint::resolve(&out).unwrap(), good);
    let _ = std::fs::remove_file(&trap);
    std::fs::remove_dir_all(&out).unwrap();
}
