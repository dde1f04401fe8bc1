//! Collective communication between the processes of a data-parallel run: the little the
//! training loop needs (rank, size, an all-reduce sum, broadcasts, a barrier), behind a trait of
//! our own so the loop knows nothing of MPI.
//!
//! - [`SingleProcess`]: a world of one; every collective is a no-op (a sum over one process is
//!   the value itself). What the default build, and any run not started by a launcher, uses.
//! - `MpiWorld` (cargo feature `mpi`): MPI through rsmpi, linked against the system's MPI
//!   (Open MPI or MPICH). Made by [`World::from_environment`] only when the process was started
//!   by `mpirun`, `mpiexec` or `srun`; a binary built with the feature and started on its own
//!   never touches MPI and behaves exactly like the default build.
//!
//! MPI counts are C `int`s: buffers longer than 2³¹−1 elements are sent in pieces
//! ([`pieces`]).
//!
//! Determinism: every rank receives the same bits from an all-reduce (measured with Open MPI
//! 4.1 and MPICH 4.0, see the README). With two ranks the sum is `a + b`, which is the same in
//! either order; that is what makes a two-rank run bit-identical to one process accumulating two
//! micro-batches.

use std::ops::Range;
use std::sync::Arc;

use crate::error::TrainError;

/// The processes of a run and what they can do together. Every rank must make the same calls in
/// the same order (as with MPI's collectives); a rank that skips one makes the others wait.
pub trait Collective: Send + Sync {
    /// This process's number, 0 to `size() − 1`. Rank 0 prints, evaluates and writes.
    fn rank(&self) -> usize;
    /// How many processes take part.
    fn size(&self) -> usize;
    /// `recv[i] = Σ over ranks of send[i]`, the same bits on every rank. `send` and `recv` have
    /// the same length on every rank.
    fn all_reduce_sum_into(&self, send: &[f32], recv: &mut [f32]);
    /// In-place f64 sum over ranks (counts and flags: exact for integers below 2⁵³).
    fn all_reduce_sum_f64(&self, buf: &mut [f64]);
    /// Overwrites `buf` on every rank with `root`'s values.
    fn broadcast_f32(&self, buf: &mut [f32], root: usize);
    /// Overwrites `buf` on every rank with `root`'s bytes (of any length).
    fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize);
    /// Returns once every rank has called it.
    fn barrier(&self);
    /// Ends every process of the run with status `code` (a rank cannot stop alone: the others
    /// would wait for it forever).
    fn abort(&self, code: i32) -> !;
    /// What carries the messages, for the first lines of a run ("Open MPI v4.1.4").
    fn describe(&self) -> String;

    /// In-place [`Collective::all_reduce_sum_into`] (MPI has `MPI_IN_PLACE`, rsmpi does not:
    /// the values are copied once).
    fn all_reduce_sum(&self, buf: &mut [f32]) {
        if self.size() > 1 {
            let send = buf.to_vec();
            self.all_reduce_sum_into(&send, buf);
        }
    }
}

/// A world of one process: collectives return at once and leave the values as they are.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum_into(&self, send: &[f32], recv: &mut [f32]) {
        recv.copy_from_slice(send);
    }
    fn all_reduce_sum_f64(&self, _buf: &mut [f64]) {}
    fn broadcast_f32(&self, _buf: &mut [f32], root: usize) {
        assert_eq!(root, 0, "broadcast_f32: root {root} in a world of one");
    }
    fn broadcast_bytes(&self, _buf: &mut Vec<u8>, root: usize) {
        assert_eq!(root, 0, "broadcast_bytes: root {root} in a world of one");
    }
    fn barrier(&self) {}
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
    fn describe(&self) -> String {
        "one process".into()
    }
}

/// The largest count one MPI call takes (`int`).
pub const MAX_COUNT: usize = i32::MAX as usize;

/// `0..len` cut into consecutive ranges of at most `max` elements (one MPI call each).
pub fn pieces(len: usize, max: usize) -> impl Iterator<Item = Range<usize>> {
    assert!(max > 0, "pieces: max must be positive");
    (0..len.div_ceil(max)).map(move |k| k * max..((k + 1) * max).min(len))
}

/// The environment variables launchers set, with the world size they announce: Open MPI's
/// `mpirun`, MPICH's hydra (`PMI_SIZE`), Slurm's `srun` (`SLURM_STEP_NUM_TASKS`); PMIx launchers
/// without a size (`PMIX_RANK`) count as a launch of unknown size.
fn launcher_size() -> Option<usize> {
    let size = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse().ok());
    size("OMPI_COMM_WORLD_SIZE")
        .or_else(|| size("PMI_SIZE"))
        .or_else(|| size("SLURM_STEP_NUM_TASKS"))
        .or_else(|| std::env::var_os("PMIX_RANK").map(|_| 0))
}

/// How many processes the launcher that started this one announced (1 when none did).
pub fn launched_size() -> usize {
    match launcher_size() {
        Some(n) if n > 1 => n,
        _ => 1,
    }
}

/// The processes of this run. Keep it alive for as long as collectives are used: dropping it
/// ends MPI (`MPI_Finalize`).
pub struct World {
    pub collective: Arc<dyn Collective>,
    #[cfg(feature = "mpi")]
    _universe: Option<mpi::environment::Universe>,
}

impl World {
    /// A world of one process.
    pub fn single() -> World {
        World {
            collective: Arc::new(SingleProcess),
            #[cfg(feature = "mpi")]
            _universe: None,
        }
    }

    /// The world this process was started in: MPI's when a launcher started it (and the binary
    /// has the `mpi` feature), else a world of one. Errors: started by a launcher for several
    /// processes without the `mpi` feature, or with an MPI library other than the launcher's
    /// (each process would silently train alone).
    pub fn from_environment() -> Result<World, TrainError> {
        let Some(announced) = launcher_size() else {
            return Ok(World::single());
        };
        #[cfg(feature = "mpi")]
        {
            let world = mpi_world::init()?;
            let size = world.collective.size();
            if announced > 1 && size != announced {
                return Err(TrainError(format!(
                    "the launcher started {announced} processes, but MPI sees a world of {size}: this scratchgpt is linked to another MPI library than the launcher's (build it against the MPI whose mpirun you use)"
                )));
            }
            Ok(world)
        }
        #[cfg(not(feature = "mpi"))]
        {
            if announced > 1 {
                return Err(TrainError(format!(
                    "started by a launcher as one of {announced} processes, but this scratchgpt was built without MPI: build it with `cargo build --release --features mpi` to train on several processes"
                )));
            }
            Ok(World::single())
        }
    }
}

#[cfg(feature = "mpi")]
mod mpi_world {
    use std::sync::Arc;

    use mpi::collective::SystemOperation;
    use mpi::environment::Threading;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;

    use super::{pieces, Collective, World, MAX_COUNT};
    use crate::error::TrainError;

    /// MPI's `COMM_WORLD`. Holds no communicator handle (those are not `Send`): each call takes
    /// `COMM_WORLD` anew, which costs nothing.
    struct MpiWorld {
        rank: usize,
        size: usize,
        library: String,
    }

    fn world() -> SimpleCommunicator {
        SimpleCommunicator::world()
    }

    /// Initialises MPI and installs a panic hook that aborts the whole job: a rank that unwinds
    /// would otherwise leave the others waiting in a collective forever.
    pub(super) fn init() -> Result<World, TrainError> {
        // one thread at a time calls MPI: the training loop's communication thread while the
        // backward pass runs, the main thread otherwise (never both at once)
        let (universe, granted) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| TrainError("MPI was already initialised in this process".into()))?;
        if matches!(granted, Threading::Single | Threading::Funneled) {
            return Err(TrainError(format!(
                "the MPI library grants only {granted:?} threading; scratchgpt needs Serialized (one thread at a time, any thread)"
            )));
        }
        let w = universe.world();
        let (rank, size) = (w.rank() as usize, w.size() as usize);
        let library = mpi::environment::library_version()
            .unwrap_or_default()
            .trim_end_matches('\0')
            .lines()
            .next()
            .unwrap_or("MPI")
            .split(',')
            .next()
            .unwrap_or("MPI")
            .trim()
            .to_string();
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default_hook(info);
            eprintln!("error: rank {rank} of {size} panicked; aborting the whole MPI job");
            world().abort(101);
        }));
        Ok(World {
            collective: Arc::new(MpiWorld {
                rank,
                size,
                library,
            }),
            _universe: Some(universe),
        })
    }

    impl Collective for MpiWorld {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.size
        }
        fn all_reduce_sum_into(&self, send: &[f32], recv: &mut [f32]) {
            assert_eq!(
                send.len(),
                recv.len(),
                "all_reduce_sum_into: lengths differ"
            );
            let w = world();
            for r in pieces(send.len(), MAX_COUNT) {
                w.all_reduce_into(&send[r.clone()], &mut recv[r], SystemOperation::sum());
            }
        }
        fn all_reduce_sum_f64(&self, buf: &mut [f64]) {
            let w = world();
            for r in pieces(buf.len(), MAX_COUNT) {
                let send = buf[r.clone()].to_vec();
                w.all_reduce_into(&send[..], &mut buf[r], SystemOperation::sum());
            }
        }
        fn broadcast_f32(&self, buf: &mut [f32], root: usize) {
            let w = world();
            let root = w.process_at_rank(root as i32);
            for r in pieces(buf.len(), MAX_COUNT) {
                root.broadcast_into(&mut buf[r]);
            }
        }
        fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize) {
            let w = world();
            let root = w.process_at_rank(root as i32);
            let mut len = buf.len() as u64;
            root.broadcast_into(&mut len);
            buf.resize(len as usize, 0);
            for r in pieces(buf.len(), MAX_COUNT) {
                root.broadcast_into(&mut buf[r]);
            }
        }
        fn barrier(&self) {
            world().barrier();
        }
        fn abort(&self, code: i32) -> ! {
            world().abort(code)
        }
        fn describe(&self) -> String {
            self.library.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_buffer_in_order_without_overlap() {
        let cut = |len, max| pieces(len, max).collect::<Vec<_>>();
        assert!(cut(0, 4).is_empty());
        assert_eq!(cut(4, 4), vec![0..4]);
        assert_eq!(cut(10, 4), vec![0..4, 4..8, 8..10]);
        // a GPT-2 XL's 1.6 G parameters fit one call; 5 G elements take three
        let big = cut(5_000_000_000, MAX_COUNT);
        assert_eq!(big.len(), 3);
        assert!(big.iter().all(|r| r.len() <= MAX_COUNT));
        assert_eq!(big.last().unwrap().end, 5_000_000_000);
    }

    #[test]
    fn a_single_process_is_its_own_sum_and_root() {
        let one = SingleProcess;
        assert_eq!((one.rank(), one.size()), (0, 1));
        let mut x = vec![1.5f32, -2.0, 3.25];
        one.all_reduce_sum(&mut x);
        assert_eq!(x, vec![1.5, -2.0, 3.25]);
        let mut y = [0.0f32; 3];
        one.all_reduce_sum_into(&x, &mut y);
        assert_eq!(y.to_vec(), x);
        let mut d = [7.0f64];
        one.all_reduce_sum_f64(&mut d);
        assert_eq!(d, [7.0]);
        one.broadcast_f32(&mut x, 0);
        let mut bytes = b"order".to_vec();
        one.broadcast_bytes(&mut bytes, 0);
        assert_eq!(bytes, b"order");
        one.barrier();
    }

    #[test]
    fn without_a_launcher_the_world_is_one_process() {
        // the test harness is not started by mpirun (the MPI tests spawn the binary instead)
        if launcher_size().is_none() {
            let w = World::from_environment().unwrap();
            assert_eq!(w.collective.size(), 1);
            assert_eq!(launched_size(), 1);
        }
    }
}
