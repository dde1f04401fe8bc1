//! The training objective (book section 5.1): cross-entropy of the next-token predictions,
//! and perplexity.
//!
//! For every position the model outputs V logits; the target is the id of the token that
//! really comes next. The loss is the average over positions of `−ln p(target)`, where `p` is
//! the softmax of the logits. Perplexity `e^loss` reads as "the model is as unsure as if it
//! chose uniformly among this many tokens" (about V for an untrained model).

pub use tensor::ops::cross_entropy::IGNORE_INDEX;
use tensor::Tensor;

use crate::gpt::GptModel;

/// Mean cross-entropy of `logits` `[B, T, V]` against `targets` (`B·T` ids), fused and stable
/// (log-sum-exp; the softmax is never materialised). PyTorch:
/// `F.cross_entropy(logits.flatten(0, 1), targets.flatten())`.
#[track_caller]
pub fn cross_entropy(logits: &Tensor, targets: &[usize]) -> Tensor {
    logits.cross_entropy(targets)
}

/// The book's step-by-step version (5.1.2): softmax → probabilities of the targets → log →
/// mean → negate. Built from `log_softmax` (log of softmax, stable) and `gather_last`. Rows
/// whose target is [`IGNORE_INDEX`] (chapter 7) are masked out of the mean.
#[track_caller]
pub fn cross_entropy_composed(logits: &Tensor, targets: &[usize]) -> Tensor {
    let log_probas = logits.log_softmax(-1);
    if !targets.contains(&IGNORE_INDEX) {
        let target_log_probas = log_probas.gather_last(targets);
        return target_log_probas.mean_all().neg();
    }
    // gather any valid id for the ignored rows, then weigh them by 0
    let gathered: Vec<usize> = targets
        .iter()
        .map(|&t| if t == IGNORE_INDEX { 0 } else { t })
        .collect();
    let counted = targets
        .iter()
        .filter(|&&t| t != IGNORE_INDEX)
        .count()
        .max(1);
    let weights: Vec<f32> = targets
        .iter()
        .map(|&t| {
            if t == IGNORE_INDEX {
                0.0
            } else {
                1.0 / counted as f32
            }
        })
        .collect();
    let picked = log_probas.gather_last(&gathered);
    let w = Tensor::from_vec(weights, picked.shape());
    (&picked * &w).sum_all().neg()
}

/// `e^loss`.
pub fn perplexity(loss: f32) -> f32 {
    loss.exp()
}

/// The loss of one batch (the book's `calc_loss_batch`): inputs and targets are `B·T` ids each,
/// targets being the inputs shifted by one token.
#[track_caller]
pub fn batch_loss(model: &GptModel, inputs: &[usize], targets: &[usize], batch: usize) -> Tensor {
    cross_entropy(&model.forward(inputs, batch), targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::assert_close;
    use tensor::Rng;

    #[test]
    fn fused_and_composed_agree() {
        check_agreement(&[0, 6, 3, 3, 1, 2]);
    }

    #[test]
    fn fused_and_composed_agree_with_ignored_targets() {
        check_agreement(&[0, IGNORE_INDEX, 3, IGNORE_INDEX, 1, 2]);
    }

    fn check_agreement(t: &[usize]) {
        let logits = Tensor::randn(&[2, 3, 7], &mut Rng::seed(0))
            .mul_scalar(4.0)
            .requires_grad();
        let a = cross_entropy(&logits, t);
        a.backward();
        let ga = logits.grad().unwrap();
        logits.zero_grad();
        let b = cross_entropy_composed(&logits, t);
        b.backward();
        assert_close(&a, &b, 1e-5);
        assert_close(&ga, &logits.grad().unwrap(), 1e-6);
    }

    #[test]
    fn untrained_perplexity_is_about_the_vocabulary() {
        // equal logits: loss = ln V, perplexity = V
        let loss = cross_entropy(&Tensor::zeros(&[1, 4, 50257]), &[0, 1, 2, 3]).item();
        assert!((perplexity(loss) - 50257.0).abs() < 5.0);
    }
}
