//! `--precision bf16` against f32 on the CPU backend (docs/model.md §9: bf16
//! paths within 2e-2 of the f32 reference). The CPU stores bf16 exactly as
//! the GPU does and rounds at the same places, so this checks the mixed
//! precision design (which tensors are bf16, where the f32 head starts, the
//! gradient reaching the f32 prompt context through the bf16 text tower) on
//! every CI run; `tests/cuda_training.rs` checks the GPU's bf16 step against
//! the CPU's.

mod common;

use common::training_step::{assert_records_match, tiny_model, training_steps, IMAGE_SIZE, SOFTMAX_SHIFT_PARAMS};
use common::{rel_err, to_f64, BF16_TOL};
use mlrpl_engine::rng::Rng;
use mlrpl_engine::{DType, Device, Precision, Tensor};

#[test]
fn a_bf16_training_step_stays_within_bf16_tolerance_of_f32() {
    let want = training_steps(&Device::Cpu, Precision::F32);
    let got = training_steps(&Device::Cpu, Precision::Bf16);
    // The errors themselves, for docs/mixed-precision.md (`-- --nocapture`).
    let err = |g: &[f32], w: &[f32]| rel_err(&to_f64(g), &to_f64(w));
    eprintln!(
        "bf16 vs f32: logits {:.2e}, loss {:.2e}",
        err(&got.logits, &want.logits),
        err(&[got.loss], &[want.loss])
    );
    for ((name, g), (_, w)) in
        got.grads.iter().zip(&want.grads).filter(|((name, _), _)| !SOFTMAX_SHIFT_PARAMS.contains(&name.as_str()))
    {
        eprintln!("bf16 vs f32: gradient of {name} {:.2e}", err(g, w));
    }
    assert_records_match(&got, &want, BF16_TOL, 1e-4);
    // bf16 must have changed something: the towers really ran in bf16.
    assert_ne!(got.logits, want.logits, "bf16 towers gave bit-identical logits: they did not run in bf16");
}

#[test]
fn bf16_keeps_towers_bf16_and_parameters_gradients_and_features_f32() {
    let model = tiny_model(&Device::Cpu, Precision::Bf16);
    let block = &model.clip.vision.transformer.blocks[0];
    assert_eq!(block.mlp.c_fc.weight.dtype(), DType::BF16);
    assert_eq!(model.clip.text.token_embedding().dtype(), DType::BF16);
    let images = Tensor::from_vec(
        Rng::new(5).normal_vec(2 * 3 * IMAGE_SIZE * IMAGE_SIZE, 1.0),
        [2, 3, IMAGE_SIZE, IMAGE_SIZE],
        &Device::Cpu,
    )
    .unwrap();
    let mut block_dtypes = Vec::new();
    model.clip.vision.forward_tokens(&images, |_, x| block_dtypes.push(x.dtype())).unwrap();
    assert!(block_dtypes.iter().all(|&d| d == DType::BF16), "vision activations: {block_dtypes:?}");
    assert_eq!(model.image_tokens(&images).unwrap().dtype(), DType::F32, "the towers hand f32 features to the head");
    let logits = model.logits(&images).unwrap();
    assert_eq!(logits.dtype(), DType::F32);
    logits.sum(&[0, 1], false).unwrap().backward().unwrap();
    for (name, p) in model.named_parameters() {
        assert_eq!(p.dtype(), DType::F32, "parameter {name}");
        assert_eq!(p.grad().unwrap().dtype(), DType::F32, "gradient of {name}");
    }
}
