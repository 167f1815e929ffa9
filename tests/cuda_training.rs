//! A whole MLR-PL training step on CUDA against the CPU (DESIGN.md §4): the
//! same tiny random CLIP and model on both devices, the same batch; logits,
//! loss, every trainable gradient and the parameters after SGD steps must
//! agree (rel. error <= 1e-4), and one epoch of `train::train` (loader on the
//! host, model on the GPU) must end near the CPU run. Without a GPU each test
//! prints `SKIPPED (no CUDA GPU): <reason>` and returns.

mod common;

use common::{assert_rel, cuda_or_skip};
use mlrpl_engine::clip::init::init_weights;
use mlrpl_engine::clip::{Clip, ClipConfig, TextConfig, VisionConfig};
use mlrpl_engine::data::dataset::MultiLabelDataset;
use mlrpl_engine::data::partial::LabelMask;
use mlrpl_engine::data::synthetic::{Split, SyntheticSet};
use mlrpl_engine::mlrpl::{MlrplConfig, MlrplModel, PromptConfig};
use mlrpl_engine::optim::{Optimizer, Sgd};
use mlrpl_engine::rng::Rng;
use mlrpl_engine::train::{self, Run, TrainData, TrainOptions};
use mlrpl_engine::{Device, Tensor};
use std::path::PathBuf;
use std::sync::Arc;

const TOL: f64 = 1e-4;
const IMAGE_SIZE: usize = 32;

fn tiny_model(device: &Device) -> MlrplModel {
    let config = ClipConfig {
        vision: VisionConfig { width: 64, layers: 2, heads: 2, patch: 8, grid: 4, embed_dim: 32 },
        text: TextConfig { width: 64, layers: 2, heads: 2, context_length: 77, vocab_size: 49408, embed_dim: 32 },
    };
    let clip = Clip::from_weights(init_weights(&config, 7, device).unwrap()).unwrap();
    let classes = mlrpl_engine::data::synthetic::CATEGORIES.iter().map(|c| c.to_string()).collect();
    let config = MlrplConfig { prompt: PromptConfig { n_ctx: 4, ..Default::default() }, decoupling_width: Some(16), use_sdm: true };
    MlrplModel::new(clip, classes, &config, &mut Rng::new(3)).unwrap()
}

/// (logits, loss, gradient of every trainable parameter by name, parameters
/// after 3 SGD steps) on `device`.
type StepRecord = (Vec<f32>, f32, Vec<(String, Vec<f32>)>, Vec<(String, Vec<f32>)>);

fn training_steps(device: &Device) -> StepRecord {
    let model = tiny_model(device);
    let classes = model.num_classes();
    let mut rng = Rng::new(11);
    let batch = 4;
    let images = Tensor::from_vec(rng.normal_vec(batch * 3 * IMAGE_SIZE * IMAGE_SIZE, 1.0), [batch, 3, IMAGE_SIZE, IMAGE_SIZE], device).unwrap();
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
    let record = (logits.to_vec().unwrap(), loss.scalar().unwrap());
    opt.step().unwrap();
    for _ in 0..2 {
        opt.zero_grad();
        model.logits(&images).unwrap().masked_bce_with_logits(&labels).unwrap().backward().unwrap();
        opt.step().unwrap();
    }
    let params = model.named_parameters().into_iter().map(|(name, p)| (name, p.to_vec().unwrap())).collect();
    (record.0, record.1, grads, params)
}

#[test]
fn one_training_step_matches_the_cpu() {
    let Some(gpu) = cuda_or_skip("one_training_step_matches_the_cpu") else { return };
    let (want_logits, want_loss, want_grads, want_params) = training_steps(&Device::Cpu);
    let (logits, loss, grads, params) = training_steps(&gpu);
    assert_rel("logits", &logits, &want_logits, TOL);
    assert_rel("loss", &[loss], &[want_loss], TOL);
    assert_eq!(grads.len(), want_grads.len());
    for ((name, g), (want_name, w)) in grads.iter().zip(&want_grads) {
        assert_eq!(name, want_name);
        if name.ends_with("b3") || name.ends_with("b4") {
            // Their true gradient is exactly 0 (a softmax shift); both sides
            // hold rounding noise only.
            assert!(g.iter().all(|v| v.abs() <= 1e-6), "gradient of {name} should be 0 up to rounding: {g:?}");
            continue;
        }
        assert_rel(&format!("gradient of {name}"), g, w, TOL);
    }
    for ((name, p), (_, w)) in params.iter().zip(&want_params) {
        assert_rel(&format!("{name} after 3 SGD steps"), p, w, TOL);
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mlrpl-cuda-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn one_epoch_of_train_matches_the_cpu() {
    let Some(gpu) = cuda_or_skip("one_epoch_of_train_matches_the_cpu") else { return };
    let set: Arc<dyn MultiLabelDataset> = Arc::new(SyntheticSet::new(Split::Train, 0, IMAGE_SIZE).unwrap().with_len(24).unwrap());
    let mask = LabelMask::sample(set.len(), set.class_names().len(), 0.5, 0).unwrap();
    let data = TrainData { dataset: set, train_indices: (0..16).collect(), val_indices: (16..24).collect(), mask: Arc::new(mask) };
    let options = TrainOptions {
        epochs: 1,
        batch_size: 8,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 5e-4,
        warmup_epochs: 0,
        warmup_lr: 1e-3,
        image_size: IMAGE_SIZE,
        cutout: true,
        rand_augment: None,
        workers: 1,
        seed: 3,
        log_every: 1,
        skip_bad_images: false,
        progress: false,
    };
    let mut finals = Vec::new();
    for device in [Device::Cpu, gpu] {
        let dir = scratch(&device.to_string().replace(':', "-"));
        let model = tiny_model(&device);
        let run = Run { dir: dir.clone(), clip: "random:7".into(), config: serde_json::json!({}) };
        train::train(&model, &data, &options, &run, None).unwrap();
        finals.push(model.named_parameters().into_iter().map(|(n, p)| (n, p.to_vec().unwrap())).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }
    for ((name, got), (_, want)) in finals[1].iter().zip(&finals[0]) {
        assert_rel(&format!("{name} after one epoch"), got, want, 1e-3);
    }
}

/// After a first step has sized the memory pool, further steps take every
/// buffer from it: the pool holds no more memory than before (no new driver
/// allocation in the steady state), and the peak in use is reported.
#[test]
fn steady_state_steps_allocate_nothing_new_from_the_driver() {
    let Some(gpu) = cuda_or_skip("steady_state_steps_allocate_nothing_new_from_the_driver") else { return };
    let Device::Cuda(cuda) = &gpu else { unreachable!("cuda_or_skip returns a CUDA device") };
    let model = tiny_model(&gpu);
    let mut rng = Rng::new(12);
    let batch = 8;
    let images = Tensor::from_vec(rng.normal_vec(batch * 3 * IMAGE_SIZE * IMAGE_SIZE, 1.0), [batch, 3, IMAGE_SIZE, IMAGE_SIZE], &gpu).unwrap();
    let labels: Vec<f32> = (0..batch * model.num_classes()).map(|_| rng.below(3) as f32 - 1.0).collect();
    let labels = Tensor::from_vec(labels, [batch, model.num_classes()], &gpu).unwrap();
    let mut opt = Sgd::new(model.parameter_groups(), 0.05, 0.9, 5e-4).unwrap();
    let mut step = || {
        opt.zero_grad();
        let loss = model.logits(&images).unwrap().masked_bce_with_logits(&labels).unwrap();
        loss.backward().unwrap();
        opt.step().unwrap();
        loss.scalar().unwrap()
    };
    step();
    cuda.reset_peak_memory().unwrap();
    let Some(after_first) = cuda.pool_memory().unwrap() else {
        eprintln!("SKIPPED (this driver allocates without memory pools)");
        return;
    };
    for _ in 0..3 {
        assert!(step().is_finite());
    }
    let after = cuda.pool_memory().unwrap().unwrap();
    assert_eq!(after.reserved, after_first.reserved, "the pool grew after the first step: {after_first:?} -> {after:?}");
    assert!(after.peak_used > 0 && after.peak_used <= after.reserved, "{after:?}");
}

/// The CPU half of the comparison runs everywhere, so the recording itself
/// (every parameter gets a gradient, the loss is finite) is checked in CI.
#[test]
fn the_cpu_reference_step_is_complete() {
    let (logits, loss, grads, params) = training_steps(&Device::Cpu);
    assert!(loss.is_finite() && loss > 0.0, "loss {loss}");
    assert!(logits.iter().all(|v| v.is_finite()));
    assert_eq!(grads.len(), params.len());
    assert!(grads.iter().any(|(name, _)| name.contains("ctx")), "no prompt-context gradient among {:?}", grads.iter().map(|g| &g.0).collect::<Vec<_>>());
}
