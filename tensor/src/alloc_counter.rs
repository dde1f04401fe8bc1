//! Counting the bytes a computation allocates: a global allocator that keeps a running total
//! of live heap bytes and a resettable peak, so `scratchgpt bench context` *measures* how much
//! memory attention needs at each context length instead of estimating it.
//!
//! The count covers every heap allocation of the process (tensor storage, the buffers a fused
//! kernel saves for backward, gradient buffers, temporaries), which is what a measurement of
//! "peak memory of attention" has to include: counting only tensor storage would miss the
//! attention weights the fused kernel keeps for its backward pass.
//!
//! It counts only once installed as the program's allocator (the `scratchgpt` binary and the
//! `context` bench do this), on top of the system allocator or of another one (the binary's
//! counts on top of `train::allocator::HugePageAllocator`):
//! ```ignore
//! use scratchgpt_tensor::alloc_counter::CountingAllocator;
//! #[global_allocator]
//! static ALLOC: CountingAllocator = CountingAllocator(std::alloc::System);
//! ```
//! Each allocation and free costs two relaxed atomic additions (and a relaxed compare when a
//! new peak may have been reached) on top of the system allocator.
//!
//! Bytes counted are the sizes asked for (`Layout::size`), not what the allocator rounds them
//! up to, nor pages touched (resident memory); for the large buffers of attention the
//! difference is negligible.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

/// Live bytes, relative to the start of the process (may be read as a difference only).
static LIVE: AtomicIsize = AtomicIsize::new(0);
/// The highest value `LIVE` reached since the last [`reset_peak`].
static PEAK: AtomicIsize = AtomicIsize::new(0);
/// Set by the first allocation through [`CountingAllocator`]: whether counts mean anything.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Allocator `A` (the system's by default), counting live bytes and their peak (see the
/// module docs).
pub struct CountingAllocator<A = System>(pub A);

#[inline]
fn added(bytes: usize) {
    let now = LIVE.fetch_add(bytes as isize, Ordering::Relaxed) + bytes as isize;
    // a load first: most allocations do not reach a new peak, and a plain load keeps the
    // cache line shared between threads
    if now > PEAK.load(Ordering::Relaxed) {
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

#[inline]
fn removed(bytes: usize) {
    LIVE.fetch_sub(bytes as isize, Ordering::Relaxed);
}

// SAFETY: every call forwards to `A` with the same arguments; the counters do not touch the
// memory handed out.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAllocator<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { self.0.alloc(layout) };
        if !p.is_null() {
            added(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { self.0.alloc_zeroed(layout) };
        if !p.is_null() {
            added(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { self.0.dealloc(ptr, layout) };
        removed(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            removed(layout.size());
            added(new_size);
        }
        p
    }
}

/// Marks the counter as installed. Called by programs that install [`CountingAllocator`]
/// (there is no way to ask Rust which global allocator is in use).
pub fn mark_installed() {
    INSTALLED.store(true, Ordering::Relaxed);
}

/// Whether the program said it counts allocations ([`mark_installed`]).
pub fn is_installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Heap bytes live now, relative to an arbitrary origin: only differences mean something.
pub fn live_bytes() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// The highest [`live_bytes`] since the last [`reset_peak`].
pub fn peak_bytes() -> isize {
    PEAK.load(Ordering::Relaxed)
}

/// Starts a new peak at the current live bytes; returns them (the baseline to subtract).
pub fn reset_peak() -> isize {
    let now = LIVE.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    now
}

/// Runs `f` and returns its result with the most bytes it had allocated at any moment on top
/// of what was live before (0 when the counter is not installed). Other threads' allocations
/// made meanwhile count too, so measure on a quiet process.
pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = reset_peak();
    let r = f();
    (r, (peak_bytes() - base).max(0) as usize)
}
