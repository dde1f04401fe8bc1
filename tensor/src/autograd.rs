//! Reverse-mode automatic differentiation.
//!
//! Every op that takes a tensor requiring gradients records a grad fn on its result: the
//! inputs plus a [`Backward`] rule. Calling [`Tensor::backward`] on a scalar loss then:
//!
//! 1. **Collects** every tensor the loss depends on (an explicit stack, no recursion, so deep
//!    graphs cannot overflow the call stack).
//! 2. **Orders** them newest first. An op's output is always created after its inputs, so its id
//!    is larger; processing in descending id order guarantees that when we reach a tensor, every
//!    op that used it has already sent back its share of the gradient.
//! 3. **Runs** each backward rule once. Rules *accumulate* (`+=`) into their inputs' gradient
//!    buffers, because a tensor used twice gets the sum of both paths' gradients (the chain
//!    rule's sum over paths). The diamond `b = a + a; c = b * b` is the classic test: with `=`
//!    instead of `+=` the gradient of `a` would be half what it should (micrograd issue #2).
//! 4. **Frees** as it goes: a node's grad fn (and so the activations it saved) is dropped right
//!    after its rule runs, and its gradient buffer is consumed. Leaves that require grad get
//!    their gradient added into `.grad()`.
//!
//! Gradients during backward are plain `Vec<f32>` buffers in a [`GradStore`], one per tensor,
//! contiguous in that tensor's shape. The backward pass builds no graph of its own, so
//! higher-order gradients are not supported (GPT training does not need them).
//!
//! # Adding an op of your own
//! [`Backward`], [`GradStore`] and [`Tensor::from_op`] are public, so an op can live outside this
//! crate and still take part in backward exactly like the built-in ones: compute the output
//! values, then hand `from_op` the inputs and a struct implementing [`Backward`] that adds each
//! input's gradient into the store. `examples/custom_op.rs` (in the workspace root) does this
//! for the softplus function and checks it with [`crate::testing::gradcheck`]:
//!
//! ```
//! use scratchgpt_tensor::autograd::{Backward, GradStore};
//! use scratchgpt_tensor::Tensor;
//!
//! /// y = x³, dy/dx = 3x².
//! struct Cube;
//! impl Backward for Cube {
//!     fn name(&self) -> &'static str {
//!         "cube"
//!     }
//!     fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &[f32], grads: &mut GradStore) {
//!         let x = inputs[0].to_vec();
//!         if let Some(dx) = grads.slot(&inputs[0]) {
//!             for i in 0..dx.len() {
//!                 dx[i] += 3.0 * x[i] * x[i] * dout[i]; // accumulate, never overwrite
//!             }
//!         }
//!     }
//! }
//!
//! let x = Tensor::from_vec(vec![1.0, 2.0], &[2]).requires_grad();
//! let y = Tensor::from_op(x.to_vec().iter().map(|v| v * v * v).collect(), x.shape(), &[&x], || Cube);
//! y.sum_all().backward();
//! assert_eq!(x.grad().unwrap().to_vec(), vec![3.0, 12.0]);
//! ```

use std::cell::Cell;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use crate::kernels::parallel::{
    for_each_chunk, for_each_row, new_by_chunks, new_by_rows_with_cost, zeros,
};
use crate::tensor::Tensor;

/// The backward rule of one op. `backward` receives the op's inputs, its output and the
/// gradient of the loss with respect to that output (`dout`, contiguous, the output's shape),
/// and adds each input's gradient into `grads`. Implement it (with [`Tensor::from_op`]) to add
/// a differentiable op from outside this crate; see the module docs.
pub trait Backward: Send + Sync {
    /// The op's name, shown in debug output and panics.
    fn name(&self) -> &'static str;
    fn backward(&self, inputs: &[Tensor], out: &Tensor, dout: &[f32], grads: &mut GradStore);
}

/// How a tensor was computed: the op's backward rule and the tensors it was applied to.
pub(crate) struct GradFn {
    pub inputs: Vec<Tensor>,
    pub op: Box<dyn Backward>,
}

/// Gradient buffers by tensor id during one backward pass: what a [`Backward`] rule adds its
/// inputs' gradients into. Buffers are contiguous in the tensor's shape.
pub struct GradStore {
    map: HashMap<u64, Vec<f32>>,
}

impl GradStore {
    /// The gradient buffer of `t` to accumulate into (zeros the first time), or `None` when no
    /// gradient is wanted for `t`, so rules skip work nobody needs.
    pub fn slot(&mut self, t: &Tensor) -> Option<&mut [f32]> {
        if !t.is_requires_grad() {
            return None;
        }
        let n = t.numel();
        Some(self.map.entry(t.id()).or_insert_with(|| zeros(n)))
    }

    /// Adds a contribution to `t`'s gradient, given two ways to compute it: `fresh` returns it
    /// as a new buffer (used when it is the first contribution, which then needs no zeroed
    /// buffer to be added into), `accumulate` adds it into the existing buffer. Does nothing
    /// when no gradient is wanted for `t`.
    #[track_caller]
    pub fn add(
        &mut self,
        t: &Tensor,
        fresh: impl FnOnce() -> Vec<f32>,
        accumulate: impl FnOnce(&mut [f32]),
    ) {
        if !t.is_requires_grad() {
            return;
        }
        match self.map.entry(t.id()) {
            Entry::Occupied(mut e) => accumulate(e.get_mut()),
            Entry::Vacant(e) => {
                let g = fresh();
                assert_eq!(
                    g.len(),
                    t.numel(),
                    "backward: gradient of {} values for a tensor of shape {:?}",
                    g.len(),
                    t.shape()
                );
                e.insert(g);
            }
        }
    }

    /// Adds into `t`'s gradient piece by piece: `f(start, piece)` adds the contribution to
    /// the values `start..` (a [`for_each_chunk`] closure). A first contribution goes into a
    /// new buffer zeroed piece by piece as it is filled ([`new_by_chunks`]), so no zeroed
    /// buffer is written first and read back. Does nothing when no gradient is wanted for `t`.
    pub fn add_by_chunks(&mut self, t: &Tensor, f: impl Fn(usize, &mut [f32]) + Sync) {
        if !t.is_requires_grad() {
            return;
        }
        match self.map.entry(t.id()) {
            Entry::Occupied(mut e) => for_each_chunk(e.get_mut(), f),
            Entry::Vacant(e) => {
                e.insert(new_by_chunks(t.numel(), f));
            }
        }
    }

    /// [`GradStore::add_by_chunks`] row by row: `f(r, row)` adds the contribution to row r
    /// (rows of `row_len` values, a [`for_each_row`] closure).
    pub fn add_by_rows(
        &mut self,
        t: &Tensor,
        row_len: usize,
        f: impl Fn(usize, &mut [f32]) + Sync,
    ) {
        if !t.is_requires_grad() {
            return;
        }
        match self.map.entry(t.id()) {
            Entry::Occupied(mut e) => for_each_row(e.get_mut(), row_len, f),
            Entry::Vacant(e) => {
                let rows = t.numel() / row_len.max(1);
                assert_eq!(
                    rows * row_len,
                    t.numel(),
                    "backward: rows of {row_len} for a tensor of shape {:?}",
                    t.shape()
                );
                e.insert(new_by_rows_with_cost(rows, row_len, row_len, f));
            }
        }
    }

    fn take(&mut self, t: &Tensor) -> Option<Vec<f32>> {
        self.map.remove(&t.id())
    }

    /// Moves `t`'s gradient buffer out of the store (zeros if it had none), so a rule can hold
    /// several inputs' buffers at once; give it back with [`GradStore::put`]. `None` when no
    /// gradient is wanted for `t`.
    pub fn take_buffer(&mut self, t: &Tensor) -> Option<Vec<f32>> {
        if !t.is_requires_grad() {
            return None;
        }
        Some(self.take(t).unwrap_or_else(|| zeros(t.numel())))
    }

    /// Returns a buffer taken with [`GradStore::take_buffer`], adding it to anything that
    /// arrived for `t` meanwhile (when the same tensor is two inputs of one op).
    pub fn put(&mut self, t: &Tensor, buf: Vec<f32>) {
        match self.map.get_mut(&t.id()) {
            Some(existing) => existing.iter_mut().zip(&buf).for_each(|(a, b)| *a += b),
            None => {
                self.map.insert(t.id(), buf);
            }
        }
    }
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread currently record grad fns.
pub fn grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// While alive, ops on this thread record nothing (for evaluation and sampling).
/// Restores the previous state when dropped. PyTorch: `with torch.no_grad():`.
#[must_use = "the guard disables gradients only while it is alive"]
pub struct NoGradGuard {
    previous: bool,
}

/// Disables gradient recording until the returned guard is dropped.
///
/// ```
/// # use scratchgpt_tensor::{no_grad, Tensor};
/// let w = Tensor::ones(&[2]).requires_grad();
/// let y = {
///     let _guard = no_grad();
///     &w * &w
/// };
/// assert!(!y.is_requires_grad());
/// ```
pub fn no_grad() -> NoGradGuard {
    let previous = GRAD_ENABLED.with(|g| g.replace(false));
    NoGradGuard { previous }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

impl Tensor {
    /// Computes the gradient of this scalar with respect to every leaf that requires grad,
    /// adding it into their `.grad()`. The graph is freed as it is walked, so calling
    /// backward a second time through the same ops panics (as in PyTorch).
    #[track_caller]
    pub fn backward(&self) {
        assert!(
            self.numel() == 1,
            "backward: needs a scalar (one element), got shape {:?}; use backward_with",
            self.shape()
        );
        self.backward_with(&[1.0]);
    }

    /// Backward from a non-scalar output, given the gradient of the loss with respect to it
    /// (`dout`, row-major, same number of elements). PyTorch: `t.backward(gradient=dout)`.
    #[track_caller]
    pub fn backward_with(&self, dout: &[f32]) {
        self.backward_with_leaf_hook(dout, &mut |_| {});
    }

    /// [`Tensor::backward_with`], calling `on_leaf_grad(leaf)` as soon as a leaf's gradient of
    /// this pass is complete and added into its `.grad()`: right after the last op that used the
    /// leaf ran its backward rule, while the rest of the pass is still to come. Data-parallel
    /// training starts summing those gradients across processes there (PyTorch DDP's gradient
    /// hooks). Each leaf that gets a gradient is reported exactly once.
    #[track_caller]
    pub fn backward_with_leaf_hook(&self, dout: &[f32], on_leaf_grad: &mut dyn FnMut(&Tensor)) {
        assert!(
            self.is_requires_grad(),
            "backward: tensor of shape {:?} does not require grad (no leaf with requires_grad, or built under no_grad)",
            self.shape()
        );
        assert_eq!(
            dout.len(),
            self.numel(),
            "backward_with: dout length mismatch"
        );
        let order = topological_order(self);
        // how many ops of this pass still have to add into each leaf's gradient
        let mut pending: HashMap<u64, usize> = HashMap::new();
        for t in &order {
            if let Some(g) = t.0.grad_fn.lock().unwrap().as_ref() {
                for input in g
                    .inputs
                    .iter()
                    .filter(|i| i.is_leaf() && i.is_requires_grad())
                {
                    *pending.entry(input.id()).or_default() += 1;
                }
            }
        }
        let mut grads = GradStore {
            map: HashMap::new(),
        };
        grads.map.insert(self.id(), dout.to_vec());
        // one op of the pass is done with its inputs: a leaf whose last user that was gets its
        // gradient now
        fn used(
            inputs: &[Tensor],
            grads: &mut GradStore,
            pending: &mut HashMap<u64, usize>,
            on_leaf_grad: &mut dyn FnMut(&Tensor),
        ) {
            for leaf in inputs
                .iter()
                .filter(|i| i.is_leaf() && i.is_requires_grad())
            {
                let left = pending.get_mut(&leaf.id()).expect("counted above");
                *left -= 1;
                if *left == 0 {
                    if let Some(dl) = grads.take(leaf) {
                        leaf.accumulate_grad(dl);
                        on_leaf_grad(leaf);
                    }
                }
            }
        }
        for t in &order {
            let Some(dt) = grads.take(t) else {
                // no gradient reached this op: it adds nothing to its inputs
                if let Some(g) = t.0.grad_fn.lock().unwrap().as_ref() {
                    used(&g.inputs, &mut grads, &mut pending, on_leaf_grad);
                }
                continue;
            };
            if t.is_leaf() {
                // only the root can still hold a leaf's gradient here
                t.accumulate_grad(dt);
                on_leaf_grad(t);
                continue;
            }
            let grad_fn = t.0.grad_fn.lock().unwrap().take();
            let Some(grad_fn) = grad_fn else {
                panic!(
                    "backward: trying to backward through the graph a second time \
                     (tensor of shape {:?} already had its graph freed)",
                    t.shape()
                );
            };
            grad_fn.op.backward(&grad_fn.inputs, t, &dt, &mut grads);
            used(&grad_fn.inputs, &mut grads, &mut pending, on_leaf_grad);
            // grad_fn dropped here: the saved activations of this op are freed now.
        }
    }
}

/// Every tensor requiring grad that `root` depends on, newest (largest id) first.
fn topological_order(root: &Tensor) -> Vec<Tensor> {
    let mut seen = HashSet::new();
    let mut stack = vec![root.clone()];
    let mut order = Vec::new();
    seen.insert(root.id());
    while let Some(t) = stack.pop() {
        if let Some(g) = t.0.grad_fn.lock().unwrap().as_ref() {
            for input in &g.inputs {
                if input.is_requires_grad() && seen.insert(input.id()) {
                    stack.push(input.clone());
                }
            }
        }
        order.push(t);
    }
    order.sort_unstable_by_key(|t| std::cmp::Reverse(t.id()));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_hook_fires_once_per_leaf_as_soon_as_its_gradient_is_complete() {
        // y = sum((a·b)·c): c's gradient is complete after the last op (the first to run
        // backward), a's and b's after the product; a is used twice (diamond) and still
        // reported once, with both contributions: d/da sum(a·a·c) = 2·a·c = 12 at a=2, c=3.
        let a = Tensor::scalar(2.0).requires_grad();
        let c = Tensor::scalar(3.0).requires_grad();
        let y = (&(&a * &a) * &c).sum_all();
        let mut seen = Vec::new();
        y.backward_with_leaf_hook(&[1.0], &mut |t| {
            seen.push((t.id(), t.grad().unwrap().item()))
        });
        assert_eq!(seen, vec![(c.id(), 4.0), (a.id(), 12.0)]);
    }

    #[test]
    fn first_and_later_contributions_add_the_same_way() {
        // A tensor used twice gets its first gradient into a new buffer and the second added
        // into it; g + g is exact, so the sum must be twice the gradient of one use, bit for
        // bit (sizes above the parallel threshold; element-wise and row-wise ops)
        let mut rng = crate::Rng::seed(7);
        let x = Tensor::randn(&[300, 200], &mut rng).requires_grad();
        let w = Tensor::randn(&[300, 200], &mut rng);
        for op in [
            |t: &Tensor| t.gelu(),
            |t: &Tensor| t.softmax(-1),
            |t: &Tensor| t.dropout(0.5, true, &mut crate::Rng::seed(1)),
        ] {
            op(&x).mul(&w).sum_all().backward();
            let once = x.grad().unwrap().to_vec();
            x.zero_grad();
            op(&x).add(&op(&x)).mul(&w).sum_all().backward();
            let twice = x.grad().unwrap().to_vec();
            x.zero_grad();
            assert!(once.iter().zip(&twice).all(|(a, b)| 2.0 * a == *b));
        }
    }

    #[test]
    fn diamond_graph_accumulates() {
        // b = a + a = 2a; c = b * b = 4a²; dc/da = 8a = 24 at a = 3.
        let a = Tensor::scalar(3.0).requires_grad();
        let b = &a + &a;
        let c = &b * &b;
        c.backward();
        assert_eq!(a.grad().unwrap().item(), 24.0);
    }

    #[test]
    fn grads_accumulate_across_backward_calls_until_zeroed() {
        let a = Tensor::scalar(2.0).requires_grad();
        (&a * &a).backward(); // 2a = 4
        (&a * &a).backward();
        assert_eq!(a.grad().unwrap().item(), 8.0);
        a.zero_grad();
        assert!(a.grad().is_none());
    }

    #[test]
    #[should_panic(expected = "second time")]
    fn backward_twice_through_same_graph_panics() {
        let a = Tensor::scalar(2.0).requires_grad();
        let y = (&a * &a).exp();
        let z = y.sum_all();
        z.backward();
        (y.sum_all()).backward();
    }

    #[test]
    fn no_grad_records_nothing() {
        let a = Tensor::ones(&[3]).requires_grad();
        let y = {
            let _g = no_grad();
            a.exp().sum_all()
        };
        assert!(!y.is_requires_grad());
        assert!(y.op_name().is_none());
        assert!(grad_enabled());
    }

    #[test]
    fn frozen_leaves_get_no_gradient_and_record_no_work() {
        // y = (x·W1)·W2 with W1 frozen: the first matmul has no frozen-free input, so it is
        // not recorded at all and backward stops at the second.
        let x = Tensor::ones(&[2, 3]);
        let w1 = Tensor::ones(&[3, 4]).requires_grad();
        let w2 = Tensor::ones(&[4, 1]).requires_grad();
        w1.set_requires_grad(false);
        let h = x.matmul(&w1);
        assert!(h.op_name().is_none() && !h.is_requires_grad());
        h.matmul(&w2).sum_all().backward();
        assert!(w1.grad().is_none());
        // d/dW2 sum(h·W2) = column sums of h = 2 rows × 3 = 6
        assert_eq!(w2.grad().unwrap().to_vec(), vec![6.0; 4]);
        // unfrozen again (and every clone sees it), it trains
        let w1_clone = w1.clone();
        w1.set_requires_grad(true);
        assert!(w1_clone.is_requires_grad());
        x.matmul(&w1).matmul(&w2).sum_all().backward();
        assert!(w1.grad().is_some());
    }

    #[test]
    #[should_panic(expected = "only leaves")]
    fn only_leaves_can_be_frozen() {
        let a = Tensor::ones(&[2]).requires_grad();
        a.exp().set_requires_grad(false);
    }

    #[test]
    fn detach_stops_gradient() {
        let a = Tensor::scalar(3.0).requires_grad();
        let y = &a * &a.detach(); // d/da = a.detach() = 3
        y.backward();
        assert_eq!(a.grad().unwrap().item(), 3.0);
    }

    #[test]
    fn deep_chain_does_not_overflow_the_stack() {
        let a = Tensor::scalar(1.0).requires_grad();
        let mut y = a.clone();
        for _ in 0..20_000 {
            y = y.mul_scalar(1.0);
        }
        y.backward();
        assert_eq!(a.grad().unwrap().item(), 1.0);
    }
}
