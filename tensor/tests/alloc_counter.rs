//! The allocation counter, installed as this test binary's allocator: it sees tensor storage
//! and the buffers the fused attention kernel saves, and its peak resets.

use scratchgpt_tensor::alloc_counter::{self, CountingAllocator};
use scratchgpt_tensor::{Rng, Tensor};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator(std::alloc::System);

#[test]
fn counts_live_bytes_and_a_resettable_peak() {
    // one test function: other tests in this binary would allocate at the same time
    let before = alloc_counter::live_bytes();
    let (t, peak) = alloc_counter::peak_during(|| {
        let big = Tensor::zeros(&[1000, 1000]); // 4,000,000 bytes
        drop(big);
        Tensor::zeros(&[10, 100]) // 4,000 bytes, kept
    });
    assert!(
        (4_000_000..4_100_000).contains(&peak),
        "peak {peak} should be the 4 MB tensor plus small change"
    );
    let kept = alloc_counter::live_bytes() - before;
    assert!((4_000..20_000).contains(&kept), "kept {kept}");
    drop(t);

    // the fused kernel's saved weights count: B·NH = 4 entries of T = 256, HS = 16; P is kept
    // for backward in query blocks of 64 rows (4 blocks: 64·(64+128+192+256) values each)
    let mut rng = Rng::seed(1);
    let [q, k, v] = [0, 1, 2].map(|_| Tensor::randn(&[1, 4, 256, 16], &mut rng).requires_grad());
    let (y, peak) = alloc_counter::peak_during(|| {
        Tensor::causal_attention(&q, &k, &v, 0.0, false, &mut Rng::seed(0))
    });
    let saved_p = 4 * 64 * (64 + 128 + 192 + 256) * 4;
    let out = 4 * 256 * 16 * 4;
    assert!(
        peak >= saved_p + out,
        "peak {peak} below the saved weights {saved_p} + output {out}"
    );
    drop(y);
}
