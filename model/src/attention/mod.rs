//! Chapter 3: attention, in the order the book builds it.
//!
//! | book section | here |
//! |---|---|
//! | 3.3.1 attention for one query, no trainable weights | [`simplified::attention_for_query`] |
//! | 3.3.2 all queries at once | [`simplified::simplified_self_attention`] |
//! | 3.4.1 trainable weights as raw matrices | [`SelfAttentionV1`] |
//! | 3.4.2 trainable weights as `Linear` layers | [`SelfAttentionV2`] |
//! | 3.5 causal mask + dropout on the weights | [`CausalAttention`], [`causal_mask`] |
//! | 3.6.1 heads stacked side by side | [`MultiHeadAttentionWrapper`] |
//! | 3.6.2 one projection, heads by reshape | [`MultiHeadAttention`] (fused and composed paths, KV cache) |

pub mod causal;
pub mod multi_head;
pub mod self_attention;
pub mod simplified;

pub use causal::{causal_mask, CausalAttention};
pub use multi_head::{KvCache, LayerCache, MultiHeadAttention, MultiHeadAttentionWrapper};
pub use self_attention::{SelfAttentionV1, SelfAttentionV2};
