//! The graph is freed after every step: 1,000 forward/backward/update steps of a small
//! two-layer network leave the number of live tensors and the process's memory flat.
//! (Its own test binary, so no other test allocates alongside it.)

use scratchgpt_tensor::{live_tensors, AdamW, Optimizer, Rng, Tensor};

/// Resident set size in bytes, from /proc (Linux); None elsewhere.
fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn thousand_steps_do_not_grow_memory() {
    let mut rng = Rng::seed(0);
    let w1 = Tensor::randn(&[32, 64], &mut rng)
        .mul_scalar(0.1)
        .requires_grad();
    let w2 = Tensor::randn(&[64, 8], &mut rng)
        .mul_scalar(0.1)
        .requires_grad();
    let x = Tensor::randn(&[16, 32], &mut rng);
    let targets: Vec<usize> = (0..16).map(|i| i % 8).collect();
    let mut opt = AdamW::new(vec![w1.clone(), w2.clone()], 1e-3, 0.0);

    let mut step = |rng: &mut Rng| {
        opt.zero_grad();
        let h = x.matmul(&w1).gelu().dropout(0.1, true, rng);
        let logits = h.matmul(&w2);
        let loss = logits
            .log_softmax(-1)
            .gather_last(&targets)
            .mean_all()
            .neg();
        loss.backward();
        opt.step();
        loss.item()
    };

    for _ in 0..10 {
        step(&mut rng);
    }
    let (tensors_before, rss_before) = (live_tensors(), rss_bytes());
    let first = step(&mut rng);
    let mut last = first;
    for _ in 0..1000 {
        last = step(&mut rng);
        assert_eq!(
            live_tensors(),
            tensors_before,
            "tensors leaked by a training step"
        );
    }
    assert!(last < first, "the loss should fall: {first} -> {last}");
    if let (Some(a), Some(b)) = (rss_before, rss_bytes()) {
        let grown = b.saturating_sub(a);
        assert!(
            grown < 4 << 20,
            "RSS grew by {grown} bytes over 1,000 steps"
        );
    }
}
