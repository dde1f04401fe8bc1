//! Low-rank adaptation, LoRA (book appendix E).
//!
//! Instead of updating a pretrained weight `W` (`[out, in]`), LoRA learns a low-rank change
//! `ΔW = s·(A·B)ᵀ` with `A: [in, r]`, `B: [r, out]` and a small rank `r`, and keeps `W` frozen:
//! ```text
//! y = x·Wᵀ + b + s·(x·A·B)          A ~ kaiming_uniform(a = √5),  B = 0
//! ```
//! Because `B` starts at zero the adapted model starts out *exactly* as the pretrained one; a
//! linear layer with rank 16 trains `16·(in + out)` numbers instead of `in·out`.
//!
//! Appendix E's classes map onto this module as follows:
//! - `LoRALayer` (listing E.5) is [`LoRALayer`]: `A`, `B`, and `forward = s·(x·A·B)`;
//! - `LinearWithLoRA` (listing E.6) is a [`Linear`] whose `lora` field holds an adapter: its
//!   `forward` adds the adapter's output to the (fused) base output, so every layer built from
//!   `Linear` (attention projections, feed-forward, output head, classification head) can be
//!   adapted without changing its code;
//! - `replace_linear_with_lora` (listing E.7) with the freezing before it is [`add_lora`];
//! - the bonus material's `LinearWithLoRAMerged` is [`merge_lora`]: fold `ΔW` into `W` and drop
//!   the adapter, leaving a plain model that is as fast as the base one.
//!
//! **The scaling `s`.** The book as first printed computes `alpha·(x·A·B)`; the repository since
//! September 2025 (issue #821, PR #823) computes `(alpha/rank)·(x·A·B)`, as the LoRA paper does.
//! [`LoraScaling`] offers both; alpha/rank is the default. With the book's rank 16 and alpha 16
//! the two differ by a factor of 16, which is why the book-era run used a learning rate of
//! 5e-5 and the current one 8e-4.
//!
//! The adapter is composed from engine ops (`matmul`, `mul_scalar`, `add`), so its backward
//! pass is the engine's; the tests below gradient-check it. It scales the rank-wide product
//! `x·A` rather than the output-wide `x·A·B` (fewer multiplications, the same value up to
//! rounding).

use tensor::{no_grad, Tensor};

use crate::block::TransformerBlock;
use crate::classifier::Classifier;
use crate::gpt::GptModel;
use crate::linear::Linear;
use crate::module::{join, Context, Module};

/// How the adapter's output is scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoraScaling {
    /// `s = alpha / rank`: the LoRA paper and the book's repository since PR #823 (default).
    AlphaOverRank,
    /// `s = alpha`: the book as first printed (appendix E before September 2025).
    Alpha,
}

impl LoraScaling {
    pub const NAMES: [&'static str; 2] = ["alpha-over-rank", "alpha"];

    pub fn parse(s: &str) -> Result<LoraScaling, String> {
        match s {
            "alpha-over-rank" => Ok(LoraScaling::AlphaOverRank),
            "alpha" => Ok(LoraScaling::Alpha),
            _ => Err(format!(
                "unknown LoRA scaling {s:?}; choose one of {}",
                LoraScaling::NAMES.join(", ")
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LoraScaling::AlphaOverRank => "alpha-over-rank",
            LoraScaling::Alpha => "alpha",
        }
    }
}

/// The rank, alpha and scaling of every adapter of a model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f32,
    pub scaling: LoraScaling,
}

impl LoraConfig {
    /// Rank `rank` with alpha = rank (the book's rank 16, alpha 16) and alpha/rank scaling.
    pub fn new(rank: usize) -> LoraConfig {
        LoraConfig {
            rank,
            alpha: rank as f32,
            scaling: LoraScaling::AlphaOverRank,
        }
    }

    /// Errors (as a sentence) on a rank of 0 or an alpha that is not a positive number.
    pub fn validate(&self) -> Result<(), String> {
        if self.rank == 0 {
            return Err("the LoRA rank must be at least 1".into());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(format!(
                "the LoRA alpha must be a positive number, not {}",
                self.alpha
            ));
        }
        Ok(())
    }

    /// The factor `s` of `s·(x·A·B)`.
    pub fn scale(&self) -> f32 {
        match self.scaling {
            LoraScaling::AlphaOverRank => self.alpha / self.rank as f32,
            LoraScaling::Alpha => self.alpha,
        }
    }

    /// Trainable numbers of one adapter on a `in → out` linear layer: `rank·(in + out)`.
    pub fn parameters_for(&self, in_features: usize, out_features: usize) -> usize {
        self.rank * (in_features + out_features)
    }
}

/// Book listing E.5: the low-rank update `s·(x·A·B)` of one linear layer.
pub struct LoRALayer {
    /// `[in, rank]`, Kaiming-uniform (a = √5) as `nn.Linear`'s weights are.
    pub a: Tensor,
    /// `[rank, out]`, zeros: the adapted layer starts equal to the base layer.
    pub b: Tensor,
    /// `s`: alpha/rank or alpha (see [`LoraScaling`]).
    pub scale: f32,
}

impl LoRALayer {
    /// A new adapter for a `in_features → out_features` layer, drawing `A` from `ctx`.
    pub fn new(in_features: usize, out_features: usize, cfg: &LoraConfig, ctx: &Context) -> Self {
        // PyTorch's kaiming_uniform_(A, a=√5) on A of shape (in, rank) takes fan_in = A.size(1)
        // = rank: bound = √3·gain/√rank with gain = √(2/(1 + 5)), i.e. 1/√rank up to rounding.
        let fan_in = cfg.rank as f64;
        let bound = (3f64.sqrt() * ((2.0f64 / 6.0).sqrt() / fan_in.sqrt())) as f32;
        let a = if ctx.draws_weights() {
            Tensor::uniform(&[in_features, cfg.rank], -bound, bound, &mut ctx.rng())
        } else {
            Tensor::zeros(&[in_features, cfg.rank])
        };
        LoRALayer {
            a: a.requires_grad(),
            b: Tensor::zeros(&[cfg.rank, out_features]).requires_grad(),
            scale: cfg.scale(),
        }
    }

    /// `s·(x·A·B)` over the last axis of `x`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.matmul(&self.a).mul_scalar(self.scale).matmul(&self.b)
    }

    /// The adapter as a change of the base weight: `ΔW = s·(A·B)ᵀ`, `[out, in]`, no gradient.
    pub fn delta_weight(&self) -> Tensor {
        let _g = no_grad();
        self.a
            .matmul(&self.b)
            .mul_scalar(self.scale)
            .t()
            .contiguous()
    }
}

impl Module for LoRALayer {
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        f(join(prefix, "A"), &self.a);
        f(join(prefix, "B"), &self.b);
    }
}

/// A model whose linear layers LoRA adapts: the order of [`LoraModel::linears_mut`] is the
/// book's `named_children` order, so adapters draw their `A`s as the book's code does.
pub trait LoraModel: Module {
    /// The linear layers that get adapters.
    fn linears_mut(&mut self) -> Vec<&mut Linear>;
    /// The GPT inside (to untie its output head when a merge changes it).
    fn gpt_mut(&mut self) -> &mut GptModel;
}

/// Every block's `W_query`, `W_key`, `W_value`, `out_proj`, `ff.layers.0` and `ff.layers.2`.
fn block_linears(blocks: &mut [TransformerBlock]) -> Vec<&mut Linear> {
    let mut out = Vec::new();
    for block in blocks {
        let att = &mut block.att;
        out.extend([
            &mut att.w_query,
            &mut att.w_key,
            &mut att.w_value,
            &mut att.out_proj,
        ]);
        out.extend([&mut block.ff.fc1, &mut block.ff.fc2]);
    }
    out
}

impl LoraModel for GptModel {
    /// The blocks' linears and the output head (book section 7.4 adapts them all).
    fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut out = block_linears(&mut self.trf_blocks);
        out.push(&mut self.out_head);
        out
    }

    fn gpt_mut(&mut self) -> &mut GptModel {
        self
    }
}

impl LoraModel for Classifier {
    /// The blocks' linears and the classification head (appendix E adapts the new `out_head`
    /// too). The GPT's language-model head is unused by a classifier and left alone.
    fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut out = block_linears(&mut self.gpt.trf_blocks);
        out.push(&mut self.head);
        out
    }

    fn gpt_mut(&mut self) -> &mut GptModel {
        &mut self.gpt
    }
}

/// Book listing E.7 with the freezing before it: freezes every parameter of `model`
/// (embeddings, layer norms, linear weights and biases, heads), then gives each of its linear
/// layers a new adapter drawn from `ctx`. Afterwards only the adapters' `A` and `B` train.
/// Returns the number of trainable values (2,666,528 for GPT-2 small with a 2-class head,
/// rank 16). Panics if `cfg` is invalid ([`LoraConfig::validate`]) or a layer already has one.
pub fn add_lora(model: &mut dyn LoraModel, cfg: &LoraConfig, ctx: &Context) -> usize {
    if let Err(e) = cfg.validate() {
        panic!("add_lora: {e}");
    }
    for p in model.parameters() {
        p.set_requires_grad(false);
    }
    for linear in model.linears_mut() {
        assert!(linear.lora.is_none(), "add_lora: a layer already has one");
        let [out, inp] = linear.weight.shape() else {
            panic!("add_lora: a linear weight must be [out, in]");
        };
        linear.lora = Some(LoRALayer::new(*inp, *out, cfg, ctx));
    }
    model.num_trainable_parameters()
}

/// The adapters' parameters with their names (`trf_blocks.0.att.W_query.lora.A`, …,
/// `classifier.lora.B`): what a LoRA checkpoint stores.
pub fn lora_parameters(model: &dyn Module) -> Vec<(String, Tensor)> {
    model
        .named_parameters()
        .into_iter()
        .filter(|(name, _)| is_lora_parameter(name))
        .collect()
}

/// True for the name of an adapter's `A` or `B`.
pub fn is_lora_parameter(name: &str) -> bool {
    name.ends_with(".lora.A") || name.ends_with(".lora.B")
}

/// Folds every adapter into its layer, `W' = W + s·(A·B)ᵀ`, and removes it: the model computes
/// the same function as plain linear layers (as fast as the base model, and loadable without
/// LoRA). A tied output head that had an adapter gets its own weight (the token embedding is
/// not changed). The merged weights are frozen, as the base weights were.
pub fn merge_lora(model: &mut dyn LoraModel) {
    for linear in model.linears_mut() {
        if let Some(lora) = linear.lora.take() {
            let merged = {
                let _g = no_grad();
                linear.weight.add(&lora.delta_weight())
            };
            linear.weight = merged.detach();
        }
    }
    let gpt = model.gpt_mut();
    if gpt.cfg.tie_weights && gpt.out_head.weight.id() != gpt.tok_emb.weight.id() {
        gpt.cfg.tie_weights = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classifier::Pool;
    use crate::config::GptConfig;
    use crate::testing::{assert_close, assert_layer_gradients};

    fn tiny(tie_weights: bool) -> GptConfig {
        GptConfig {
            vocab_size: 20,
            context_length: 8,
            emb_dim: 8,
            n_heads: 2,
            n_layers: 2,
            drop_rate: 0.0,
            qkv_bias: true,
            tie_weights,
        }
    }

    /// Gives every B random values, as training would, so the adapters change the output.
    fn train_a_little(model: &dyn Module, ctx: &Context) {
        for (name, p) in lora_parameters(model) {
            if name.ends_with(".B") {
                let r = Tensor::randn(p.shape(), &mut ctx.rng()).to_vec();
                p.update(|w| w.iter_mut().zip(&r).for_each(|(w, r)| *w = 0.3 * r));
            }
        }
    }

    #[test]
    fn scalings_and_their_names() {
        let cfg = LoraConfig {
            rank: 16,
            alpha: 8.0,
            scaling: LoraScaling::AlphaOverRank,
        };
        assert_eq!(cfg.scale(), 0.5);
        let book = LoraConfig {
            scaling: LoraScaling::Alpha,
            ..cfg
        };
        assert_eq!(book.scale(), 8.0);
        assert_eq!(LoraConfig::new(16).alpha, 16.0);
        for name in LoraScaling::NAMES {
            assert_eq!(LoraScaling::parse(name).unwrap().name(), name);
        }
        assert!(LoraScaling::parse("rank").is_err());
        assert!(LoraConfig::new(0).validate().is_err());
        let bad = LoraConfig { alpha: 0.0, ..cfg };
        assert!(bad.validate().unwrap_err().contains("alpha"));
    }

    #[test]
    fn a_is_kaiming_uniform_over_the_rank_and_b_is_zero() {
        let ctx = Context::new(1);
        let l = LoRALayer::new(64, 32, &LoraConfig::new(4), &ctx);
        assert_eq!((l.a.shape(), l.b.shape()), (&[64, 4][..], &[4, 32][..]));
        // bound 1/√rank = 0.5; 256 draws reach close to it
        let a = l.a.to_vec();
        let max = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(max <= 0.5 && max > 0.45, "{max}");
        assert!(l.b.to_vec().iter().all(|&b| b == 0.0));
    }

    #[test]
    fn adapter_is_s_times_x_a_b_and_gradchecks() {
        // y = x·Wᵀ + b + s·(x·A·B); with B random the adapter term is visible
        let ctx = Context::new(2);
        let mut lin = Linear::new(5, 3, true, &ctx);
        let cfg = LoraConfig {
            rank: 2,
            alpha: 3.0,
            scaling: LoraScaling::AlphaOverRank,
        };
        lin.lora = Some(LoRALayer::new(5, 3, &cfg, &ctx));
        train_a_little(&lin, &ctx);
        let x = Tensor::randn(&[2, 4, 5], &mut ctx.rng());
        let lora = lin.lora.as_ref().unwrap();
        let want = x
            .linear(&lin.weight, lin.bias.as_ref())
            .add(&x.matmul(&lora.a).matmul(&lora.b).mul_scalar(1.5));
        assert_close(&lin.forward(&x), &want, 1e-5);
        assert_close(&lin.forward_composed(&x), &want, 1e-5);
        // gradients of x, W, b, A and B
        assert_layer_gradients(&lin, &x, |x| lin.forward(x));
    }

    #[test]
    fn the_adapted_model_starts_out_equal_to_the_base_model() {
        let ctx = Context::new(3);
        let mut c = Classifier::new(
            GptModel::new(&tiny(false), &ctx).unwrap(),
            2,
            Pool::Last,
            &ctx,
        );
        let ids = [1, 2, 3, 4, 5, 6, 7, 8];
        let before = c.forward(&ids, &[4, 4]).to_vec();
        add_lora(&mut c, &LoraConfig::new(4), &ctx);
        assert_eq!(c.forward(&ids, &[4, 4]).to_vec(), before);
    }

    #[test]
    fn only_the_adapters_train_and_the_counts_add_up() {
        let ctx = Context::new(4);
        let mut c = Classifier::new(
            GptModel::new(&tiny(false), &ctx).unwrap(),
            2,
            Pool::Last,
            &ctx,
        );
        let base = c.num_parameters();
        let cfg = LoraConfig::new(4);
        let n = add_lora(&mut c, &cfg, &ctx);
        // per block: q, k, v, out_proj (8 → 8), fc1 (8 → 32), fc2 (32 → 8); then the head 8 → 2
        let per_block = 4 * 4 * (8 + 8) + 2 * 4 * (8 + 32);
        assert_eq!(n, 2 * per_block + 4 * (8 + 2));
        assert_eq!(c.num_parameters(), base + n);
        let trainable = c.trainable_parameters();
        assert!(trainable.iter().all(|(name, _)| is_lora_parameter(name)));
        assert_eq!(trainable.len(), 2 * (2 * 6 + 1));
        assert_eq!(trainable[0].0, "trf_blocks.0.att.W_query.lora.A");
        assert_eq!(trainable.last().unwrap().0, "classifier.lora.B");
        // backward reaches every A and B and no base weight
        train_a_little(&c, &ctx);
        c.forward(&[1, 2, 3, 4], &[4]).sum_all().backward();
        for (name, p) in c.named_parameters() {
            assert_eq!(p.grad().is_some(), is_lora_parameter(&name), "{name}");
        }
        // on a GPT the output head is adapted too
        let mut gpt = GptModel::new(&tiny(false), &ctx).unwrap();
        let n = add_lora(&mut gpt, &cfg, &ctx);
        assert_eq!(n, 2 * per_block + 4 * (8 + 20));
    }

    #[test]
    fn gpt2_small_with_a_two_class_head_trains_the_books_2_666_528() {
        // Counted from the shapes (building GPT-2 small takes 650 MB): the same sum add_lora
        // makes, layer by layer. The ignored test below builds it for real.
        let cfg = GptConfig::gpt2_small();
        let lora = LoraConfig::new(16);
        let c = cfg.emb_dim;
        let per_block = 4 * lora.parameters_for(c, c)
            + lora.parameters_for(c, 4 * c)
            + lora.parameters_for(4 * c, c);
        let total = cfg.n_layers * per_block + lora.parameters_for(c, 2);
        assert_eq!(total, 2_666_528);
        // chapter 7.4: gpt2-medium, every linear including the 50,257-wide output head
        let m = GptConfig::preset("gpt2-medium").unwrap();
        let c = m.emb_dim;
        let per_block = 4 * lora.parameters_for(c, c)
            + lora.parameters_for(c, 4 * c)
            + lora.parameters_for(4 * c, c);
        let gpt = m.n_layers * per_block + lora.parameters_for(c, m.vocab_size);
        assert_eq!(gpt, 7_898_384);
    }

    #[test]
    #[ignore = "allocates gpt2-small (650 MB); run with --ignored"]
    fn gpt2_small_built_for_real_trains_2_666_528() {
        let ctx = Context::new(123);
        // as loaded from OpenAI's weights: QKV bias, head tied to the token embedding
        let cfg = GptConfig {
            qkv_bias: true,
            tie_weights: true,
            ..GptConfig::gpt2_small()
        };
        let gpt = GptModel::new(&cfg, &ctx).unwrap();
        let mut c = Classifier::new(gpt, 2, Pool::Last, &ctx);
        // the book: "Total trainable parameters before: 124,441,346", "after: 0", then LoRA
        assert_eq!(c.num_parameters(), 124_441_346);
        assert_eq!(add_lora(&mut c, &LoraConfig::new(16), &ctx), 2_666_528);
    }

    #[test]
    fn merged_weights_give_the_adapted_logits() {
        for tie in [false, true] {
            let ctx = Context::new(5);
            let mut gpt = GptModel::new(&tiny(tie), &ctx).unwrap();
            gpt.eval();
            let embedding = gpt.tok_emb.weight.to_vec();
            add_lora(&mut gpt, &LoraConfig::new(2), &ctx);
            train_a_little(&gpt, &ctx);
            let ids = [1, 5, 2, 7, 3, 3, 0, 12];
            let adapted = gpt.forward(&ids, 2);
            merge_lora(&mut gpt);
            assert!(lora_parameters(&gpt).is_empty());
            assert_close(&gpt.forward(&ids, 2), &adapted, 1e-5);
            // a tied head gets its own weight; the embedding is unchanged
            assert_eq!(gpt.tok_emb.weight.to_vec(), embedding);
            assert!(!gpt.cfg.tie_weights);
        }
        let ctx = Context::new(6);
        let gpt = GptModel::new(&tiny(false), &ctx).unwrap();
        let mut c = Classifier::new(gpt, 3, Pool::Mean, &ctx);
        add_lora(&mut c, &LoraConfig::new(2), &ctx);
        train_a_little(&c, &ctx);
        let ids = [1, 2, 3, 4, 5, 6, 7, 8];
        let adapted = c.forward(&ids, &[3, 4]);
        merge_lora(&mut c);
        assert_close(&c.forward(&ids, &[3, 4]), &adapted, 1e-5);
        assert_eq!(c.num_trainable_parameters(), 0);
    }
}
