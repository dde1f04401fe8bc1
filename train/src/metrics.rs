//! What a run measures at each evaluation, written as CSV and drawn as an SVG loss plot like
//! the book's figure 5.12 (training and validation loss against tokens seen).

use serde::{Deserialize, Serialize};

/// One evaluation point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricRecord {
    pub step: usize,
    pub epoch: usize,
    pub tokens_seen: u64,
    pub train_loss: f32,
    pub val_loss: f32,
    pub lr: f32,
    pub tokens_per_second: f32,
    /// Share of correctly classified examples in the evaluated batches (classification only).
    #[serde(default)]
    pub train_accuracy: Option<f32>,
    #[serde(default)]
    pub val_accuracy: Option<f32>,
}

impl MetricRecord {
    pub fn train_perplexity(&self) -> f32 {
        self.train_loss.exp()
    }
    pub fn val_perplexity(&self) -> f32 {
        self.val_loss.exp()
    }

    /// The console line of this evaluation, in the book's format plus perplexities (or, for
    /// classification, accuracies), learning rate, tokens seen and speed.
    pub fn log_line(&self) -> String {
        let middle = match (self.train_accuracy, self.val_accuracy) {
            (Some(t), Some(v)) => format!("accuracy {:.2}%/{:.2}%", 100.0 * t, 100.0 * v),
            _ => format!(
                "ppl {:.1}/{:.1}",
                self.train_perplexity(),
                self.val_perplexity()
            ),
        };
        format!(
            "Ep {} (Step {:06}): Train loss {:.3}, Val loss {:.3} | {middle} | lr {:.2e} | {} tokens seen | {:.0} tok/s",
            self.epoch,
            self.step,
            self.train_loss,
            self.val_loss,
            self.lr,
            self.tokens_seen,
            self.tokens_per_second
        )
    }
}

/// The records as CSV with a header line.
pub fn to_csv(records: &[MetricRecord]) -> String {
    let mut s = String::from("step,epoch,tokens_seen,train_loss,val_loss,train_perplexity,val_perplexity,lr,tokens_per_second,train_accuracy,val_accuracy\n");
    let acc = |a: Option<f32>| a.map_or(String::new(), |a| format!("{a:.4}"));
    for r in records {
        s.push_str(&format!(
            "{},{},{},{:.6},{:.6},{:.4},{:.4},{:.6e},{:.1},{},{}\n",
            r.step,
            r.epoch,
            r.tokens_seen,
            r.train_loss,
            r.val_loss,
            r.train_perplexity(),
            r.val_perplexity(),
            r.lr,
            r.tokens_per_second,
            acc(r.train_accuracy),
            acc(r.val_accuracy)
        ));
    }
    s
}

/// "Nice" tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten.
fn ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
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
        .take_while(|&v| v <= hi + 1e-9)
        .collect()
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v.abs() >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// One line of a chart: its legend and the value it takes from each record (NaN: no point).
type Series = (&'static str, fn(&MetricRecord) -> f64);

/// An SVG line chart of training and validation loss against tokens seen.
pub fn loss_plot_svg(records: &[MetricRecord], title: &str) -> String {
    line_plot_svg(
        records,
        title,
        "Loss",
        [
            ("Training loss", |r| r.train_loss as f64),
            ("Validation loss", |r| r.val_loss as f64),
        ],
    )
}

/// An SVG line chart of training and validation accuracy (%) against tokens seen
/// (classification fine-tuning; the book's figure 6.17).
pub fn accuracy_plot_svg(records: &[MetricRecord], title: &str) -> String {
    line_plot_svg(
        records,
        title,
        "Accuracy (%)",
        [
            ("Training accuracy", |r| {
                r.train_accuracy.map_or(f64::NAN, |a| 100.0 * a as f64)
            }),
            ("Validation accuracy", |r| {
                r.val_accuracy.map_or(f64::NAN, |a| 100.0 * a as f64)
            }),
        ],
    )
}

/// Two lines (training, validation) against tokens seen.
fn line_plot_svg(
    records: &[MetricRecord],
    title: &str,
    y_label: &str,
    series: [Series; 2],
) -> String {
    let (w, h) = (720.0, 420.0);
    let (left, right, top, bottom) = (70.0, 20.0, 40.0, 55.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let xs: Vec<f64> = records.iter().map(|r| r.tokens_seen as f64).collect();
    let losses = records
        .iter()
        .flat_map(|r| [series[0].1(r), series[1].1(r)])
        .filter(|v| v.is_finite());
    let (mut ymin, mut ymax) = losses.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !ymin.is_finite() {
        (ymin, ymax) = (0.0, 1.0);
    }
    let ymin = (ymin - 0.05 * (ymax - ymin).max(0.1)).max(0.0);
    let ymax = ymax + 0.05 * (ymax - ymin).max(0.1);
    let xmax = xs.iter().cloned().fold(1.0, f64::max);
    let px = |x: f64| left + pw * x / xmax;
    let py = |y: f64| top + ph * (1.0 - (y - ymin) / (ymax - ymin));
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        w / 2.0,
        xml_escape(title)
    );
    for t in ticks(ymin, ymax, 6) {
        let y = py(t);
        s += &format!(
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n",
            left + pw
        );
        s += &format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            left - 6.0,
            y + 4.0,
            fmt_tick(t)
        );
    }
    for t in ticks(0.0, xmax, 6) {
        let x = px(t);
        s += &format!(
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#eee\"/>\n",
            top + ph
        );
        s += &format!(
            "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            top + ph + 18.0,
            fmt_tick(t)
        );
    }
    s += &format!(
        "<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#333\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">Tokens seen</text>\n\
         <text x=\"18\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {})\">{y_label}</text>\n",
        left + pw / 2.0,
        h - 12.0,
        top + ph / 2.0,
        top + ph / 2.0
    );
    for (pick, color, dash) in [
        (0, "#1f77b4", ""),
        (1, "#ff7f0e", " stroke-dasharray=\"6 4\""),
    ] {
        let (label, value) = series[pick];
        let points: Vec<String> = records
            .iter()
            .filter_map(|r| {
                let y = value(r);
                y.is_finite()
                    .then(|| format!("{:.1},{:.1}", px(r.tokens_seen as f64), py(y)))
            })
            .collect();
        s += &format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash} points=\"{}\"/>\n",
            points.join(" ")
        );
        let ly = top + 16.0 + 18.0 * pick as f64;
        s += &format!(
            "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>\
             <text x=\"{}\" y=\"{}\">{label}</text>\n",
            left + pw - 150.0,
            left + pw - 120.0,
            left + pw - 114.0,
            ly + 4.0
        );
    }
    s += "</svg>\n";
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(step: usize, t: f32, v: f32) -> MetricRecord {
        MetricRecord {
            step,
            epoch: 1,
            tokens_seen: step as u64 * 512,
            train_loss: t,
            val_loss: v,
            lr: 4e-4,
            tokens_per_second: 100.0,
            train_accuracy: None,
            val_accuracy: None,
        }
    }

    #[test]
    fn csv_and_svg_contain_the_points() {
        let rs = vec![rec(0, 10.0, 10.1), rec(5, 8.0, 8.5), rec(10, 6.0, 7.0)];
        let csv = to_csv(&rs);
        assert_eq!(csv.lines().count(), 4);
        assert!(csv
            .lines()
            .nth(2)
            .unwrap()
            .starts_with("5,1,2560,8.000000,8.500000"));
        let svg = loss_plot_svg(&rs, "a <test>");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a &lt;test&gt;"));
        assert_eq!(ticks(0.0, 10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
    }
}
