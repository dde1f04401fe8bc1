//! Shared helpers for the benches (included with `#[path]`; not a bench itself).

#![allow(dead_code)]

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
