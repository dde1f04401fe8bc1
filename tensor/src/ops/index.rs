//! Indexing ops: `index_select` (the embedding lookup), `gather_last` (pick one entry per
//! row, as cross-entropy does with the target ids), `masked_fill` (the causal mask) and
//! `where_cond`.
//!
//! | op | forward | backward |
//! |---|---|---|
//! | index_select | `y[.., r, ..] = x[.., idx[r], ..]` | `dx[.., idx[r], ..] += dy[.., r, ..]` — a repeated id collects the sum |
//! | gather_last | `y[r] = x[r, idx[r]]` | `dx[r, idx[r]] += dy[r]` |
//! | masked_fill | `y = mask ? v : x` | `dx = mask ? 0 : dy` |
//! | where_cond | `y = cond ? a : b` | `da = cond ? dy : 0`, `db = cond ? 0 : dy` |

use crate::autograd::{Backward, GradStore};
use crate::tensor::Tensor;

struct IndexSelectNode {
    indices: Vec<usize>,
    outer: usize,
    n: usize,
    inner: usize,
}

impl Backward for IndexSelectNode {
    fn name(&self) -> &'static str {
        "index_select"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &[f32], grads: &mut GradStore) {
        let Some(dinp) = grads.slot(&inputs[0]) else {
            return;
        };
        let (r, inner) = (self.indices.len(), self.inner);
        for o in 0..self.outer {
            for (j, &idx) in self.indices.iter().enumerate() {
                let src = &dout[(o * r + j) * inner..(o * r + j + 1) * inner];
                let dst = &mut dinp[(o * self.n + idx) * inner..(o * self.n + idx + 1) * inner];
                for (d, g) in dst.iter_mut().zip(src) {
                    *d += g;
                }
            }
        }
    }
}

struct GatherLastNode {
    indices: Vec<usize>,
}

impl Backward for GatherLastNode {
    fn name(&self) -> &'static str {
        "gather_last"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &[f32], grads: &mut GradStore) {
        let c = inputs[0].size(-1);
        if let Some(dinp) = grads.slot(&inputs[0]) {
            for (r, (&idx, &g)) in self.indices.iter().zip(dout).enumerate() {
                dinp[r * c + idx] += g;
            }
        }
    }
}

/// Shared by masked_fill and where_cond: gradient flows to `inputs[0]` where `keep[i]`, and to
/// `inputs[1]` (if any) elsewhere.
struct SelectNode {
    name: &'static str,
    keep: Vec<bool>,
}

impl Backward for SelectNode {
    fn name(&self) -> &'static str {
        self.name
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, dout: &[f32], grads: &mut GradStore) {
        if let Some(da) = grads.slot(&inputs[0]) {
            for ((d, &g), &k) in da.iter_mut().zip(dout).zip(&self.keep) {
                if k {
                    *d += g;
                }
            }
        }
        if let Some(b) = inputs.get(1) {
            if let Some(db) = grads.slot(b) {
                for ((d, &g), &k) in db.iter_mut().zip(dout).zip(&self.keep) {
                    if !k {
                        *d += g;
                    }
                }
            }
        }
    }
}

impl Tensor {
    /// Picks entries `indices` along axis `dim`; the result has `indices.len()` entries there.
    /// With `dim = 0` on a `[vocab, emb]` table this is the embedding lookup.
    /// PyTorch: `torch.index_select(t, dim, indices)`.
    #[track_caller]
    pub fn index_select(&self, dim: isize, indices: &[usize]) -> Tensor {
        let d = self.axis("index_select", dim);
        let shape = self.shape();
        let n = shape[d];
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            panic!("index_select: index {bad} out of range for axis {d} of shape {shape:?}");
        }
        let outer: usize = shape[..d].iter().product();
        let inner: usize = shape[d + 1..].iter().product();
        let x = self.values();
        let mut out = Vec::with_capacity(outer * indices.len() * inner);
        for o in 0..outer {
            for &idx in indices {
                out.extend_from_slice(&x[(o * n + idx) * inner..(o * n + idx + 1) * inner]);
            }
        }
        let mut out_shape = shape.to_vec();
        out_shape[d] = indices.len();
        let indices = indices.to_vec();
        Tensor::from_op(out, &out_shape, &[self], || IndexSelectNode {
            indices,
            outer,
            n,
            inner,
        })
    }

    /// For each row (all axes but the last), the entry at `indices[row]`: shape `[..]` from
    /// `[.., C]`. PyTorch: `t.gather(-1, idx.unsqueeze(-1)).squeeze(-1)`.
    #[track_caller]
    pub fn gather_last(&self, indices: &[usize]) -> Tensor {
        let c = self.size(-1);
        let rows = self.numel() / c.max(1);
        assert!(
            indices.len() == rows,
            "gather_last: {} indices for {rows} rows of shape {:?}",
            indices.len(),
            self.shape()
        );
        if let Some(&bad) = indices.iter().find(|&&i| i >= c) {
            panic!(
                "gather_last: index {bad} out of range for last axis of shape {:?}",
                self.shape()
            );
        }
        let x = self.values();
        let out = indices
            .iter()
            .enumerate()
            .map(|(r, &i)| x[r * c + i])
            .collect();
        let shape = &self.shape()[..self.ndim() - 1];
        let indices = indices.to_vec();
        Tensor::from_op(out, shape, &[self], || GatherLastNode { indices })
    }

    /// `value` where `mask` is non-zero, else `self`; `mask` broadcasts to `self`'s shape.
    /// The causal mask of attention fills future positions with −∞.
    /// PyTorch: `t.masked_fill(mask.bool(), value)`.
    #[track_caller]
    pub fn masked_fill(&self, mask: &Tensor, value: f32) -> Tensor {
        let m = mask.broadcast_to(self.shape()).values();
        let x = self.values();
        let keep: Vec<bool> = m.iter().map(|&v| v == 0.0).collect();
        let out = x
            .iter()
            .zip(&keep)
            .map(|(&x, &k)| if k { x } else { value })
            .collect();
        Tensor::from_op(out, self.shape(), &[self], || SelectNode {
            name: "masked_fill",
            keep,
        })
    }

    /// `a` where `cond` is non-zero, else `b`; all three broadcast together.
    /// PyTorch: `torch.where(cond.bool(), a, b)`.
    #[track_caller]
    pub fn where_cond(cond: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
        let shape = crate::layout::broadcast_shapes(a.shape(), b.shape())
            .and_then(|s| crate::layout::broadcast_shapes(&s, cond.shape()))
            .unwrap_or_else(|| {
                panic!(
                    "where_cond: shapes cond {:?}, a {:?}, b {:?} do not broadcast",
                    cond.shape(),
                    a.shape(),
                    b.shape()
                )
            });
        let (a, b) = (a.broadcast_to(&shape), b.broadcast_to(&shape));
        let c = cond.broadcast_to(&shape).values();
        let keep: Vec<bool> = c.iter().map(|&v| v != 0.0).collect();
        let (av, bv) = (a.values(), b.values());
        let out = keep
            .iter()
            .enumerate()
            .map(|(i, &k)| if k { av[i] } else { bv[i] })
            .collect();
        Tensor::from_op(out, &shape, &[&a, &b], || SelectNode {
            name: "where_cond",
            keep,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::gradcheck;
    use crate::{Rng, Tensor};

    #[test]
    fn embedding_lookup_accumulates_repeated_ids() {
        let table = Tensor::arange(6).reshape(&[3, 2]).requires_grad();
        let y = table.index_select(0, &[2, 0, 2]);
        assert_eq!(y.to_vec(), [4., 5., 0., 1., 4., 5.]);
        y.sum_all().backward();
        // row 2 was looked up twice, row 1 never
        assert_eq!(table.grad().unwrap().to_vec(), [1., 1., 0., 0., 2., 2.]);
    }

    #[test]
    fn masked_fill_and_where() {
        let x = Tensor::arange(4).reshape(&[2, 2]);
        let upper = Tensor::from_vec(vec![0., 1., 0., 0.], &[2, 2]);
        assert_eq!(x.masked_fill(&upper, -1.0).to_vec(), [0., -1., 2., 3.]);
        let c = Tensor::from_vec(vec![1., 0.], &[2]);
        let y = Tensor::where_cond(&c, &x, &Tensor::scalar(9.0));
        assert_eq!(y.to_vec(), [0., 9., 2., 9.]);
        assert_eq!(x.gather_last(&[1, 0]).to_vec(), [1., 2.]);
    }

    #[test]
    #[should_panic(expected = "index_select: index 3 out of range for axis 0 of shape [3, 2]")]
    fn out_of_range_index_panics() {
        Tensor::zeros(&[3, 2]).index_select(0, &[3]);
    }

    #[test]
    fn gradcheck_index_ops() {
        let mut rng = Rng::seed(10);
        let x = Tensor::randn(&[4, 3, 5], &mut rng);
        let y = Tensor::randn(&[3, 5], &mut rng);
        let mask = Tensor::from_vec(
            (0..15).map(|i| (i % 3 == 0) as u8 as f32).collect(),
            &[3, 5],
        );
        gradcheck(&[&x], |t| t[0].index_select(0, &[3, 1, 3]), &mut rng).unwrap();
        gradcheck(&[&x], |t| t[0].index_select(1, &[2, 2, 0, 1]), &mut rng).unwrap();
        let idx: Vec<usize> = (0..12).map(|i| i % 5).collect();
        gradcheck(&[&x], |t| t[0].gather_last(&idx), &mut rng).unwrap();
        gradcheck(&[&x], |t| t[0].masked_fill(&mask, 0.0), &mut rng).unwrap();
        gradcheck(
            &[&x, &y],
            |t| Tensor::where_cond(&mask, &t[0], &t[1]),
            &mut rng,
        )
        .unwrap();
    }
}
