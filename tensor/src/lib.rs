//! # The scratchgpt engine
//!
//! An f32 n-dimensional [`Tensor`] with reverse-mode automatic differentiation: everything a
//! GPT needs to compute a loss and its gradients, written to be read. A tour, in the order a
//! learner meets the ideas:
//!
//! 1. **Tensors and layouts** ([`tensor`](crate::Tensor), `layout.rs`). A tensor is a flat
//!    `Vec<f32>` plus a shape and strides. Views such as transpose, narrow and broadcasting
//!    change only the strides, never the values.
//! 2. **Ops** ([`ops`]). Each op computes its output and, if any input requires gradients,
//!    records a *grad fn*: which inputs it used and how to send a gradient back to them. The
//!    forward kernel and the backward kernel of an op sit side by side in one file, with the
//!    derivative written in a comment (`ops/matmul.rs` answers "how does matmul's backward
//!    work?"; `ops/binary.rs` has a table of all four arithmetic derivatives).
//! 3. **Backward** (`autograd.rs`). [`Tensor::backward`] walks the recorded graph from the
//!    loss to the leaves, newest op first, and each op *adds* its inputs' gradients; leaves
//!    collect theirs in [`Tensor::grad`]. The graph is freed on the way.
//! 4. **No-grad and detach**. [`no_grad`] turns recording off (evaluation, sampling);
//!    [`Tensor::detach`] cuts a tensor out of the graph; only tensors made with
//!    [`Tensor::requires_grad`] (the parameters) collect gradients.
//! 5. **Optimizers** ([`optim`]): SGD and AdamW update the parameters from their gradients.
//! 6. **Checking** ([`testing::gradcheck`]): every op's backward is tested against finite
//!    differences.
//! 7. **Measuring** ([`alloc_counter`]): an optional global allocator that counts live heap
//!    bytes and their peak, for measuring what an op really allocates.
//!
//! ```
//! use scratchgpt_tensor::Tensor;
//! // y = w·x + b, loss = y²; at w = 2, x = 3, b = 1: y = 7,
//! // dloss/dw = 2y·x = 42, dloss/db = 2y = 14.
//! let w = Tensor::scalar(2.0).requires_grad();
//! let b = Tensor::scalar(1.0).requires_grad();
//! let x = Tensor::scalar(3.0);
//! let y = &(&w * &x) + &b;
//! (&y * &y).backward();
//! assert_eq!(w.grad().unwrap().item(), 42.0);
//! assert_eq!(b.grad().unwrap().item(), 14.0);
//! ```
//!
//! **Errors.** Misusing shapes is a programming error: ops panic with a message naming the op
//! and the shapes involved (`matmul: inner dims differ: lhs [4, 64, 768] vs rhs [512, 768]`),
//! pointing at the caller's line.
//!
//! **Speed.** Every matmul, forward and backward, is an SGEMM call (`kernels/gemm.rs`);
//! element-wise and row-wise loops go parallel on `rayon` only above a size threshold
//! (`kernels/parallel.rs`), in pieces that make results independent of the thread count.

pub mod alloc_counter;
pub mod autograd;
pub mod kernels;
mod layout;
pub mod ops;
pub mod optim;
mod rng;
mod tensor;
pub mod testing;
pub mod torch_rng;

pub use autograd::{grad_enabled, no_grad, NoGradGuard};
pub use layout::{broadcast_shapes, contiguous_strides};
pub use optim::{AdamW, Optimizer, Sgd};
pub use rng::{DropoutMask, Rng};
pub use tensor::{live_tensors, Tensor, Values};

/// The README's Rust code blocks, compiled and run as doc tests of this crate (so the "use it as
/// a library" program there always builds against the current API).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
