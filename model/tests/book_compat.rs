//! With PyTorch's random stream (`Context::book_compat`), the chapter-3 and chapter-4 demos
//! print the book's numbers. Expected values are the book's printouts (4 decimals).

use scratchgpt_model::attention::simplified::your_journey_inputs;
use scratchgpt_model::attention::{CausalAttention, MultiHeadAttention, MultiHeadAttentionWrapper};
use scratchgpt_model::attention::{SelfAttentionV1, SelfAttentionV2};
use scratchgpt_model::Context;
use tensor::{Rng, Tensor};

#[track_caller]
fn assert_4dp(got: &Tensor, want: &[f32]) {
    let g = got.to_vec();
    assert_eq!(g.len(), want.len(), "shape {:?}", got.shape());
    let ok = g.iter().zip(want).all(|(a, b)| (a - b).abs() < 1.5e-4);
    assert!(ok, "got {g:?}\nbook {want:?}");
}

fn batch() -> Tensor {
    let x = your_journey_inputs().unsqueeze(0);
    Tensor::concat(&[&x, &x], 0)
}

#[test]
fn section_3_4_self_attention_v1_seed_123() {
    let sa = SelfAttentionV1::new(3, 2, &Context::book_compat(123));
    assert_4dp(
        &sa.w_query,
        &[0.2961, 0.5166, 0.2517, 0.6886, 0.0740, 0.8665],
    );
    #[rustfmt::skip]
    assert_4dp(&sa.forward(&your_journey_inputs()), &[
        0.2996, 0.8053, 0.3061, 0.8210, 0.3058, 0.8203,
        0.2948, 0.7939, 0.2927, 0.7891, 0.2990, 0.8040,
    ]);
}

#[test]
fn section_3_4_self_attention_v2_seed_789() {
    let sa = SelfAttentionV2::new(3, 2, false, &Context::book_compat(789));
    #[rustfmt::skip]
    assert_4dp(&sa.forward(&your_journey_inputs()), &[
        -0.0739, 0.0713, -0.0748, 0.0703, -0.0749, 0.0702,
        -0.0760, 0.0685, -0.0763, 0.0679, -0.0754, 0.0693,
    ]);
}

#[test]
fn section_3_5_dropout_mask_seed_123() {
    // torch.manual_seed(123); torch.nn.Dropout(0.5)(torch.ones(6, 6))
    let y = Tensor::ones(&[6, 6]).dropout(0.5, true, &mut Rng::torch(123));
    #[rustfmt::skip]
    assert_4dp(&y, &[
        2., 2., 0., 2., 2., 0.,
        0., 0., 0., 2., 0., 2.,
        2., 2., 2., 2., 0., 2.,
        0., 2., 2., 0., 0., 2.,
        0., 2., 0., 2., 0., 2.,
        0., 2., 2., 2., 2., 0.,
    ]);
}

#[test]
fn section_3_5_causal_attention_seed_123() {
    let ctx = Context::book_compat(123);
    let ca = CausalAttention::new(3, 2, 6, 0.0, false, &ctx);
    let out = ca.forward(&batch());
    #[rustfmt::skip]
    let one = [
        -0.4519, 0.2216, -0.5874, 0.0058, -0.6300, -0.0632,
        -0.5675, -0.0843, -0.5526, -0.0981, -0.5299, -0.1081,
    ];
    assert_4dp(&out, &[one, one].concat());
}

#[test]
fn section_3_6_multi_head_wrapper_seed_123() {
    let ctx = Context::book_compat(123);
    let mha = MultiHeadAttentionWrapper::new(3, 2, 6, 0.0, 2, false, &ctx);
    #[rustfmt::skip]
    let one = [
        -0.4519, 0.2216, 0.4772, 0.1063,
        -0.5874, 0.0058, 0.5891, 0.3257,
        -0.6300, -0.0632, 0.6202, 0.3860,
        -0.5675, -0.0843, 0.5478, 0.3589,
        -0.5526, -0.0981, 0.5321, 0.3428,
        -0.5299, -0.1081, 0.5077, 0.3493,
    ];
    assert_4dp(&mha.forward(&batch()), &[one, one].concat());
}

#[test]
fn section_3_6_multi_head_attention_seed_123() {
    let ctx = Context::book_compat(123);
    let mha = MultiHeadAttention::new(3, 2, 6, 0.0, 2, false, &ctx);
    #[rustfmt::skip]
    let one = [
        0.3190, 0.4858, 0.2943, 0.3897, 0.2856, 0.3593,
        0.2693, 0.3873, 0.2639, 0.3928, 0.2575, 0.4028,
    ];
    assert_4dp(&mha.forward(&batch()), &[one, one].concat());
}

/// The book's `ExampleDeepNeuralNetwork` (section 4.4): five `Linear` + GELU layers, with or
/// without shortcut connections; returns each layer's mean absolute weight gradient.
fn shortcut_demo(use_shortcut: bool) -> Vec<f32> {
    use scratchgpt_model::linear::Linear;
    let ctx = Context::book_compat(123);
    let sizes = [3, 3, 3, 3, 3, 1];
    let layers: Vec<Linear> = sizes
        .windows(2)
        .map(|w| Linear::new(w[0], w[1], true, &ctx))
        .collect();
    let mut x = Tensor::from_vec(vec![1.0, 0.0, -1.0], &[1, 3]);
    for l in &layers {
        let out = l.forward(&x).gelu();
        x = if use_shortcut && out.shape() == x.shape() {
            x.add(&out)
        } else {
            out
        };
    }
    let d = x.sub(&Tensor::zeros(&[1, 1]));
    d.mul(&d).mean_all().backward(); // nn.MSELoss against a target of 0
    layers
        .iter()
        .map(|l| {
            let g = l.weight.grad().unwrap().to_vec();
            g.iter().map(|v| v.abs()).sum::<f32>() / g.len() as f32
        })
        .collect()
}

#[test]
fn section_4_4_shortcut_gradients() {
    let book_without = [
        0.00020173587836325169,
        0.0001201116101583466,
        0.0007152041653171182,
        0.001398873864673078,
        0.005049646366387606,
    ];
    let book_with = [
        0.22169792652130127,
        0.20694105327129364,
        0.32896995544433594,
        0.2665732502937317,
        1.3258541822433472,
    ];
    for (got, want) in [
        (shortcut_demo(false), book_without),
        (shortcut_demo(true), book_with),
    ] {
        for (g, w) in got.iter().zip(want) {
            assert!(
                ((g - w as f32) / w as f32).abs() < 1e-4,
                "got {got:?}, book {want:?}"
            );
        }
    }
}
