//! Shapes, strides and the NumPy broadcasting rule.
//!
//! A tensor's values live in one flat `Vec<f32>` (its *storage*). The [`Layout`] says how the
//! n-d index `[i0, i1, …]` maps into that vector:
//!
//! ```text
//! position = offset + i0·strides[0] + i1·strides[1] + …
//! ```
//!
//! A fresh tensor is *contiguous* (row-major): the last axis has stride 1, the one before it
//! stride `shape[last]`, and so on. Views change only the layout and share the storage:
//! a transpose swaps two strides, `narrow` moves the offset, and broadcasting gives a new
//! axis stride 0 so one value is read many times. No values are copied for any of these.

/// Shape, strides and offset of a tensor inside its storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub offset: usize,
}

/// Row-major strides of `shape`: the last axis moves by 1.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut step = 1;
    for (stride, &dim) in strides.iter_mut().zip(shape).rev() {
        *stride = step;
        step *= dim;
    }
    strides
}

/// The shape two operands broadcast to under NumPy's rule, or `None` if they don't.
///
/// Align the shapes at their last axis; each pair of sizes must be equal or contain a 1,
/// and the result takes the larger. Missing leading axes count as 1.
/// `[4, 1, 3]` and `[5, 3]` broadcast to `[4, 5, 3]`.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

impl Layout {
    pub fn contiguous(shape: &[usize]) -> Layout {
        Layout {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the values are stored row-major with no gaps, starting at `offset`.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&dim, &stride) in self.shape.iter().zip(&self.strides).rev() {
            if dim != 1 && stride != expected {
                return false;
            }
            expected *= dim;
        }
        true
    }

    /// The view with axes reordered: axis `i` of the result is axis `perm[i]` of `self`.
    pub fn permute(&self, perm: &[usize]) -> Layout {
        Layout {
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        }
    }

    /// The view of `len` entries of axis `dim` starting at `start`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Layout {
        let mut out = self.clone();
        out.offset += start * self.strides[dim];
        out.shape[dim] = len;
        out
    }

    /// The view broadcast to `shape` (already checked compatible): new or size-1 axes get
    /// stride 0, so the same stored value is read for every index along them.
    pub fn broadcast_to(&self, shape: &[usize]) -> Layout {
        let extra = shape.len() - self.shape.len();
        let mut strides = vec![0; shape.len()];
        for i in 0..self.shape.len() {
            if self.shape[i] == shape[i + extra] {
                strides[i + extra] = self.strides[i];
            }
        }
        Layout {
            shape: shape.to_vec(),
            strides,
            offset: self.offset,
        }
    }

    /// Calls `f(position, run)` for each run of the last axis in row-major order, where
    /// `position` is where the run starts in storage. The runs together visit every element.
    /// Used by the strided copy and scatter loops below; the odometer has no allocation per
    /// element, only one small index vector per call.
    pub fn for_each_row(&self, mut f: impl FnMut(usize)) {
        let nd = self.shape.len();
        if self.numel() == 0 {
            return;
        }
        if nd <= 1 {
            f(self.offset);
            return;
        }
        let mut index = vec![0usize; nd - 1];
        let mut pos = self.offset;
        loop {
            f(pos);
            // advance the odometer over axes 0..nd-1
            let mut axis = nd - 1;
            loop {
                if axis == 0 {
                    return;
                }
                axis -= 1;
                index[axis] += 1;
                pos += self.strides[axis];
                if index[axis] < self.shape[axis] {
                    break;
                }
                pos -= self.strides[axis] * self.shape[axis];
                index[axis] = 0;
            }
        }
    }

    fn last_dim_and_stride(&self) -> (usize, usize) {
        match self.shape.len() {
            0 => (1, 1),
            n => (self.shape[n - 1], self.strides[n - 1]),
        }
    }

    /// Copies the viewed values out of `src` into `dst` in row-major order.
    pub fn gather_into(&self, src: &[f32], dst: &mut [f32]) {
        let (len, stride) = self.last_dim_and_stride();
        let mut out = dst.chunks_exact_mut(len.max(1));
        self.for_each_row(|pos| {
            let row = out.next().expect("gather_into: dst too short");
            if stride == 1 {
                row.copy_from_slice(&src[pos..pos + len]);
            } else {
                for (j, d) in row.iter_mut().enumerate() {
                    *d = src[pos + j * stride];
                }
            }
        });
    }

    /// Adds the row-major values of `src` into the viewed positions of `dst`. Positions that
    /// several indices share (stride 0 from broadcasting) receive the sum of all of them:
    /// exactly the backward of every view op.
    pub fn scatter_add(&self, dst: &mut [f32], src: &[f32]) {
        let (len, stride) = self.last_dim_and_stride();
        let mut rows = src.chunks_exact(len.max(1));
        self.for_each_row(|pos| {
            let row = rows.next().expect("scatter_add: src too short");
            if stride == 1 {
                for (d, s) in dst[pos..pos + len].iter_mut().zip(row) {
                    *d += s;
                }
            } else if stride == 0 {
                dst[pos] += row.iter().sum::<f32>();
            } else {
                for (j, s) in row.iter().enumerate() {
                    dst[pos + j * stride] += s;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shapes(&[4, 1, 3], &[5, 3]), Some(vec![4, 5, 3]));
        assert_eq!(broadcast_shapes(&[], &[2, 2]), Some(vec![2, 2]));
        assert_eq!(broadcast_shapes(&[2, 3], &[3, 2]), None);
        assert_eq!(broadcast_shapes(&[1], &[7]), Some(vec![7]));
    }

    #[test]
    fn transposed_view_gathers_in_logical_order() {
        // [[0,1,2],[3,4,5]] transposed is [[0,3],[1,4],[2,5]]
        let l = Layout::contiguous(&[2, 3]).permute(&[1, 0]);
        assert!(!l.is_contiguous());
        let src: Vec<f32> = (0..6).map(|x| x as f32).collect();
        let mut dst = vec![0.0; 6];
        l.gather_into(&src, &mut dst);
        assert_eq!(dst, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }

    #[test]
    fn broadcast_scatter_sums_repeats() {
        // a [3] broadcast to [2, 3]: each stored value is read twice, so it gets two grads.
        let l = Layout::contiguous(&[3]).broadcast_to(&[2, 3]);
        let mut dst = vec![0.0; 3];
        l.scatter_add(&mut dst, &[1.0, 2.0, 3.0, 10.0, 20.0, 30.0]);
        assert_eq!(dst, [11.0, 22.0, 33.0]);
    }
}
