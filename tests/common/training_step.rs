//! A tiny random CLIP under the MLR-PL model, and a recorded training step
//! on it: what `tests/cuda_training.rs` (CUDA against the CPU) and
//! `tests/mixed_precision.rs` (bf16 towers against f32) compare.

use mlrpl_engine::clip::init::init_weights;
use mlrpl_engine::clip::{Clip, ClipConfig, TextConfig, VisionConfig};
use mlrpl_engine::mlrpl::{MlrplConfig, MlrplModel, PromptConfig};
use mlrpl_engine::optim::{Optimizer, Sgd};
use mlrpl_engine::rng::Rng;
use mlrpl_engine::{Device, Precision, Tensor};

pub const IMAGE_SIZE: usize = 32;

/// The same model on every device and precision: CLIP weights from seed 7
/// (stored as `precision` says), prompts and decoupling module from seed 3.
pub fn tiny_model(device: &Device, precision: Precision) -> MlrplModel {
    let config = ClipConfig {
        vision: VisionConfig { width: 64, layers: 2, heads: 2, patch: 8, grid: 4, embed_dim: 32 },
        text: TextConfig { width: 64, layers: 2, heads: 2, context_length: 77, vocab_size: 49408, embed_dim: 32 },
    };
    let weights = init_weights(&config, 7, device).unwrap().to_dtype(precision.frozen_dtype()).unwrap();
    let clip = Clip::from_weights(weights).unwrap();
    let classes = mlrpl_engine::data::synthetic::CATEGORIES.iter().map(|c| c.to_string()).collect();
    let config = MlrplConfig {
        prompt: PromptConfig { n_ctx: 4, ..Default::default() },
        decoupling_width: Some(16),
        use_sdm: true,
    };
    MlrplModel::new(clip, classes, &config, &mut Rng::new(3)).unwrap()
}

/// What one step records: logits, loss, the gradient of every trainable
/// parameter by name, and the parameters after 3 SGD steps.
pub struct StepRecord {
    pub logits: Vec<f32>,
    pub loss: f32,
    pub grads: Vec<(String, Vec<f32>)>,
    pub params: Vec<(String, Vec<f32>)>,
}

/// A seeded batch of 4 images and labels in {-1, 0, 1}, forward, backward
/// and 3 SGD steps on `device` with the towers in `precision`.
pub fn training_steps(device: &Device, precision: Precision) -> StepRecord {
    let model = tiny_model(device, precision);
    let classes = model.num_classes();
    let mut rng = Rng::new(11);
    let batch = 4;
    let images = Tensor::from_vec(
        rng.normal_vec(batch * 3 * IMAGE_SIZE * IMAGE_SIZE, 1.0),
        [batch, 3, IMAGE_SIZE, IMAGE_SIZE],
        device,
    )
    .unwrap();
    let labels: Vec<f32> = (0..batch * classes).map(|_| rng.below(3) as f32 - 1.0).collect();
    let labels = Tensor::from_vec(labels, [batch, classes], device).unwrap();
    let mut opt = Sgd::new(model.parameter_groups(), 0.05, 0.9, 5e-4).unwrap();

    let logits = model.logits(&images).unwrap();
    let loss = logits.masked_bce_with_logits(&labels).unwrap();
    loss.backward().unwrap();
    let grads = model
        .named_parameters()
        .into_iter()
        .map(|(name, p)| {
            let g = p.grad().unwrap_or_else(|| panic!("{name} got no gradient on {device}"));
            (name, g.to_vec().unwrap())
        })
        .collect();
    let (logits, loss) = (logits.to_vec().unwrap(), loss.scalar().unwrap());
    opt.step().unwrap();
    for _ in 0..2 {
        opt.zero_grad();
        model.logits(&images).unwrap().masked_bce_with_logits(&labels).unwrap().backward().unwrap();
        opt.step().unwrap();
    }
    let params = model.named_parameters().into_iter().map(|(name, p)| (name, p.to_vec().unwrap())).collect();
    StepRecord { logits, loss, grads, params }
}

/// The decoupling biases (fc3's b3 and fc4's b4) only shift every score of
/// a softmax over positions, so their true gradient is exactly 0.
pub const SOFTMAX_SHIFT_PARAMS: [&str; 2] = ["sdm.fc3.bias", "sdm.fc4.bias"];

/// Compares two records at relative tolerance `tol` (`assert_rel`); the
/// gradients of [`SOFTMAX_SHIFT_PARAMS`] hold rounding noise only, so both
/// sides must be 0 up to `zero_tol` instead.
pub fn assert_records_match(got: &StepRecord, want: &StepRecord, tol: f64, zero_tol: f32) {
    super::assert_rel("logits", &got.logits, &want.logits, tol);
    super::assert_rel("loss", &[got.loss], &[want.loss], tol);
    assert_eq!(got.grads.len(), want.grads.len());
    for ((name, g), (want_name, w)) in got.grads.iter().zip(&want.grads) {
        assert_eq!(name, want_name);
        if SOFTMAX_SHIFT_PARAMS.contains(&name.as_str()) {
            assert!(g.iter().all(|v| v.abs() <= zero_tol), "gradient of {name} should be 0 up to rounding: {g:?}");
            continue;
        }
        super::assert_rel(&format!("gradient of {name}"), g, w, tol);
    }
    for ((name, p), (_, w)) in got.params.iter().zip(&want.params) {
        super::assert_rel(&format!("{name} after 3 SGD steps"), p, w, tol);
    }
}
