//! A small random GPT-2 written by an independent tool (`scripts/gpt2_reference.py`: its own
//! safetensors writer and a NumPy forward pass in float64) loads through the GPT-2 name map and
//! gives the reference logits within 1e-4. The file uses Hugging Face's layout: Conv1D
//! weights, a `transformer.` prefix, `attn.bias` mask buffers, QKV bias, tied head.

use std::path::Path;

use scratchgpt_model::weights::load_model;
use scratchgpt_model::Context;

#[test]
fn numpy_reference_gpt2_logits_match() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-gpt2");
    let model = load_model(&dir, &Context::new(0)).expect("fixture loads");
    model.eval();
    assert!(model.cfg.tie_weights && model.cfg.qkv_bias);
    let text = std::fs::read_to_string(dir.join("expected_logits.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids: Vec<usize> = v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
        })
        .collect();
    let want: Vec<f32> = v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let got = model.forward(&ids, 2);
    assert_eq!(got.shape(), &[2, 10, 37]);
    let worst = got
        .to_vec()
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "max |logit difference| = {worst}");
}
