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

/// Every weight of a checkpoint, in file order.
fn checkpoint_weights(ckpt: &Path) -> Vec<f32> {
    let bytes = std::fs::read(ckpt.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    names
        .iter()
        .flat_map(|n| {
            st.tensor(n)
                .unwrap()
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn gradient_accumulation_trains_the_same_model_as_the_whole_batch() {
    let text = train::corpus::DEFAULT_CORPUS;
    let settings = |grad_accum| TrainSettings {
        dropout: 0.0, // micro-batches draw their dropout masks separately
        batch_size: 8,
        max_steps: Some(10),
        grad_accum,
        ..small_settings()
    };
    let whole = run(text, settings(1), &opts(&tmp("accum-1"))).unwrap();
    let w1 = checkpoint_weights(&whole.checkpoint);
    for n in [2, 4, 8] {
        let r = run(text, settings(n), &opts(&tmp(&format!("accum-{n}")))).unwrap();
        let wn = checkpoint_weights(&r.checkpoint);
        let (mut diff, mut norm) = (0.0f64, 0.0f64);
        for (a, b) in wn.iter().zip(&w1) {
            diff += ((a - b) as f64).powi(2);
            norm += (*b as f64).powi(2);
        }
        let rel = (diff / norm).sqrt();
        assert!(
            rel < 1e-6,
            "--grad-accum {n}: weights differ by {rel:e} (relative L2)"
        );
        for (a, b) in r.step_losses.iter().zip(&whole.step_losses) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs(),
                "--grad-accum {n}: loss {a} vs {b}"
            );
        }
        eprintln!("--grad-accum {n}: relative L2 difference of the weights after 10 steps {rel:e}; bit-identical: {}", wn == w1);
    }
    // a part count that does not divide the batch is refused
    let err = run(text, settings(3), &opts(&tmp("accum-3")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--grad-accum 3") && err.contains("divide"),
        "{err}"
    );
}
