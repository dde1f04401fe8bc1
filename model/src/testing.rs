//! Gradient checks for layers and whole models, and small comparison helpers.
//!
//! Ops are checked by `tensor::testing::gradcheck`. A layer's parameters live inside the layer,
//! so [`check_parameter_gradients`] perturbs them in place: for a sample of entries of every
//! parameter, it compares the gradient from backward with `(L(p + ε) − L(p − ε)) / 2ε`,
//! where `L = Σ r ⊙ forward()` with a fixed random `r`.

use tensor::testing::{gradcheck_with, GradcheckOptions};
use tensor::{no_grad, Rng, Tensor};

use crate::module::Module;

/// Asserts two tensors have the same shape and values within `tol`.
#[track_caller]
pub fn assert_close(a: &Tensor, b: &Tensor, tol: f32) {
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    let (av, bv) = (a.to_vec(), b.to_vec());
    let worst = av
        .iter()
        .zip(&bv)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= tol, "max difference {worst} > {tol}");
}

/// Checks the gradients of `forward()` with respect to every parameter of `layer` (a sample of
/// `opts.max_elements` entries each). `forward` must be deterministic (dropout off or re-seeded).
pub fn check_parameter_gradients(
    layer: &dyn Module,
    forward: impl Fn() -> Tensor,
    rng: &mut Rng,
    opts: GradcheckOptions,
) -> Result<(), String> {
    let params = layer.named_parameters();
    params.iter().for_each(|(_, p)| p.zero_grad());
    let out = forward();
    let r: Vec<f32> = (0..out.numel()).map(|_| rng.normal()).collect();
    out.backward_with(&r);
    drop(out);
    let loss = || -> f64 {
        let _g = no_grad();
        let y = forward().values();
        y.iter().zip(&r).map(|(&a, &b)| a as f64 * b as f64).sum()
    };
    for (name, p) in &params {
        let analytic = p.grad().map(|g| g.to_vec()).unwrap_or(vec![0.0; p.numel()]);
        let mut picks: Vec<usize> = (0..p.numel()).collect();
        rng.shuffle(&mut picks);
        picks.truncate(opts.max_elements);
        for j in picks {
            let orig = p.to_vec()[j];
            let at = |v: f32| {
                p.update(|w| w[j] = v);
                loss()
            };
            let (plus, minus) = (at(orig + opts.eps), at(orig - opts.eps));
            p.update(|w| w[j] = orig);
            let numeric = ((plus - minus) / (2.0 * opts.eps as f64)) as f32;
            let a = analytic[j];
            if (a - numeric).abs() > opts.atol + opts.rtol * a.abs().max(numeric.abs()) {
                return Err(format!("{name}[{j}]: analytic {a}, numeric {numeric}"));
            }
        }
    }
    params.iter().for_each(|(_, p)| p.zero_grad());
    Ok(())
}

/// Gradient-checks a layer with respect to its input and all its parameters.
#[track_caller]
pub fn assert_layer_gradients(layer: &dyn Module, x: &Tensor, forward: impl Fn(&Tensor) -> Tensor) {
    let mut rng = Rng::seed(99);
    let opts = GradcheckOptions {
        max_elements: 24,
        ..Default::default()
    };
    gradcheck_with(&[x], |t| forward(&t[0]), &mut rng, opts)
        .unwrap_or_else(|e| panic!("input: {e}"));
    check_parameter_gradients(layer, || forward(x), &mut rng, opts)
        .unwrap_or_else(|e| panic!("parameter {e}"));
}
