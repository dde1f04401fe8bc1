//! The heap settings of the `scratchgpt` binary and the benches.
//!
//! Training allocates and frees the same large buffers (activations, logits, gradients) every
//! step. By default glibc serves each large one with a fresh `mmap` and gives it back with
//! `munmap`, so every step pays a page fault and the kernel's zeroing for every 4 KB page of
//! them. [`keep_freed_memory`] makes freed memory stay in the heap, so the next step reuses it.

/// Keeps freed memory in the process for reuse (glibc on Linux; elsewhere it does nothing).
///
/// Three settings, all needed:
/// - `M_MMAP_THRESHOLD` 1 GB: allocations below it come from the heap, not their own `mmap`;
/// - `M_TRIM_THRESHOLD` maximal: freed memory at the top of the heap is not returned;
/// - `M_ARENA_MAX` 1: every thread allocates from the main heap. The command and the benches
///   run on rayon's worker threads, and glibc gives other threads their own arenas, made of
///   64 MB heaps: anything larger (the small configuration's 412 MB of logits) is then
///   `mmap`ed and `munmap`ed every time, whatever the threshold. Measured on the Intel Xeon
///   (2 cores, 2026-12-02), 10 steps of the small configuration: 16.8 s with 6.0 s in the
///   kernel before, 14.4 s with 1.9 s after. The one arena's lock is taken per allocation, and
///   a step allocates a few hundred buffers, not millions.
///
/// Call it first thing in `main`, before any thread exists.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator settings.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
