//! `scratchgpt bench context`: how attention's cost grows with the context length T (book
//! chapter 3; the question "why is long context expensive?").
//!
//! For T = 128, 256, … it times one forward + backward pass of causal attention over GPT-2
//! small's heads (12 heads of size 64, batch 1) on two paths: the fused kernel
//! (`Tensor::causal_attention`, what training runs) and the composed textbook ops (scores,
//! mask, scale, softmax, weighted sum: [`composed_attention`]). It also **measures** the peak
//! heap bytes each pass allocates beyond its inputs, with the engine's allocation counter
//! ([`tensor::alloc_counter`]), and fits the exponent b of `cost ≈ a·T^b` by least squares on
//! log T and log cost. Then it counts the FLOPs per token of a whole GPT-2 small layer, split
//! into attention's T-dependent products (QKᵀ and the weighted sum) and the rest (the four
//! projections and the feed-forward network), to find the T from which attention dominates.
//!
//! The composed path's T×T intermediates (scores, masked scores, weights, and their
//! gradients) are the point: they make its memory grow with T² several times over, while the
//! fused kernel keeps one T×T matrix (half of it: only the blocks of P its causal mask
//! needs) for its backward pass.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use tensor::{alloc_counter, Rng, Tensor};

use crate::commands::inspect::{write_index, Section};
use crate::error::{io_error, TrainError};
use crate::figures::{self, html_table, xml_escape, LinePlot, Series};

/// GPT-2 small's width: the FLOP counts are for one of its layers.
pub const GPT2_SMALL_WIDTH: usize = 768;

#[derive(Args, Debug, Clone)]
pub struct ContextArgs {
    /// Smallest context length (a power of two).
    #[arg(long, default_value_t = 128, value_name = "T")]
    pub min_t: usize,
    /// Largest context length for the fused kernel (doubling from --min-t).
    #[arg(long, default_value_t = 4096, value_name = "T")]
    pub max_t: usize,
    /// Largest context length for the composed ops. They keep several T×T buffers per head
    /// (GPT-2 small's 12 heads: about 1.3 GB at T = 2048, 5 GB at 4096) and take 3-8× the
    /// fused time, so they also stop earlier when their predicted peak (the last one × 4 per
    /// doubling) would exceed half the memory available.
    #[arg(long, default_value_t = 4096, value_name = "T")]
    pub composed_max_t: usize,
    /// Attention heads (GPT-2 small: 12).
    #[arg(long, default_value_t = 12, value_name = "N")]
    pub heads: usize,
    /// Head size (GPT-2 small: 64).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub head_size: usize,
    /// Timed repetitions per point (the best is kept); points slower than a second run once.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub reps: usize,
    /// Directory for the table (CSV), the plots (SVG) and index.html.
    #[arg(long, default_value = "bench-context", value_name = "DIR")]
    pub out: PathBuf,
}

/// Causal attention from composed ops (book listing 3.5's core): `softmax(mask(Q·Kᵀ)/√HS)·V`.
pub fn composed_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    let t = q.size(-2);
    let mask: Vec<f32> = (0..t * t)
        .map(|x| ((x % t) > (x / t)) as u8 as f32)
        .collect();
    q.matmul(&k.transpose(-2, -1))
        .masked_fill(&Tensor::from_vec(mask, &[t, t]), f32::NEG_INFINITY)
        .mul_scalar(1.0 / (q.size(-1) as f32).sqrt())
        .softmax(-1)
        .matmul(v)
}

/// The two attention paths measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Fused,
    Composed,
}

/// One forward + backward pass of attention on `path`.
pub fn attention_step(path: Path, q: &Tensor, k: &Tensor, v: &Tensor) {
    let y = match path {
        Path::Fused => Tensor::causal_attention(q, k, v, 0.0, false, &mut Rng::seed(1)),
        Path::Composed => composed_attention(q, k, v),
    };
    y.sum_all().backward();
}

/// One measured point.
#[derive(Clone, Copy, Debug)]
pub struct Point {
    pub t: usize,
    pub secs: f64,
    /// Peak heap bytes allocated during the pass beyond what was live before (None: the
    /// counter is not installed in this program).
    pub peak_bytes: Option<usize>,
}

/// Measures `path` at context length `t`: the best of `reps` timings (one when a pass takes
/// over a second) and the peak bytes of the first pass.
pub fn measure(path: Path, t: usize, heads: usize, hs: usize, reps: usize) -> Point {
    let mut rng = Rng::seed(t as u64);
    let [q, k, v] = [0, 1, 2].map(|_| Tensor::randn(&[1, heads, t, hs], &mut rng).requires_grad());
    let clear = || [&q, &k, &v].iter().for_each(|x| x.zero_grad());
    let t0 = Instant::now();
    let ((), peak) = alloc_counter::peak_during(|| attention_step(path, &q, &k, &v));
    let mut best = t0.elapsed().as_secs_f64();
    clear();
    if best < 1.0 {
        for _ in 1..reps.max(1) {
            let t0 = Instant::now();
            attention_step(path, &q, &k, &v);
            best = best.min(t0.elapsed().as_secs_f64());
            clear();
        }
    }
    Point {
        t,
        secs: best,
        peak_bytes: alloc_counter::is_installed().then_some(peak),
    }
}

/// The exponent b and factor a of `y ≈ a·x^b`, by least squares on (ln x, ln y).
pub fn fit_power_law(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| *x > 0.0 && *y > 0.0)
        .map(|(x, y)| (x.ln(), y.ln()))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 {
        return None;
    }
    let b = sxy / sxx;
    Some((b, (my - b * mx).exp()))
}

/// Fits are made over the points from this T on, where the T² work dominates fixed costs
/// (or over all points when fewer than two are that large).
pub const FIT_FROM_T: usize = 512;

fn fit_points(points: &[(f64, f64)]) -> Option<f64> {
    let large: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|p| p.0 >= FIT_FROM_T as f64)
        .collect();
    let use_pts = if large.len() >= 2 { &large[..] } else { points };
    fit_power_law(use_pts).map(|(b, _)| b)
}

/// Which points [`fit_points`] fits over, for the printed and HTML labels.
fn fit_range(ts: &[usize]) -> String {
    if ts.iter().filter(|&&t| t >= FIT_FROM_T).count() >= 2 {
        format!("over T ≥ {FIT_FROM_T}")
    } else {
        format!(
            "over every T measured, as fewer than two reach T = {FIT_FROM_T}: at small T fixed costs weigh, so read these with care"
        )
    }
}

/// Forward FLOPs per token of one transformer layer of width `c` at context length `t`:
/// `(attention, rest)`. Attention is the T-dependent part, QKᵀ and the weighted sum, 2·C
/// multiply-adds per key each; with the causal mask a token sees (T+1)/2 keys on average, so
/// `2·2·C·(T+1)/2`. The rest is the four C×C projections and the C×4C and 4C×C feed-forward
/// layers, `2·12·C²`. (Layer norm, GELU and softmax are a few FLOPs per value: left out.)
/// Backward costs twice the forward for both, so the shares are the same for training.
pub fn layer_flops_per_token(c: usize, t: usize) -> (f64, f64) {
    let c = c as f64;
    (2.0 * c * (t as f64 + 1.0), 24.0 * c * c)
}

/// The smallest T at which attention's FLOPs per token reach the rest's: 2C(T+1) = 24C², so
/// T = 12C − 1 (9,215 for GPT-2 small). Computing the full T×T matrix, as composed ops do,
/// costs twice as much and crosses at T = 6C (4,608).
pub fn crossover_t(c: usize) -> usize {
    12 * c - 1
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}

/// Runs the benchmark, prints the table and writes the figures.
pub fn run_context_bench(a: &ContextArgs) -> Result<i32, TrainError> {
    if !a.min_t.is_power_of_two() || a.min_t < 2 {
        return Err(TrainError(format!(
            "--min-t {} must be a power of two of at least 2",
            a.min_t
        )));
    }
    if a.max_t < a.min_t {
        return Err(TrainError(format!(
            "--max-t {} is below --min-t {}",
            a.max_t, a.min_t
        )));
    }
    if a.heads == 0 || a.head_size == 0 {
        return Err(TrainError(
            "--heads and --head-size must be at least 1".into(),
        ));
    }
    if a.reps == 0 {
        return Err(TrainError("--reps must be at least 1".into()));
    }
    std::fs::create_dir_all(&a.out).map_err(|e| io_error(&a.out, e))?;
    let machine = tensor::kernels::describe();
    println!("{machine}");
    println!(
        "causal attention forward + backward, batch 1, {} of size {}, {} threads; best of {} (one run when over 1 s)",
        crate::counted(a.heads, "head", "heads"),
        a.head_size,
        rayon::current_num_threads(),
        a.reps
    );
    if !alloc_counter::is_installed() {
        println!("(peak memory is not measured: the allocation counter is not installed in this program)");
    }
    let available = crate::memory::available_memory().map(|(b, _)| b as f64);
    // warm up both paths (first-touch of the allocator, thread pool)
    measure(Path::Fused, a.min_t, a.heads, a.head_size, 1);
    measure(Path::Composed, a.min_t, a.heads, a.head_size, 1);
    println!(
        "\n{:>6} {:>12} {:>12} {:>14} {:>14}",
        "T", "fused ms", "fused MB", "composed ms", "composed MB"
    );
    let mut fused = Vec::new();
    let mut composed: Vec<Point> = Vec::new();
    let mut composed_stop: Option<String> = None;
    let mut t = a.min_t;
    while t <= a.max_t {
        let f = measure(Path::Fused, t, a.heads, a.head_size, a.reps);
        fused.push(f);
        let c = if composed_stop.is_some() {
            None
        } else if t > a.composed_max_t {
            composed_stop = Some(match composed.last() {
                Some(last) => format!("stopped after T = {} (--composed-max-t)", last.t),
                None => format!(
                    "not run (--composed-max-t {} is below --min-t {})",
                    a.composed_max_t, a.min_t
                ),
            });
            None
        } else {
            let predicted = composed.last().and_then(|p| {
                p.peak_bytes
                    .map(|b| b as f64 * (t as f64 / p.t as f64).powi(2))
            });
            match (predicted, available) {
                (Some(need), Some(have)) if need > have / 2.0 => {
                    composed_stop = Some(format!(
                        "stopped before T = {t}: it would need about {:.0} MB, more than half the {:.0} MB available",
                        need / 1e6,
                        have / 1e6
                    ));
                    None
                }
                _ => Some(measure(Path::Composed, t, a.heads, a.head_size, a.reps)),
            }
        };
        if let Some(c) = c {
            composed.push(c);
        }
        let ms = |p: Option<&Point>| p.map_or("–".into(), |p| format!("{:.2}", p.secs * 1e3));
        let mem = |p: Option<&Point>| {
            p.and_then(|p| p.peak_bytes)
                .map_or("–".into(), |b| format!("{:.2}", mb(b)))
        };
        println!(
            "{t:>6} {:>12} {:>12} {:>14} {:>14}",
            ms(Some(&f)),
            mem(Some(&f)),
            ms(c.as_ref()),
            mem(c.as_ref())
        );
        t *= 2;
    }
    if let Some(why) = &composed_stop {
        println!("composed ops {why}");
    }
    let time_pts = |ps: &[Point]| -> Vec<(f64, f64)> {
        ps.iter().map(|p| (p.t as f64, p.secs * 1e3)).collect()
    };
    let mem_pts = |ps: &[Point]| -> Vec<(f64, f64)> {
        ps.iter()
            .filter_map(|p| p.peak_bytes.map(|b| (p.t as f64, mb(b))))
            .collect()
    };
    let exps = [
        fit_points(&time_pts(&fused)),
        fit_points(&time_pts(&composed)),
        fit_points(&mem_pts(&fused)),
        fit_points(&mem_pts(&composed)),
    ];
    let e = |x: Option<f64>| x.map_or("–".into(), |b| format!("{b:.2}"));
    let measured_ts: Vec<usize> = fused.iter().map(|p| p.t).collect();
    let range = fit_range(&measured_ts);
    println!(
        "fitted exponents (cost ∝ T^b, least squares on log-log, {range}): time fused {}, composed {}; memory fused {}, composed {}",
        e(exps[0]),
        e(exps[1]),
        e(exps[2]),
        e(exps[3])
    );

    // FLOPs of a GPT-2 small layer
    let c = GPT2_SMALL_WIDTH;
    let flop_ts: Vec<usize> = (7..=15).map(|p| 1usize << p).collect();
    println!("\nGPT-2 small layer (C = {c}), forward FLOPs per token:");
    println!(
        "{:>6} {:>14} {:>14} {:>12}",
        "T", "attention", "rest", "attention %"
    );
    let mut flop_rows = Vec::new();
    for &t in &flop_ts {
        let (att, rest) = layer_flops_per_token(c, t);
        let share = 100.0 * att / (att + rest);
        println!("{t:>6} {:>14.0} {:>14.0} {:>11.1}%", att, rest, share);
        flop_rows.push((t, att, rest, share));
    }
    let cross = crossover_t(c);
    println!(
        "attention's FLOPs reach the rest's at T = {cross} (12·C − 1 with the causal mask; 6·C = {} computing the full T×T matrix)",
        6 * c
    );

    // files
    let mut csv = String::from("T,fused_ms,fused_peak_MB,composed_ms,composed_peak_MB\n");
    let mut rows = Vec::new();
    for f in &fused {
        let c = composed.iter().find(|p| p.t == f.t);
        let cell = |v: Option<f64>, d: usize| v.map_or(String::new(), |v| format!("{v:.d$}"));
        let fm = f.peak_bytes.map(mb);
        // MB with 3 decimals: small test shapes allocate kilobytes
        let cms = c.map(|p| p.secs * 1e3);
        let cm = c.and_then(|p| p.peak_bytes).map(mb);
        csv += &format!(
            "{},{:.3},{},{},{}\n",
            f.t,
            f.secs * 1e3,
            cell(fm, 3),
            cell(cms, 3),
            cell(cm, 3)
        );
        rows.push(vec![
            f.t.to_string(),
            format!("{:.2}", f.secs * 1e3),
            cell(fm, 1),
            cell(cms, 2),
            cell(cm, 1),
        ]);
    }
    let mut flops_csv =
        String::from("T,attention_flops_per_token,rest_flops_per_token,attention_share\n");
    for (t, att, rest, share) in &flop_rows {
        flops_csv += &format!("{t},{att:.0},{rest:.0},{:.4}\n", share / 100.0);
    }
    let series = |label: &str, pts: Vec<(f64, f64)>, dashed: bool| Series {
        label: label.into(),
        points: pts,
        dashed,
    };
    let time_svg = figures::line_plot_svg(&LinePlot {
        title: "Attention forward + backward time against context length (log-log)",
        x_label: "context length T",
        y_label: "time (ms)",
        series: &[
            series(
                &format!("fused kernel, T^{}", e(exps[0])),
                time_pts(&fused),
                false,
            ),
            series(
                &format!("composed ops, T^{}", e(exps[1])),
                time_pts(&composed),
                true,
            ),
        ],
        log_x: true,
        log_y: true,
        dots: true,
        x_names: None,
    });
    let mem_svg = figures::line_plot_svg(&LinePlot {
        title: "Peak memory attention allocates against context length (log-log)",
        x_label: "context length T",
        y_label: "peak allocated (MB)",
        series: &[
            series(
                &format!("fused kernel, T^{}", e(exps[2])),
                mem_pts(&fused),
                false,
            ),
            series(
                &format!("composed ops, T^{}", e(exps[3])),
                mem_pts(&composed),
                true,
            ),
        ],
        log_x: true,
        log_y: true,
        dots: true,
        x_names: None,
    });
    let flops_svg = figures::line_plot_svg(&LinePlot {
        title: "GPT-2 small layer: forward FLOPs per token (log-log)",
        x_label: "context length T",
        y_label: "FLOPs per token",
        series: &[
            series(
                "attention (QKᵀ, weights·V)",
                flop_rows.iter().map(|r| (r.0 as f64, r.1)).collect(),
                false,
            ),
            series(
                "the rest (projections, feed-forward)",
                flop_rows.iter().map(|r| (r.0 as f64, r.2)).collect(),
                true,
            ),
        ],
        log_x: true,
        log_y: true,
        dots: true,
        x_names: None,
    });
    let flop_table: Vec<Vec<String>> = flop_rows
        .iter()
        .map(|(t, att, rest, share)| {
            vec![
                t.to_string(),
                format!("{:.1}M", att / 1e6),
                format!("{:.1}M", rest / 1e6),
                format!("{share:.1}%"),
            ]
        })
        .collect();
    let html = format!(
        "<section id=\"context\">\n<h2>Attention's cost against the context length (book chapter 3)</h2>\n<p class=\"note\">{}; \
         causal attention forward + backward, batch 1, {} of size {}, {} threads, best of {}.{}</p>\n{}\
         <p>Fitted exponents (cost ∝ T<sup>b</sup>, least squares on log T and log cost {}): time fused {}, composed {}; \
         peak memory fused {}, composed {}.</p>\n<figure>{}</figure>\n<figure>{}</figure>\n\
         <h3>Where attention dominates a GPT-2 small layer</h3>\n<p>Forward FLOPs per token of one layer (C = {c}): attention's \
         T-dependent products against the projections and the feed-forward network. Attention reaches the rest at T = {cross} \
         (causal: each token sees (T+1)/2 keys on average; computing the full T×T matrix crosses at T = {}).</p>\n{}<figure>{}</figure>\n</section>\n",
        xml_escape(&machine),
        crate::counted(a.heads, "head", "heads"),
        a.head_size,
        rayon::current_num_threads(),
        a.reps,
        composed_stop
            .as_ref()
            .map_or(String::new(), |w| format!(" Composed ops {}.", xml_escape(w))),
        html_table(
            &["T", "fused ms", "fused peak MB", "composed ms", "composed peak MB"],
            &rows
        ),
        xml_escape(&range),
        e(exps[0]),
        e(exps[1]),
        e(exps[2]),
        e(exps[3]),
        figures::inline_svg(&time_svg),
        figures::inline_svg(&mem_svg),
        6 * c,
        html_table(&["T", "attention", "rest", "attention share"], &flop_table),
        figures::inline_svg(&flops_svg),
    );
    let section = Section {
        files: vec![
            ("context.csv".into(), csv),
            ("context-flops.csv".into(), flops_csv),
            ("context-time.svg".into(), time_svg),
            ("context-memory.svg".into(), mem_svg),
            ("context-flops.svg".into(), flops_svg),
            ("context.part.html".into(), html),
        ],
        html: String::new(),
    };
    for (name, content) in &section.files {
        let p = a.out.join(name);
        std::fs::write(&p, content).map_err(|e| io_error(&p, e))?;
    }
    write_index(&a.out)?;
    println!(
        "\nwrote the table, plots and index.html to {}",
        a.out.display()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_law_fit_recovers_the_exponent() {
        // y = 3·x², exactly
        let pts: Vec<(f64, f64)> = [128.0, 256.0, 512.0, 1024.0]
            .iter()
            .map(|&x| (x, 3.0 * x * x))
            .collect();
        let (b, a) = fit_power_law(&pts).unwrap();
        assert!((b - 2.0).abs() < 1e-9 && (a - 3.0).abs() < 1e-6);
        assert!(fit_power_law(&pts[..1]).is_none());
        // fits start at T = 512 when there are two such points
        let mut bent = pts.clone();
        bent[0].1 = 1e9; // a fixed cost dominating the smallest T
        assert!((fit_points(&bent).unwrap() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn gpt2_small_flops_by_hand() {
        // C = 768, T = 1023: attention 2·768·1024 = 1,572,864; rest 24·768² = 14,155,776
        assert_eq!(
            layer_flops_per_token(768, 1023),
            (1_572_864.0, 14_155_776.0)
        );
        let t = crossover_t(768);
        assert_eq!(t, 9215);
        let (att, rest) = layer_flops_per_token(768, t);
        assert_eq!(att, rest);
    }

    #[test]
    fn composed_attention_equals_the_fused_kernel() {
        let mut rng = Rng::seed(2);
        let [q, k, v] = [0, 1, 2].map(|_| Tensor::randn(&[1, 2, 9, 4], &mut rng));
        let a = composed_attention(&q, &k, &v).to_vec();
        let b = Tensor::causal_attention(&q, &k, &v, 0.0, false, &mut Rng::seed(0)).to_vec();
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5));
    }
}
