//! Property tests over random shapes: broadcasting gives NumPy's shapes and sums gradients
//! back to each operand's shape; views agree with copies; results do not depend on the
//! number of threads.

use scratchgpt_tensor::{broadcast_shapes, Rng, Tensor};

/// A random shape of 0–4 axes with sizes 1–4.
fn random_shape(rng: &mut Rng) -> Vec<usize> {
    (0..rng.below(5)).map(|_| 1 + rng.below(4)).collect()
}

/// `b`'s shape made broadcast-compatible with `a`: a random suffix of `a`, with some axes set to 1.
fn compatible_shape(a: &[usize], rng: &mut Rng) -> Vec<usize> {
    let keep = rng.below(a.len() + 1);
    a[a.len() - keep..]
        .iter()
        .map(|&d| if rng.below(3) == 0 { 1 } else { d })
        .collect()
}

#[test]
fn broadcast_binary_ops_give_numpy_shapes_and_unbroadcast_gradients() {
    let mut rng = Rng::seed(42);
    for _ in 0..300 {
        let sa = random_shape(&mut rng);
        let sb = compatible_shape(&sa, &mut rng);
        let (sa, sb) = if rng.below(2) == 0 {
            (sa, sb)
        } else {
            (sb, sa)
        };
        let a = Tensor::uniform(&sa, 0.5, 1.5, &mut rng).requires_grad();
        let b = Tensor::uniform(&sb, 0.5, 1.5, &mut rng).requires_grad();
        let want = broadcast_shapes(&sa, &sb).unwrap();
        for (i, y) in [a.add(&b), a.sub(&b), a.mul(&b), a.div(&b)]
            .into_iter()
            .enumerate()
        {
            assert_eq!(y.shape(), &want[..], "op {i}: {sa:?} with {sb:?}");
            a.zero_grad();
            b.zero_grad();
            y.sum_all().backward();
            assert_eq!(a.grad().unwrap().shape(), &sa[..]);
            assert_eq!(b.grad().unwrap().shape(), &sb[..]);
        }
        // d(sum(a + b))/db = how many times each element of b was used = numel(out)/numel(b)
        b.zero_grad();
        a.add(&b).sum_all().backward();
        let uses = want.iter().product::<usize>() / sb.iter().product::<usize>();
        assert!(b.grad().unwrap().to_vec().iter().all(|&g| g == uses as f32));
    }
}

#[test]
fn permuted_views_match_their_copies() {
    let mut rng = Rng::seed(1);
    for _ in 0..100 {
        let shape: Vec<usize> = (0..1 + rng.below(4)).map(|_| 1 + rng.below(4)).collect();
        let x = Tensor::randn(&shape, &mut rng);
        let mut perm: Vec<usize> = (0..shape.len()).collect();
        rng.shuffle(&mut perm);
        let p = x.permute(&perm);
        let dense = p.contiguous();
        // element by element through the index map
        let mut idx = vec![0; shape.len()];
        for flat in 0..x.numel() {
            let mut r = flat;
            for d in (0..shape.len()).rev() {
                idx[d] = r % p.shape()[d];
                r /= p.shape()[d];
            }
            let mut src = vec![0; shape.len()];
            for (d, &pd) in perm.iter().enumerate() {
                src[pd] = idx[d];
            }
            assert_eq!(dense.at(&idx), x.at(&src));
        }
    }
}

#[test]
fn losses_are_bit_identical_across_thread_counts() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut rng = Rng::seed(5);
            let w = Tensor::randn(&[256, 512], &mut rng)
                .mul_scalar(0.05)
                .requires_grad();
            let x = Tensor::randn(&[4, 64, 256], &mut rng);
            let mut opt = scratchgpt_tensor::AdamW::new(vec![w.clone()], 1e-2, 0.1);
            let targets: Vec<usize> = (0..256).map(|i| (i * 7) % 512).collect();
            (0..3)
                .map(|_| {
                    use scratchgpt_tensor::Optimizer;
                    opt.zero_grad();
                    let logits = x.matmul(&w).gelu();
                    let loss = logits
                        .log_softmax(-1)
                        .gather_last(&targets)
                        .mean_all()
                        .neg();
                    loss.backward();
                    opt.step();
                    loss.item().to_bits()
                })
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(run(1), run(2));
}
