//! The differentiable ops. Each file holds one op or one family of ops: the forward kernel,
//! the backward kernel right beside it with the derivative written out, the graph node that
//! connects them, and the op's tests (a hand-worked case and a gradient check).
//!
//! | file | ops |
//! |---|---|
//! | [`unary`] | `neg`, `exp`, `log`, `sqrt`, `tanh`, `relu`, `sigmoid`, `powf`, scalar add/mul |
//! | [`gelu`] | `gelu` (GPT-2's tanh approximation) |
//! | [`binary`] | `add`, `sub`, `mul`, `div` with NumPy broadcasting (and the `+ - * /` operators) |
//! | [`reduce`] | `sum`, `mean`, `max`, `var` over an axis, `sum_all`, `mean_all` |
//! | [`softmax`] | `softmax`, `log_softmax` |
//! | [`matmul`] | `matmul`: 2-D and batched, broadcast batch axes, through SGEMM |
//! | [`movement`] | `reshape`, `permute`, `transpose`, `narrow`, `concat`, `split`, `broadcast_to`, … |
//! | [`index`] | `index_select` (embedding lookup), `gather_last`, `masked_fill`, `where_cond` |
//! | [`dropout`] | `dropout` |
//!
//! Fused ops for the hot paths of a GPT. Each has a composed twin built from the ops above,
//! and a test that both give the same values and gradients:
//!
//! | file | op | composed twin |
//! |---|---|---|
//! | [`linear`] | `linear` (x·Wᵀ + b) | `matmul` + `add` |
//! | [`layer_norm`] | `layer_norm` | `mean`, `var`, `sub`, `div`, `mul`, `add` |
//! | [`cross_entropy`] | `cross_entropy` (softmax + NLL) | `log_softmax` + `gather_last` + `mean_all` |
//! | [`attention`] | `causal_attention` | `matmul`, `masked_fill`, `softmax`, `dropout`, `matmul` |

pub mod attention;
pub mod binary;
pub mod cross_entropy;
pub mod dropout;
pub mod gelu;
pub mod index;
pub mod layer_norm;
pub mod linear;
pub mod matmul;
pub mod movement;
pub mod reduce;
pub mod softmax;
pub mod unary;
