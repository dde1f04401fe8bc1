//! Token and positional embeddings (book sections 2.7 and 2.8).
//!
//! An embedding is a lookup table: row `i` of a `[num_embeddings, dim]` weight matrix is the
//! vector for id `i`. Looking up is `index_select` on the rows, and its backward adds each
//! output row's gradient into the row it came from (a repeated id collects the sum). The book
//! shows it equals a one-hot vector times the matrix, only cheaper.
//! The position embedding is the same layer indexed by positions `0..T` instead of token ids.
//! PyTorch: `nn.Embedding(num_embeddings, dim)`, initialised N(0, 1).

use tensor::Tensor;

use crate::module::{join, Context, Module};

pub struct Embedding {
    /// `[num_embeddings, dim]`
    pub weight: Tensor,
}

impl Embedding {
    /// A table with N(0, 1) entries, as PyTorch initialises `nn.Embedding` (zeros for a
    /// [`Context::for_loading`]).
    pub fn new(num_embeddings: usize, dim: usize, ctx: &Context) -> Embedding {
        let shape = [num_embeddings, dim];
        let weight = if ctx.draws_weights() {
            Tensor::randn(&shape, &mut ctx.rng())
        } else {
            Tensor::zeros(&shape)
        };
        Embedding {
            weight: weight.requires_grad(),
        }
    }

    /// The rows for `ids`, shaped `[..shape, dim]` where `shape` is the shape of the ids
    /// (`ids.len()` must equal its product). Panics on an id past the table (a programming
    /// error: tokenizers and data loaders validate ids from users).
    #[track_caller]
    pub fn forward(&self, ids: &[usize], shape: &[usize]) -> Tensor {
        let dim = self.weight.size(1);
        let out_shape: Vec<usize> = shape.iter().copied().chain([dim]).collect();
        self.weight.index_select(0, ids).reshape(&out_shape)
    }
}

impl Module for Embedding {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        f(join(prefix, "weight"), &self.weight);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensor::testing::gradcheck;
    use tensor::Rng;

    /// Section 2.7: `torch.manual_seed(123)`, then `nn.Embedding(6, 3)`: the book's printed
    /// weights (4 decimals), and the row of id 3.
    #[test]
    fn book_embedding_weights_match_the_book() {
        let emb = Embedding::new(6, 3, &Context::book_compat(123));
        #[rustfmt::skip]
        let book = [
            0.3374, -0.1778, -0.1690,
            0.9178, 1.5810, 1.3010,
            1.2753, -0.2010, -0.1606,
            -0.4015, 0.9666, -1.1481,
            -1.1589, 0.3255, -0.6315,
            -2.8400, -0.7849, -1.4096,
        ];
        for (got, want) in emb.weight.to_vec().iter().zip(book) {
            assert!((got - want).abs() < 5e-5, "{got} vs the book's {want}");
        }
        assert_eq!(emb.forward(&[3], &[1]).to_vec(), emb.weight.to_vec()[9..12]);
    }

    #[test]
    fn lookup_equals_one_hot_times_matrix() {
        let ctx = Context::new(0);
        let emb = Embedding::new(6, 3, &ctx);
        let ids = [3, 1, 3];
        let one_hot: Vec<f32> = ids
            .iter()
            .flat_map(|&i| (0..6).map(move |j| (i == j) as u8 as f32))
            .collect();
        let via_matmul = Tensor::from_vec(one_hot, &[3, 6]).matmul(&emb.weight);
        assert_eq!(emb.forward(&ids, &[3]).to_vec(), via_matmul.to_vec());
        assert_eq!(emb.forward(&[0, 1, 2, 3], &[2, 2]).shape(), &[2, 2, 3]);
    }

    #[test]
    fn gradcheck_embedding() {
        let mut rng = Rng::seed(1);
        let w = Tensor::randn(&[5, 4], &mut rng);
        gradcheck(
            &[&w],
            |t| {
                Embedding {
                    weight: t[0].clone(),
                }
                .forward(&[4, 0, 4, 2], &[2, 2])
            },
            &mut rng,
        )
        .unwrap();
    }
}
