//! Simplified self-attention with no trainable weights (book section 3.3).
//!
//! Each token's *context vector* is a weighted average of all the input vectors, where the
//! weights say how much each input matters to this token:
//! ```text
//! ωᵢⱼ = xᵢ · xⱼ            attention scores: dot products (similarity)
//! αᵢ  = softmax(ωᵢ)        attention weights: positive, summing to 1
//! zᵢ  = Σⱼ αᵢⱼ · xⱼ         context vector
//! ```

use tensor::Tensor;

/// Attention weights and context vector of one query row of `inputs` `[T, d]` (3.3.1):
/// returns (`α` `[T]`, `z` `[d]`).
#[track_caller]
pub fn attention_for_query(inputs: &Tensor, query: usize) -> (Tensor, Tensor) {
    let x_q = inputs.narrow(0, query, 1); // [1, d]
    let scores = x_q.matmul(&inputs.t()).squeeze(0); // ω = x_q · xⱼ for every j: [T]
    let weights = scores.softmax(0); // α
    let context = weights.unsqueeze(0).matmul(inputs).squeeze(0); // z = Σ αⱼ xⱼ
    (weights, context)
}

/// All queries at once (3.3.2): returns (weights `[T, T]`, context vectors `[T, d]`).
pub fn simplified_self_attention(inputs: &Tensor) -> (Tensor, Tensor) {
    let scores = inputs.matmul(&inputs.t()); // ω = X·Xᵀ
    let weights = scores.softmax(-1); // row-wise softmax
    let context = weights.matmul(inputs); // Z = A·X
    (weights, context)
}

/// The book's six 3-d embeddings of "Your journey starts with one step" (section 3.3).
pub fn your_journey_inputs() -> Tensor {
    Tensor::from_vec(
        vec![
            0.43, 0.15, 0.89, // Your     (x¹)
            0.55, 0.87, 0.66, // journey  (x²)
            0.57, 0.85, 0.64, // starts   (x³)
            0.22, 0.58, 0.33, // with     (x⁴)
            0.77, 0.25, 0.10, // one      (x⁵)
            0.05, 0.80, 0.55, // step     (x⁶)
        ],
        &[6, 3],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_4dp(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 5e-5, "got {got:?}, book prints {want:?}");
        }
    }

    #[test]
    fn journey_weights_and_context_match_the_book() {
        let inputs = your_journey_inputs();
        let (w, z) = attention_for_query(&inputs, 1);
        // Book 3.3.1: "Attention weights: tensor([0.1385, 0.2379, 0.2333, 0.1240, 0.1082, 0.1581])"
        assert_4dp(
            &w.to_vec(),
            &[0.1385, 0.2379, 0.2333, 0.1240, 0.1082, 0.1581],
        );
        assert!((w.sum_all().item() - 1.0).abs() < 1e-6);
        // Book: context vector z(2) = tensor([0.4419, 0.6515, 0.5683])
        assert_4dp(&z.to_vec(), &[0.4419, 0.6515, 0.5683]);
    }

    #[test]
    fn all_weights_match_the_book() {
        let (w, z) = simplified_self_attention(&your_journey_inputs());
        // Book 3.3.2, the full 6×6 attention-weight matrix
        #[rustfmt::skip]
        let book = [
            0.2098, 0.2006, 0.1981, 0.1242, 0.1220, 0.1452,
            0.1385, 0.2379, 0.2333, 0.1240, 0.1082, 0.1581,
            0.1390, 0.2369, 0.2326, 0.1242, 0.1108, 0.1565,
            0.1435, 0.2074, 0.2046, 0.1462, 0.1263, 0.1720,
            0.1526, 0.1958, 0.1975, 0.1367, 0.1879, 0.1295,
            0.1385, 0.2184, 0.2128, 0.1420, 0.0988, 0.1896,
        ];
        assert_4dp(&w.to_vec(), &book);
        // and the context vectors printed there
        #[rustfmt::skip]
        let contexts = [
            0.4421, 0.5931, 0.5790,
            0.4419, 0.6515, 0.5683,
            0.4431, 0.6496, 0.5671,
            0.4304, 0.6298, 0.5510,
            0.4671, 0.5910, 0.5266,
            0.4177, 0.6503, 0.5645,
        ];
        assert_4dp(&z.to_vec(), &contexts);
    }
}
