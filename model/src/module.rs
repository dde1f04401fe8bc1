//! What every layer shares: a list of named parameters, and a [`Context`] holding the random
//! generator and the train/eval switch.
//!
//! Parameter names are hierarchical and stable (`trf_blocks.0.att.W_query.weight`), following
//! the attribute names of the book's PyTorch classes, so a learner can match them one to one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tensor::{Rng, Tensor};

/// A layer with parameters. Implementors list their own parameters and their children's.
pub trait Module {
    /// Calls `f(name, parameter)` for every parameter, each name prefixed by `prefix`.
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor));

    /// Every parameter with its full name, in a fixed order. A tensor shared between two
    /// places (tied weights) is listed once, under its first name.
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        self.visit_parameters("", &mut |name, t| {
            if seen.insert(t.id()) {
                out.push((name, t.clone()));
            }
        });
        out
    }

    /// Every parameter (handles sharing the layer's tensors), for an optimizer.
    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters()
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }

    /// Number of parameter values. PyTorch: `sum(p.numel() for p in model.parameters())`.
    fn num_parameters(&self) -> usize {
        self.parameters().iter().map(|p| p.numel()).sum()
    }

    /// Number of parameter values that currently train (not frozen). PyTorch:
    /// `sum(p.numel() for p in model.parameters() if p.requires_grad)`.
    fn num_trainable_parameters(&self) -> usize {
        self.parameters()
            .iter()
            .filter(|p| p.is_requires_grad())
            .map(|p| p.numel())
            .sum()
    }
}

/// A count as the book prints it, digits grouped in threes: 124441346 → `124,441,346`
/// (Python's `f"{n:,}"`).
pub fn with_commas(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// `prefix.name`, or `name` at the top level.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// State shared by all layers of one model: the random generator (weight initialisation and
/// dropout masks draw from it in order, like PyTorch's global generator) and whether the model
/// is training (dropout on) or evaluating (dropout off). Cloning shares it.
#[derive(Clone)]
pub struct Context {
    rng: Arc<Mutex<Rng>>,
    training: Arc<AtomicBool>,
    draws_weights: bool,
}

impl Context {
    /// A context whose generator starts from `seed`, in training mode.
    pub fn new(seed: u64) -> Context {
        Context::from_rng(Rng::seed(seed))
    }

    /// A context drawing from PyTorch's generator after `torch.manual_seed(seed)`: layers built
    /// and run with it draw exactly the numbers the book's PyTorch code draws (`--book-compat`).
    pub fn book_compat(seed: u64) -> Context {
        Context::from_rng(Rng::torch(seed))
    }

    /// A context drawing from `rng`, in training mode.
    pub fn from_rng(rng: Rng) -> Context {
        Context {
            rng: Arc::new(Mutex::new(rng)),
            training: Arc::new(AtomicBool::new(true)),
            draws_weights: true,
        }
    }

    /// A context for a model whose every weight is about to be read from a file (`generate`,
    /// `chat`, `eval`, `inspect`, `classify`, `merge-lora`): layers start as zeros instead of drawing random
    /// weights that would be overwritten at once. Drawing GPT-2 small's 124M initial values
    /// took about a second of `generate`'s start-up. Not for training or fine-tuning: there
    /// the draws advance the generator that dropout then uses (and `--book-compat` reproduces
    /// PyTorch's sequence of them), so those keep [`Context::new`] and its draws.
    pub fn for_loading() -> Context {
        Context {
            draws_weights: false,
            ..Context::new(0)
        }
    }

    /// Whether layers draw their initial weights (false for [`Context::for_loading`]).
    pub fn draws_weights(&self) -> bool {
        self.draws_weights
    }

    /// The generator, locked for drawing.
    pub fn rng(&self) -> MutexGuard<'_, Rng> {
        self.rng.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Dropout on. PyTorch: `model.train()`.
    pub fn train(&self) {
        self.training.store(true, Ordering::Relaxed);
    }

    /// Dropout off. PyTorch: `model.eval()`.
    pub fn eval(&self) {
        self.training.store(false, Ordering::Relaxed);
    }

    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_are_grouped_in_threes() {
        for (n, s) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (124_441_346, "124,441,346"),
        ] {
            assert_eq!(super::with_commas(n), s);
        }
    }
}
