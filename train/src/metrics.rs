//! What a run measures at each evaluation, written as CSV and drawn as an SVG loss plot like
//! the book's figure 5.12 (training and validation loss against tokens seen).

use serde::{Deserialize, Serialize};

use crate::figures;

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

/// An SVG line chart of training and validation accuracy (%) at each evaluation
/// (`--eval-freq`) against tokens seen (classification fine-tuning; the book's figure 6.17
/// plots the same accuracies once per epoch).
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

/// Two lines (training, validation) against tokens seen ([`crate::figures::line_plot_svg`]).
fn line_plot_svg(
    records: &[MetricRecord],
    title: &str,
    y_label: &str,
    series: [Series; 2],
) -> String {
    let lines: Vec<figures::Series> = series
        .iter()
        .enumerate()
        .map(|(k, (label, value))| figures::Series {
            label: label.to_string(),
            points: records
                .iter()
                .map(|r| (r.tokens_seen as f64, value(r)))
                .collect(),
            dashed: k == 1,
        })
        .collect();
    figures::line_plot_svg(&figures::LinePlot {
        title,
        x_label: "Tokens seen",
        y_label,
        series: &lines,
        log_x: false,
        log_y: false,
        dots: records.len() <= 200,
        x_names: None,
    })
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
        assert_eq!(
            figures::ticks(0.0, 10.0, 5),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
    }
}
