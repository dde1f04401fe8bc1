//! Optimizers: SGD with momentum, and AdamW (Loshchilov & Hutter), both with PyTorch's update
//! rules. Their state is public so checkpoints can save and restore it exactly.
//!
//! An optimizer holds handles to the parameters (cheap clones sharing the model's tensors),
//! reads each one's `.grad()` and updates its values in place. Parameters whose gradient is
//! `None` are skipped, as in PyTorch.

use rayon::prelude::*;

use crate::kernels::parallel::PAR_THRESHOLD;
use crate::kernels::simd::wide;

/// One piece of (weights, first moments, second moments), gradients.
type AdamPieces<'a> = (((&'a mut [f32], &'a mut [f32]), &'a mut [f32]), &'a [f32]);

/// Elements per parallel piece of the AdamW update.
const ADAM_CHUNK: usize = 16 * 1024;
use crate::tensor::Tensor;

/// What every optimizer offers the training loop.
pub trait Optimizer {
    /// One update of every parameter from its current gradient.
    fn step(&mut self) {
        self.step_with_grad_scale(1.0);
    }
    /// One update from every gradient multiplied by `grad_scale`, as if the gradients had
    /// been scaled first (the same bits), without a pass over them to scale them: how the
    /// training loop clips the gradients' norm (book appendix D). PyTorch: the `grad_scale`
    /// of its fused AdamW.
    fn step_with_grad_scale(&mut self, grad_scale: f32);
    /// The parameters being optimized.
    fn params(&self) -> &[Tensor];
    /// The learning rate of the next step.
    fn lr(&self) -> f32;
    /// Sets the learning rate (for schedules).
    fn set_lr(&mut self, lr: f32);
    /// Clears every parameter's gradient.
    fn zero_grad(&self) {
        for p in self.params() {
            p.zero_grad();
        }
    }
}

/// Stochastic gradient descent with optional momentum and (L2) weight decay.
///
/// ```text
/// g ← g + weight_decay·p
/// buf ← momentum·buf + g        (buf = g on the first step)
/// p ← p − lr·buf
/// ```
/// PyTorch: `torch.optim.SGD(params, lr, momentum, weight_decay=…)` (no dampening/nesterov).
pub struct Sgd {
    pub params: Vec<Tensor>,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    /// Momentum buffers, one per parameter (empty until its first step).
    pub velocity: Vec<Vec<f32>>,
}

impl Sgd {
    pub fn new(params: Vec<Tensor>, lr: f32, momentum: f32) -> Sgd {
        let velocity = vec![Vec::new(); params.len()];
        Sgd {
            params,
            lr,
            momentum,
            weight_decay: 0.0,
            velocity,
        }
    }
}

impl Optimizer for Sgd {
    fn step_with_grad_scale(&mut self, grad_scale: f32) {
        let (lr, mu, wd) = (self.lr, self.momentum, self.weight_decay);
        for (p, buf) in self.params.iter().zip(&mut self.velocity) {
            p.with_grad(|g| {
                let Some(g) = g else { return };
                let first = buf.is_empty();
                if first {
                    buf.resize(g.len(), 0.0);
                }
                p.update(|w| {
                    let n = w.len();
                    for ((w, &g), b) in w.iter_mut().zip(&g[..n]).zip(&mut buf[..n]) {
                        let gi = g * grad_scale + wd * *w;
                        *b = if first || mu == 0.0 { gi } else { mu * *b + gi };
                        *w -= lr * *b;
                    }
                });
            });
        }
    }
    fn params(&self) -> &[Tensor] {
        &self.params
    }
    fn lr(&self) -> f32 {
        self.lr
    }
    fn set_lr(&mut self, lr: f32) {
        self.lr = lr;
    }
}

/// Adam with decoupled weight decay (AdamW), with bias correction.
///
/// ```text
/// p ← p − lr·λ·p                              decoupled weight decay
/// m ← β₁·m + (1 − β₁)·g                       first moment
/// v ← β₂·v + (1 − β₂)·g²                      second moment
/// p ← p − lr/(1 − β₁ᵗ) · m / (√v/√(1 − β₂ᵗ) + ε)
/// ```
/// PyTorch: `torch.optim.AdamW(params, lr, betas, eps, weight_decay)`; its defaults are
/// β = (0.9, 0.999), ε = 1e-8, λ = 0.01.
pub struct AdamW {
    pub params: Vec<Tensor>,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Steps taken so far (t in the bias corrections).
    pub t: u64,
    /// First and second moment estimates, one buffer per parameter.
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

impl AdamW {
    /// AdamW with PyTorch's default betas and eps.
    pub fn new(params: Vec<Tensor>, lr: f32, weight_decay: f32) -> AdamW {
        let m = params.iter().map(|p| vec![0.0; p.numel()]).collect();
        let v = params.iter().map(|p| vec![0.0; p.numel()]).collect();
        AdamW {
            params,
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            t: 0,
            m,
            v,
        }
    }
}

/// One AdamW update of `w` in place from the gradient `g·grad_scale`. All slices have the
/// same length.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn adamw_update(
    w: &mut [f32],
    g: &[f32],
    grad_scale: f32,
    m: &mut [f32],
    v: &mut [f32],
    lr: f32,
    (b1, b2): (f32, f32),
    eps: f32,
    wd: f32,
    t: u64,
) {
    // Bias corrections in f64, as PyTorch computes them (in Python floats).
    let bc1 = 1.0 - (b1 as f64).powi(t as i32);
    let bc2_sqrt = ((1.0 - (b2 as f64).powi(t as i32)).sqrt()) as f32;
    let step_size = (lr as f64 / bc1) as f32;
    let decay = (1.0 - lr as f64 * wd as f64) as f32;
    let w1 = 1.0 - b1;
    let n = w.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m).zip(v) {
        // the scaled gradient (exact when grad_scale is 1)
        let g = g * grad_scale;
        // PyTorch's exp_avg.lerp_(grad, 1 − β₁): m + (1 − β₁)(g − m), the same value as
        // β₁m + (1 − β₁)g, written as PyTorch rounds it.
        *m += w1 * (g - *m);
        *v = b2 * *v + (1.0 - b2) * g * g;
        let denom = v.sqrt() / bc2_sqrt + eps;
        *w = *w * decay - step_size * *m / denom;
    }
}

impl Optimizer for AdamW {
    fn step_with_grad_scale(&mut self, grad_scale: f32) {
        self.t += 1;
        let (lr, betas, eps, wd, t) = (
            self.lr,
            (self.beta1, self.beta2),
            self.eps,
            self.weight_decay,
            self.t,
        );
        for ((p, m), v) in self.params.iter().zip(&mut self.m).zip(&mut self.v) {
            p.with_grad(|g| {
                let Some(g) = g else { return };
                p.update(|w| {
                    // 16 lanes wide on AVX-512 CPUs: the square root and the division are
                    // the costly part, and IEEE-exact at any width.
                    let update = |(((w, m), v), g): AdamPieces| {
                        wide(
                            #[inline(always)]
                            || adamw_update(w, g, grad_scale, m, v, lr, betas, eps, wd, t),
                        )
                    };
                    if w.len() < PAR_THRESHOLD {
                        update((((w, m.as_mut_slice()), v.as_mut_slice()), g));
                    } else {
                        // Fixed-size pieces: the same arithmetic per element for any thread count.
                        w.par_chunks_mut(ADAM_CHUNK)
                            .zip(m.par_chunks_mut(ADAM_CHUNK))
                            .zip(v.par_chunks_mut(ADAM_CHUNK))
                            .zip(g.par_chunks(ADAM_CHUNK))
                            .for_each(update);
                    }
                });
            });
        }
    }
    fn params(&self) -> &[Tensor] {
        &self.params
    }
    fn lr(&self) -> f32 {
        self.lr
    }
    fn set_lr(&mut self, lr: f32) {
        self.lr = lr;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_grad(p: &Tensor, g: &[f32]) {
        p.zero_grad();
        p.accumulate_grad(g.to_vec());
    }

    #[test]
    fn adamw_matches_pytorch_by_hand() {
        // p = 1, g = 0.5, lr = 0.1, λ = 0.01:
        // step 1: p = 1·(1 − 0.001) − 0.1·0.5/(0.5 + 1e-8) = 0.899
        // step 2: bias-corrected moments are again 0.5 and 0.25 → p = 0.899·0.999 − 0.1 = 0.798101
        let p = Tensor::from_vec(vec![1.0], &[1]).requires_grad();
        let mut opt = AdamW::new(vec![p.clone()], 0.1, 0.01);
        set_grad(&p, &[0.5]);
        opt.step();
        assert!((p.item() - 0.899).abs() < 1e-6, "{}", p.item());
        opt.step();
        assert!((p.item() - 0.798_101).abs() < 1e-6, "{}", p.item());
        assert_eq!(opt.t, 2);
    }

    #[test]
    fn a_grad_scale_equals_scaling_the_gradients_first() {
        // one parameter above the parallel threshold, one below; three steps of each optimizer
        let mut rng = crate::Rng::seed(5);
        let shapes = [[300, 200], [3, 5]];
        let init: Vec<Vec<f32>> = shapes
            .iter()
            .map(|s| (0..s[0] * s[1]).map(|_| rng.normal()).collect())
            .collect();
        let grads: Vec<Vec<Vec<f32>>> = (0..3)
            .map(|_| {
                init.iter()
                    .map(|w| w.iter().map(|_| 9.0 * rng.normal()).collect())
                    .collect()
            })
            .collect();
        let params = || -> Vec<Tensor> {
            init.iter()
                .zip(&shapes)
                .map(|(w, s)| Tensor::from_vec(w.clone(), s).requires_grad())
                .collect()
        };
        let scale = 0.37;
        let run = |opt: &mut dyn Optimizer, fold_the_scale: bool| -> Vec<Vec<f32>> {
            for step in &grads {
                for (p, g) in opt.params().to_vec().iter().zip(step) {
                    if fold_the_scale {
                        set_grad(p, g);
                    } else {
                        set_grad(p, &g.iter().map(|x| x * scale).collect::<Vec<_>>());
                    }
                }
                if fold_the_scale {
                    opt.step_with_grad_scale(scale);
                } else {
                    opt.step();
                }
            }
            opt.params().iter().map(|p| p.to_vec()).collect()
        };
        let bits =
            |ws: Vec<Vec<f32>>| -> Vec<u32> { ws.concat().iter().map(|x| x.to_bits()).collect() };
        let adam = |fold| bits(run(&mut AdamW::new(params(), 1e-3, 0.1), fold));
        assert_eq!(adam(true), adam(false));
        let sgd = |fold| {
            let mut opt = Sgd::new(params(), 1e-2, 0.9);
            opt.weight_decay = 0.01;
            bits(run(&mut opt, fold))
        };
        assert_eq!(sgd(true), sgd(false));
    }

    #[test]
    fn sgd_momentum_by_hand() {
        // buf1 = g = 2 → p = 1 − 0.1·2 = 0.8; buf2 = 0.9·2 + 2 = 3.8 → p = 0.8 − 0.38 = 0.42
        let p = Tensor::from_vec(vec![1.0], &[1]).requires_grad();
        let mut opt = Sgd::new(vec![p.clone()], 0.1, 0.9);
        set_grad(&p, &[2.0]);
        opt.step();
        assert!((p.item() - 0.8).abs() < 1e-6);
        opt.step();
        assert!((p.item() - 0.42).abs() < 1e-6);
    }

    #[test]
    fn adamw_minimises_a_quadratic_and_skips_params_without_grad() {
        let target = Tensor::from_vec(vec![3.0, -2.0, 0.5], &[3]);
        let x = Tensor::zeros(&[3]).requires_grad();
        let unused = Tensor::ones(&[2]).requires_grad();
        let mut opt = AdamW::new(vec![x.clone(), unused.clone()], 0.1, 0.0);
        for _ in 0..500 {
            opt.zero_grad();
            let d = x.sub(&target);
            d.mul(&d).sum_all().backward();
            opt.step();
        }
        for (a, b) in x.to_vec().iter().zip(target.to_vec()) {
            assert!((a - b).abs() < 1e-2, "{a} vs {b}");
        }
        assert_eq!(unused.to_vec(), [1.0, 1.0]);
    }
}
