//! The `scratchgpt` command. All the work is in `train::cli`.

/// The system allocator with large buffers on huge pages (`train::allocator`), counting live
/// heap bytes and their peak (two relaxed atomic additions per allocation) so `scratchgpt
/// bench context` measures what attention allocates.
#[global_allocator]
static ALLOC: tensor::alloc_counter::CountingAllocator<train::allocator::HugePageAllocator> =
    tensor::alloc_counter::CountingAllocator(train::allocator::HugePageAllocator);

fn main() {
    train::cli::restore_sigpipe();
    train::allocator::keep_freed_memory();
    tensor::alloc_counter::mark_installed();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    std::process::exit(on_a_worker_thread(move || train::cli::main_with_args(args)));
}

/// Runs the command on one of the threads of rayon's pool rather than on the main thread.
///
/// Every parallel loop started from a thread outside the pool is queued for the pool and
/// the starting thread sleeps until it is done: two wake-ups through the kernel per loop, and
/// a GPT step runs a few hundred such loops (each GEMM, layer norm, GELU, dropout, AdamW…).
/// Started from a worker, the loop's first half runs right there and the other workers take
/// the rest from its queue. The pool's threads get the main thread's usual 8 MB stack (Rust's
/// spawned threads get 2 MB), as the command now runs on one of them.
fn on_a_worker_thread(command: impl FnOnce() -> i32 + Send) -> i32 {
    let pool = rayon::ThreadPoolBuilder::new()
        .stack_size(8 << 20)
        .build_global();
    if pool.is_err() {
        return command(); // a pool already exists (cannot happen in main): run as before
    }
    rayon::scope(|_| command())
}
