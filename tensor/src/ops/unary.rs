//! Element-wise functions of one tensor: `y[i] = f(x[i])`.
//!
//! Backward is the chain rule one element at a time: `dx[i] += f'(x[i]) · dy[i]`.
//! Each function below is written once as a `UnaryFn`: its value and its derivative side by
//! side. The derivative may use the input `x` or the output `y`, whichever is simpler
//! (for `exp`, `y' = y`; for `tanh`, `y' = 1 − y²`).

use crate::autograd::{Backward, GradStore};
use crate::kernels::math;
use crate::kernels::parallel::new_by_chunks;
use crate::tensor::Tensor;

/// A scalar function with its derivative.
pub(crate) trait UnaryFn: Send + Sync + 'static {
    const NAME: &'static str;
    fn f(&self, x: f32) -> f32;
    /// dy/dx, given the input x and the output y = f(x).
    fn df(&self, x: f32, y: f32) -> f32;
}

/// `out[i] = f(inp[i])`. Shapes: out, inp: (N,)
pub(crate) fn unary_forward<U: UnaryFn>(op: &U, inp: &[f32]) -> Vec<f32> {
    new_by_chunks(
        inp.len(),
        #[inline(always)]
        |start, piece| {
            for (o, &x) in piece.iter_mut().zip(&inp[start..]) {
                *o = op.f(x);
            }
        },
    )
}

/// `dinp[i] += f'(inp[i]) · dout[i]` into the gradient of `t` (accumulates; never overwrites).
pub(crate) fn unary_backward<U: UnaryFn>(
    op: &U,
    grads: &mut GradStore,
    t: &Tensor,
    inp: &[f32],
    out: &[f32],
    dout: &[f32],
) {
    grads.add_by_chunks(
        t,
        #[inline(always)]
        |start, piece| {
            // sliced to the piece first, so the loop has no bounds checks and vectorises
            let r = start..start + piece.len();
            let operands = inp[r.clone()].iter().zip(&out[r.clone()]).zip(&dout[r]);
            for (d, ((&x, &y), &dy)) in piece.iter_mut().zip(operands) {
                *d += op.df(x, y) * dy;
            }
        },
    );
}

/// Saves nothing beyond the input (kept in the grad fn) and reads the output at backward time.
struct UnaryNode<U>(U);

impl<U: UnaryFn> Backward for UnaryNode<U> {
    fn name(&self) -> &'static str {
        U::NAME
    }
    fn backward(&self, inputs: &[Tensor], out: &Tensor, dout: &[f32], grads: &mut GradStore) {
        let x = &inputs[0];
        if x.is_requires_grad() {
            unary_backward(&self.0, grads, x, &x.values(), &out.values(), dout);
        }
    }
}

impl Tensor {
    pub(crate) fn unary<U: UnaryFn>(&self, op: U) -> Tensor {
        let inp = self.values();
        let out = unary_forward(&op, &inp);
        Tensor::from_op(out, self.shape(), &[self], || UnaryNode(op))
    }
}

macro_rules! unary_fn {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $method:ident, |$x:ident, $y:ident| $f:expr, $df:expr) => {
        pub(crate) struct $ty;
        impl UnaryFn for $ty {
            const NAME: &'static str = $name;
            #[inline(always)]
            fn f(&self, $x: f32) -> f32 {
                $f
            }
            #[inline(always)]
            #[allow(unused_variables)]
            fn df(&self, $x: f32, $y: f32) -> f32 {
                $df
            }
        }
        impl Tensor {
            $(#[$doc])*
            pub fn $method(&self) -> Tensor {
                self.unary($ty)
            }
        }
    };
}

unary_fn!(
    /// `-x`; derivative −1. PyTorch: `-t`.
    Neg, "neg", neg, |x, y| -x, -1.0
);
unary_fn!(
    /// `eˣ`; derivative `eˣ = y`. PyTorch: `t.exp()`.
    Exp, "exp", exp, |x, y| math::exp(x), y
);
unary_fn!(
    /// Natural log `ln x`; derivative `1/x`. PyTorch: `t.log()`.
    Log, "log", log, |x, y| x.ln(), 1.0 / x
);
unary_fn!(
    /// `√x`; derivative `1/(2√x) = 0.5/y`. PyTorch: `t.sqrt()`.
    Sqrt, "sqrt", sqrt, |x, y| x.sqrt(), 0.5 / y
);
unary_fn!(
    /// `tanh x`; derivative `1 − tanh² x = 1 − y²`. PyTorch: `t.tanh()`.
    Tanh, "tanh", tanh, |x, y| math::tanh(x), 1.0 - y * y
);
unary_fn!(
    /// `max(0, x)`; derivative 1 where x > 0, else 0. PyTorch: `t.relu()`.
    Relu, "relu", relu, |x, y| x.max(0.0), if x > 0.0 { 1.0 } else { 0.0 }
);
unary_fn!(
    /// `σ(x) = 1/(1 + e⁻ˣ)`; derivative `σ(x)(1 − σ(x)) = y(1 − y)`. PyTorch: `t.sigmoid()`.
    Sigmoid, "sigmoid", sigmoid, |x, y| 1.0 / (1.0 + math::exp(-x)), y * (1.0 - y)
);

/// `xᵖ`; derivative `p·xᵖ⁻¹`.
pub(crate) struct Powf(f32);
impl UnaryFn for Powf {
    const NAME: &'static str = "powf";
    fn f(&self, x: f32) -> f32 {
        x.powf(self.0)
    }
    fn df(&self, x: f32, _y: f32) -> f32 {
        self.0 * x.powf(self.0 - 1.0)
    }
}

/// `x + c`; derivative 1.
pub(crate) struct AddScalar(f32);
impl UnaryFn for AddScalar {
    const NAME: &'static str = "add_scalar";
    #[inline(always)]
    fn f(&self, x: f32) -> f32 {
        x + self.0
    }
    #[inline(always)]
    fn df(&self, _x: f32, _y: f32) -> f32 {
        1.0
    }
}

/// `c·x`; derivative c.
pub(crate) struct MulScalar(f32);
impl UnaryFn for MulScalar {
    const NAME: &'static str = "mul_scalar";
    #[inline(always)]
    fn f(&self, x: f32) -> f32 {
        x * self.0
    }
    #[inline(always)]
    fn df(&self, _x: f32, _y: f32) -> f32 {
        self.0
    }
}

impl Tensor {
    /// Element-wise power `xᵖ`. PyTorch: `t.pow(p)`.
    pub fn powf(&self, p: f32) -> Tensor {
        self.unary(Powf(p))
    }
    /// Adds a constant to every element. PyTorch: `t + c`.
    pub fn add_scalar(&self, c: f32) -> Tensor {
        self.unary(AddScalar(c))
    }
    /// Multiplies every element by a constant. PyTorch: `t * c`.
    pub fn mul_scalar(&self, c: f32) -> Tensor {
        self.unary(MulScalar(c))
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::gradcheck;
    use crate::{Rng, Tensor};

    #[test]
    fn hand_worked_values() {
        let x = Tensor::from_vec(vec![-1.0, 0.5, 2.0], &[3]);
        assert_eq!(x.relu().to_vec(), [0.0, 0.5, 2.0]);
        assert_eq!(x.neg().to_vec(), [1.0, -0.5, -2.0]);
        assert_eq!(x.powf(2.0).to_vec(), [1.0, 0.25, 4.0]);
        assert!((x.sigmoid().at(&[1]) - 0.622_459_3).abs() < 1e-6);
        // d/dx tanh at 0.5 = 1 - tanh(0.5)^2 = 0.786448
        let x = Tensor::scalar(0.5).requires_grad();
        x.tanh().backward();
        assert!((x.grad().unwrap().item() - 0.786_448).abs() < 1e-5);
    }

    #[test]
    fn gradcheck_every_unary_op() {
        let mut rng = Rng::seed(11);
        // inputs kept positive and away from relu's kink so every function is smooth there
        let x = Tensor::uniform(&[3, 4], 0.2, 2.0, &mut rng);
        type Case = (&'static str, fn(&Tensor) -> Tensor);
        let ops: Vec<Case> = vec![
            ("neg", |t| t.neg()),
            ("exp", |t| t.exp()),
            ("log", |t| t.log()),
            ("sqrt", |t| t.sqrt()),
            ("tanh", |t| t.tanh()),
            ("relu", |t| t.relu()),
            ("sigmoid", |t| t.sigmoid()),
            ("powf", |t| t.powf(1.7)),
            ("add_scalar", |t| t.add_scalar(3.0)),
            ("mul_scalar", |t| t.mul_scalar(-2.5)),
        ];
        for (name, f) in ops {
            gradcheck(&[&x], |xs| f(&xs[0]), &mut rng).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let neg = Tensor::uniform(&[5], -2.0, -0.2, &mut rng);
        gradcheck(&[&neg], |xs| xs[0].relu().add_scalar(1.0).exp(), &mut rng).unwrap();
    }
}
