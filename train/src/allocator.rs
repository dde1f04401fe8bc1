//! The heap settings of the `scratchgpt` binary and the benches.
//!
//! Training allocates and frees the same large buffers (activations, logits, gradients) every
//! step. By default glibc serves each large one with a fresh `mmap` and gives it back with
//! `munmap`, so every step pays a page fault and the kernel's zeroing for every 4 KB page of
//! them. [`keep_freed_memory`] makes freed memory stay in the heap, so the next step reuses it.
//! [`HugePageAllocator`] asks for 2 MB pages under large buffers, so the first touch of the
//! weights, gradients and optimizer moments costs one fault per 2 MB instead of per 4 KB.

use std::alloc::{GlobalAlloc, Layout, System};
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

/// Buffers at least this large are advised onto transparent huge pages: a 2 MB page fits
/// inside any buffer of twice its size, whatever the buffer's alignment.
const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;

/// The system allocator, asking Linux to back large buffers (4 MB and more) with transparent
/// huge pages (`madvise(MADV_HUGEPAGE)`): the `scratchgpt` binary's allocator and the benches'.
///
/// Linux distributions commonly enable transparent huge pages only for memory that asks for
/// them ("madvise" in `/sys/kernel/mm/transparent_hugepage/enabled`), and glibc does not ask.
/// With 4 KB pages, GPT-2 small's first training step touches 3.4 GB page by page: 1.1 million
/// page faults, each zeroing 4 KB, about 10 seconds of kernel time on the Intel Xeon VM
/// (2 cores, 2026-12-03); with the advice, 3,100 faults, and `train --preset gpt2-small
/// --max-steps 2` went from 17.2–20.6 s to 14.0–14.5 s. Fewer TLB misses help every later
/// pass over the weights and moments too. Elsewhere than on Linux, or where the kernel
/// refuses the advice, it is the system allocator unchanged.
pub struct HugePageAllocator;

impl HugePageAllocator {
    /// Asks for huge pages under the whole pages of the `len` bytes at `ptr` (best effort: a
    /// refusal leaves ordinary pages, which work the same).
    fn advise(ptr: *mut u8, len: usize) {
        if ptr.is_null() || len < HUGE_PAGE_MIN_BYTES {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            const PAGE: usize = 4096;
            let start = (ptr as usize).next_multiple_of(PAGE);
            let end = (ptr as usize + len) / PAGE * PAGE;
            // SAFETY: the range lies inside memory this allocator just handed out (rounded
            // inwards to whole pages); MADV_HUGEPAGE changes how it is backed, not its
            // contents.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
}

// SAFETY: every call forwards to `System` with the same arguments; the advice does not change
// the memory's contents or its ownership.
unsafe impl GlobalAlloc for HugePageAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        Self::advise(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        Self::advise(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        Self::advise(p, new_size);
        p
    }
}
