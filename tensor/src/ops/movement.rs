//! Ops that move values around without arithmetic: views and copies.
//!
//! A *view* (`reshape` of a contiguous tensor, `permute`, `transpose`, `narrow`, `split`,
//! `broadcast_to`, `unsqueeze`, `squeeze`) shares the input's storage and only changes the
//! `Layout` (shape, strides and offset). Its backward is always the same: every output element came from one input
//! position, so the output gradient is *added* back at that position. One rule covers them
//! all: describe the view as a layout over the input's contiguous gradient buffer (`rel`) and
//! scatter-add through it. Broadcasting reads one position many times (stride 0), so the add
//! sums those gradients: that is why a broadcast's backward is a sum.
//!
//! `contiguous` and `concat` copy values; their backward copies gradients back.

use crate::autograd::{Backward, GradStore};
use crate::layout::{broadcast_shapes, Layout};
use crate::tensor::Tensor;

/// Backward of any view: `dinp[rel(i)] += dout[i]`, with `rel` the view expressed over the
/// input's contiguous layout.
struct ViewNode {
    name: &'static str,
    rel: Layout,
}

impl Backward for ViewNode {
    fn name(&self) -> &'static str {
        self.name
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &[f32], grads: &mut GradStore) {
        // A reshape or a permutation of axes reads each input value once, so its gradient is
        // dout put back in the input's order: a gather through the inverse view, in parallel
        // pieces, with no zeroed buffer first. Other views (broadcasts, narrowing) scatter.
        match self.rel.inverse(inputs[0].numel()) {
            Some(inverse) => grads.add_by_chunks(&inputs[0], |start, piece| {
                inverse.add_range_into(dout, start, piece)
            }),
            None => {
                if let Some(dinp) = grads.slot(&inputs[0]) {
                    self.rel.scatter_add(dinp, dout);
                }
            }
        }
    }
}

/// Backward of a copy with the same shape: `dinp += dout`.
struct CopyNode;

impl Backward for CopyNode {
    fn name(&self) -> &'static str {
        "contiguous"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &[f32], grads: &mut GradStore) {
        grads.add_by_chunks(&inputs[0], |start, piece| {
            for (d, g) in piece.iter_mut().zip(&dout[start..]) {
                *d += g;
            }
        });
    }
}

impl Tensor {
    /// A view built by applying the same layout transform to the real storage layout and to
    /// the input's contiguous layout (the latter is what backward scatters through).
    fn view(&self, name: &'static str, transform: impl Fn(&Layout) -> Layout) -> Tensor {
        let layout = transform(self.layout());
        let rel = transform(&Layout::contiguous(self.shape()));
        self.view_op(layout, || ViewNode { name, rel })
    }

    /// The values in a new contiguous buffer if this is a strided view, else `self`.
    /// PyTorch: `t.contiguous()`.
    pub fn contiguous(&self) -> Tensor {
        if self.is_contiguous() {
            return self.clone();
        }
        let values = self.layout().gather(&self.storage());
        Tensor::from_op(values, self.shape(), &[self], || CopyNode)
    }

    /// The same values in a new shape with the same number of elements. A view when the
    /// input is contiguous; otherwise the values are copied first. PyTorch: `t.reshape(shape)`.
    #[track_caller]
    pub fn reshape(&self, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        assert!(
            n == self.numel(),
            "reshape: cannot view shape {:?} ({} elements) as {:?} ({} elements)",
            self.shape(),
            self.numel(),
            shape,
            n
        );
        if shape == self.shape() {
            return self.clone();
        }
        let base = self.contiguous();
        base.view("reshape", |l| Layout {
            shape: shape.to_vec(),
            strides: crate::layout::contiguous_strides(shape),
            offset: l.offset,
        })
    }

    /// Reorders the axes: axis `i` of the result is axis `perm[i]` of the input. A view.
    /// PyTorch: `t.permute(perm)`.
    #[track_caller]
    pub fn permute(&self, perm: &[usize]) -> Tensor {
        let mut seen = vec![false; self.ndim()];
        let ok = perm.len() == self.ndim()
            && perm
                .iter()
                .all(|&p| p < seen.len() && !std::mem::replace(&mut seen[p], true));
        assert!(
            ok,
            "permute: {perm:?} is not a permutation of the axes of shape {:?}",
            self.shape()
        );
        self.view("permute", |l| l.permute(perm))
    }

    /// Swaps two axes (negative counts from the end). A view. PyTorch: `t.transpose(d0, d1)`.
    #[track_caller]
    pub fn transpose(&self, d0: isize, d1: isize) -> Tensor {
        let (a, b) = (self.axis("transpose", d0), self.axis("transpose", d1));
        let mut perm: Vec<usize> = (0..self.ndim()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// The transpose of a 2-D tensor. PyTorch: `t.T`.
    #[track_caller]
    pub fn t(&self) -> Tensor {
        assert!(
            self.ndim() == 2,
            "t: needs a 2-D tensor, got shape {:?}",
            self.shape()
        );
        self.transpose(0, 1)
    }

    /// `len` entries of axis `dim` starting at `start`. A view. PyTorch: `t.narrow(dim, start, len)`.
    #[track_caller]
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Tensor {
        let d = self.axis("narrow", dim);
        assert!(
            start + len <= self.shape()[d],
            "narrow: range {start}..{} out of bounds for axis {d} of shape {:?}",
            start + len,
            self.shape()
        );
        self.view("narrow", |l| l.narrow(d, start, len))
    }

    /// Cuts axis `dim` into pieces of `size` (the last may be shorter). Views.
    /// PyTorch: `t.split(size, dim)`.
    #[track_caller]
    pub fn split(&self, size: usize, dim: isize) -> Vec<Tensor> {
        assert!(size > 0, "split: size must be positive");
        let d = self.axis("split", dim);
        let n = self.shape()[d];
        (0..n)
            .step_by(size)
            .map(|start| self.narrow(d as isize, start, size.min(n - start)))
            .collect()
    }

    /// Cuts axis `dim` into `chunks` equal pieces. Views. PyTorch: `t.chunk(chunks, dim)`
    /// (here the size must divide evenly, e.g. Q/K/V or heads).
    #[track_caller]
    pub fn chunk(&self, chunks: usize, dim: isize) -> Vec<Tensor> {
        let d = self.axis("chunk", dim);
        let n = self.shape()[d];
        assert!(
            chunks > 0 && n.is_multiple_of(chunks),
            "chunk: axis {d} of shape {:?} does not split into {chunks} equal pieces",
            self.shape()
        );
        self.split(n / chunks, dim)
    }

    /// Inserts an axis of size 1 at `dim`. A view. PyTorch: `t.unsqueeze(dim)`.
    #[track_caller]
    pub fn unsqueeze(&self, dim: usize) -> Tensor {
        assert!(
            dim <= self.ndim(),
            "unsqueeze: dim {dim} out of range for shape {:?}",
            self.shape()
        );
        self.view("unsqueeze", |l| {
            let mut l = l.clone();
            l.shape.insert(dim, 1);
            l.strides.insert(dim, 0);
            l
        })
    }

    /// Removes axis `dim`, which must have size 1. A view. PyTorch: `t.squeeze(dim)`.
    #[track_caller]
    pub fn squeeze(&self, dim: isize) -> Tensor {
        let d = self.axis("squeeze", dim);
        assert!(
            self.shape()[d] == 1,
            "squeeze: axis {d} of shape {:?} is not 1",
            self.shape()
        );
        self.view("squeeze", |l| {
            let mut l = l.clone();
            l.shape.remove(d);
            l.strides.remove(d);
            l
        })
    }

    /// A view at a larger shape by NumPy broadcasting (size-1 and missing leading axes repeat).
    /// No values are copied. PyTorch: `t.expand(shape)` / `t.broadcast_to(shape)`.
    #[track_caller]
    pub fn broadcast_to(&self, shape: &[usize]) -> Tensor {
        if self.shape() == shape {
            return self.clone();
        }
        let ok = broadcast_shapes(self.shape(), shape).is_some_and(|s| s == shape);
        assert!(
            ok,
            "broadcast_to: shape {:?} cannot broadcast to {:?}",
            self.shape(),
            shape
        );
        self.view("broadcast_to", |l| l.broadcast_to(shape))
    }

    /// Joins tensors along axis `dim`; all other axes must agree. PyTorch: `torch.cat(ts, dim)`.
    #[track_caller]
    pub fn concat(tensors: &[&Tensor], dim: isize) -> Tensor {
        assert!(!tensors.is_empty(), "concat: no tensors");
        let first = tensors[0];
        let d = first.axis("concat", dim);
        for t in tensors {
            let same = t.ndim() == first.ndim()
                && (0..t.ndim()).all(|i| i == d || t.shape()[i] == first.shape()[i]);
            assert!(
                same,
                "concat: shapes {:?} and {:?} differ outside axis {d}",
                first.shape(),
                t.shape()
            );
        }
        let outer: usize = first.shape()[..d].iter().product();
        let inner: usize = first.shape()[d + 1..].iter().product();
        let widths: Vec<usize> = tensors.iter().map(|t| t.shape()[d] * inner).collect();
        let row: usize = widths.iter().sum();
        let mut out = vec![0.0; outer * row];
        let mut col = 0;
        for (t, &w) in tensors.iter().zip(&widths) {
            let v = t.values();
            for o in 0..outer {
                out[o * row + col..o * row + col + w].copy_from_slice(&v[o * w..(o + 1) * w]);
            }
            col += w;
        }
        let mut shape = first.shape().to_vec();
        shape[d] = tensors.iter().map(|t| t.shape()[d]).sum();
        Tensor::from_op(out, &shape, tensors, || ConcatNode { outer, widths })
    }
}

/// Backward of concat: each input gets back its own columns of every output row.
struct ConcatNode {
    outer: usize,
    widths: Vec<usize>,
}

impl Backward for ConcatNode {
    fn name(&self) -> &'static str {
        "concat"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &[f32], grads: &mut GradStore) {
        let row: usize = self.widths.iter().sum();
        let mut col = 0;
        for (t, &w) in inputs.iter().zip(&self.widths) {
            if let Some(dinp) = grads.slot(t) {
                for o in 0..self.outer {
                    let src = &dout[o * row + col..o * row + col + w];
                    for (d, g) in dinp[o * w..(o + 1) * w].iter_mut().zip(src) {
                        *d += g;
                    }
                }
            }
            col += w;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::gradcheck;
    use crate::{Rng, Tensor};

    #[test]
    fn views_share_storage_and_read_correctly() {
        let x = Tensor::arange(6).reshape(&[2, 3]);
        assert_eq!(x.t().to_vec(), [0., 3., 1., 4., 2., 5.]);
        assert_eq!(x.narrow(1, 1, 2).to_vec(), [1., 2., 4., 5.]);
        assert_eq!(
            x.t().contiguous().reshape(&[6]).to_vec(),
            [0., 3., 1., 4., 2., 5.]
        );
        assert_eq!(x.unsqueeze(0).shape(), &[1, 2, 3]);
        assert_eq!(x.unsqueeze(2).squeeze(2).shape(), &[2, 3]);
        let parts = x.split(2, 1);
        assert_eq!(parts[1].to_vec(), [2., 5.]);
        assert_eq!(
            Tensor::concat(&[&parts[1], &parts[0]], 1).to_vec(),
            [2., 0., 1., 5., 3., 4.]
        );
        assert_eq!(
            Tensor::arange(3).broadcast_to(&[2, 3]).to_vec(),
            [0., 1., 2., 0., 1., 2.]
        );
    }

    #[test]
    #[should_panic(expected = "reshape: cannot view shape [2, 3] (6 elements) as [4] (4 elements)")]
    fn reshape_checks_size() {
        Tensor::zeros(&[2, 3]).reshape(&[4]);
    }

    #[test]
    fn gradcheck_movement_ops() {
        let mut rng = Rng::seed(2);
        let x = Tensor::randn(&[2, 3, 4], &mut rng);
        let y = Tensor::randn(&[2, 2, 4], &mut rng);
        type Case = (&'static str, Box<dyn Fn(&[Tensor]) -> Tensor>);
        let cases: Vec<Case> = vec![
            ("reshape", Box::new(|t| t[0].reshape(&[6, 4]))),
            ("permute", Box::new(|t| t[0].permute(&[2, 0, 1]))),
            (
                "transpose+reshape",
                Box::new(|t| t[0].transpose(0, 2).reshape(&[4, 6])),
            ),
            ("narrow", Box::new(|t| t[0].narrow(1, 1, 2))),
            ("split", Box::new(|t| t[0].split(2, -1)[1].exp())),
            (
                "broadcast",
                Box::new(|t| t[0].unsqueeze(0).broadcast_to(&[3, 2, 3, 4])),
            ),
            (
                "concat",
                Box::new(|t| Tensor::concat(&[&t[0], &t[1], &t[0]], 1)),
            ),
            ("squeeze", Box::new(|t| t[0].narrow(1, 0, 1).squeeze(1))),
        ];
        for (name, f) in cases {
            gradcheck(&[&x, &y], |t| f(t), &mut rng).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn large_permutation_and_reshape_gradients_are_exact() {
        // 65,536 values: the gradients are gathered in parallel pieces. A transposed view as
        // attention's heads use it, and a reshape and a copy of the same tensor, so the
        // gradient is the sum of three contributions, each dout put back in x's order.
        let mut rng = Rng::seed(4);
        let x = Tensor::randn(&[4, 128, 8, 16], &mut rng).requires_grad();
        let r1 = Tensor::randn(&[4, 8, 128, 16], &mut rng);
        let r2 = Tensor::randn(&[512, 128], &mut rng);
        let r3 = Tensor::randn(&[4, 8, 128, 16], &mut rng);
        let heads = x.transpose(1, 2);
        let loss = heads
            .mul(&r1)
            .sum_all()
            .add(&x.reshape(&[512, 128]).mul(&r2).sum_all())
            .add(&heads.contiguous().mul(&r3).sum_all());
        loss.backward();
        let back = |r: &Tensor| r.transpose(1, 2).contiguous().to_vec();
        let (a, b, c) = (back(&r1), r2.to_vec(), back(&r3));
        let got = x.grad().unwrap().to_vec();
        for i in 0..got.len() {
            // each contribution is exact; their sum in any order of two additions
            let sums = [a[i] + b[i] + c[i], a[i] + c[i] + b[i], b[i] + c[i] + a[i]];
            assert!(
                sums.contains(&got[i]),
                "element {i}: {} not a sum of {a:?}",
                got[i],
                a = (a[i], b[i], c[i])
            );
        }
    }
}
