//! Data-parallel training under `mpirun`, through the binary (needs `--features mpi` and an MPI
//! installation; skipped with a note when `mpirun` is missing). These tests are the spec of
//! `train::data_parallel`:
//! - 2 ranks × micro-batch b give the same weights and AdamW moments, bit for bit, as one process
//!   with `--grad-accum 2` × b (the all-reduce adds two addends: the same in either order);
//! - 3 ranks within a tolerance of `--grad-accum 3` (see `three_ranks_...` for why);
//! - `--resume` with another number of processes continues exactly;
//! - a rank that panics or is killed ends the whole job quickly with a non-zero status, and the
//!   last complete checkpoint resumes to the same weights as an uninterrupted run.
//!
//! Every run asserts the world size it printed: an MPI library other than the launcher's would
//! silently run singletons.
#![cfg(feature = "mpi")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_scratchgpt");

/// The launcher (`MPIRUN` overrides `mpirun`) and whether it is Open MPI's; `None`: no MPI here.
fn launcher() -> Option<(String, bool)> {
    let name = std::env::var("MPIRUN").unwrap_or_else(|_| "mpirun".into());
    let out = Command::new(&name).arg("--version").output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    Some((name, text.contains("Open MPI") || text.contains("OpenRTE")))
}

macro_rules! need_mpi {
    () => {
        match launcher() {
            Some(l) => l,
            None => {
                eprintln!("skipping: no mpirun on this machine (install openmpi-bin)");
                return;
            }
        }
    };
}

/// A tiny model, 6 steps with dropout 0, an evaluation every 2 steps; the batch size is given.
fn run_args(out: &Path, batch: usize) -> Vec<String> {
    let mut a: Vec<String> = [
        "train",
        "--tokenizer",
        "bytes",
        "--context-length",
        "32",
        "--emb-dim",
        "32",
        "--n-heads",
        "2",
        "--n-layers",
        "2",
        "--stride",
        "32",
        "--dropout",
        "0",
        "--max-steps",
        "6",
        "--warmup-steps",
        "2",
        "--lr",
        "3e-3",
        "--eval-freq",
        "2",
        "--eval-iter",
        "2",
        "--seed",
        "5",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(["--batch-size".into(), batch.to_string()]);
    a.extend(["--out".into(), out.display().to_string()]);
    a
}

/// `mpirun -np np scratchgpt ARGS` on shared memory, with a launcher timeout.
fn mpirun(np: usize, args: &[String], env: &[(&str, &str)], timeout_secs: u64) -> Output {
    let (name, open_mpi) = launcher().expect("mpirun");
    let mut c = Command::new(name);
    c.args(["-np", &np.to_string()]);
    if open_mpi {
        // shared memory only (no network interface), and more ranks than cores when asked
        c.args(["--mca", "btl", "self,vader"]);
        if np > 2 {
            c.arg("--oversubscribe");
        }
    }
    c.arg(BIN)
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("MPIEXEC_TIMEOUT", timeout_secs.to_string())
        // one thread per rank here, where the overlap is off by default: keep it tested
        .env("SCRATCHGPT_DDP_OVERLAP", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("mpirun runs")
}

/// One process, no launcher: a binary with the `mpi` feature behaves as the default build.
fn single(args: &[String]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("scratchgpt runs")
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", show(&o));
    o
}

/// Runs `np` ranks and checks they really were `np` (rank 0's first lines say so).
fn mpirun_ok(np: usize, args: &[String]) -> Output {
    let mut args = args.to_vec();
    args.retain(|a| a != "--quiet"); // the world line is printed unless quiet
    let o = ok(mpirun(np, &args, &[], 120));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("data-parallel: {np} processes")),
        "not {np} processes (an MPI library other than the launcher's runs singletons):\n{}",
        show(&o)
    );
    o
}

/// The directory of a run's latest checkpoint.
fn latest(run: &Path) -> PathBuf {
    let name = std::fs::read_to_string(run.join("latest")).unwrap();
    run.join(name.trim())
}

fn same_bytes(a: &Path, b: &Path, file: &str) {
    let (x, y) = (latest(a).join(file), latest(b).join(file));
    assert!(
        std::fs::read(&x).unwrap() == std::fs::read(&y).unwrap(),
        "{} and {} differ",
        x.display(),
        y.display()
    );
}

/// Model weights and AdamW moments equal bit for bit, at the same step.
fn same_training(a: &Path, b: &Path) {
    assert_eq!(latest(a).file_name(), latest(b).file_name());
    same_bytes(a, b, "model.safetensors");
    same_bytes(a, b, "optimizer.safetensors");
}

/// The largest |a − b| over every weight, relative to the largest |b| of its tensor.
fn max_relative_difference(a: &Path, b: &Path) -> f64 {
    let (fa, fb) = (
        std::fs::read(latest(a).join("model.safetensors")).unwrap(),
        std::fs::read(latest(b).join("model.safetensors")).unwrap(),
    );
    let (ta, tb) = (
        safetensors::SafeTensors::deserialize(&fa).unwrap(),
        safetensors::SafeTensors::deserialize(&fb).unwrap(),
    );
    let floats = |v: safetensors::tensor::TensorView| -> Vec<f32> {
        v.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let mut worst = 0.0f64;
    for name in ta.names() {
        let (x, y) = (
            floats(ta.tensor(name).unwrap()),
            floats(tb.tensor(name).unwrap()),
        );
        let scale = y
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs() as f64))
            .max(1e-12);
        for (p, q) in x.iter().zip(&y) {
            worst = worst.max((*p as f64 - *q as f64).abs() / scale);
        }
    }
    worst
}

#[test]
fn two_ranks_equal_one_process_accumulating_two_micro_batches_bit_for_bit() {
    need_mpi!();
    let d = common::fresh_dir("mpi-two");
    let (one, two) = (d.join("one"), d.join("two"));
    let t = Instant::now();
    let mut args = run_args(&one, 4);
    args.extend(["--grad-accum".into(), "2".into()]);
    ok(single(&args));
    mpirun_ok(2, &run_args(&two, 4));
    same_training(&one, &two);
    // the report page is rank 0's, with its evaluations' loss plot (rank 1 evaluates nothing
    // and once wrote an empty page over it)
    let page = std::fs::read_to_string(two.join("index.html")).unwrap();
    assert_eq!(
        page.matches("<polyline").count(),
        std::fs::read_to_string(one.join("index.html"))
            .unwrap()
            .matches("<polyline")
            .count()
    );
    assert!(page.contains("<polyline"));
    // and with accumulation on each rank: 2 ranks × 2 micro-batches against 4 in one process,
    // (a+b)+(c+d) against ((a+b)+c)+d: equal to rounding only
    let (acc, two_acc) = (d.join("acc4"), d.join("two-acc2"));
    let mut args = run_args(&acc, 8);
    args.extend(["--grad-accum".into(), "4".into()]);
    ok(single(&args));
    let mut args = run_args(&two_acc, 8);
    args.extend(["--grad-accum".into(), "2".into()]);
    mpirun_ok(2, &args);
    let diff = max_relative_difference(&two_acc, &acc);
    eprintln!(
        "2 ranks × 2 micro-batches vs 4 in one process: max relative weight difference {diff:e} ({:.1}s)",
        t.elapsed().as_secs_f64()
    );
    assert!(diff < 1e-5, "{diff}");
}

#[test]
fn three_ranks_equal_one_process_accumulating_three_within_rounding() {
    // MPI does not fix the order in which it adds three ranks' gradients (Open MPI 4.1 and
    // MPICH 4.0 were measured adding (g0+g1)+g2, the order one process accumulates in, but
    // another algorithm or library may add g0+(g1+g2)); each order rounds differently, by up to
    // an ulp of the gradient per step, and AdamW carries that on. After 6 steps the weights
    // agree to 1e-5 of each tensor's largest value (usually exactly).
    need_mpi!();
    let d = common::fresh_dir("mpi-three");
    let (one, three) = (d.join("one"), d.join("three"));
    let mut args = run_args(&one, 6);
    args.extend(["--grad-accum".into(), "3".into()]);
    ok(single(&args));
    mpirun_ok(3, &run_args(&three, 6));
    let diff = max_relative_difference(&three, &one);
    eprintln!("3 ranks vs --grad-accum 3: max relative weight difference {diff:e}");
    assert!(diff < 1e-5, "{diff}");
}

#[test]
fn resuming_with_another_number_of_processes_continues_exactly() {
    need_mpi!();
    let d = common::fresh_dir("mpi-resume");
    let whole = d.join("whole");
    let mut args = run_args(&whole, 4);
    args.extend(["--grad-accum".into(), "2".into()]);
    ok(single(&args));
    // 2 ranks stop after step 3; one process with --grad-accum 2 finishes
    let a = d.join("two-then-one");
    let mut args = run_args(&a, 4);
    args.extend(["--stop-at-step".into(), "3".into()]);
    args.retain(|x| x != "--quiet");
    let o = mpirun(2, &args, &[], 120);
    assert_eq!(o.status.code(), Some(130), "{}", show(&o)); // stopped as Ctrl-C would
    assert!(latest(&a).ends_with("step-00000003"));
    let resume = |dir: &Path, accum: &str| -> Vec<String> {
        [
            "train",
            "--resume",
            dir.to_str().unwrap(),
            "--grad-accum",
            accum,
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    ok(single(&resume(&a, "2")));
    same_training(&a, &whole);
    // one process stops after step 3; 2 ranks finish
    let b = d.join("one-then-two");
    let mut args = run_args(&b, 4);
    args.extend(["--grad-accum", "2", "--stop-at-step", "3"].map(String::from));
    assert_eq!(single(&args).status.code(), Some(130));
    mpirun_ok(2, &resume(&b, "1"));
    same_training(&b, &whole);
}

/// Starts 2 ranks saving every 2 steps, with `fault` (`panic` or `kill`) hitting rank 1 at
/// step 3; checks the job ends quickly and non-zero, naming rank 1; returns the run directory.
fn run_into_fault(d: &Path, fault: &str) -> PathBuf {
    let run = d.join(format!("{fault}ed"));
    let mut args = run_args(&run, 4);
    args.extend(["--save-every".into(), "2".into()]);
    let t = Instant::now();
    let env = format!("{fault}:1:3");
    let o = mpirun(2, &args, &[("SCRATCHGPT_TEST_FAULT", &env)], 60);
    let took = t.elapsed();
    eprintln!(
        "{fault} on rank 1: job ended in {:.1}s, {}",
        took.as_secs_f64(),
        show(&o)
    );
    assert!(!o.status.success(), "{}", show(&o));
    // MPIEXEC_TIMEOUT (60 s) would end a hung job with status 110 (Open MPI)
    assert!(took < Duration::from_secs(30), "the job hung: {}", show(&o));
    assert_ne!(o.status.code(), Some(110), "the job hung: {}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    assert!(
        err.contains("rank 1"),
        "the error does not name rank 1: {}",
        show(&o)
    );
    assert!(latest(&run).ends_with("step-00000002"), "{}", show(&o));
    run
}

#[test]
fn a_rank_that_panics_ends_the_job_and_the_last_checkpoint_resumes_exactly() {
    need_mpi!();
    let d = common::fresh_dir("mpi-panic");
    let whole = d.join("whole");
    mpirun_ok(2, &run_args(&whole, 4));
    let run = run_into_fault(&d, "panic");
    let resume: Vec<String> = ["train", "--resume", run.to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    mpirun_ok(2, &resume);
    same_training(&run, &whole);
}

#[test]
fn a_rank_killed_with_sigkill_ends_the_job_and_the_last_checkpoint_resumes_exactly() {
    need_mpi!();
    let d = common::fresh_dir("mpi-kill");
    let whole = d.join("whole");
    mpirun_ok(2, &run_args(&whole, 4));
    let run = run_into_fault(&d, "kill");
    // resumed by one process accumulating 2 micro-batches
    let resume: Vec<String> = [
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--grad-accum",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    ok(single(&resume));
    same_training(&run, &whole);
}

#[test]
fn a_batch_that_does_not_split_across_the_ranks_is_one_error_line() {
    need_mpi!();
    let d = common::fresh_dir("mpi-split");
    // 3 ranks × --grad-accum 1 cannot split a batch of 4
    let o = mpirun(3, &run_args(&d.join("r"), 4), &[], 60);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--batch-size 4 does not split across 3 processes"),
        "{}",
        show(&o)
    );
    assert!(!err.contains("panicked"), "{}", show(&o));
}
