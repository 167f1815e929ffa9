//! A whole MLR-PL training step on CUDA against the CPU (docs/model.md §9): the
//! same tiny random CLIP and model on both devices, the same batch; logits,
//! loss, every trainable gradient and the parameters after SGD steps must
//! agree (rel. error <= 1e-4; with bf16 towers on both, 2e-2), and one epoch of `train::train` (loader on the
//! host, model on the GPU) must end near the CPU run. Without a GPU each test
//! prints `SKIPPED (no CUDA GPU): <reason>` and returns.

mod common;

use common::training_step::{assert_records_match, tiny_model, training_steps, IMAGE_SIZE};
use common::{assert_rel, cuda_alone_or_skip, cuda_or_skip, BF16_TOL};
use mlrpl_engine::data::dataset::MultiLabelDataset;
use mlrpl_engine::data::partial::LabelMask;
use mlrpl_engine::data::synthetic::{Split, SyntheticSet};
use mlrpl_engine::mlrpl::BiasInit;
use mlrpl_engine::optim::{Optimizer, Sgd};
use mlrpl_engine::rng::Rng;
use mlrpl_engine::train::{self, Run, TrainData, TrainOptions};
use mlrpl_engine::{Device, Precision, Tensor};
use std::path::PathBuf;
use std::sync::Arc;

const TOL: f64 = 1e-4;

#[test]
fn one_training_step_matches_the_cpu() {
    let Some(gpu) = cuda_or_skip("one_training_step_matches_the_cpu") else { return };
    let want = training_steps(&Device::Cpu, Precision::F32);
    assert_records_match(&training_steps(&gpu, Precision::F32), &want, TOL, 1e-6);
}

/// The `--precision bf16` step (bf16 towers: cuBLASLt bf16 GEMMs on the
/// GPU) against the same bf16 step on the CPU backend.
#[test]
fn bf16_training_step_matches_the_cpu() {
    let Some(gpu) = cuda_or_skip("bf16_training_step_matches_the_cpu") else { return };
    let want = training_steps(&Device::Cpu, Precision::Bf16);
    assert_records_match(&training_steps(&gpu, Precision::Bf16), &want, BF16_TOL, 1e-4);
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mlrpl-cuda-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn one_epoch_of_train_matches_the_cpu() {
    let Some(gpu) = cuda_or_skip("one_epoch_of_train_matches_the_cpu") else { return };
    let set: Arc<dyn MultiLabelDataset> =
        Arc::new(SyntheticSet::new(Split::Train, 0, IMAGE_SIZE).unwrap().with_len(24).unwrap());
    let mask = LabelMask::sample(set.len(), set.class_names().len(), 0.5, 0).unwrap();
    let data = TrainData {
        dataset: set,
        train_indices: (0..16).collect(),
        val_indices: (16..24).collect(),
        mask: Arc::new(mask),
    };
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
        bias_init: BiasInit::Prior,
    };
    let mut finals = Vec::new();
    for device in [Device::Cpu, gpu.clone()] {
        let dir = scratch(&device.to_string().replace(':', "-"));
        let model = tiny_model(&device, Precision::F32);
        let run = Run { dir: dir.clone(), clip: "random:7".into(), config: serde_json::json!({}) };
        train::train(&model, &data, &options, &run, None).unwrap();
        finals.push(model.named_parameters().into_iter().map(|(n, p)| (n, p.to_vec().unwrap())).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }
    for ((name, got), (_, want)) in finals[1].iter().zip(&finals[0]) {
        assert_rel(&format!("{name} after one epoch"), got, want, 1e-3);
    }
}

/// After two warm-up steps have sized the memory pool, further steps take every
/// buffer from it: the pool holds no more memory than before (no new driver
/// allocation in the steady state), the peak in use is reported, and every
/// cuBLASLt product reuses the plan the first step made for its shape.
#[test]
fn steady_state_steps_allocate_nothing_new_from_the_driver() {
    let Some(gpu) = cuda_alone_or_skip("steady_state_steps_allocate_nothing_new_from_the_driver") else { return };
    let Device::Cuda(cuda) = &*gpu else { unreachable!("cuda_or_skip returns a CUDA device") };
    let model = tiny_model(&gpu, Precision::F32);
    let mut rng = Rng::new(12);
    let batch = 8;
    let images = Tensor::from_vec(
        rng.normal_vec(batch * 3 * IMAGE_SIZE * IMAGE_SIZE, 1.0),
        [batch, 3, IMAGE_SIZE, IMAGE_SIZE],
        &gpu,
    )
    .unwrap();
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
    // Two warm-up steps: SGD creates its momentum buffers lazily, in the
    // first step's update, so only the second shows the steady state's pool.
    step();
    step();
    let plans = cuda.gemm_plans();
    assert!(plans > 0, "the step ran no cuBLASLt product");
    cuda.reset_peak_memory().unwrap();
    let Some(after_warmup) = cuda.pool_memory().unwrap() else {
        eprintln!("SKIPPED (this driver allocates without memory pools)");
        return;
    };
    for _ in 0..3 {
        assert!(step().is_finite());
    }
    assert_eq!(cuda.gemm_plans(), plans, "later steps made new cuBLASLt plans");
    let after = cuda.pool_memory().unwrap().unwrap();
    assert_eq!(
        after.reserved, after_warmup.reserved,
        "the pool grew after the warm-up steps: {after_warmup:?} -> {after:?}"
    );
    assert!(after.peak_used > 0 && after.peak_used <= after.reserved, "{after:?}");
}

/// The CPU half of the comparison runs everywhere, so the recording itself
/// (every parameter gets a gradient, the loss is finite) is checked in CI.
#[test]
fn the_cpu_reference_step_is_complete() {
    let step = training_steps(&Device::Cpu, Precision::F32);
    assert!(step.loss.is_finite() && step.loss > 0.0, "loss {}", step.loss);
    assert!(step.logits.iter().all(|v| v.is_finite()));
    assert_eq!(step.grads.len(), step.params.len());
    let names: Vec<&String> = step.grads.iter().map(|g| &g.0).collect();
    assert!(names.iter().any(|name| name.contains("ctx")), "no prompt-context gradient among {names:?}");
}
