//! Element-wise arithmetic of two tensors with NumPy broadcasting: `add`, `sub`, `mul`, `div`.
//!
//! Broadcasting is a separate, explicit step: both operands are first viewed at the common
//! shape with [`Tensor::broadcast_to`] (a stride-0 view, no copy), and that view's backward
//! sums the gradient back to the operand's own shape. The arithmetic below therefore only ever
//! sees two tensors of the same shape, and its backward never thinks about broadcasting.
//!
//! | op | y | ∂y/∂a | ∂y/∂b |
//! |---|---|---|---|
//! | add | a + b | 1 | 1 |
//! | sub | a − b | 1 | −1 |
//! | mul | a · b | b | a |
//! | div | a / b | 1/b | −a/b² = −y/b |

use std::ops;

use crate::autograd::{Backward, GradStore};
use crate::kernels::parallel::new_by_chunks;
use crate::layout::broadcast_shapes;
use crate::tensor::Tensor;

/// A scalar function of two arguments with its two partial derivatives.
pub(crate) trait BinaryFn: Send + Sync + 'static {
    const NAME: &'static str;
    fn f(a: f32, b: f32) -> f32;
    /// ∂y/∂a given a, b and y.
    fn da(a: f32, b: f32, y: f32) -> f32;
    /// ∂y/∂b given a, b and y.
    fn db(a: f32, b: f32, y: f32) -> f32;
    /// (∂y/∂a, ∂y/∂b) when both are constants (add, sub): backward then only scales `dout`,
    /// without reading a, b or y (nor materialising a broadcast operand).
    const CONSTANT_PARTIALS: Option<(f32, f32)> = None;
}

macro_rules! binary_fn {
    ($ty:ident, $name:literal, |$a:ident, $b:ident, $y:ident| $f:expr, $da:expr, $db:expr
        $(, constant = $c:expr)?) => {
        pub(crate) struct $ty;
        impl BinaryFn for $ty {
            const NAME: &'static str = $name;
            $(const CONSTANT_PARTIALS: Option<(f32, f32)> = Some($c);)?
            #[inline(always)]
            fn f($a: f32, $b: f32) -> f32 {
                $f
            }
            #[inline(always)]
            #[allow(unused_variables)]
            fn da($a: f32, $b: f32, $y: f32) -> f32 {
                $da
            }
            #[inline(always)]
            #[allow(unused_variables)]
            fn db($a: f32, $b: f32, $y: f32) -> f32 {
                $db
            }
        }
    };
}

binary_fn!(Add, "add", |a, b, y| a + b, 1.0, 1.0, constant = (1.0, 1.0));
binary_fn!(
    Sub,
    "sub",
    |a, b, y| a - b,
    1.0,
    -1.0,
    constant = (1.0, -1.0)
);
binary_fn!(Mul, "mul", |a, b, y| a * b, b, a);
binary_fn!(Div, "div", |a, b, y| a / b, 1.0 / b, -y / b);

/// `out[i] = f(a[i], b[i])`. Shapes: out, a, b: (N,)
fn binary_forward<F: BinaryFn>(a: &[f32], b: &[f32]) -> Vec<f32> {
    new_by_chunks(
        a.len(),
        #[inline(always)]
        |s, piece| {
            // sliced to the piece first, so the loop has no bounds checks and vectorises
            let n = piece.len();
            for ((o, &x), &y) in piece.iter_mut().zip(&a[s..s + n]).zip(&b[s..s + n]) {
                *o = F::f(x, y);
            }
        },
    )
}

/// `da[i] += ∂f/∂a(a[i], b[i]) · dout[i]` into the gradient of `t` (`partial` = ∂f/∂a, or
/// ∂f/∂b for `b`'s gradient; accumulates).
#[allow(clippy::too_many_arguments)]
fn binary_backward(
    grads: &mut GradStore,
    t: &Tensor,
    partial: impl Fn(f32, f32, f32) -> f32 + Sync,
    a: &[f32],
    b: &[f32],
    out: &[f32],
    dout: &[f32],
) {
    grads.add_by_chunks(
        t,
        #[inline(always)]
        |s, piece| {
            let r = s..s + piece.len();
            let operands = a[r.clone()].iter().zip(&b[r.clone()]).zip(&out[r.clone()]);
            for ((d, ((&a, &b), &y)), &dy) in piece.iter_mut().zip(operands).zip(&dout[r]) {
                *d += partial(a, b, y) * dy;
            }
        },
    );
}

/// `dinp[i] += c · dout[i]` into the gradient of `t`. Shapes: dinp, dout: (N,)
fn scaled_accumulate(grads: &mut GradStore, t: &Tensor, c: f32, dout: &[f32]) {
    grads.add_by_chunks(
        t,
        #[inline(always)]
        |s, piece| {
            let dout = &dout[s..s + piece.len()];
            for (d, &dy) in piece.iter_mut().zip(dout) {
                *d += c * dy;
            }
        },
    );
}

struct BinaryNode<F>(std::marker::PhantomData<F>);

impl<F: BinaryFn> Backward for BinaryNode<F> {
    fn name(&self) -> &'static str {
        F::NAME
    }
    fn backward(&self, inputs: &[Tensor], out: &Tensor, dout: &[f32], grads: &mut GradStore) {
        let (a, b) = (&inputs[0], &inputs[1]);
        if let Some((ca, cb)) = F::CONSTANT_PARTIALS {
            // dinp += c·dout
            for (t, c) in [(a, ca), (b, cb)] {
                scaled_accumulate(grads, t, c, dout);
            }
            return;
        }
        let (av, bv, yv) = (a.values(), b.values(), out.values());
        binary_backward(grads, a, F::da, &av, &bv, &yv, dout);
        binary_backward(grads, b, F::db, &av, &bv, &yv, dout);
    }
}

impl Tensor {
    #[track_caller]
    fn binary<F: BinaryFn>(&self, other: &Tensor) -> Tensor {
        let shape = broadcast_shapes(self.shape(), other.shape()).unwrap_or_else(|| {
            panic!(
                "{}: shapes {:?} and {:?} do not broadcast",
                F::NAME,
                self.shape(),
                other.shape()
            )
        });
        let a = self.broadcast_to(&shape);
        let b = other.broadcast_to(&shape);
        let (av, bv) = (a.values(), b.values());
        let out = binary_forward::<F>(&av, &bv);
        Tensor::from_op(out, &shape, &[&a, &b], || {
            BinaryNode::<F>(Default::default())
        })
    }

    /// `self + other` with broadcasting. PyTorch: `a + b`.
    #[track_caller]
    pub fn add(&self, other: &Tensor) -> Tensor {
        self.binary::<Add>(other)
    }
    /// `self − other` with broadcasting. PyTorch: `a - b`.
    #[track_caller]
    pub fn sub(&self, other: &Tensor) -> Tensor {
        self.binary::<Sub>(other)
    }
    /// `self · other` element-wise with broadcasting. PyTorch: `a * b`.
    #[track_caller]
    pub fn mul(&self, other: &Tensor) -> Tensor {
        self.binary::<Mul>(other)
    }
    /// `self / other` element-wise with broadcasting. PyTorch: `a / b`.
    #[track_caller]
    pub fn div(&self, other: &Tensor) -> Tensor {
        self.binary::<Div>(other)
    }
}

macro_rules! operator {
    ($trait:ident, $method:ident, $scalar:expr) => {
        impl ops::$trait<&Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                Tensor::$method(self, rhs)
            }
        }
        impl ops::$trait<Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Tensor {
                Tensor::$method(&self, &rhs)
            }
        }
        impl ops::$trait<&Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                Tensor::$method(&self, rhs)
            }
        }
        impl ops::$trait<Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Tensor {
                Tensor::$method(self, &rhs)
            }
        }
        impl ops::$trait<f32> for &Tensor {
            type Output = Tensor;
            fn $method(self, rhs: f32) -> Tensor {
                let scalar: fn(&Tensor, f32) -> Tensor = $scalar;
                scalar(self, rhs)
            }
        }
        impl ops::$trait<f32> for Tensor {
            type Output = Tensor;
            fn $method(self, rhs: f32) -> Tensor {
                let scalar: fn(&Tensor, f32) -> Tensor = $scalar;
                scalar(&self, rhs)
            }
        }
    };
}

operator!(Add, add, |t, c| t.add_scalar(c));
operator!(Sub, sub, |t, c| t.add_scalar(-c));
operator!(Mul, mul, |t, c| t.mul_scalar(c));
operator!(Div, div, |t, c| t.mul_scalar(1.0 / c));

impl ops::Neg for &Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        Tensor::neg(self)
    }
}

impl ops::Neg for Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        Tensor::neg(&self)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::gradcheck;
    use crate::{Rng, Tensor};

    #[test]
    fn broadcast_add_by_hand() {
        // [[1,2,3],[4,5,6]] + [10,20,30]
        let a = Tensor::from_vec(vec![1., 2., 3., 4., 5., 6.], &[2, 3]).requires_grad();
        let b = Tensor::from_vec(vec![10., 20., 30.], &[3]).requires_grad();
        let y = &a + &b;
        assert_eq!(y.to_vec(), [11., 22., 33., 14., 25., 36.]);
        y.sum_all().backward();
        // b was used by both rows, so each of its elements collects two gradients of 1.
        assert_eq!(b.grad().unwrap().to_vec(), [2., 2., 2.]);
        assert_eq!(a.grad().unwrap().shape(), &[2, 3]);
    }

    #[test]
    fn one_tensor_on_both_sides_collects_both_gradients() {
        // y = x + x: dy/dx = 2;  y = x − x: dy/dx = 1 − 1 = 0 (add and sub pass dout through)
        let x = Tensor::from_vec(vec![1., -2., 3.], &[3]).requires_grad();
        x.add(&x).mul_scalar(3.0).sum_all().backward();
        assert_eq!(x.grad().unwrap().to_vec(), [6., 6., 6.]);
        x.zero_grad();
        x.sub(&x).sum_all().backward();
        assert_eq!(x.grad().unwrap().to_vec(), [0., 0., 0.]);
    }

    #[test]
    fn operators_and_scalars() {
        let a = Tensor::from_vec(vec![2., 4.], &[2]);
        assert_eq!((&a * 3.0).to_vec(), [6., 12.]);
        assert_eq!((&a - 1.0).to_vec(), [1., 3.]);
        assert_eq!((&a / 2.0).to_vec(), [1., 2.]);
        assert_eq!((-&a).to_vec(), [-2., -4.]);
        assert_eq!((&a / &a).to_vec(), [1., 1.]);
    }

    #[test]
    #[should_panic(expected = "mul: shapes [2, 3] and [3, 2] do not broadcast")]
    fn bad_shapes_name_the_op() {
        let _ = Tensor::zeros(&[2, 3]).mul(&Tensor::zeros(&[3, 2]));
    }

    #[test]
    fn gradcheck_all_binary_ops_over_broadcast_shapes() {
        let mut rng = Rng::seed(3);
        let shapes: [(&[usize], &[usize]); 5] = [
            (&[3, 4], &[3, 4]),
            (&[2, 3, 4], &[4]),
            (&[2, 1, 4], &[3, 1]),
            (&[1], &[2, 5]),
            (&[], &[3]),
        ];
        for (sa, sb) in shapes {
            let a = Tensor::uniform(sa, 0.5, 2.0, &mut rng);
            let b = Tensor::uniform(sb, 0.5, 2.0, &mut rng);
            for (name, f) in [
                ("add", Tensor::add as fn(&Tensor, &Tensor) -> Tensor),
                ("sub", Tensor::sub),
                ("mul", Tensor::mul),
                ("div", Tensor::div),
            ] {
                let r = gradcheck(&[&a, &b], |x| f(&x[0], &x[1]), &mut rng);
                r.unwrap_or_else(|e| panic!("{name} {sa:?} {sb:?}: {e}"));
            }
        }
    }
}
