//! Figures as SVG, and the self-contained HTML page that shows them: the drawing code behind
//! the loss plot ([`crate::metrics`]), `scratchgpt inspect` and `scratchgpt bench context`.
//!
//! Every figure has a title, labelled axes (or rows and columns), a colour scale with its
//! values where colour carries a value, and the value of every cell or point on hover (an SVG
//! `<title>` element, which browsers show as a tooltip). Nothing is loaded from anywhere: no
//! scripts, fonts or images, so the page works offline and from a file.

use std::fmt::Write as _;

// ------------------------------------------------------------------------------- text

/// `s` safe inside SVG/HTML text and attribute values.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// "Nice" tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten.
pub fn ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / target as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() * step;
    (0..)
        .map(|i| first + i as f64 * step)
        .take_while(|&v| v <= hi + 1e-9 * span.max(1.0))
        .collect()
}

/// Ticks for a logarithmic axis over [lo, hi] (both > 0): the powers of `base` in range.
pub fn log_ticks(lo: f64, hi: f64, base: f64) -> Vec<f64> {
    let (a, b) = (lo.log(base).floor() as i32, hi.log(base).ceil() as i32);
    (a..=b)
        .map(|e| base.powi(e))
        .filter(|&v| v >= lo * 0.999 && v <= hi * 1.001)
        .collect()
}

/// A tick label: short, with k/M/G for large values and enough decimals for small ones.
pub fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{}G", trim(v / 1e9))
    } else if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e5 {
        format!("{}k", trim(v / 1e3))
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 0.1 {
        trim(v)
    } else {
        format!("{v:.1e}")
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

// ------------------------------------------------------------------------------- colour

/// The sequential colour scale of every heat map: `v` in [0, 1] from near-white to dark blue
/// (ColorBrewer's "Blues", interpolated).
pub fn colour(v: f64) -> String {
    const STOPS: [(f64, [f64; 3]); 5] = [
        (0.0, [247.0, 251.0, 255.0]),
        (0.25, [198.0, 219.0, 239.0]),
        (0.5, [107.0, 174.0, 214.0]),
        (0.75, [33.0, 113.0, 181.0]),
        (1.0, [8.0, 48.0, 107.0]),
    ];
    let v = if v.is_finite() {
        v.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let i = STOPS.iter().rposition(|(s, _)| *s <= v).unwrap_or(0).min(3);
    let ((a, ca), (b, cb)) = (STOPS[i], STOPS[i + 1]);
    let t = (v - a) / (b - a);
    let c: Vec<u8> = (0..3)
        .map(|k| (ca[k] + t * (cb[k] - ca[k])).round() as u8)
        .collect();
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// Text colour readable on [`colour`]`(v)`.
pub fn text_colour(v: f64) -> &'static str {
    if v > 0.55 {
        "white"
    } else {
        "#111"
    }
}

/// Colour of masked (not allowed) cells: the future keys of causal attention.
pub const MASKED: &str = "#e8e8e8";

/// Line colours of plots, in order.
const LINE_COLOURS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

// ------------------------------------------------------------------------------- SVG

/// An SVG document being written.
pub struct Svg {
    body: String,
    w: f64,
    h: f64,
}

impl Svg {
    /// A white `w × h` canvas with `title` centred at the top (also the document's `<title>`).
    /// The canvas is widened if the title needs it.
    pub fn new(w: f64, h: f64, title: &str) -> Svg {
        let w = w.max(title.chars().count() as f64 * 8.5 + 40.0);
        let t = xml_escape(title);
        let body = format!(
            "<title>{t}</title>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{:.1}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">{t}</text>\n",
            w / 2.0
        );
        Svg { body, w, h }
    }

    /// Appends raw SVG elements.
    pub fn push(&mut self, elements: &str) {
        self.body.push_str(elements);
    }

    /// Text at (x, y): `anchor` start/middle/end, rotated by `rotate` degrees about (x, y).
    pub fn text(&mut self, x: f64, y: f64, anchor: &str, rotate: f64, text: &str) {
        let rot = if rotate != 0.0 {
            format!(" transform=\"rotate({rotate} {x:.1} {y:.1})\"")
        } else {
            String::new()
        };
        let _ = writeln!(
            self.body,
            "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\"{rot}>{}</text>",
            xml_escape(text)
        );
    }

    /// A vertical colour bar at (x, y), `h` tall, for values lo..hi, with ticks and `label`.
    pub fn colour_bar(&mut self, x: f64, y: f64, h: f64, lo: f64, hi: f64, label: &str) {
        let steps = 40;
        for i in 0..steps {
            let v = (i as f64 + 0.5) / steps as f64;
            let yy = y + h * (1.0 - (i + 1) as f64 / steps as f64);
            let _ = writeln!(
                self.body,
                "<rect x=\"{x:.1}\" y=\"{yy:.2}\" width=\"14\" height=\"{:.2}\" fill=\"{}\"/>",
                h / steps as f64 + 0.3,
                colour(v)
            );
        }
        let _ = writeln!(
            self.body,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"14\" height=\"{h:.1}\" fill=\"none\" stroke=\"#333\"/>"
        );
        for t in ticks(lo, hi, 4) {
            let yy = y + h * (1.0 - (t - lo) / (hi - lo).max(1e-12));
            let _ = writeln!(
                self.body,
                "<line x1=\"{:.1}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#333\"/>",
                x + 14.0,
                x + 18.0
            );
            self.text(x + 21.0, yy + 4.0, "start", 0.0, &fmt_tick(t));
        }
        self.text(x - 4.0, y + h + 16.0, "start", 0.0, label);
    }

    /// The finished document.
    pub fn finish(self) -> String {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n{}</svg>\n",
            self.body,
            w = self.w,
            h = self.h
        )
    }
}

/// Room right of a figure for its colour bar and the bar's label.
fn bar_width(label: &str) -> f64 {
    (label.chars().count() as f64 * 7.0 + 20.0).max(110.0)
}

/// Width in pixels of the longest label at 12 px sans-serif (about 7 px a character).
fn label_width(labels: &[String]) -> f64 {
    labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) as f64 * 7.0
}

// ------------------------------------------------------------------------------- heat map

/// A matrix drawn as coloured cells (attention weights: rows are queries, columns keys).
pub struct HeatMap<'a> {
    pub title: &'a str,
    /// `rows × cols` values, row-major.
    pub values: &'a [f32],
    pub row_labels: &'a [String],
    pub col_labels: &'a [String],
    pub row_axis: &'a str,
    pub col_axis: &'a str,
    /// What a value is, for the colour bar and the hover text ("weight").
    pub value_name: &'a str,
    /// The value drawn darkest (the colour bar runs 0..vmax).
    pub vmax: f32,
    /// Cells that do not exist (causal attention's future keys): drawn grey, no value.
    pub masked: &'a dyn Fn(usize, usize) -> bool,
}

/// Cell size for an n-wide matrix: large for a few tokens, at least 7 px for many.
pub fn cell_size(n: usize) -> f64 {
    (640.0 / n.max(1) as f64).clamp(7.0, 30.0)
}

/// The SVG of a [`HeatMap`], each cell's value on hover.
pub fn heat_map_svg(m: &HeatMap) -> String {
    let (rows, cols) = (m.row_labels.len(), m.col_labels.len());
    assert_eq!(
        m.values.len(),
        rows * cols,
        "heat map: values for {rows}×{cols}"
    );
    let cell = cell_size(rows.max(cols));
    let left = label_width(m.row_labels) + 40.0;
    let top = 50.0;
    let col_h = label_width(m.col_labels) * 0.8 + 20.0; // labels at −50°, below the map
    let (pw, ph) = (cell * cols as f64, cell * rows as f64);
    let w = (left + pw + 20.0 + bar_width(m.value_name)).max(360.0);
    let h = top + ph + col_h + 40.0;
    let mut s = Svg::new(w, h, m.title);
    let vmax = m.vmax.max(1e-12) as f64;
    let mut cells = String::new();
    for i in 0..rows {
        for j in 0..cols {
            let (x, y) = (left + j as f64 * cell, top + i as f64 * cell);
            if (m.masked)(i, j) {
                let _ = writeln!(
                    cells,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cell:.1}\" height=\"{cell:.1}\" fill=\"{MASKED}\"/>"
                );
                continue;
            }
            let v = m.values[i * cols + j];
            let _ = writeln!(
                cells,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cell:.1}\" height=\"{cell:.1}\" fill=\"{}\"><title>{} {} → {} {}: {} {:.4}</title></rect>",
                colour(v as f64 / vmax),
                xml_escape(m.row_axis),
                xml_escape(&m.row_labels[i]),
                xml_escape(m.col_axis),
                xml_escape(&m.col_labels[j]),
                xml_escape(m.value_name),
                v
            );
        }
    }
    s.push(&cells);
    let font = if cell < 11.0 { 9.0 } else { 12.0 };
    let mut labels = format!("<g font-size=\"{font}\">\n");
    for (i, l) in m.row_labels.iter().enumerate() {
        let y = top + (i as f64 + 0.5) * cell + font / 3.0;
        let _ = writeln!(
            labels,
            "<text x=\"{:.1}\" y=\"{y:.1}\" text-anchor=\"end\">{}</text>",
            left - 4.0,
            xml_escape(l)
        );
    }
    for (j, l) in m.col_labels.iter().enumerate() {
        let (x, y) = (left + (j as f64 + 0.5) * cell, top + ph + 10.0);
        let _ = writeln!(
            labels,
            "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"end\" transform=\"rotate(-50 {x:.1} {y:.1})\">{}</text>",
            xml_escape(l)
        );
    }
    labels.push_str("</g>\n");
    s.push(&labels);
    s.push(&format!(
        "<rect x=\"{left:.1}\" y=\"{top:.1}\" width=\"{pw:.1}\" height=\"{ph:.1}\" fill=\"none\" stroke=\"#333\"/>\n"
    ));
    s.text(14.0, top + ph / 2.0, "middle", -90.0, m.row_axis);
    s.text(left + pw / 2.0, h - 10.0, "middle", 0.0, m.col_axis);
    s.colour_bar(
        left + pw + 20.0,
        top,
        ph.max(120.0),
        0.0,
        vmax,
        m.value_name,
    );
    s.finish()
}

/// One map of a [`HeatMapGrid`].
pub struct SmallMap {
    /// `n×n` values, row-major.
    pub values: Vec<f32>,
    /// Shown on hover.
    pub caption: String,
    /// A short label written under the map (empty: none).
    pub tag: String,
}

/// Many small heat maps in a grid (attention: rows are layers, columns heads), each `n × n`
/// with the same colour scale 0..1; hovering a map shows its caption.
pub struct HeatMapGrid<'a> {
    pub title: &'a str,
    /// `[row][col]`.
    pub maps: &'a [Vec<SmallMap>],
    pub n: usize,
    pub row_names: &'a [String],
    pub col_names: &'a [String],
    pub row_axis: &'a str,
    pub col_axis: &'a str,
    pub value_name: &'a str,
    /// Cells that do not exist, drawn grey (once per map, not per cell).
    pub masked: &'a dyn Fn(usize, usize) -> bool,
}

/// The SVG of a [`HeatMapGrid`].
pub fn heat_map_grid_svg(g: &HeatMapGrid) -> String {
    let rows = g.maps.len();
    let cols = g.maps.first().map_or(0, |r| r.len());
    let cell = (96.0 / g.n.max(1) as f64).clamp(1.5, 12.0);
    let size = cell * g.n as f64;
    // room under each map for its tag
    let gap = 22.0;
    let left = label_width(g.row_names) + 40.0;
    let top = 76.0;
    let (pw, ph) = (
        cols as f64 * (size + gap) - gap,
        rows as f64 * (size + gap) - gap,
    );
    let w = (left + pw + 20.0 + bar_width(g.value_name)).max(360.0);
    let h = top + ph + 50.0;
    let mut s = Svg::new(w, h, g.title);
    for (c, name) in g.col_names.iter().enumerate() {
        s.text(
            left + c as f64 * (size + gap) + size / 2.0,
            top - 8.0,
            "middle",
            0.0,
            name,
        );
    }
    s.text(left + pw / 2.0, top - 26.0, "middle", 0.0, g.col_axis);
    s.text(14.0, top + ph / 2.0, "middle", -90.0, g.row_axis);
    let mut body = String::new();
    for (r, row) in g.maps.iter().enumerate() {
        let y0 = top + r as f64 * (size + gap);
        let _ = writeln!(
            body,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 6.0,
            y0 + size / 2.0 + 4.0,
            xml_escape(&g.row_names[r])
        );
        for (c, map) in row.iter().enumerate() {
            let (values, caption) = (&map.values, &map.caption);
            let x0 = left + c as f64 * (size + gap);
            if !map.tag.is_empty() {
                let _ = writeln!(
                    body,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{}</text>",
                    x0 + size / 2.0,
                    y0 + size + 12.0,
                    xml_escape(&map.tag)
                );
            }
            let _ = writeln!(
                body,
                "<g><title>{}</title><rect x=\"{x0:.1}\" y=\"{y0:.1}\" width=\"{size:.1}\" height=\"{size:.1}\" fill=\"{MASKED}\" stroke=\"#999\"/>",
                xml_escape(caption)
            );
            for i in 0..g.n {
                for j in 0..g.n {
                    let v = values[i * g.n + j];
                    // masked cells keep the grey background; near-zero ones the white end
                    if (g.masked)(i, j) {
                        continue;
                    }
                    let _ = writeln!(
                        body,
                        "<rect x=\"{:.2}\" y=\"{:.2}\" width=\"{cell:.2}\" height=\"{cell:.2}\" fill=\"{}\"/>",
                        x0 + j as f64 * cell,
                        y0 + i as f64 * cell,
                        colour(v as f64)
                    );
                }
            }
            body.push_str("</g>\n");
        }
    }
    s.push(&body);
    s.colour_bar(
        left + pw + 20.0,
        top,
        ph.clamp(80.0, 300.0),
        0.0,
        1.0,
        g.value_name,
    );
    s.finish()
}

// ------------------------------------------------------------------------------- text grid

/// One cell of a [`TextGrid`]: a short text, its shade in [0, 1], and the hover text.
pub struct TextCell {
    pub text: String,
    pub shade: f64,
    pub hover: String,
}

/// A table as a figure: each cell a short text on a background shaded by a value (the logit
/// lens: rows are layers, columns positions, each cell the top token shaded by its
/// probability).
pub struct TextGrid<'a> {
    pub title: &'a str,
    pub cells: &'a [Vec<TextCell>],
    pub row_labels: &'a [String],
    pub col_labels: &'a [String],
    pub row_axis: &'a str,
    pub col_axis: &'a str,
    pub value_name: &'a str,
}

/// The SVG of a [`TextGrid`].
pub fn text_grid_svg(g: &TextGrid) -> String {
    let rows = g.cells.len();
    let cols = g.col_labels.len();
    let longest = g
        .cells
        .iter()
        .flatten()
        .map(|c| c.text.chars().count())
        .max()
        .unwrap_or(1)
        .clamp(3, 12);
    let cw = longest as f64 * 7.0 + 8.0;
    let ch = 20.0;
    let left = label_width(g.row_labels).max(g.row_axis.chars().count() as f64 * 6.5) + 20.0;
    let top = 50.0;
    let col_h = label_width(g.col_labels) * 0.8 + 20.0;
    let (pw, ph) = (cw * cols as f64, ch * rows as f64);
    let w = (left + pw + 20.0 + bar_width(g.value_name)).max(360.0);
    let h = top + ph + col_h + 40.0;
    let mut s = Svg::new(w, h, g.title);
    let mut body = String::new();
    for (i, row) in g.cells.iter().enumerate() {
        let y = top + i as f64 * ch;
        let _ = writeln!(
            body,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 4.0,
            y + ch / 2.0 + 4.0,
            xml_escape(&g.row_labels[i])
        );
        for (j, c) in row.iter().enumerate() {
            let x = left + j as f64 * cw;
            let text: String = c.text.chars().take(12).collect();
            let _ = writeln!(
                body,
                "<g><title>{}</title><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cw:.1}\" height=\"{ch:.1}\" fill=\"{}\" stroke=\"white\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\" fill=\"{}\">{}</text></g>",
                xml_escape(&c.hover),
                colour(c.shade),
                x + cw / 2.0,
                y + ch / 2.0 + 4.0,
                text_colour(c.shade),
                xml_escape(&text)
            );
        }
    }
    for (j, l) in g.col_labels.iter().enumerate() {
        let (x, y) = (left + (j as f64 + 0.5) * cw, top + ph + 10.0);
        let _ = writeln!(
            body,
            "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"end\" transform=\"rotate(-50 {x:.1} {y:.1})\">{}</text>",
            xml_escape(l)
        );
    }
    s.push(&body);
    // few rows leave no room for a rotated label: the row axis names the row labels' column
    s.text(left - 4.0, top - 8.0, "end", 0.0, g.row_axis);
    s.text(left + pw / 2.0, h - 10.0, "middle", 0.0, g.col_axis);
    s.colour_bar(left + pw + 20.0, top, ph.max(120.0), 0.0, 1.0, g.value_name);
    s.finish()
}

// ------------------------------------------------------------------------------- line plot

/// One line of a [`LinePlot`]: its legend and points (NaN: no point).
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

/// Lines against a common x axis, optionally logarithmic on either axis.
pub struct LinePlot<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: &'a [Series],
    pub log_x: bool,
    pub log_y: bool,
    /// Draw a dot (with its value on hover) at every point.
    pub dots: bool,
    /// Named x positions instead of numeric ticks (e.g. layer names), if any.
    pub x_names: Option<&'a [(f64, String)]>,
}

/// The SVG of a [`LinePlot`].
pub fn line_plot_svg(p: &LinePlot) -> String {
    // the legend sits right of the plot, where it hides no data
    let legend_w = p
        .series
        .iter()
        .map(|s| s.label.chars().count())
        .max()
        .unwrap_or(0) as f64
        * 7.0
        + 50.0;
    let (w, h) = (640.0 + legend_w, 420.0);
    let bottom = if p.x_names.is_some() { 110.0 } else { 55.0 };
    let (left, right, top) = (80.0, legend_w, 40.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let finite = |v: f64, log: bool| v.is_finite() && (!log || v > 0.0);
    let pts = p.series.iter().flat_map(|s| s.points.iter());
    let (mut xlo, mut xhi, mut ylo, mut yhi) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in pts {
        if finite(x, p.log_x) && finite(y, p.log_y) {
            (xlo, xhi, ylo, yhi) = (xlo.min(x), xhi.max(x), ylo.min(y), yhi.max(y));
        }
    }
    if !xlo.is_finite() {
        (xlo, xhi, ylo, yhi) = (1.0, 2.0, 1.0, 2.0);
    }
    // margins: 5% of the span on a linear axis, a bit of a decade on a log one
    let (xlo, xhi) = if p.log_x {
        (xlo / 1.15, xhi * 1.15)
    } else if p.x_names.is_some() {
        (xlo - 0.5, xhi + 0.5)
    } else {
        (xlo.min(0.0), xhi.max(xlo + 1e-9))
    };
    let (ylo, yhi) = if p.log_y {
        (ylo / 1.3, yhi * 1.3)
    } else {
        // a flat series (every accuracy 100%) still gets an axis whose ticks differ
        let flat = 0.1 * yhi.abs().max(ylo.abs()) * f64::from(u8::from(yhi - ylo < 1e-9));
        let pad = 0.05 * (yhi - ylo).max(0.1).max(flat);
        let lo = if ylo >= 0.0 {
            (ylo - pad).max(0.0)
        } else {
            ylo - pad
        };
        (lo, yhi + pad)
    };
    let map = |v: f64, lo: f64, hi: f64, log: bool| {
        if log {
            (v.ln() - lo.ln()) / (hi.ln() - lo.ln())
        } else {
            (v - lo) / (hi - lo)
        }
    };
    let px = |x: f64| left + pw * map(x, xlo, xhi, p.log_x);
    let py = |y: f64| top + ph * (1.0 - map(y, ylo, yhi, p.log_y));
    let mut s = Svg::new(w, h, p.title);
    let mut body = String::new();
    let yt = if p.log_y {
        let decades = log_ticks(ylo, yhi, 10.0);
        match yhi / ylo {
            r if r > 1e3 => decades,
            // 1, 2, 5 times the powers of ten
            r if r > 10.0 => log_ticks(ylo / 5.0, yhi, 10.0)
                .iter()
                .flat_map(|&d| [d, 2.0 * d, 5.0 * d])
                .filter(|&v| v >= ylo && v <= yhi)
                .collect(),
            _ => log_ticks(ylo, yhi, 2.0),
        }
    } else {
        ticks(ylo, yhi, 6)
    };
    for t in yt {
        let y = py(t);
        let _ = writeln!(
            body,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left + pw,
            left - 6.0,
            y + 4.0,
            fmt_tick(t)
        );
    }
    let xt: Vec<(f64, String)> = match p.x_names {
        Some(names) => names.to_vec(),
        None if p.log_x => log_ticks(xlo, xhi, 2.0)
            .into_iter()
            .map(|t| (t, fmt_tick(t)))
            .collect(),
        None => ticks(xlo, xhi, 6)
            .into_iter()
            .map(|t| (t, fmt_tick(t)))
            .collect(),
    };
    for (t, label) in xt {
        let x = px(t);
        let y = top + ph + 16.0;
        let rot = if p.x_names.is_some() {
            format!(" text-anchor=\"end\" transform=\"rotate(-50 {x:.1} {y:.1})\"")
        } else {
            " text-anchor=\"middle\"".into()
        };
        let _ = writeln!(
            body,
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
             <text x=\"{x:.1}\" y=\"{y:.1}\"{rot}>{}</text>",
            top + ph,
            xml_escape(&label)
        );
    }
    let _ = writeln!(
        body,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{pw:.1}\" height=\"{ph:.1}\" fill=\"none\" stroke=\"#333\"/>"
    );
    s.push(&body);
    s.text(left + pw / 2.0, h - 12.0, "middle", 0.0, p.x_label);
    s.text(18.0, top + ph / 2.0, "middle", -90.0, p.y_label);
    let mut lines = String::new();
    for (k, series) in p.series.iter().enumerate() {
        let colour = LINE_COLOURS[k % LINE_COLOURS.len()];
        let dash = if series.dashed {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        let shown: Vec<(f64, f64)> = series
            .points
            .iter()
            .copied()
            .filter(|&(x, y)| finite(x, p.log_x) && finite(y, p.log_y))
            .collect();
        let points: Vec<String> = shown
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            lines,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
            points.join(" ")
        );
        if p.dots {
            for &(x, y) in &shown {
                // a named position by its name (`block 2.norm1`), not by its index
                let at = p
                    .x_names
                    .and_then(|names| names.iter().find(|(v, _)| *v == x))
                    .map(|(_, name)| name.clone())
                    .unwrap_or_else(|| format!("{} = {}", p.x_label, fmt_value(x)));
                let _ = writeln!(
                    lines,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{colour}\"><title>{}: {}, {} = {}</title></circle>",
                    px(x),
                    py(y),
                    xml_escape(&series.label),
                    xml_escape(&at),
                    xml_escape(p.y_label),
                    fmt_value(y)
                );
            }
        }
        let ly = top + 10.0 + 18.0 * k as f64;
        let lx = left + pw + 12.0;
        let _ = writeln!(
            lines,
            "<line x1=\"{lx:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" stroke-width=\"2\"{dash}/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            lx + 30.0,
            lx + 36.0,
            ly + 4.0,
            xml_escape(&series.label)
        );
    }
    s.push(&lines);
    s.finish()
}

/// A value for hover text: 4 significant digits.
pub fn fmt_value(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 1e-3 && v.abs() < 1e6) {
        let s = format!("{v:.4}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        format!("{v:.3e}")
    }
}

// ------------------------------------------------------------------------------- HTML page

/// An SVG document ready to sit inside HTML: the XML namespace declaration (an address, and
/// not needed in HTML) removed.
pub fn inline_svg(svg: &str) -> String {
    svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
}

/// A self-contained HTML page: `body` (HTML) under `title`, with a small inline style sheet.
pub fn html_page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{t}</title>\n<style>\n\
         body {{ font-family: sans-serif; margin: 2em; max-width: 1400px; color: #111; }}\n\
         figure {{ margin: 1em 0; overflow-x: auto; }}\n\
         table {{ border-collapse: collapse; font-size: 13px; }}\n\
         td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: right; }}\n\
         th {{ background: #f4f4f4; }}\n\
         .note {{ color: #555; }}\n\
         pre {{ white-space: pre-wrap; background: #f7f7f7; padding: 0.5em; }}\n\
         </style>\n</head>\n<body>\n<h1>{t}</h1>\n{body}</body>\n</html>\n",
        t = xml_escape(title)
    )
}

/// An HTML table: `header` cells and rows of cells (each escaped).
pub fn html_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table>\n<tr>");
    for h in header {
        let _ = write!(s, "<th>{}</th>", xml_escape(h));
    }
    s.push_str("</tr>\n");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            let _ = write!(s, "<td>{}</td>", xml_escape(c));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tags open and close in order (a minimal well-formedness check of our own output).
    pub(crate) fn balanced(doc: &str) -> bool {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = doc;
        while let Some(i) = rest.find('<') {
            rest = &rest[i + 1..];
            let end = rest.find('>').unwrap();
            let tag = &rest[..end];
            rest = &rest[end + 1..];
            if tag.starts_with('!') || tag.starts_with('?') || tag.ends_with('/') {
                continue;
            }
            let name = tag.split_whitespace().next().unwrap_or("");
            if let Some(closing) = name.strip_prefix('/') {
                if stack.pop().as_deref() != Some(closing) {
                    return false;
                }
            } else if !["meta", "br"].contains(&name) {
                stack.push(name.to_string());
            }
        }
        stack.is_empty()
    }

    #[test]
    fn heat_map_has_a_cell_per_value_labels_and_escapes() {
        let labels: Vec<String> = ["a", "<b>", "c"].iter().map(|s| s.to_string()).collect();
        let values = [1.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.2, 0.3, 0.5];
        let svg = heat_map_svg(&HeatMap {
            title: "t & u",
            values: &values,
            row_labels: &labels,
            col_labels: &labels,
            row_axis: "query",
            col_axis: "key",
            value_name: "weight",
            vmax: 1.0,
            masked: &|i, j| j > i,
        });
        assert!(balanced(&svg), "{svg}");
        // 6 visible cells with their value on hover, 3 masked without
        assert_eq!(svg.matches("<title>query").count(), 6);
        assert_eq!(svg.matches(MASKED).count(), 3);
        assert!(svg.contains("t &amp; u") && svg.contains("&lt;b&gt;") && !svg.contains("<b>"));
        assert!(svg.contains("weight 0.3000"));
    }

    #[test]
    fn colours_run_from_light_to_dark() {
        assert_eq!(colour(0.0), "#f7fbff");
        assert_eq!(colour(1.0), "#08306b");
        assert_eq!(colour(0.5), "#6baed6");
        assert_eq!(colour(f64::NAN), "#f7fbff");
    }

    #[test]
    fn line_plot_log_axes_and_page() {
        let series = [Series {
            label: "fused".into(),
            points: vec![(128.0, 1.0), (256.0, 4.0), (512.0, 16.0)],
            dashed: false,
        }];
        let svg = line_plot_svg(&LinePlot {
            title: "time",
            x_label: "T",
            y_label: "ms",
            series: &series,
            log_x: true,
            log_y: true,
            dots: true,
            x_names: None,
        });
        assert!(balanced(&svg));
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains(">256<") && svg.contains(">512<"));
        let page = html_page("p", &inline_svg(&svg));
        assert!(balanced(&page) && !page.contains("http"));
        assert_eq!(log_ticks(100.0, 1000.0, 10.0), vec![100.0, 1000.0]);
        assert_eq!(fmt_tick(4096.0), "4096");
        assert_eq!(fmt_tick(16384.0), "16384");
        assert_eq!(fmt_tick(200000.0), "200k");
    }

    /// Named positions hover by name; a flat series still gets distinct y ticks.
    #[test]
    fn line_plot_names_positions_and_spreads_a_flat_axis() {
        let series = [Series {
            label: "accuracy".into(),
            points: vec![(0.0, 100.0), (1.0, 100.0)],
            dashed: false,
        }];
        let names = [
            (0.0, "block 0.norm1".to_string()),
            (1.0, "final".to_string()),
        ];
        let svg = line_plot_svg(&LinePlot {
            title: "flat",
            x_label: "layer norm",
            y_label: "%",
            series: &series,
            log_x: false,
            log_y: false,
            dots: true,
            x_names: Some(&names),
        });
        assert!(balanced(&svg));
        assert!(
            svg.contains("<title>accuracy: block 0.norm1, % = 100"),
            "{svg}"
        );
        let labels: Vec<&str> = svg
            .split("text-anchor=\"end\">")
            .skip(1)
            .map(|t| &t[..t.find('<').unwrap()])
            .collect();
        let distinct: std::collections::BTreeSet<&&str> = labels.iter().collect();
        assert!(
            labels.len() >= 3 && distinct.len() == labels.len(),
            "{labels:?}"
        );
    }
}
