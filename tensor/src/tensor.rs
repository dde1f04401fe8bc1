//! The [`Tensor`] type: an f32 n-d array that remembers how it was computed.
//!
//! A `Tensor` is a cheap handle (`Arc`) to:
//! - a [`Layout`] (shape, strides, offset) and the shared storage it indexes,
//! - a flag saying whether gradients flow to it (`requires_grad`),
//! - for results of ops, the *grad fn*: the op's backward rule plus the input tensors it needs.
//!
//! Cloning a `Tensor` clones the handle, never the values.
//!
//! Design notes (alternatives weighed here, at the definition):
//! - Storage is `RwLock<Arc<Vec<f32>>>`. Ops take the read lock just long enough to clone the
//!   inner `Arc`, then work lock-free. Only optimizers write, through [`Tensor::update`], which
//!   mutates in place when nobody else holds the buffer and copies on write otherwise. A plain
//!   `Arc<Vec<f32>>` would need `&mut` access to the parameter (fragile once the model and the
//!   optimizer both hold it); an `UnsafeCell` would need `unsafe` outside the GEMM wrapper.
//! - Gradients of leaves are stored on the tensor (`.grad()`, PyTorch's convention) because
//!   learners expect it. During backward, gradients live in a [`GradStore`] keyed by tensor id.
//! - Every tensor gets an id from a global counter. A tensor is always created after its inputs,
//!   so sorting by id, newest first, is a valid order to run backward in (see `autograd.rs`).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::autograd::{grad_enabled, Backward, GradFn};
use crate::layout::Layout;
use crate::rng::Rng;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// How many tensors exist right now in this process (for leak tests: a training loop that
/// frees its graphs keeps this flat from step to step).
pub fn live_tensors() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// An f32 n-dimensional array with reverse-mode automatic differentiation.
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub id: u64,
    pub layout: Layout,
    pub storage: RwLock<Arc<Vec<f32>>>,
    /// Atomic so a parameter can be frozen and unfrozen in place ([`Tensor::set_requires_grad`]).
    pub requires_grad: AtomicBool,
    /// `true` for tensors made by the user (not by an op); only leaves receive `.grad()`.
    pub is_leaf: bool,
    /// How this tensor was computed. Taken (and so freed) when backward passes through it.
    pub grad_fn: Mutex<Option<GradFn>>,
    /// Accumulated gradient of a leaf, same shape as the tensor, contiguous.
    pub grad: Mutex<Option<Arc<Vec<f32>>>>,
}

/// Dropping a long chain of tensors would recurse once per op (each grad fn owns its inputs)
/// and could overflow the stack; this unlinks the chain iteratively instead.
impl Drop for Inner {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
        let Some(grad_fn) = self.grad_fn.get_mut().ok().and_then(|g| g.take()) else {
            return;
        };
        let GradFn { inputs, op } = grad_fn;
        drop(op); // saved tensors first; they are also among the inputs
        let mut stack = inputs;
        while let Some(t) = stack.pop() {
            if let Some(mut inner) = Arc::into_inner(t.0) {
                if let Some(g) = inner.grad_fn.get_mut().ok().and_then(|g| g.take()) {
                    drop(g.op);
                    stack.extend(g.inputs);
                }
            }
        }
    }
}

/// A contiguous, read-only snapshot of a tensor's values in row-major order.
/// Holding it keeps the buffer alive; it derefs to `&[f32]`.
pub struct Values {
    buf: Arc<Vec<f32>>,
    start: usize,
    len: usize,
}

impl std::ops::Deref for Values {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl Tensor {
    // ---------------------------------------------------------------- construction

    fn new_inner(
        storage: Arc<Vec<f32>>,
        layout: Layout,
        requires_grad: bool,
        grad_fn: Option<GradFn>,
    ) -> Tensor {
        LIVE.fetch_add(1, Ordering::Relaxed);
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            layout,
            storage: RwLock::new(storage),
            requires_grad: AtomicBool::new(requires_grad),
            is_leaf: grad_fn.is_none(),
            grad_fn: Mutex::new(grad_fn),
            grad: Mutex::new(None),
        }))
    }

    /// A tensor of `shape` holding `data` in row-major order.
    ///
    /// PyTorch equivalent: `torch.tensor(data).reshape(shape)`.
    #[track_caller]
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        assert!(
            data.len() == n,
            "from_vec: {} values do not fill shape {:?} ({} elements)",
            data.len(),
            shape,
            n
        );
        Tensor::new_inner(Arc::new(data), Layout::contiguous(shape), false, None)
    }

    /// A 0-d tensor holding one value.
    pub fn scalar(value: f32) -> Tensor {
        Tensor::from_vec(vec![value], &[])
    }

    /// A tensor of `shape` with every element `value`. PyTorch: `torch.full(shape, value)`.
    pub fn full(shape: &[usize], value: f32) -> Tensor {
        Tensor::from_vec(vec![value; shape.iter().product()], shape)
    }

    /// PyTorch: `torch.zeros(shape)`.
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    /// PyTorch: `torch.ones(shape)`.
    pub fn ones(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 1.0)
    }

    /// `[0, 1, …, n-1]` as f32. PyTorch: `torch.arange(n)`.
    pub fn arange(n: usize) -> Tensor {
        Tensor::from_vec((0..n).map(|i| i as f32).collect(), &[n])
    }

    /// Samples from the standard normal N(0, 1). PyTorch: `torch.randn(shape)`.
    pub fn randn(shape: &[usize], rng: &mut Rng) -> Tensor {
        let mut data = vec![0.0; shape.iter().product()];
        rng.fill_normal(&mut data);
        Tensor::from_vec(data, shape)
    }

    /// Samples uniformly from [0, 1). PyTorch: `torch.rand(shape)`.
    pub fn rand(shape: &[usize], rng: &mut Rng) -> Tensor {
        Tensor::uniform(shape, 0.0, 1.0, rng)
    }

    /// Samples uniformly from [low, high).
    pub fn uniform(shape: &[usize], low: f32, high: f32, rng: &mut Rng) -> Tensor {
        let mut data = vec![0.0; shape.iter().product()];
        rng.fill_uniform(&mut data, low, high);
        Tensor::from_vec(data, shape)
    }

    /// The same values as a leaf that accumulates a gradient in `.grad()` on backward.
    /// PyTorch: `t.requires_grad_()` on a leaf.
    ///
    /// A tensor that is its whole buffer (as every freshly made one is) keeps that buffer: no
    /// copy, where copying had cost every model an extra pass over all its parameters when it
    /// was built. Should another tensor still hold the buffer, the first in-place update
    /// copies it ([`Tensor::update`]: copy-on-write), so that tensor keeps its values. A view
    /// is copied into a buffer of its own.
    pub fn requires_grad(self) -> Tensor {
        let storage = self.storage();
        let layout = &self.0.layout;
        if layout.is_contiguous() && layout.offset == 0 && layout.numel() == storage.len() {
            return Tensor::new_inner(storage, Layout::contiguous(self.shape()), true, None);
        }
        let data = self.values().to_vec();
        Tensor::new_inner(Arc::new(data), Layout::contiguous(self.shape()), true, None)
    }

    /// The same values, cut off from the graph: no gradient flows through the result.
    /// Shares the storage. PyTorch: `t.detach()`.
    pub fn detach(&self) -> Tensor {
        Tensor::new_inner(self.storage(), self.0.layout.clone(), false, None)
    }

    /// Builds an op's result from its values (row-major, `shape`), the tensors it was computed
    /// from and its backward rule. The rule is made (and the inputs kept alive) only if
    /// gradients are enabled and some input requires them, so inference pays nothing for
    /// autograd. This is how every op is built, and how to add one of your own: see
    /// [`crate::autograd`].
    #[track_caller]
    pub fn from_op<B: Backward + 'static>(
        data: Vec<f32>,
        shape: &[usize],
        inputs: &[&Tensor],
        backward: impl FnOnce() -> B,
    ) -> Tensor {
        assert_eq!(
            data.len(),
            shape.iter().product::<usize>(),
            "from_op: {} values for shape {shape:?}",
            data.len()
        );
        Tensor::with_grad_fn(Arc::new(data), Layout::contiguous(shape), inputs, backward)
    }

    /// Builds a view sharing `self`'s storage under a new layout.
    pub(crate) fn view_op<B: Backward + 'static>(
        &self,
        layout: Layout,
        backward: impl FnOnce() -> B,
    ) -> Tensor {
        Tensor::with_grad_fn(self.storage(), layout, &[self], backward)
    }

    fn with_grad_fn<B: Backward + 'static>(
        storage: Arc<Vec<f32>>,
        layout: Layout,
        inputs: &[&Tensor],
        backward: impl FnOnce() -> B,
    ) -> Tensor {
        let track = grad_enabled() && inputs.iter().any(|t| t.is_requires_grad());
        let grad_fn = track.then(|| GradFn {
            inputs: inputs.iter().map(|&t| t.clone()).collect(),
            op: Box::new(backward()),
        });
        Tensor::new_inner(storage, layout, track, grad_fn)
    }

    // ---------------------------------------------------------------- inspection

    /// The size of every axis.
    pub fn shape(&self) -> &[usize] {
        &self.0.layout.shape
    }

    /// Number of axes.
    pub fn ndim(&self) -> usize {
        self.0.layout.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }

    /// Size of axis `dim`; negative counts from the end (`-1` is the last axis).
    #[track_caller]
    pub fn size(&self, dim: isize) -> usize {
        self.shape()[self.axis("size", dim)]
    }

    /// Resolves a possibly negative axis, panicking with the op's name if out of range.
    #[track_caller]
    pub(crate) fn axis(&self, op: &str, dim: isize) -> usize {
        let n = self.ndim() as isize;
        let d = if dim < 0 { dim + n } else { dim };
        assert!(
            (0..n).contains(&d),
            "{op}: dim {dim} out of range for shape {:?}",
            self.shape()
        );
        d as usize
    }

    /// A process-unique id; newer tensors have larger ids.
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// Whether gradients flow to this tensor.
    pub fn is_requires_grad(&self) -> bool {
        self.0.requires_grad.load(Ordering::Relaxed)
    }

    /// Freezes (`false`) or unfreezes (`true`) a leaf in place, for every clone of it: a frozen
    /// parameter receives no gradient, and ops whose inputs are all frozen record nothing, so
    /// backward stops at the first layer that trains (fine-tuning only the last block costs
    /// that block's backward, not the whole model's). Its old gradient is dropped.
    /// PyTorch: `p.requires_grad_(False)`.
    #[track_caller]
    pub fn set_requires_grad(&self, on: bool) {
        assert!(
            self.is_leaf(),
            "set_requires_grad: only leaves (tensors not computed by an op) can be frozen, got the result of {:?}",
            self.op_name()
        );
        self.0.requires_grad.store(on, Ordering::Relaxed);
        if !on {
            self.zero_grad();
        }
    }

    /// Whether this tensor was made by the user rather than computed by an op.
    pub fn is_leaf(&self) -> bool {
        self.0.is_leaf
    }

    /// The name of the op that made this tensor, if it is part of a graph (for debugging).
    pub fn op_name(&self) -> Option<&'static str> {
        self.0.grad_fn.lock().unwrap().as_ref().map(|g| g.op.name())
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.0.layout
    }

    pub(crate) fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }

    /// The shared storage buffer (not a copy).
    pub(crate) fn storage(&self) -> Arc<Vec<f32>> {
        self.0.storage.read().unwrap().clone()
    }

    /// The values in row-major order: borrowed from storage when contiguous, copied otherwise.
    pub fn values(&self) -> Values {
        let buf = self.storage();
        let layout = &self.0.layout;
        let len = layout.numel();
        if layout.is_contiguous() {
            return Values {
                buf,
                start: layout.offset,
                len,
            };
        }
        Values {
            buf: Arc::new(layout.gather(&buf)),
            start: 0,
            len,
        }
    }

    /// The values copied into a `Vec` in row-major order.
    pub fn to_vec(&self) -> Vec<f32> {
        self.values().to_vec()
    }

    /// The single value of a one-element tensor. PyTorch: `t.item()`.
    #[track_caller]
    pub fn item(&self) -> f32 {
        assert!(
            self.numel() == 1,
            "item: tensor of shape {:?} has {} elements, not 1",
            self.shape(),
            self.numel()
        );
        self.values()[0]
    }

    /// The value at a full n-d index (for tests and examples; slow in loops).
    #[track_caller]
    pub fn at(&self, index: &[usize]) -> f32 {
        let l = &self.0.layout;
        assert!(
            index.len() == l.shape.len() && index.iter().zip(&l.shape).all(|(i, d)| i < d),
            "at: index {index:?} out of range for shape {:?}",
            l.shape
        );
        let pos: usize = l.offset
            + index
                .iter()
                .zip(&l.strides)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        self.storage()[pos]
    }

    // ---------------------------------------------------------------- gradients

    /// The accumulated gradient of a leaf (same shape), or `None` before any backward.
    pub fn grad(&self) -> Option<Tensor> {
        let g = self.0.grad.lock().unwrap().clone()?;
        Some(Tensor::new_inner(
            g,
            Layout::contiguous(self.shape()),
            false,
            None,
        ))
    }

    /// Clears the accumulated gradient. PyTorch: `t.grad = None`.
    pub fn zero_grad(&self) {
        *self.0.grad.lock().unwrap() = None;
    }

    /// Runs `f` on the accumulated gradient values, if any (no copy).
    pub fn with_grad<R>(&self, f: impl FnOnce(Option<&[f32]>) -> R) -> R {
        let g = self.0.grad.lock().unwrap();
        f(g.as_ref().map(|v| v.as_slice()))
    }

    /// Mutates the accumulated gradient in place, if there is one (gradient clipping).
    pub fn update_grad(&self, f: impl FnOnce(&mut [f32])) {
        if let Some(g) = self.0.grad.lock().unwrap().as_mut() {
            f(Arc::make_mut(g).as_mut_slice());
        }
    }

    /// Replaces the accumulated gradient with `values` (same number of elements): where
    /// data-parallel training writes back a gradient summed over processes.
    #[track_caller]
    pub fn set_grad(&self, values: Vec<f32>) {
        assert_eq!(
            values.len(),
            self.numel(),
            "set_grad: {} values for a tensor of shape {:?}",
            values.len(),
            self.shape()
        );
        *self.0.grad.lock().unwrap() = Some(Arc::new(values));
    }

    pub(crate) fn accumulate_grad(&self, dx: Vec<f32>) {
        let mut slot = self.0.grad.lock().unwrap();
        match slot.as_mut() {
            None => *slot = Some(Arc::new(dx)),
            Some(g) => {
                for (a, b) in Arc::make_mut(g).iter_mut().zip(&dx) {
                    *a += b;
                }
            }
        }
    }

    /// Mutates the values of a contiguous tensor in place (used by optimizers, under no
    /// autograd). If another tensor still shares the buffer, it is copied first so that tensor
    /// keeps its values (copy-on-write).
    #[track_caller]
    pub fn update(&self, f: impl FnOnce(&mut [f32])) {
        let l = &self.0.layout;
        assert!(
            l.is_contiguous(),
            "update: tensor of shape {:?} is a strided view; update its base tensor",
            l.shape
        );
        let mut storage = self.0.storage.write().unwrap();
        let buf = Arc::make_mut(&mut storage);
        f(&mut buf[l.offset..l.offset + l.numel()]);
    }

    /// Overwrites the values with `data` (same number of elements).
    #[track_caller]
    pub fn copy_from_slice(&self, data: &[f32]) {
        assert_eq!(data.len(), self.numel(), "copy_from_slice: length mismatch");
        self.update(|v| v.copy_from_slice(data));
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.values();
        write!(f, "Tensor(shape={:?}", self.shape())?;
        if v.len() <= 16 {
            write!(f, ", data={:?}", &v[..])?;
        } else {
            write!(f, ", data=[{:?}, …]", &v[..8])?;
        }
        if let Some(op) = self.op_name() {
            write!(f, ", op={op}")?;
        } else if self.is_requires_grad() {
            write!(f, ", requires_grad")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requires_grad_keeps_a_whole_buffer_and_copies_it_on_write() {
        let a = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]);
        let p = a.clone().requires_grad();
        assert!(Arc::ptr_eq(&a.storage(), &p.storage()), "no copy");
        assert!(p.is_requires_grad() && !a.is_requires_grad());
        p.update(|v| v[0] = 9.0);
        assert_eq!(
            a.to_vec(),
            [1.0, 2.0, 3.0],
            "the other holder keeps its values"
        );
        assert_eq!(p.to_vec(), [9.0, 2.0, 3.0]);
        // a view (here a transpose, and a narrowed part) gets a contiguous buffer of its own
        let m = Tensor::from_vec((0..6).map(|x| x as f32).collect(), &[2, 3]);
        let t = m.t().requires_grad();
        assert_eq!(t.to_vec(), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert!(!Arc::ptr_eq(&m.storage(), &t.storage()));
        let row = m.narrow(0, 1, 1).requires_grad();
        assert_eq!(
            (row.to_vec(), row.storage().len()),
            (vec![3.0, 4.0, 5.0], 3)
        );
    }

    #[test]
    #[should_panic(expected = "from_vec: 5 values do not fill shape [2, 3]")]
    fn from_vec_checks_length() {
        Tensor::from_vec(vec![0.0; 5], &[2, 3]);
    }

    #[test]
    fn ids_increase() {
        let a = Tensor::zeros(&[1]);
        let b = Tensor::zeros(&[1]);
        assert!(b.id() > a.id());
    }

    #[test]
    fn dropping_a_deep_graph_does_not_overflow_the_stack() {
        let a = Tensor::scalar(1.0).requires_grad();
        let mut y = a.clone();
        for _ in 0..200_000 {
            y = y.mul_scalar(1.0);
        }
        drop(y);
    }

    #[test]
    fn update_copies_on_write_when_shared() {
        let a = Tensor::from_vec(vec![1.0, 2.0], &[2]);
        let snapshot = a.detach(); // shares storage
        a.update(|v| v[0] = 10.0);
        assert_eq!(a.to_vec(), [10.0, 2.0]);
        assert_eq!(snapshot.to_vec(), [1.0, 2.0]);
    }
}
