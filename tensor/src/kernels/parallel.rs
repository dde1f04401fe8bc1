//! When and how to run a loop on several threads.
//!
//! Parallelism only pays once the work outweighs the cost of waking threads (a few
//! microseconds). Loops over fewer than [`PAR_THRESHOLD`] elements run serially on the calling
//! thread. Above it, work is cut into pieces of a fixed size that does not depend on the
//! number of threads, and every output element is written by exactly one piece, so results are
//! bit-identical whatever `RAYON_NUM_THREADS` is.
//!
//! Every piece runs inside [`wide`], so its loop is compiled 16 lanes wide on AVX-512 CPUs —
//! but only the code inlined into it. Pass the closures of these helpers as
//! `#[inline(always)] |..| { .. }`: a closure the compiler leaves out of line runs as baseline
//! SSE code, 4 lanes (the profile showed cross-entropy and GELU backward doing just that).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::simd::wide;

/// Below this many elements a loop runs serially. Measured with `cargo bench --bench layers`.
pub const PAR_THRESHOLD: usize = 32 * 1024;

/// Elements per parallel piece for element-wise loops.
const CHUNK: usize = 16 * 1024;

/// Buffers at least this long are zeroed by all threads in [`zeros`].
const PAR_ZEROS_MIN: usize = 1 << 18;

/// A buffer of `n` zeros. `vec![0.0; n]` zeroes reused memory on the calling thread alone, at
/// one core's memory speed, while the other threads wait; large buffers (a gradient the size of
/// the 50,257-row embedding table, say) are zeroed here by every thread, a slice each.
pub fn zeros(n: usize) -> Vec<f32> {
    if n < PAR_ZEROS_MIN || rayon::current_num_threads() == 1 {
        return vec![0.0; n];
    }
    let mut v = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(PAR_ZEROS_MIN / 4)
        .for_each(|piece| piece.fill(MaybeUninit::new(0.0)));
    // SAFETY: the n values were all initialised just above.
    unsafe { v.set_len(n) };
    v
}

/// Calls `f(start, piece)` over consecutive pieces of `out`, where `start` is the index of the
/// piece's first element. Parallel above the threshold.
pub fn for_each_chunk<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) {
    if out.len() < PAR_THRESHOLD {
        wide(
            #[inline(always)]
            || f(0, out),
        );
    } else {
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, piece)| {
                wide(
                    #[inline(always)]
                    || f(i * CHUNK, piece),
                )
            });
    }
}

/// Calls `f(row_index, row)` for every row of length `row_len` in `out`. Rows are grouped so
/// that each parallel task has at least about `CHUNK` (16K) elements; each row is handled whole by
/// one thread.
pub fn for_each_row(out: &mut [f32], row_len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    for_each_row_with_cost(out, row_len, row_len, f)
}

/// [`for_each_row`] where each row costs about `cost` element-operations (which may be far
/// more than its length: a cross-entropy row of length 1 reads a whole vocabulary row).
pub fn for_each_row_with_cost<T: Send>(
    out: &mut [T],
    row_len: usize,
    cost: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    if row_len == 0 {
        return;
    }
    let rows = out.len() / row_len;
    if rows * cost.max(1) < PAR_THRESHOLD || rows < 2 {
        wide(
            #[inline(always)]
            || {
                for (i, row) in out.chunks_exact_mut(row_len).enumerate() {
                    f(i, row);
                }
            },
        );
    } else {
        let rows_per_task = CHUNK.div_ceil(cost.max(1)).max(1);
        out.par_chunks_mut(rows_per_task * row_len)
            .enumerate()
            .for_each(|(task, rows)| {
                wide(
                    #[inline(always)]
                    || {
                        for (j, row) in rows.chunks_exact_mut(row_len).enumerate() {
                            f(task * rows_per_task + j, row);
                        }
                    },
                )
            });
    }
}

/// A new buffer of `n` values, filled by `f(start, piece)` as [`for_each_chunk`] would fill a
/// zeroed one. Each piece is zeroed just before `f` sees it, by the thread that fills it and
/// while the piece is in its cache, instead of the whole buffer beforehand on one thread
/// (`vec![0.0; n]` on reused memory: a pass over memory while the other threads wait).
pub fn new_by_chunks(n: usize, f: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    // the pieces cover all n values, and `zeroed` initialises each of them
    new_buffer(n, |out| {
        for_each_chunk(
            out,
            #[inline(always)]
            |start, piece| f(start, zeroed(piece)),
        )
    })
}

/// A new buffer of `rows` rows of `row_len` values, filled by `f(row_index, row)` as
/// [`for_each_row_with_cost`] would fill a zeroed one; each row is zeroed just before (see
/// [`new_by_chunks`]).
pub fn new_by_rows_with_cost(
    rows: usize,
    row_len: usize,
    cost: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    // the rows cover all values (with row_len = 0 there are none), and `zeroed` initialises
    // each of them
    new_buffer(rows * row_len, |out| {
        for_each_row_with_cost(
            out,
            row_len,
            cost,
            #[inline(always)]
            |r, row| f(r, zeroed(row)),
        )
    })
}

/// A new buffer of `n` values, all of which `fill` must initialise (the callers above pass
/// every piece through [`zeroed`]).
fn new_buffer(n: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    fill(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: `fill` initialised all n values (this private function's contract, kept by its
    // two callers).
    unsafe { v.set_len(n) };
    v
}

/// Two new buffers of `rows` rows each (lengths `a_len` and `b_len`), filled by `f(r, a_row,
/// b_row)` as [`for_each_row_pair`] would fill zeroed ones; each row is zeroed just before.
pub fn new_by_row_pairs(
    rows: usize,
    a_len: usize,
    b_len: usize,
    f: impl Fn(usize, &mut [f32], &mut [f32]) + Sync,
) -> (Vec<f32>, Vec<f32>) {
    assert!(
        rows == 0 || (a_len > 0 && b_len > 0),
        "new_by_row_pairs: rows of length 0"
    );
    let (mut a, mut b) = (
        Vec::with_capacity(rows * a_len),
        Vec::with_capacity(rows * b_len),
    );
    for_each_row_pair(
        &mut a.spare_capacity_mut()[..rows * a_len],
        a_len,
        &mut b.spare_capacity_mut()[..rows * b_len],
        b_len,
        #[inline(always)]
        |r, ra, rb| f(r, zeroed(ra), zeroed(rb)),
    );
    // SAFETY: the row pairs cover both buffers, and `zeroed` initialised every row.
    unsafe {
        a.set_len(rows * a_len);
        b.set_len(rows * b_len);
    }
    (a, b)
}

/// Zeros a piece of a buffer under construction and hands it out as initialised values.
#[inline(always)]
fn zeroed(piece: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    piece.fill(MaybeUninit::new(0.0));
    // SAFETY: every value was initialised just above, and MaybeUninit<f32> has f32's layout.
    unsafe { &mut *(piece as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// [`for_each_row`] over two buffers at once: row r of `a` (length `a_len`) and row r of `b`
/// (length `b_len`) go to the same call, `f(r, a_row, b_row)` (e.g. a normalized row and its
/// saved statistics).
pub fn for_each_row_pair<T: Send>(
    a: &mut [T],
    a_len: usize,
    b: &mut [T],
    b_len: usize,
    f: impl Fn(usize, &mut [T], &mut [T]) + Sync,
) {
    if a_len == 0 {
        return;
    }
    if a.len() < PAR_THRESHOLD {
        wide(
            #[inline(always)]
            || {
                for (r, (ra, rb)) in a
                    .chunks_exact_mut(a_len)
                    .zip(b.chunks_exact_mut(b_len.max(1)))
                    .enumerate()
                {
                    f(r, ra, rb);
                }
            },
        );
    } else {
        let rows_per_task = CHUNK.div_ceil(a_len).max(1);
        a.par_chunks_mut(rows_per_task * a_len)
            .zip(b.par_chunks_mut(rows_per_task * b_len.max(1)))
            .enumerate()
            .for_each(|(task, (ra, rb))| {
                wide(
                    #[inline(always)]
                    || {
                        for (j, (x, y)) in ra
                            .chunks_exact_mut(a_len)
                            .zip(rb.chunks_exact_mut(b_len.max(1)))
                            .enumerate()
                        {
                            f(task * rows_per_task + j, x, y);
                        }
                    },
                )
            });
    }
}

/// Rows per block in [`accumulate_over_rows`].
const ROW_BLOCK: usize = 32;

/// Adds up per-row contributions into `dst` (the pattern of every bias or norm-weight
/// gradient: a sum over all rows of the batch). Rows are cut into fixed blocks; `f(rows,
/// partial)` adds the contributions of the rows in `rows` into a zeroed `partial` of
/// `dst.len()` values. Blocks run in parallel when the work is large, and their partials are
/// added into `dst` in block order, so the result is the same for any thread count.
pub fn accumulate_over_rows(
    dst: &mut [f32],
    n_rows: usize,
    cost_per_row: usize,
    f: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
) {
    let blocks = n_rows.div_ceil(ROW_BLOCK);
    let run = |b: usize| {
        let mut partial = vec![0.0; dst.len()];
        wide(
            #[inline(always)]
            || {
                f(
                    b * ROW_BLOCK..((b + 1) * ROW_BLOCK).min(n_rows),
                    &mut partial,
                )
            },
        );
        partial
    };
    let partials: Vec<Vec<f32>> = if n_rows * cost_per_row < PAR_THRESHOLD {
        (0..blocks).map(run).collect()
    } else {
        (0..blocks).into_par_iter().map(run).collect()
    };
    for p in partials {
        for (d, x) in dst.iter_mut().zip(&p) {
            *d += x;
        }
    }
}

/// Sum of `xs` in a fixed order: fixed-size pieces summed left to right, then their partial
/// sums left to right. Parallel above the threshold, and bit-identical for any thread count
/// (`par_iter().sum()` is not: its split depends on the pool).
pub fn sum(xs: &[f32]) -> f32 {
    if xs.len() < PAR_THRESHOLD {
        return serial_sum(xs);
    }
    let partials: Vec<f32> = xs.par_chunks(CHUNK).map(serial_sum).collect();
    serial_sum(&partials)
}

/// [`sum`] on the calling thread: eight running sums in a fixed order (vectorises).
pub fn serial_sum(xs: &[f32]) -> f32 {
    // Eight running sums break the dependency chain so the loop vectorises; the order is fixed.
    let mut acc = [0.0f32; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    let tail: f32 = chunks.remainder().iter().sum();
    acc.iter().sum::<f32>() + tail
}

/// The largest of `xs` (−∞ for none; NaNs are skipped, as `f32::max` does) on the calling
/// thread, in sixteen running maxima: a plain `fold(f32::max)` is one chain of dependent
/// compares, four cycles per value (a row softmax's maximum then cost as much as its `exp`s).
/// A maximum does not depend on the order it is taken in, so the result is the fold's.
#[inline(always)]
pub fn serial_max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for k in 0..16 {
            acc[k] = acc[k].max(c[k]);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    acc.iter().fold(tail, |a, &b| a.max(b))
}

/// Σ xᵢ·yᵢ on the calling thread, with sixteen running sums in a fixed order (vectorises;
/// a plain `zip().map().sum()` is one long chain of dependent adds).
#[inline(always)]
pub fn serial_dot(xs: &[f32], ys: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (mut cx, mut cy) = (xs.chunks_exact(16), ys.chunks_exact(16));
    for (a, b) in (&mut cx).zip(&mut cy) {
        for k in 0..16 {
            acc[k] += a[k] * b[k];
        }
    }
    let tail: f32 = cx
        .remainder()
        .iter()
        .zip(cy.remainder())
        .map(|(a, b)| a * b)
        .sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_of_every_size_on_two_threads() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for n in [
            0,
            1,
            PAR_ZEROS_MIN - 1,
            PAR_ZEROS_MIN,
            3 * PAR_ZEROS_MIN + 5,
        ] {
            // freed non-zero memory first, so a reused allocation would show through
            drop(vec![1.5f32; n]);
            let z = pool.install(|| zeros(n));
            assert_eq!(z.len(), n);
            assert!(z.iter().all(|&x| x.to_bits() == 0));
        }
    }

    #[test]
    fn serial_max_equals_the_plain_fold() {
        let fold = |xs: &[f32]| xs.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        for n in [0, 1, 15, 16, 17, 40, 1003] {
            let mut xs: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 - 600.0).collect();
            assert_eq!(serial_max(&xs).to_bits(), fold(&xs).to_bits(), "n = {n}");
            // masked scores (−∞) and a NaN are skipped, as `f32::max` skips them
            for (i, x) in xs.iter_mut().enumerate() {
                if i % 3 == 0 {
                    *x = f32::NEG_INFINITY;
                }
            }
            if n > 5 {
                xs[5] = f32::NAN;
            }
            assert_eq!(serial_max(&xs).to_bits(), fold(&xs).to_bits(), "n = {n}");
        }
        assert_eq!(serial_max(&[]), f32::NEG_INFINITY);
        assert_eq!(serial_max(&[f32::NEG_INFINITY; 20]), f32::NEG_INFINITY);
    }

    #[test]
    fn serial_dot_matches_f64() {
        let xs: Vec<f32> = (0..1003).map(|i| (i as f32 * 0.37).sin()).collect();
        let ys: Vec<f32> = (0..1003).map(|i| (i as f32 * 0.11).cos()).collect();
        let want: f64 = xs.iter().zip(&ys).map(|(&a, &b)| a as f64 * b as f64).sum();
        assert!((serial_dot(&xs, &ys) as f64 - want).abs() < 1e-4);
    }

    #[test]
    fn sum_is_identical_across_thread_counts() {
        let xs: Vec<f32> = (0..200_000)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3)
            .collect();
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let a = one.install(|| sum(&xs));
        let b = two.install(|| sum(&xs));
        assert_eq!(a.to_bits(), b.to_bits());
        let exact: f64 = xs.iter().map(|&x| x as f64).sum();
        assert!((a as f64 - exact).abs() < 1e-2 * exact.abs().max(1.0));
    }

    #[test]
    fn new_buffers_equal_zeroed_ones_filled_the_same_way() {
        // Each kernel adds into its output, so a value the new buffer failed to zero (freed
        // non-zero memory reused) would show. Sizes below and above the parallel threshold.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for (rows, len) in [(3, 7), (1000, 40), (37, 5_000)] {
            let n = rows * len;
            let add_chunk = |s: usize, piece: &mut [f32]| {
                for (i, x) in piece.iter_mut().enumerate() {
                    *x += (s + i) as f32;
                }
            };
            let add_row = |r: usize, row: &mut [f32]| row.iter_mut().for_each(|x| *x += r as f32);
            drop(vec![1.5f32; 4 * n]);
            let by_chunks = pool.install(|| new_by_chunks(n, add_chunk));
            let mut want = vec![0.0; n];
            for_each_chunk(&mut want, add_chunk);
            assert!(by_chunks == want, "new_by_chunks, {n} values");

            drop(vec![1.5f32; 4 * n]);
            let by_rows = pool.install(|| new_by_rows_with_cost(rows, len, len, add_row));
            let mut want = vec![0.0; n];
            for_each_row(&mut want, len, add_row);
            assert!(
                by_rows == want,
                "new_by_rows_with_cost, {rows} rows of {len}"
            );

            drop(vec![1.5f32; 4 * n]);
            let (a, b) = pool.install(|| {
                new_by_row_pairs(rows, len, 2, |r, ra, rb| {
                    add_row(r, ra);
                    add_row(r, rb);
                })
            });
            let b_want: Vec<f32> = (0..rows).flat_map(|r| [r as f32; 2]).collect();
            assert!(a == want && b == b_want, "new_by_row_pairs, {rows} rows");
        }
    }

    #[test]
    fn rows_cover_everything_once() {
        let mut v = vec![0.0; 100_000];
        for_each_row(&mut v, 10, |i, row| {
            row.iter_mut().for_each(|x| *x += i as f32)
        });
        assert_eq!(v[99_999], 9_999.0);
        assert_eq!(v[5], 0.0);
    }
}
