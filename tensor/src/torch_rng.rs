//! PyTorch's CPU random stream, reproduced so that `--book-compat` runs draw exactly the
//! numbers the book's code draws (and so print the book's numbers).
//!
//! PyTorch's default CPU generator is a 32-bit Mersenne Twister (MT19937) seeded with
//! `init_genrand(seed & 0xffffffff)` by `torch.manual_seed(seed)`. On top of it:
//! - `random()` is one tempered 32-bit output; `random64()` is `(first << 32) | second`.
//! - f32 uniform (`torch.rand`, `uniform_`): `(random() & 0xFFFFFF) · 2⁻²⁴`, then
//!   `x·(to − from) + from`; f64 uniform: `(random64() & (2⁵³ − 1)) · 2⁻⁵³`.
//! - `normal_` (`torch.randn`, `nn.Embedding`) on 16 or more elements: fill with f32 uniforms,
//!   then Box–Muller in blocks of 16 (for j < 8: `u1 = 1 − d[j]`, `u2 = d[j+8]`,
//!   `r = √(−2 ln u1)`, `θ = 2π·u2`, `d[j] = r cos θ`, `d[j+8] = r sin θ`); if the length is
//!   not a multiple of 16 the last 16 elements are redrawn and transformed again. On fewer
//!   than 16 elements, per element from two f64 uniforms (`θ = 2π·u1`,
//!   `r = √(−2 log1p(−u2))`), caching `r sin θ` for the next call.
//! - `bernoulli_(p)`: one f64 uniform per element, 1 when it is below p.
//! - `multinomial(p, 1)`: the index maximising `pᵢ / qᵢ` with `qᵢ = −log1p(−u)`, one f64
//!   uniform per entry.
//! - A `DataLoader` with `shuffle=True` starts each epoch by drawing a 64-bit value (its base
//!   seed, unused here) and another 64-bit value, which, taken mod 2⁶³, seeds a fresh MT19937
//!   for `randperm`: `z = random() % (n − i)`, swap `r[i]` and `r[i + z]`.

const N: usize = 624;
const M: usize = 397;

/// MT19937 with PyTorch's seeding and the caches its normal sampler keeps.
#[derive(Clone, Debug, PartialEq)]
pub struct TorchGenerator {
    mt: Vec<u32>,
    index: usize,
    next_double_normal: Option<f64>,
}

impl TorchGenerator {
    /// `torch.manual_seed(seed)`.
    pub fn manual_seed(seed: u64) -> TorchGenerator {
        let mut mt = vec![0u32; N];
        mt[0] = (seed & 0xffff_ffff) as u32;
        for i in 1..N {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        TorchGenerator {
            mt,
            index: N,
            next_double_normal: None,
        }
    }

    fn twist(&mut self) {
        for i in 0..N {
            let y = (self.mt[i] & 0x8000_0000) | (self.mt[(i + 1) % N] & 0x7fff_ffff);
            let mut v = self.mt[(i + M) % N] ^ (y >> 1);
            if y & 1 == 1 {
                v ^= 0x9908_b0df;
            }
            self.mt[i] = v;
        }
        self.index = 0;
    }

    /// One tempered 32-bit output (`generator->random()`).
    pub fn random(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `generator->random64()`: the first 32-bit output is the high half.
    pub fn random64(&mut self) -> u64 {
        let hi = self.random() as u64;
        let lo = self.random() as u64;
        (hi << 32) | lo
    }

    /// f32 uniform in [0, 1) from 24 bits.
    pub fn uniform_f32(&mut self) -> f32 {
        (self.random() & 0x00ff_ffff) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// f64 uniform in [0, 1) from 53 bits.
    pub fn uniform_f64(&mut self) -> f64 {
        (self.random64() & ((1u64 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `tensor.uniform_(from, to)` in row-major order.
    pub fn fill_uniform(&mut self, out: &mut [f32], from: f32, to: f32) {
        for o in out.iter_mut() {
            *o = self.uniform_f32() * (to - from) + from;
        }
    }

    /// One N(0, 1) sample the way `normal_` draws on fewer than 16 elements.
    pub fn normal_f64(&mut self) -> f64 {
        if let Some(v) = self.next_double_normal.take() {
            return v;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_double_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// `tensor.normal_(0, 1)` (see the module docs for the two regimes).
    pub fn fill_normal(&mut self, out: &mut [f32]) {
        let n = out.len();
        if n < 16 {
            for o in out.iter_mut() {
                *o = self.normal_f64() as f32;
            }
            return;
        }
        for o in out.iter_mut() {
            *o = self.uniform_f32();
        }
        for start in (0..n - 15).step_by(16) {
            box_muller_16(&mut out[start..start + 16]);
        }
        if !n.is_multiple_of(16) {
            let tail = &mut out[n - 16..];
            for o in tail.iter_mut() {
                *o = self.uniform_f32();
            }
            box_muller_16(tail);
        }
    }

    /// `torch.multinomial(probs, 1)`: argmax of pᵢ/qᵢ, qᵢ ~ Exp(1).
    pub fn multinomial(&mut self, probs: &[f32]) -> usize {
        let mut best = 0;
        let mut best_v = f64::NEG_INFINITY;
        for (i, &p) in probs.iter().enumerate() {
            let q = -(-self.uniform_f64()).ln_1p();
            let v = p as f64 / q;
            if v > best_v {
                (best, best_v) = (i, v);
            }
        }
        best
    }

    /// The order one `DataLoader` iterator visits `n` items in. Creating the iterator draws its
    /// base seed (unused here); a shuffling one then draws the seed of its `randperm`.
    pub fn dataloader_iteration(&mut self, n: usize, shuffle: bool) -> Vec<usize> {
        let _base_seed = self.random64();
        if !shuffle {
            return (0..n).collect();
        }
        let seed = self.random64() % (1u64 << 63);
        let mut g = TorchGenerator::manual_seed(seed);
        let mut r: Vec<usize> = (0..n).collect();
        for i in 0..n.saturating_sub(1) {
            let z = g.random() as usize % (n - i);
            r.swap(i, i + z);
        }
        r
    }

    /// The state as u64 words: [index, cached normal (bits, or u64::MAX), 624 words].
    pub fn state_words(&self) -> Vec<u64> {
        let mut v = vec![
            self.index as u64,
            self.next_double_normal.map_or(u64::MAX, f64::to_bits),
        ];
        v.extend(self.mt.iter().map(|&x| x as u64));
        v
    }

    /// Restores [`TorchGenerator::state_words`]; `None` if the words are malformed.
    pub fn from_state_words(w: &[u64]) -> Option<TorchGenerator> {
        if w.len() != N + 2 || w[0] > N as u64 || w[2..].iter().any(|&x| x > u32::MAX as u64) {
            return None;
        }
        Some(TorchGenerator {
            index: w[0] as usize,
            next_double_normal: (w[1] != u64::MAX).then(|| f64::from_bits(w[1])),
            mt: w[2..].iter().map(|&x| x as u32).collect(),
        })
    }
}

/// Box–Muller on 16 uniforms in place, as PyTorch's `normal_fill_16` (f32 arithmetic).
fn box_muller_16(d: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0 - d[j];
        let u2 = d[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f32::consts::PI * u2;
        d[j] = radius * theta.cos();
        d[j + 8] = radius * theta.sin();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round4(v: &[f32]) -> Vec<f32> {
        v.iter().map(|x| (x * 1e4).round() / 1e4).collect()
    }

    #[test]
    fn mt19937_reference_output() {
        // The reference MT19937 seeded with init_genrand(5489) starts 3499211612, 581869302.
        let mut g = TorchGenerator::manual_seed(5489);
        assert_eq!(g.random(), 3_499_211_612);
        assert_eq!(g.random(), 581_869_302);
    }

    #[test]
    fn torch_rand_after_seed_123_matches_the_book() {
        // Book 3.4.1: torch.manual_seed(123); W_query = torch.rand(3, 2)
        let mut g = TorchGenerator::manual_seed(123);
        let mut w = [0.0f32; 6];
        g.fill_uniform(&mut w, 0.0, 1.0);
        assert_eq!(round4(&w), [0.2961, 0.5166, 0.2517, 0.6886, 0.0740, 0.8665]);
    }

    #[test]
    fn torch_randn_of_18_matches_the_books_embedding() {
        // Book 2.7: torch.manual_seed(123); nn.Embedding(6, 3).weight starts
        // [[0.3374, -0.1778, -0.1690], [0.9178, 1.5810, 1.3010], ...]
        let mut g = TorchGenerator::manual_seed(123);
        let mut w = [0.0f32; 18];
        g.fill_normal(&mut w);
        assert_eq!(
            round4(&w[..6]),
            [0.3374, -0.1778, -0.1690, 0.9178, 1.5810, 1.3010]
        );
    }

    #[test]
    fn state_round_trips() {
        let mut g = TorchGenerator::manual_seed(7);
        g.random();
        g.normal_f64();
        let mut h = TorchGenerator::from_state_words(&g.state_words()).unwrap();
        for _ in 0..1000 {
            assert_eq!(g.random(), h.random());
        }
        assert!(TorchGenerator::from_state_words(&[1, 2, 3]).is_none());
    }
}
