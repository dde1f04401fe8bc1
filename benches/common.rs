//! Shared helpers for the benches (included with `#[path]`; not a bench itself).

#![allow(dead_code)]

/// Prints the CPU and the code paths in use (the first line of every bench), or exits with an
/// `error:` line when `SCRATCHGPT_GEMM` / `SCRATCHGPT_SIMD` ask for a path this CPU lacks.
pub fn print_paths() {
    if let Err(e) = tensor::kernels::check_environment() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    println!("{}", tensor::kernels::describe());
}

/// A rayon pool per thread count to measure: 1 and all cores.
pub fn pools() -> Vec<(String, rayon::ThreadPool)> {
    let all = rayon::current_num_threads();
    let mut counts = vec![1];
    if all > 1 {
        counts.push(all);
    }
    counts
        .into_iter()
        .map(|t| {
            (
                format!("{t}thread"),
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .unwrap(),
            )
        })
        .collect()
}

/// The `scratchgpt` binary's allocator, installed in every bench: large buffers on huge pages
/// ([`train::allocator::HugePageAllocator`]), live bytes counted (read by the `context` bench).
#[global_allocator]
static ALLOC: tensor::alloc_counter::CountingAllocator<train::allocator::HugePageAllocator> =
    tensor::alloc_counter::CountingAllocator(train::allocator::HugePageAllocator);

/// The allocator settings of the `scratchgpt` binary ([`train::allocator::keep_freed_memory`]):
/// freed buffers stay in the heap so each step reuses them instead of page-faulting fresh memory.
pub fn tune_allocator() {
    train::allocator::keep_freed_memory();
}
