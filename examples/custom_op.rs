//! Adding a differentiable op from outside the engine: softplus.
//!
//! `cargo run --example custom_op` prints a value and its gradient; `cargo test --example
//! custom_op` (also part of plain `cargo test`) checks the backward rule against finite
//! differences, as every built-in op is checked.
//!
//! ```text
//! softplus(x) = ln(1 + eˣ)
//! softplus'(x) = eˣ / (1 + eˣ) = sigmoid(x)
//! ```
//! An op is two things: the forward values, and a [`Backward`] rule that receives the gradient
//! of the loss with respect to the op's output (`dout`) and *adds* each input's gradient into
//! the [`GradStore`]. [`Tensor::from_op`] joins them; it records the rule only when some input
//! requires a gradient, so inference pays nothing.

use tensor::autograd::{Backward, GradStore};
use tensor::Tensor;

/// ln(1 + eˣ), written so that it neither overflows for large x nor loses precision for very
/// negative x: max(x, 0) + ln(1 + e^(−|x|)).
fn softplus_value(x: f32) -> f32 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The backward rule. It saves nothing of its own: the input it needs comes back in `inputs`.
struct SoftplusBackward;

impl Backward for SoftplusBackward {
    fn name(&self) -> &'static str {
        "softplus"
    }

    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &[f32], grads: &mut GradStore) {
        let x = inputs[0].to_vec(); // contiguous, in the input's shape
                                    // `slot` is None when nobody needs this input's gradient: skip the work.
        if let Some(dx) = grads.slot(&inputs[0]) {
            for ((dx, &x), &dy) in dx.iter_mut().zip(&x).zip(dout) {
                *dx += sigmoid(x) * dy; // dx += softplus'(x) · dy  (accumulate, never overwrite)
            }
        }
    }
}

/// Element-wise softplus. PyTorch: `torch.nn.functional.softplus(x)`.
fn softplus(x: &Tensor) -> Tensor {
    let values = x.to_vec().into_iter().map(softplus_value).collect();
    Tensor::from_op(values, x.shape(), &[x], || SoftplusBackward)
}

fn main() {
    train::cli::check_example_args(&[]);
    let x = Tensor::from_vec(vec![-2.0, 0.0, 3.0], &[3]).requires_grad();
    let y = softplus(&x);
    y.sum_all().backward();
    println!("x               = {:?}", x.to_vec());
    println!("softplus(x)     = {:?}", y.to_vec());
    println!("d sum / dx      = {:?}", x.grad().unwrap().to_vec());
    println!(
        "sigmoid(x)      = {:?}",
        x.to_vec().into_iter().map(sigmoid).collect::<Vec<_>>()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensor::testing::gradcheck;
    use tensor::Rng;

    #[test]
    fn softplus_values_and_gradient() {
        // softplus(0) = ln 2; softplus'(0) = ½.
        let x = Tensor::from_vec(vec![0.0], &[1]).requires_grad();
        let y = softplus(&x);
        assert!((y.item() - std::f32::consts::LN_2).abs() < 1e-7);
        assert_eq!(y.op_name(), Some("softplus")); // recorded (freed again by backward)
        y.sum_all().backward();
        assert_eq!(x.grad().unwrap().item(), 0.5);
        // large inputs neither overflow nor lose the identity softplus(x) ≈ x
        assert_eq!(softplus_value(100.0), 100.0);
        assert!(softplus_value(-100.0) > 0.0);
    }

    #[test]
    fn gradcheck_softplus_inside_a_larger_graph() {
        // used twice and combined with built-in ops, so accumulation is exercised too
        let mut rng = Rng::seed(7);
        let x = Tensor::randn(&[3, 5], &mut rng).mul_scalar(2.0);
        let w = Tensor::randn(&[5, 4], &mut rng);
        gradcheck(
            &[&x, &w],
            |t| {
                let h = softplus(&t[0].matmul(&t[1]));
                &h * &softplus(&h)
            },
            &mut rng,
        )
        .unwrap();
    }
}
