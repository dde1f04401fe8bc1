//! Data-parallel training: W processes (ranks) share every optimizer step's batch, as in llm.c
//! and PyTorch DDP. The training loop ([`crate::trainer::train_loop`]) calls this module when its
//! [`Collective`] has more than one rank; with one rank nothing here runs.
//!
//! **Semantics.** `--batch-size` is the global batch. With W ranks and `--grad-accum N`, each
//! batch is cut into W·N equal parts ([`MicroBatch`] of count W·N); rank r computes parts
//! r·N … r·N+N−1 ([`parts_of_rank`]). Each part's loss is already weighted as a share of the
//! batch mean, so the parts' gradients, summed over every rank, are the batch's gradient: one
//! all-reduce (sum, no 1/W), then every rank runs the same clipping and AdamW step on the same
//! bits. The sequence of batches does not depend on W: the epoch order comes from the run
//! generator, which every rank holds in the same state (it draws nothing else, below).
//!
//! **Random streams.** One process draws orders and dropout masks from one generator. Here the
//! run generator draws only the epoch orders (the same on every rank, saved in checkpoints by
//! rank 0), and the dropout masks of part p of step s come from their own stream seeded by
//! (seed, s, p) ([`part_dropout_stream`]), whichever rank computes it. So with dropout 0 a run on
//! W ranks takes the same steps as one process with `--grad-accum W·N`, and `--resume` may
//! change W; with dropout on, runs with the same W·N draw the same masks, and a resume with the
//! same W·N continues exactly.
//!
//! **Overlap.** Gradients are summed in buckets of at most [`BUCKET_ELEMS`] values, made once in
//! reverse parameter order (the order backward completes them: the output head first, the token
//! embedding last). During the last part's backward pass the engine reports each parameter whose
//! gradient is complete ([`Tensor::backward_with_leaf_hook`]); once every parameter of the next
//! bucket is, a communication thread packs it, all-reduces it and writes the sums back, while
//! the backward pass goes on (PyTorch DDP's design). Buckets are reduced strictly in order, so
//! every rank makes the same MPI calls in the same order.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::mpsc;
use std::time::Instant;

use model::Context;
use tensor::{AdamW, Rng, Tensor};

use crate::checkpoint::TrainerState;
use crate::collective::Collective;
use crate::data::EpochOrder;
use crate::error::TrainError;
use crate::trainer::{MicroBatch, Task};

/// Values per gradient bucket (16 MB of f32): large enough that an all-reduce runs at the
/// link's bandwidth, small enough that the first buckets start early in the backward pass.
pub const BUCKET_ELEMS: usize = 4 << 20;

/// The parts of each batch that `rank` (of `world`) computes with `--grad-accum N`: parts r·N to
/// r·N+N−1 of W·N.
pub fn parts_of_rank(rank: usize, world: usize, grad_accum: usize) -> Vec<MicroBatch> {
    assert!(rank < world, "parts_of_rank: rank {rank} of {world}");
    (0..grad_accum)
        .map(|m| MicroBatch {
            index: rank * grad_accum + m,
            count: world * grad_accum,
        })
        .collect()
}

/// A batch of `batch_size` must cut into `world`·`grad_accum` equal parts.
pub fn check_split(batch_size: usize, world: usize, grad_accum: usize) -> Result<(), TrainError> {
    let parts = world * grad_accum;
    if batch_size.is_multiple_of(parts) {
        return Ok(());
    }
    Err(TrainError(format!(
        "--batch-size {batch_size} does not split across {world} processes × --grad-accum {grad_accum}: every batch is cut into {parts} equal parts, so {parts} must divide the batch size (the batch size stays the global batch whatever the number of processes)"
    )))
}

/// The generator of part `index`'s dropout masks at `step`: fixed by the seed, the step and
/// the part, whatever rank computes it.
pub fn part_dropout_stream(seed: u64, step: usize, index: usize) -> Rng {
    let mut x = seed ^ 0x6461_7461_2d70_6172; // "data-par"
    for v in [step as u64, index as u64] {
        x = Rng::seed(x ^ v).next_u64();
    }
    Rng::seed(x)
}

/// What the training loop does first on every rank of a data-parallel run: checks that the
/// batch splits and that every rank stands at the same point of the same run, then gives every
/// rank rank 0's weights and optimizer state.
pub fn start<'a>(
    coll: &'a dyn Collective,
    opt: &mut AdamW,
    state: &TrainerState,
) -> Result<DataParallel<'a>, TrainError> {
    let s = &state.settings;
    if s.book_compat {
        return Err(TrainError(
            "--book-compat reproduces the book's run in one process; it cannot run on several"
                .into(),
        ));
    }
    check_split(s.batch_size, coll.size(), s.grad_accum)?;
    let dp = DataParallel::new(coll, &opt.params);
    let run = serde_json::to_vec(&(
        s,
        [state.step, state.epoch, state.batch_in_epoch],
        &state.order,
        &state.rng,
        state.tokens_seen,
        &state.data_fingerprint,
    ))
    .map_err(|e| TrainError(format!("cannot describe the run: {e}")))?;
    dp.check_same(&run)?;
    dp.sync_from_root(opt);
    Ok(dp)
}

/// FNV-1a of some bytes.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The totals of one step over every rank.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepTotals {
    /// The batch's loss: the sum of the parts' weighted losses.
    pub loss: f32,
    pub tokens: u64,
    /// Some rank was asked to stop (Ctrl-C): every rank stops after this step.
    pub stop: bool,
}

/// Time spent summing gradients, over the steps so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct CommStats {
    pub steps: usize,
    /// Inside the buckets' all-reduce calls (the communication thread), waiting for the other
    /// ranks included.
    pub reduce_secs: f64,
    /// Packing gradients into buckets and the sums back (the communication thread).
    pub copy_secs: f64,
    /// Waiting for them after the backward pass ended: the part overlap did not hide.
    pub exposed_secs: f64,
    /// Whether the reduction overlapped the backward pass.
    pub overlap: bool,
}

impl CommStats {
    /// One line for the end of a run.
    pub fn summary_line(&self) -> String {
        let per = |x: f64| x / self.steps.max(1) as f64;
        format!(
            "gradient all-reduce per step: {:.3}s in MPI calls and {:.3}s copying on the communication thread; the step waited {:.3}s for it after the backward pass (over {} steps{})",
            per(self.reduce_secs),
            per(self.copy_secs),
            per(self.exposed_secs),
            self.steps,
            if self.overlap { "" } else { ", overlap off" }
        )
    }
}

/// One piece of a bucket: a range of one parameter's gradient.
#[derive(Clone, Debug, PartialEq)]
struct Piece {
    param: usize,
    range: Range<usize>,
}

/// Buckets of at most `cap` values over parameters of `sizes` elements, in reverse parameter
/// order; a parameter larger than the room left is cut across buckets.
fn make_buckets(sizes: &[usize], cap: usize) -> Vec<Vec<Piece>> {
    let mut buckets = vec![Vec::new()];
    let mut room = cap;
    for (param, &n) in sizes.iter().enumerate().rev() {
        let mut start = 0;
        while start < n {
            if room == 0 {
                buckets.push(Vec::new());
                room = cap;
            }
            let take = room.min(n - start);
            buckets.last_mut().unwrap().push(Piece {
                param,
                range: start..start + take,
            });
            (start, room) = (start + take, room - take);
        }
    }
    buckets.retain(|b| !b.is_empty());
    buckets
}

/// A rank's side of data-parallel training: its collective, the trainable parameters and their
/// buckets.
pub struct DataParallel<'a> {
    coll: &'a dyn Collective,
    params: Vec<Tensor>,
    buckets: Vec<Vec<Piece>>,
    /// For each parameter's tensor id: the buckets holding a piece of it.
    buckets_of: HashMap<u64, Vec<usize>>,
    /// Reduce during the backward pass (else after it). On by default when the rank has more
    /// than one thread: the communication thread then runs beside the backward pass; with one
    /// core per rank it would take that core from the backward pass (measured on 2 cores, 2
    /// ranks × 1 thread: 205–239 tokens/s with overlap, 251–290 without).
    /// `SCRATCHGPT_DDP_OVERLAP=1` or `=0` chooses either way.
    overlap: bool,
    /// For the fault tests: `SCRATCHGPT_TEST_FAULT=panic:RANK:STEP` (or `kill:…`) makes that
    /// rank panic (or SIGKILL itself) as it starts that step.
    fault: Option<(String, usize, usize)>,
    pub stats: CommStats,
}

/// `SCRATCHGPT_TEST_FAULT=KIND:RANK:STEP`, for the fault tests (not a user setting).
fn test_fault() -> Option<(String, usize, usize)> {
    let v = std::env::var("SCRATCHGPT_TEST_FAULT").ok()?;
    let mut it = v.split(':');
    let kind = it.next()?.to_string();
    Some((kind, it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

impl<'a> DataParallel<'a> {
    pub fn new(coll: &'a dyn Collective, params: &[Tensor]) -> DataParallel<'a> {
        DataParallel::with_buckets_of(coll, params, BUCKET_ELEMS)
    }

    /// With buckets of at most `cap` values.
    fn with_buckets_of(
        coll: &'a dyn Collective,
        params: &[Tensor],
        cap: usize,
    ) -> DataParallel<'a> {
        let sizes: Vec<usize> = params.iter().map(|p| p.numel()).collect();
        let buckets = make_buckets(&sizes, cap);
        let mut buckets_of: HashMap<u64, Vec<usize>> = HashMap::new();
        for (b, bucket) in buckets.iter().enumerate() {
            for piece in bucket {
                buckets_of
                    .entry(params[piece.param].id())
                    .or_default()
                    .push(b);
            }
        }
        DataParallel {
            coll,
            params: params.to_vec(),
            buckets,
            buckets_of,
            overlap: std::env::var("SCRATCHGPT_DDP_OVERLAP")
                .map_or(rayon::current_num_threads() > 1, |v| v != "0"),
            fault: test_fault(),
            stats: CommStats::default(),
        }
    }

    /// Gives every rank rank 0's weights and AdamW state (rank 0 initialised or loaded them).
    pub fn sync_from_root(&self, opt: &mut AdamW) {
        for p in &self.params {
            p.update(|w| self.coll.broadcast_f32(w, 0));
        }
        for buf in opt.m.iter_mut().chain(opt.v.iter_mut()) {
            self.coll.broadcast_f32(buf, 0);
        }
        let mut t = opt.t.to_le_bytes().to_vec();
        self.coll.broadcast_bytes(&mut t, 0);
        opt.t = u64::from_le_bytes(t.try_into().expect("8 bytes"));
    }

    /// Errors on every rank if some rank's `what` (settings, data fingerprint, position in the
    /// run, serialised) differs from rank 0's: the processes would train different things.
    pub fn check_same(&self, what: &[u8]) -> Result<(), TrainError> {
        let mine = fnv1a(what);
        let mut root = mine.to_le_bytes().to_vec();
        self.coll.broadcast_bytes(&mut root, 0);
        let mut differ = [(root != mine.to_le_bytes()) as u8 as f64];
        self.coll.all_reduce_sum_f64(&mut differ);
        match differ[0] {
            0.0 => Ok(()),
            n => Err(TrainError(format!(
                "{n} of the {} processes see another run than rank 0 (settings, data or checkpoint differ): every process needs the same binary, the same --data files and the same --resume directory",
                self.coll.size()
            ))),
        }
    }

    /// One step's forward and backward passes on this rank's parts of batch `b`, the gradients
    /// summed over every rank; returns the step's totals over every rank.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        task: &dyn Task,
        ctx: &Context,
        order: &EpochOrder,
        b: usize,
        step: usize,
        seed: u64,
        grad_accum: usize,
        stop: bool,
    ) -> Result<StepTotals, TrainError> {
        if let Some((kind, rank, at)) = &self.fault {
            if (*rank, *at) == (self.coll.rank(), step + 1) {
                match kind.as_str() {
                    // SAFETY: kill(2) on our own pid; nothing to clean up, that is the test
                    "kill" => unsafe {
                        libc::kill(libc::getpid(), libc::SIGKILL);
                    },
                    _ => panic!("SCRATCHGPT_TEST_FAULT: rank {rank} panics at step {at}"),
                }
            }
        }
        let parts = parts_of_rank(self.coll.rank(), self.coll.size(), grad_accum);
        let (mut loss_sum, mut tokens) = (0.0f32, 0u64);
        for (m, part) in parts.iter().enumerate() {
            // the part's own dropout stream; the run generator (epoch orders) stays untouched
            let run_rng =
                std::mem::replace(&mut *ctx.rng(), part_dropout_stream(seed, step, part.index));
            let result = task.batch_loss(order, b, *part);
            *ctx.rng() = run_rng;
            let (loss, n) = result?;
            (loss_sum, tokens) = (loss_sum + loss.item(), tokens + n);
            if m + 1 == parts.len() {
                self.backward_and_reduce(&loss);
            } else {
                loss.backward();
            }
        }
        let mut loss = [loss_sum];
        self.coll.all_reduce_sum(&mut loss);
        let mut counts = [tokens as f64, stop as u8 as f64];
        self.coll.all_reduce_sum_f64(&mut counts);
        Ok(StepTotals {
            loss: loss[0],
            tokens: counts[0] as u64,
            stop: counts[1] > 0.0,
        })
    }

    /// Backward from `loss`, then every gradient summed over the ranks; buckets are reduced on a
    /// communication thread as soon as their parameters' gradients are complete.
    fn backward_and_reduce(&mut self, loss: &Tensor) {
        let n = self.buckets.len();
        let (coll, params, buckets) = (self.coll, &self.params, &self.buckets);
        let ((reduce_secs, copy_secs), exposed_secs) = std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel::<usize>();
            let comm = s.spawn(move || {
                let (mut send, mut recv) = (Vec::new(), Vec::new());
                let (mut reduce, mut total) = (0.0, 0.0);
                for k in rx {
                    let t = Instant::now();
                    reduce += reduce_bucket(coll, params, &buckets[k], &mut send, &mut recv);
                    total += t.elapsed().as_secs_f64();
                }
                (reduce, total - reduce)
            });
            let mut ready = vec![0usize; n];
            let mut next = 0;
            if self.overlap {
                let mut on_leaf = |t: &Tensor| {
                    for &b in self.buckets_of.get(&t.id()).into_iter().flatten() {
                        ready[b] += 1;
                    }
                    while next < n && ready[next] == buckets[next].len() {
                        tx.send(next).expect("communication thread alive");
                        next += 1;
                    }
                };
                loss.backward_with_leaf_hook(&[1.0], &mut on_leaf);
            } else {
                loss.backward();
            }
            let backward_done = Instant::now();
            // what is left: buckets whose parameters got no gradient (all zeros on this rank)
            for k in next..n {
                tx.send(k).expect("communication thread alive");
            }
            drop(tx);
            let reduce = comm.join().expect("communication thread");
            (reduce, backward_done.elapsed().as_secs_f64())
        });
        self.stats.steps += 1;
        self.stats.reduce_secs += reduce_secs;
        self.stats.copy_secs += copy_secs;
        self.stats.overlap = self.overlap;
        self.stats.exposed_secs += exposed_secs;
    }
}

/// Sums one bucket over the ranks: its pieces packed into `send`, followed by one marker per
/// piece (1 if this rank has a gradient for that parameter), all-reduced into `recv`, unpacked.
/// A parameter no rank has a gradient for keeps none (AdamW skips it, as in one process).
/// Returns the seconds spent in the all-reduce itself.
fn reduce_bucket(
    coll: &dyn Collective,
    params: &[Tensor],
    bucket: &[Piece],
    send: &mut Vec<f32>,
    recv: &mut Vec<f32>,
) -> f64 {
    send.clear();
    for piece in bucket {
        params[piece.param].with_grad(|g| match g {
            Some(g) => send.extend_from_slice(&g[piece.range.clone()]),
            None => send.resize(send.len() + piece.range.len(), 0.0),
        });
    }
    for piece in bucket {
        send.push(params[piece.param].with_grad(|g| g.is_some()) as u8 as f32);
    }
    recv.resize(send.len(), 0.0);
    let t = Instant::now();
    coll.all_reduce_sum_into(send, recv);
    let reduce_secs = t.elapsed().as_secs_f64();
    let markers = &recv[recv.len() - bucket.len()..];
    let mut at = 0;
    for (piece, &marker) in bucket.iter().zip(markers) {
        let sum = &recv[at..at + piece.range.len()];
        at += piece.range.len();
        if marker == 0.0 {
            continue;
        }
        let p = &params[piece.param];
        if p.with_grad(|g| g.is_none()) {
            p.set_grad(vec![0.0; p.numel()]);
        }
        p.update_grad(|g| g[piece.range.clone()].copy_from_slice(sum));
    }
    reduce_secs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collective::SingleProcess;

    #[test]
    fn ranks_take_consecutive_parts_of_every_batch() {
        // 2 ranks × --grad-accum 2: the batch in 4 parts, rank 0 takes 0 and 1, rank 1 2 and 3
        let idx = |r| {
            parts_of_rank(r, 2, 2)
                .iter()
                .map(|p| (p.index, p.count))
                .collect::<Vec<_>>()
        };
        assert_eq!(idx(0), vec![(0, 4), (1, 4)]);
        assert_eq!(idx(1), vec![(2, 4), (3, 4)]);
        // every part of the batch exactly once, whatever W and N
        for (w, n) in [(1, 1), (1, 3), (3, 1), (3, 2), (4, 4)] {
            let mut all: Vec<usize> = (0..w)
                .flat_map(|r| parts_of_rank(r, w, n))
                .map(|p| p.index)
                .collect();
            all.sort();
            assert_eq!(all, (0..w * n).collect::<Vec<_>>());
        }
        // and the rows: rank 1 of 2 takes the second half of batch 1 in the epoch's order
        let order = EpochOrder::Listed((0..16).rev().collect());
        assert_eq!(parts_of_rank(1, 2, 1)[0].rows(&order, 1, 4), vec![9, 8]);
    }

    #[test]
    fn a_batch_that_does_not_split_is_one_clear_error() {
        assert!(check_split(8, 2, 2).is_ok());
        assert!(check_split(6, 3, 2).is_ok());
        let e = check_split(8, 3, 1).unwrap_err().to_string();
        assert!(
            e.contains("--batch-size 8") && e.contains("3 processes"),
            "{e}"
        );
    }

    #[test]
    fn buckets_cover_every_gradient_once_in_reverse_order() {
        let b = make_buckets(&[5, 2, 9], 4);
        let flat: Vec<(usize, Range<usize>)> = b
            .iter()
            .flatten()
            .map(|p| (p.param, p.range.clone()))
            .collect();
        assert_eq!(
            flat,
            vec![
                (2, 0..4),
                (2, 4..8),
                (2, 8..9),
                (1, 0..2),
                (0, 0..1),
                (0, 1..5)
            ]
        );
        assert!(b
            .iter()
            .all(|k| k.iter().map(|p| p.range.len()).sum::<usize>() <= 4));
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn dropout_streams_depend_on_step_and_part_only() {
        let draw = |s, i| part_dropout_stream(7, s, i).next_u64();
        assert_eq!(draw(3, 1), draw(3, 1));
        assert_ne!(draw(3, 1), draw(3, 2));
        assert_ne!(draw(3, 1), draw(4, 1));
        assert_ne!(draw(3, 1), part_dropout_stream(8, 3, 1).next_u64());
    }

    #[test]
    fn one_rank_reduces_to_its_own_gradients_with_and_without_overlap() {
        // y = sum(a·b) + sum(c): gradients b, a, 1; c gets none when unused
        let mut rng = Rng::seed(3);
        let a = Tensor::randn(&[7_000], &mut rng).requires_grad();
        let b = Tensor::randn(&[7_000], &mut rng).requires_grad();
        let unused = Tensor::randn(&[5], &mut rng).requires_grad();
        let params = vec![a.clone(), b.clone(), unused.clone()];
        for overlap in [true, false] {
            params.iter().for_each(|p| p.zero_grad());
            // several buckets per tensor
            let mut dp = DataParallel::with_buckets_of(&SingleProcess, &params, 3_000);
            dp.overlap = overlap;
            let loss = (&a * &b).sum_all();
            dp.backward_and_reduce(&loss);
            assert_eq!(a.grad().unwrap().to_vec(), b.to_vec());
            assert_eq!(b.grad().unwrap().to_vec(), a.to_vec());
            assert!(unused.grad().is_none());
            assert_eq!(dp.stats.steps, 1);
        }
    }

    #[test]
    fn rank_zero_state_is_everyones_and_same_runs_agree() {
        let p = Tensor::ones(&[3]).requires_grad();
        let mut opt = AdamW::new(vec![p.clone()], 1e-3, 0.0);
        opt.t = 5;
        let dp = DataParallel::new(&SingleProcess, &[p]);
        dp.sync_from_root(&mut opt);
        assert_eq!(opt.t, 5);
        assert!(dp.check_same(b"settings").is_ok());
    }
}
