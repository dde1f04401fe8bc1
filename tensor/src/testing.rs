//! The gradient checker every op and layer test uses.
//!
//! It compares the gradients backward computes (*analytic*) with central finite differences
//! (*numeric*):
//! ```text
//! ∂L/∂xⱼ ≈ (L(x + ε·eⱼ) − L(x − ε·eⱼ)) / 2ε
//! ```
//! The function under test may return any shape; the checker turns it into a scalar with a
//! random weighting `L = Σ r ⊙ f(x)` (r ~ N(0, 1)), so the upstream gradient is not all ones
//! (an all-ones gradient hides bugs that mix up elements). The loss is accumulated in f64 so
//! rounding in the sum does not swamp the difference quotient.

use approx::relative_eq;

use crate::autograd::no_grad;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Tolerances and effort of a gradient check.
#[derive(Clone, Copy, Debug)]
pub struct GradcheckOptions {
    /// Finite-difference step.
    pub eps: f32,
    /// Absolute tolerance: analytic and numeric may differ by `atol + rtol·max(|a|, |n|)`.
    pub atol: f32,
    /// Relative tolerance.
    pub rtol: f32,
    /// At most this many elements of each input are checked (a random sample beyond that).
    pub max_elements: usize,
}

impl Default for GradcheckOptions {
    /// ε = 1e-3, atol = 5e-3, rtol = 1e-2, up to 64 elements per input: right for f32 ops on
    /// inputs of size ~1.
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-3,
            atol: 5e-3,
            rtol: 1e-2,
            max_elements: 64,
        }
    }
}

/// [`gradcheck_with`] with the default options.
pub fn gradcheck(
    inputs: &[&Tensor],
    f: impl Fn(&[Tensor]) -> Tensor,
    rng: &mut Rng,
) -> Result<(), String> {
    gradcheck_with(inputs, f, rng, GradcheckOptions::default())
}

/// Checks the gradient of `f` with respect to every input. `f` must be deterministic (re-seed
/// any randomness inside it). Returns a message naming the input, element and both values on
/// the first mismatch.
pub fn gradcheck_with(
    inputs: &[&Tensor],
    f: impl Fn(&[Tensor]) -> Tensor,
    rng: &mut Rng,
    opts: GradcheckOptions,
) -> Result<(), String> {
    // Analytic gradients through backward, with a random upstream gradient r.
    let leaves: Vec<Tensor> = inputs.iter().map(|x| x.detach().requires_grad()).collect();
    let out = f(&leaves);
    let r: Vec<f32> = (0..out.numel()).map(|_| rng.normal()).collect();
    if out.is_requires_grad() {
        out.backward_with(&r);
    }
    drop(out);

    let loss = |xs: &[Tensor]| -> f64 {
        let _g = no_grad();
        let y = f(xs).values();
        y.iter().zip(&r).map(|(&a, &b)| a as f64 * b as f64).sum()
    };

    for (i, leaf) in leaves.iter().enumerate() {
        let analytic = leaf
            .grad()
            .map(|g| g.to_vec())
            .unwrap_or(vec![0.0; leaf.numel()]);
        let base = leaf.to_vec();
        let n = base.len();
        let mut picks: Vec<usize> = (0..n).collect();
        if n > opts.max_elements {
            rng.shuffle(&mut picks);
            picks.truncate(opts.max_elements);
        }
        for j in picks {
            let at = |delta: f32| {
                let mut v = base.clone();
                v[j] += delta;
                let mut xs: Vec<Tensor> = leaves.iter().map(|l| l.detach()).collect();
                xs[i] = Tensor::from_vec(v, leaf.shape());
                loss(&xs)
            };
            let numeric = ((at(opts.eps) - at(-opts.eps)) / (2.0 * opts.eps as f64)) as f32;
            let a = analytic[j];
            let ok = (a - numeric).abs() <= opts.atol
                || relative_eq!(a, numeric, epsilon = opts.atol, max_relative = opts.rtol);
            if !ok {
                return Err(format!(
                    "gradient mismatch for input {i} (shape {:?}) at element {j}: analytic {a}, numeric {numeric}",
                    leaf.shape()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catches_a_wrong_gradient() {
        // detach inside f hides part of the dependence: the analytic gradient of x·x.detach()
        // is x, but the true derivative of x² is 2x. The checker must notice.
        let mut rng = Rng::seed(0);
        let x = Tensor::from_vec(vec![1.0, 2.0], &[2]);
        let err = gradcheck(&[&x], |t| t[0].mul(&t[0].detach()), &mut rng).unwrap_err();
        assert!(err.contains("gradient mismatch"), "{err}");
    }
}
