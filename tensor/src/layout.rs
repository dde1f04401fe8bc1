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

    /// Calls `f(position)` for each run of the last axis (each row) in row-major order, where
    /// `position` is where the run starts in storage. The runs together visit every element.
    /// Used by the scatter loop below and by batched matmul; see [`Layout::for_each_run`].
    pub fn for_each_row(&self, mut f: impl FnMut(usize)) {
        self.for_each_run(0, self.numel(), |_, pos, _| f(pos));
    }

    fn last_dim_and_stride(&self) -> (usize, usize) {
        match self.shape.len() {
            0 => (1, 1),
            n => (self.shape[n - 1], self.strides[n - 1]),
        }
    }

    /// Calls `f(done, position, len)` for the runs along the last axis that cover elements
    /// `start..start + count` of the view in row-major order: `done` elements come before the
    /// run, which starts at storage `position` and has `len` elements, one last-axis stride
    /// apart. Lets a copy be split into pieces that start anywhere (for parallel loops). The
    /// odometer over the leading axes allocates one small index vector per call, nothing per
    /// element.
    fn for_each_run(&self, start: usize, count: usize, mut f: impl FnMut(usize, usize, usize)) {
        let nd = self.shape.len();
        let (len, _) = self.last_dim_and_stride();
        if count == 0 || len == 0 {
            return;
        }
        if nd == 0 {
            f(0, self.offset, count);
            return;
        }
        // where element `start` lies: row index over the leading axes, column in the row
        let (mut row, mut col) = (start / len, start % len);
        let mut index = vec![0usize; nd - 1];
        let mut row_pos = self.offset;
        for axis in (0..nd - 1).rev() {
            index[axis] = row % self.shape[axis];
            row /= self.shape[axis];
            row_pos += index[axis] * self.strides[axis];
        }
        let stride = self.strides[nd - 1];
        let mut done = 0;
        loop {
            let run = (len - col).min(count - done);
            f(done, row_pos + col * stride, run);
            done += run;
            if done == count {
                return;
            }
            col = 0;
            // advance the odometer over the leading axes
            let mut axis = nd - 1;
            loop {
                axis -= 1;
                index[axis] += 1;
                row_pos += self.strides[axis];
                if index[axis] < self.shape[axis] {
                    break;
                }
                row_pos -= self.strides[axis] * self.shape[axis];
                index[axis] = 0;
            }
        }
    }

    /// Copies elements `start..start + dst.len()` of the view (row-major) out of `src`.
    pub fn gather_range(&self, src: &[f32], start: usize, dst: &mut [f32]) {
        let (_, stride) = self.last_dim_and_stride();
        self.for_each_run(start, dst.len(), |done, pos, len| {
            let out = &mut dst[done..done + len];
            if stride == 1 {
                out.copy_from_slice(&src[pos..pos + len]);
            } else {
                for (j, d) in out.iter_mut().enumerate() {
                    *d = src[pos + j * stride];
                }
            }
        });
    }

    /// Adds elements `start..start + dst.len()` of the view (row-major) of `src` onto `dst`.
    pub fn add_range_into(&self, src: &[f32], start: usize, dst: &mut [f32]) {
        let (_, stride) = self.last_dim_and_stride();
        self.for_each_run(start, dst.len(), |done, pos, len| {
            let out = &mut dst[done..done + len];
            if stride == 1 {
                out.iter_mut()
                    .zip(&src[pos..pos + len])
                    .for_each(|(d, s)| *d += s);
            } else {
                for (j, d) in out.iter_mut().enumerate() {
                    *d += src[pos + j * stride];
                }
            }
        });
    }

    /// The viewed values of `src` in a new row-major buffer, copied in parallel pieces when
    /// there are many (each piece by the thread that fills it).
    pub fn gather(&self, src: &[f32]) -> Vec<f32> {
        crate::kernels::parallel::new_by_chunks(self.numel(), |start, piece| {
            self.gather_range(src, start, piece)
        })
    }

    /// For a view that reads each of the `n` values of a contiguous buffer exactly once (a
    /// reshape, or a permutation of axes: no broadcast, no narrowing), the layout over the
    /// view's own row-major values that reads them back in the buffer's order, so that
    /// gathering through it undoes the view. `None` for any other view.
    ///
    /// The view's axes (those longer than 1), largest stride first, must tile the buffer
    /// row-major; the inverse takes them in that order, each with the stride it has in the
    /// view's row-major order.
    pub fn inverse(&self, n: usize) -> Option<Layout> {
        if self.offset != 0 || self.numel() != n {
            return None;
        }
        let mut axes: Vec<usize> = (0..self.shape.len())
            .filter(|&a| self.shape[a] > 1)
            .collect();
        axes.sort_by_key(|&a| std::cmp::Reverse(self.strides[a]));
        let mut expected = 1;
        for &a in axes.iter().rev() {
            if self.strides[a] != expected {
                return None;
            }
            expected *= self.shape[a];
        }
        let view_strides = contiguous_strides(&self.shape);
        Some(Layout {
            shape: axes.iter().map(|&a| self.shape[a]).collect(),
            strides: axes.iter().map(|&a| view_strides[a]).collect(),
            offset: 0,
        })
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
        assert_eq!(l.gather(&src), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }

    #[test]
    fn broadcast_scatter_sums_repeats() {
        // a [3] broadcast to [2, 3]: each stored value is read twice, so it gets two grads.
        let l = Layout::contiguous(&[3]).broadcast_to(&[2, 3]);
        let mut dst = vec![0.0; 3];
        l.scatter_add(&mut dst, &[1.0, 2.0, 3.0, 10.0, 20.0, 30.0]);
        assert_eq!(dst, [11.0, 22.0, 33.0]);
    }

    /// Views of a 2×3×4×5 buffer: permutations, with size-1 axes, reshapes, and ones that
    /// are not bijections (broadcast, narrow).
    fn views() -> Vec<(Layout, bool)> {
        let base = Layout::contiguous(&[2, 3, 4, 5]);
        vec![
            (base.permute(&[0, 2, 1, 3]), true),
            (base.permute(&[3, 1, 0, 2]), true),
            (base.clone(), true),
            (Layout::contiguous(&[6, 1, 20]).permute(&[2, 1, 0]), true),
            (
                Layout::contiguous(&[3, 1, 5]).broadcast_to(&[2, 3, 4, 5]),
                false,
            ),
            (base.narrow(2, 1, 2), false),
        ]
    }

    #[test]
    fn gathering_any_range_equals_that_part_of_the_whole() {
        let src: Vec<f32> = (0..120).map(|x| x as f32).collect();
        for (view, _) in views() {
            let whole = view.gather(&src);
            let n = view.numel();
            for (start, len) in [(0, n), (3, 7), (5, 1), (17, n - 17), (n - 1, 1), (9, 0)] {
                let mut part = vec![0.0; len];
                view.gather_range(&src, start, &mut part);
                assert_eq!(part, whole[start..start + len], "{view:?} {start}+{len}");
                let mut added = vec![1.0; len];
                view.add_range_into(&src, start, &mut added);
                let want: Vec<f32> = whole[start..start + len].iter().map(|x| x + 1.0).collect();
                assert_eq!(added, want);
            }
        }
    }

    #[test]
    fn inverse_undoes_permutations_and_refuses_other_views() {
        let src: Vec<f32> = (0..120).map(|x| x as f32).collect();
        for (view, bijection) in views() {
            match view.inverse(120) {
                Some(inverse) => {
                    assert!(bijection, "{view:?} is not a bijection");
                    assert_eq!(inverse.gather(&view.gather(&src)), src, "{view:?}");
                }
                None => assert!(!bijection, "{view:?} should have an inverse"),
            }
        }
        // a permutation of a smaller buffer does not cover 120 values
        assert!(Layout::contiguous(&[4, 5])
            .permute(&[1, 0])
            .inverse(120)
            .is_none());
    }
}
