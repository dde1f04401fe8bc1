//! The `scratchgpt` command. All the work is in `train::cli`.

/// Counts live heap bytes and their peak (two relaxed atomic additions per allocation), so
/// `scratchgpt bench context` measures what attention allocates.
#[global_allocator]
static ALLOC: tensor::alloc_counter::CountingAllocator = tensor::alloc_counter::CountingAllocator;

fn main() {
    // Rust ignores SIGPIPE, so printing into a closed pipe (`scratchgpt … | head`) would panic
    // in `println!`. Restore the default: the process ends quietly, as other command-line
    // tools do.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    tune_allocator();
    tensor::alloc_counter::mark_installed();
    std::process::exit(train::cli::main_with_args(std::env::args_os()));
}

/// Training allocates and frees the same large buffers (activations, gradients) every step.
/// By default glibc serves each one with a fresh `mmap` and returns it with `munmap`, so every
/// step pays page faults and kernel zeroing for all of them. Keeping freed memory in the heap
/// instead lets the next step reuse it.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any allocation-heavy work.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
