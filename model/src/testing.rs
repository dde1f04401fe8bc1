//! Gradient checks for layers and whole models, and small comparison helpers.
//!
//! Ops are checked by `tensor::testing::gradcheck`. A layer's parameters live inside the layer,
//! so [`check_parameter_gradients`] perturbs them in place: for a sample of entries of every
//! parameter, it compares the gradient from backward with `(L(p + ε) − L(p − ε)) / 2ε`,
//! where `L = Σ r ⊙ forward()` with a fixed random `r`.

use tensor::testing::{gradcheck_with, GradcheckOptions};
use tensor::{no_grad, Rng, Tensor};

use crate::config::GptConfig;
use crate::gpt::GptModel;
use crate::module::{Context, Module};

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

/// The angle θ between positions in [`model_with_known_heads`]'s position embeddings.
pub const KNOWN_HEADS_THETA: f64 = 0.5;
/// The query scale β of [`model_with_known_heads`].
pub const KNOWN_HEADS_BETA: f32 = 40.0;

/// One layer, three heads of size 2, width 6, with weights chosen by hand. The token
/// embeddings are 0 and position p is embedded as (cos θp, sin θp, −cos θp, −sin θp, 0, 0):
/// mean 0 and variance 1/3 at every position, so `norm1` turns it into √3 times itself.
/// Every head's keys are the first two normalised channels, k_j = √3(cos θj, sin θj); the
/// queries differ:
/// - head 0: q_i = β·R(−θ)·k_i = β√3(cos θ(i−1), sin θ(i−1)), so q_i·k_j = 3β cos θ(i−1−j):
///   largest at j = i − 1, a previous-token head;
/// - head 1: q_i = (β, 0) from the bias alone, so q_i·k_j = √3β cos θj: largest at j = 0,
///   a first-token sink;
/// - head 2: q_i = β·k_i, so q_i·k_j = 3β cos θ(i−j): largest at j = i, the diagonal.
pub fn model_with_known_heads() -> GptModel {
    let cfg = GptConfig {
        vocab_size: 5,
        context_length: 8,
        emb_dim: 6,
        n_heads: 3,
        n_layers: 1,
        drop_rate: 0.0,
        qkv_bias: true,
        tie_weights: false,
    };
    let model = GptModel::new(&cfg, &Context::new(1)).unwrap();
    model.tok_emb.weight.copy_from_slice(&[0.0; 30]);
    let pos: Vec<f32> = (0..8)
        .flat_map(|p| {
            let (s, c) = (KNOWN_HEADS_THETA * p as f64).sin_cos();
            [c, s, -c, -s, 0.0, 0.0].map(|v| v as f32)
        })
        .collect();
    model.pos_emb.weight.copy_from_slice(&pos);
    let att = &model.trf_blocks[0].att;
    // weights are [out, in]: row o of W maps the input to output channel o
    let (s, c) = (
        KNOWN_HEADS_THETA.sin() as f32,
        KNOWN_HEADS_THETA.cos() as f32,
    );
    let mut wq = [0.0f32; 36];
    // head 0 (out 0, 1) = β·R(−θ)·(in 0, in 1)
    wq[0] = KNOWN_HEADS_BETA * c;
    wq[1] = KNOWN_HEADS_BETA * s;
    wq[6] = -KNOWN_HEADS_BETA * s;
    wq[7] = KNOWN_HEADS_BETA * c;
    // head 2 (out 4, 5) = β·(in 0, in 1)
    wq[4 * 6] = KNOWN_HEADS_BETA;
    wq[5 * 6 + 1] = KNOWN_HEADS_BETA;
    att.w_query.weight.copy_from_slice(&wq);
    let mut bq = [0.0f32; 6];
    bq[2] = KNOWN_HEADS_BETA; // head 1: q = (β, 0)
    att.w_query.bias.as_ref().unwrap().copy_from_slice(&bq);
    let mut wk = [0.0f32; 36];
    for h in 0..3 {
        wk[(2 * h) * 6] = 1.0;
        wk[(2 * h + 1) * 6 + 1] = 1.0;
    }
    att.w_key.weight.copy_from_slice(&wk);
    att.w_key.bias.as_ref().unwrap().copy_from_slice(&[0.0; 6]);
    model
}
