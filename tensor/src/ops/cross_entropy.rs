//! Fused softmax + cross-entropy (book section 5.1.2): the mean over rows of
//! `−ln softmax(logits)[target]`, in one pass and without forming the softmax.
//!
//! For a row of logits x with target t:
//! ```text
//! lse  = m + ln Σⱼ e^(xⱼ − m)       (m = max x, for stability: log-sum-exp)
//! loss = lse − x_t
//! dxⱼ  = (e^(xⱼ − lse) − [j = t]) · dL/N          (softmax minus one-hot, over N rows)
//! ```
//! Saved for backward: one `lse` per row, so no second vocabulary-sized tensor ever exists.
//!
//! **Ignored rows.** A row whose target is [`IGNORE_INDEX`] (PyTorch's `ignore_index=-100`:
//! padding after the end of a text, or an instruction's prompt that is not to be learned,
//! book chapter 7) contributes neither loss nor gradient, and the mean is over the rows that
//! count: N above is their number. If no row counts the loss is 0 with no gradient (PyTorch
//! gives NaN there; a batch with nothing to learn should not stop a training run).
//! The composed twin is `−mean(gather(log_softmax(x), t))` (`model::loss::cross_entropy_composed`),
//! and a test checks they agree. PyTorch: `F.cross_entropy(logits.flatten(0, -2), targets)`.

use crate::autograd::{Backward, GradStore};
use crate::kernels::math;
use crate::kernels::parallel::{for_each_row_with_cost, serial_max};
use crate::tensor::Tensor;

/// The target of a row that does not count (PyTorch's `-100`).
pub const IGNORE_INDEX: usize = usize::MAX;

/// Per-row log-sum-exp and loss. Shapes: logits (N, V), targets (N,), lse/loss (N,)
fn cross_entropy_forward(
    lse: &mut [f32],
    losses: &mut [f32],
    logits: &[f32],
    targets: &[usize],
    v: usize,
) {
    for_each_row_with_cost(
        lse,
        1,
        v,
        #[inline(always)]
        |r, out| {
            let row = &logits[r * v..(r + 1) * v];
            let m = serial_max(row);
            // exps in 16 running sums: vectorises (one AVX-512 register), fixed order
            let mut acc = [0.0f32; 16];
            let mut chunks = row.chunks_exact(16);
            for c in &mut chunks {
                for k in 0..16 {
                    acc[k] += math::exp(c[k] - m);
                }
            }
            let tail: f32 = chunks.remainder().iter().map(|&x| math::exp(x - m)).sum();
            out[0] = m + (acc.iter().sum::<f32>() + tail).ln();
        },
    );
    for (r, loss) in losses.iter_mut().enumerate() {
        *loss = match targets[r] {
            IGNORE_INDEX => 0.0,
            t => lse[r] - logits[r * v + t],
        };
    }
}

/// Row r of the gradient: `d[j] += (softmax[r, j] − [j = t_r]) · scale`, if the row counts.
#[inline(always)]
fn add_gradient_row(d: &mut [f32], row: &[f32], lse: f32, target: usize, scale: f32) {
    if target == IGNORE_INDEX {
        return;
    }
    for (dj, &x) in d.iter_mut().zip(row) {
        *dj += math::exp(x - lse) * scale;
    }
    d[target] -= scale;
}

struct CrossEntropyNode {
    lse: Vec<f32>,
    targets: Vec<usize>,
    /// Rows that count (targets other than IGNORE_INDEX).
    counted: usize,
}

impl Backward for CrossEntropyNode {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &[f32], grads: &mut GradStore) {
        let x = &inputs[0];
        let v = x.size(-1);
        if self.counted == 0 {
            return;
        }
        let scale = dout[0] / self.counted as f32;
        let xv = x.values();
        let (lse, targets) = (&self.lse, &self.targets);
        // a first gradient fills a new buffer: for GPT-2's vocabulary no 412 MB of zeros (per
        // 2,048 rows) is written first and read back
        grads.add_by_rows(
            x,
            v,
            #[inline(always)]
            |r, d| add_gradient_row(d, &xv[r * v..(r + 1) * v], lse[r], targets[r], scale),
        );
    }
}

impl Tensor {
    /// Mean cross-entropy of logits `[..., V]` against one target id per row (`targets.len()`
    /// = number of rows); rows whose target is [`IGNORE_INDEX`] do not count. Returns a 0-d
    /// tensor. PyTorch: `F.cross_entropy(logits.flatten(0, -2), targets, ignore_index=-100)`.
    #[track_caller]
    pub fn cross_entropy(&self, targets: &[usize]) -> Tensor {
        let v = self.size(-1);
        let rows = self.numel() / v.max(1);
        assert!(
            targets.len() == rows && rows > 0,
            "cross_entropy: {} targets for {rows} rows of logits {:?}",
            targets.len(),
            self.shape()
        );
        if let Some(&bad) = targets.iter().find(|&&t| t >= v && t != IGNORE_INDEX) {
            panic!("cross_entropy: target {bad} out of range for {v} classes");
        }
        let xv = self.values();
        let mut lse = vec![0.0; rows];
        let mut losses = vec![0.0; rows];
        cross_entropy_forward(&mut lse, &mut losses, &xv, targets, v);
        let counted = targets.iter().filter(|&&t| t != IGNORE_INDEX).count();
        let mean = losses.iter().map(|&l| l as f64).sum::<f64>() / counted.max(1) as f64;
        let targets = targets.to_vec();
        Tensor::from_op(vec![mean as f32], &[], &[self], || CrossEntropyNode {
            lse,
            targets,
            counted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::IGNORE_INDEX;
    use crate::testing::gradcheck;
    use crate::{Rng, Tensor};

    #[test]
    fn uniform_logits_give_ln_v() {
        // all-equal logits: softmax is 1/V everywhere, loss = ln V
        let x = Tensor::zeros(&[3, 50]);
        assert!((x.cross_entropy(&[0, 7, 49]).item() - 50f32.ln()).abs() < 1e-5);
    }

    #[test]
    fn fused_equals_composed() {
        let mut rng = Rng::seed(16);
        let x = Tensor::randn(&[2, 3, 11], &mut rng)
            .mul_scalar(3.0)
            .requires_grad();
        let t = [1, 0, 10, 5, 5, 2];
        let a = x.cross_entropy(&t);
        a.backward();
        let ga = x.grad().unwrap().to_vec();
        x.zero_grad();
        let b = x.log_softmax(-1).gather_last(&t).mean_all().neg();
        b.backward();
        assert!((a.item() - b.item()).abs() < 1e-5);
        let gb = x.grad().unwrap().to_vec();
        assert!(ga.iter().zip(&gb).all(|(p, q)| (p - q).abs() < 1e-6));
    }

    #[test]
    fn new_gradient_equals_one_added_into_zeros() {
        // the first gradient fills a new buffer, a second one is added into it: twice the
        // loss has exactly twice the gradient (rows on several threads, one ignored)
        let (rows, v) = (40, 5_000);
        let mut rng = Rng::seed(3);
        let x = Tensor::randn(&[rows, v], &mut rng)
            .mul_scalar(4.0)
            .requires_grad();
        let mut targets: Vec<usize> = (0..rows).map(|r| r * 123 % v).collect();
        targets[17] = IGNORE_INDEX;
        x.cross_entropy(&targets).backward();
        let once = x.grad().unwrap().to_vec();
        x.zero_grad();
        let loss = x.cross_entropy(&targets);
        loss.add(&x.cross_entropy(&targets)).backward();
        let twice = x.grad().unwrap().to_vec();
        assert!(once.iter().zip(&twice).all(|(a, b)| 2.0 * a == *b));
        assert!(once[17 * v..18 * v].iter().all(|&g| g == 0.0));
    }

    #[test]
    fn ignored_rows_count_for_nothing() {
        // the book's demonstration (section 7.3): logits [[-1, 1], [-0.5, 1.5]] with targets
        // [0, 1] give 1.1269; a third row makes it 0.7936; ignoring that row gives 1.1269 again
        let two = Tensor::from_vec(vec![-1.0, 1.0, -0.5, 1.5], &[2, 2]);
        assert!((two.cross_entropy(&[0, 1]).item() - 1.1269).abs() < 1e-4);
        let three =
            Tensor::from_vec(vec![-1.0, 1.0, -0.5, 1.5, -0.5, 1.5], &[3, 2]).requires_grad();
        assert!((three.cross_entropy(&[0, 1, 1]).item() - 0.7936).abs() < 1e-4);
        let loss = three.cross_entropy(&[0, 1, IGNORE_INDEX]);
        assert!((loss.item() - 1.1269).abs() < 1e-4);
        loss.backward();
        let g = three.grad().unwrap().to_vec();
        assert_eq!(&g[4..], &[0.0, 0.0], "an ignored row gets no gradient");
        // and equals the loss of the two rows alone, gradient included
        let alone = Tensor::from_vec(vec![-1.0, 1.0, -0.5, 1.5], &[2, 2]).requires_grad();
        alone.cross_entropy(&[0, 1]).backward();
        assert_eq!(&g[..4], &alone.grad().unwrap().to_vec()[..]);
        // nothing counts: zero, no gradient
        let none = Tensor::zeros(&[2, 3]).requires_grad();
        let l = none.cross_entropy(&[IGNORE_INDEX, IGNORE_INDEX]);
        assert_eq!(l.item(), 0.0);
        l.backward();
        assert!(none
            .grad()
            .is_none_or(|g| g.to_vec().iter().all(|&x| x == 0.0)));
    }

    #[test]
    fn gradcheck_with_ignored_rows() {
        let mut rng = Rng::seed(18);
        let x = Tensor::randn(&[5, 7], &mut rng);
        gradcheck(
            &[&x],
            |t| t[0].cross_entropy(&[3, IGNORE_INDEX, 0, IGNORE_INDEX, 6]),
            &mut rng,
        )
        .unwrap();
    }

    #[test]
    fn gradcheck_cross_entropy() {
        let mut rng = Rng::seed(17);
        let x = Tensor::randn(&[4, 9], &mut rng);
        gradcheck(&[&x], |t| t[0].cross_entropy(&[8, 0, 3, 3]), &mut rng).unwrap();
    }
}
