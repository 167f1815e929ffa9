//! Contrastive pre-training: gradients reach every weight of both towers,
//! the loss falls, the temperature is clamped as CLIP does, and a resumed
//! run ends bit-identical to an uninterrupted one.

use mlrpl_engine::clip::init::init_weights;
use mlrpl_engine::clip::tokenizer::Tokenizer;
use mlrpl_engine::clip::{ClipConfig, TextConfig, VisionConfig};
use mlrpl_engine::data::dataset::MultiLabelDataset;
use mlrpl_engine::data::shape_siblings::ShapeSiblings;
use mlrpl_engine::data::synthetic::{Split, SyntheticSet};
use mlrpl_engine::train::pretrain::{
    self, clip_loss, PretrainData, PretrainOptions, TrainableClip, MAX_LOG_LOGIT_SCALE,
};
use mlrpl_engine::train::{checkpoint, Run};
use mlrpl_engine::{DType, Device, Tensor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const IMAGE_SIZE: usize = 16;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mlrpl-pretrain-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn tiny_clip(seed: u64) -> TrainableClip {
    let config = ClipConfig {
        vision: VisionConfig { width: 64, layers: 1, heads: 1, patch: 8, grid: IMAGE_SIZE / 8, embed_dim: 32 },
        text: TextConfig { width: 64, layers: 1, heads: 1, context_length: 77, vocab_size: 49408, embed_dim: 32 },
    };
    TrainableClip::new(init_weights(&config, seed, &Device::Cpu).unwrap()).unwrap()
}

fn scenes(len: usize) -> Arc<SyntheticSet> {
    Arc::new(SyntheticSet::new(Split::Pretrain, 0, IMAGE_SIZE).unwrap().with_len(len).unwrap())
}

fn data_with_siblings(scene_count: usize, siblings: usize) -> PretrainData {
    let validation: Arc<dyn MultiLabelDataset> =
        Arc::new(SyntheticSet::new(Split::Val, 0, IMAGE_SIZE).unwrap().with_len(12).unwrap());
    PretrainData { pairs: Arc::new(ShapeSiblings::new(scenes(scene_count), siblings).unwrap()), validation }
}

fn data(pairs: usize) -> PretrainData {
    data_with_siblings(pairs, 1)
}

fn options(epochs: usize, lr: f32) -> PretrainOptions {
    PretrainOptions {
        epochs,
        batch_size: 8,
        lr,
        weight_decay: 0.1,
        betas: (0.9, 0.98),
        eps: 1e-6,
        warmup_steps: 2,
        workers: 2,
        seed: 5,
        log_every: 1,
        progress: false,
        group_by_count: false,
        patch_loss_weight: 0.0,
    }
}

fn run(dir: &Path) -> Run {
    Run { dir: dir.to_path_buf(), clip: "none".into(), config: serde_json::json!({}) }
}

fn params(model: &TrainableClip) -> Vec<Vec<f32>> {
    model.named.iter().map(|(_, t)| t.to_vec().unwrap()).collect()
}

/// One batch's loss on the first `n` pairs (of data without siblings):
/// CLIP's loss plus `patch_weight` times the mean-patch-token term.
fn batch_loss_with(model: &TrainableClip, data: &PretrainData, n: usize, patch_weight: f32) -> Tensor {
    assert_eq!(data.pairs.siblings(), 1);
    let indices: Vec<usize> = (0..n).collect();
    let images =
        scenes(n).images_tensor(&indices, mlrpl_engine::data::image::Preprocess::Resize { size: IMAGE_SIZE }).unwrap();
    let tokenizer = Tokenizer::shared().unwrap();
    let tokens: Vec<Vec<u32>> =
        indices.iter().map(|&i| tokenizer.tokenize(&data.pairs.caption(i, 0), 77).unwrap()).collect();
    pretrain::pair_loss(&model.clip, &images, &tokens, model.log_logit_scale().unwrap(), patch_weight).unwrap()
}

fn batch_loss(model: &TrainableClip, data: &PretrainData, n: usize) -> Tensor {
    batch_loss_with(model, data, n, 0.0)
}

#[test]
fn gradients_reach_every_weight_of_both_towers() {
    let model = tiny_clip(1);
    let data = data(8);
    batch_loss(&model, &data, 8).backward().unwrap();
    let mut missing = Vec::new();
    for (name, t) in &model.named {
        let grad = t.grad().map(|g| g.to_vec().unwrap());
        let nonzero = grad.as_ref().is_some_and(|g| g.iter().any(|&v| v != 0.0));
        if !nonzero {
            missing.push(name.clone());
        }
        assert!(grad.is_none_or(|g| g.iter().all(|v| v.is_finite())), "{name}: non-finite gradient");
    }
    assert!(missing.is_empty(), "no gradient reached {missing:?}");
}

#[test]
fn parameter_groups_decay_only_matrices() {
    let model = tiny_clip(1);
    let groups = model.parameter_groups();
    let name_of = |t: &Tensor| model.named.iter().find(|(_, p)| p.id() == t.id()).unwrap().0.clone();
    let decayed: Vec<String> = groups[0].params.iter().map(name_of).collect();
    let not_decayed: Vec<String> = groups[1].params.iter().map(name_of).collect();
    assert_eq!(groups[1].weight_decay, Some(0.0));
    assert!(decayed.contains(&"visual.transformer.resblocks.0.attn.in_proj_weight".to_string()));
    assert!(decayed.contains(&"visual.proj".to_string()) && decayed.contains(&"text_projection".to_string()));
    for name in [
        "logit_scale",
        "token_embedding.weight",
        "positional_embedding",
        "visual.class_embedding",
        "ln_final.weight",
        "visual.transformer.resblocks.0.mlp.c_fc.bias",
    ] {
        assert!(not_decayed.contains(&name.to_string()), "{name} must not be decayed");
    }
    assert_eq!(decayed.len() + not_decayed.len(), model.named.len());
}

#[test]
fn pretraining_lowers_the_contrastive_loss() {
    let model = tiny_clip(2);
    let data = data(16);
    let before = batch_loss(&model, &data, 16).scalar().unwrap();
    let dir = scratch("fit");
    pretrain::pretrain(&model, &data, &options(60, 1e-3), &run(&dir), None).unwrap();
    let after = batch_loss(&model, &data, 16).scalar().unwrap();
    // ln 16 = 2.77 is chance; the 16 pairs seen 60 times must be matched far better.
    assert!(after < 0.5 * before, "loss {before} -> {after}");
    let lines = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert!(lines.lines().any(|l| l.contains("val_zero_shot_map")), "{lines}");
}

#[test]
fn the_temperature_is_clamped_to_100() {
    let model = tiny_clip(3);
    let log_scale = model.log_logit_scale().unwrap();
    log_scale.copy_from(&Tensor::full(6.0, [], DType::F32, &Device::Cpu).unwrap()).unwrap();
    let dir = scratch("clamp");
    pretrain::pretrain(&model, &data(8), &options(1, 1e-4), &run(&dir), None).unwrap();
    assert_eq!(model.log_logit_scale().unwrap().scalar().unwrap(), MAX_LOG_LOGIT_SCALE);
}

#[test]
fn a_resumed_pretraining_ends_where_an_uninterrupted_one_does() {
    let data = data(24);
    let straight_dir = scratch("straight");
    let straight = tiny_clip(4);
    pretrain::pretrain(&straight, &data, &options(3, 1e-3), &run(&straight_dir), None).unwrap();

    let resumed_dir = scratch("resumed");
    let first = tiny_clip(4);
    pretrain::pretrain(&first, &data, &options(1, 1e-3), &run(&resumed_dir), None).unwrap();
    let loaded = checkpoint::load(&resumed_dir, &Device::Cpu).unwrap();
    assert_eq!((loaded.state.epoch, loaded.state.step), (1, 3));
    let second = tiny_clip(99);
    let outcome = pretrain::pretrain(&second, &data, &options(3, 1e-3), &run(&resumed_dir), Some(loaded)).unwrap();
    assert_eq!(outcome.epochs_run, 2);
    assert_eq!(params(&straight), params(&second), "resumed weights differ from the uninterrupted run's");
    assert_ne!(params(&straight), params(&tiny_clip(4)), "training must change the weights");
}

#[test]
fn count_grouped_batches_hold_one_object_count_each() {
    // 7 pairs with 1 object, 5 with 2, 9 with 3, 3 with 4, interleaved.
    let counts: Vec<usize> = (0..24).map(|i| [1, 2, 3, 1, 3, 2, 3, 1, 4, 3][i % 10]).collect();
    let per_count = |c: usize| counts.iter().filter(|&&n| n == c).count();
    let batch = 3;
    let order = pretrain::count_grouped_order(&counts, batch, 5, 0);
    let whole: usize = (1..=4).map(|c| per_count(c) / batch * batch).sum();
    assert_eq!(order.len(), whole, "every whole batch of each count, no remainder");
    for chunk in order.chunks(batch) {
        assert!(chunk.iter().all(|&i| counts[i] == counts[chunk[0]]), "mixed counts in batch {chunk:?}");
    }
    let mut seen = order.clone();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), order.len(), "a pair appears twice");
    assert_eq!(order, pretrain::count_grouped_order(&counts, batch, 5, 0), "not deterministic");
    assert_ne!(order, pretrain::count_grouped_order(&counts, batch, 5, 1), "the same order in two epochs");
}

#[test]
fn the_patch_term_adds_the_weighted_loss_of_the_mean_patch_token() {
    let model = tiny_clip(2);
    let (n, data) = (6, data(6));
    let images = scenes(n)
        .images_tensor(&(0..n).collect::<Vec<_>>(), mlrpl_engine::data::image::Preprocess::Resize { size: IMAGE_SIZE })
        .unwrap();
    let tokenizer = Tokenizer::shared().unwrap();
    let tokens: Vec<Vec<u32>> = (0..n).map(|i| tokenizer.tokenize(&data.pairs.caption(i, 0), 77).unwrap()).collect();
    let scale = model.log_logit_scale().unwrap();
    let text = model.clip.text.encode(&tokens).unwrap();
    let dense = model.clip.vision.encode_dense(&images).unwrap();
    let (b, l, d) = (dense.dims()[0], dense.dims()[1], dense.dims()[2]);
    let class = dense.narrow(1, 0, 1).unwrap().reshape([b, d]).unwrap();
    let mean_patch = dense.narrow(1, 1, l - 1).unwrap().mean(&[1], false).unwrap();
    let class_loss = clip_loss(&class, &text, scale).unwrap().scalar().unwrap();
    let patch_loss = clip_loss(&mean_patch, &text, scale).unwrap().scalar().unwrap();
    let loss = |w: f32| batch_loss_with(&model, &data, n, w).scalar().unwrap();
    assert!((loss(0.0) - class_loss).abs() < 1e-5, "{} vs {class_loss}", loss(0.0));
    assert!(
        (loss(0.5) - (class_loss + 0.5 * patch_loss)).abs() < 1e-5,
        "{} vs {class_loss} + 0.5 * {patch_loss}",
        loss(0.5)
    );
    assert!((patch_loss - class_loss).abs() > 1e-4, "the two terms should differ");
}

#[test]
fn pretraining_with_the_patch_term_lowers_both_terms() {
    let model = tiny_clip(3);
    let data = data(16);
    let before =
        (batch_loss(&model, &data, 16).scalar().unwrap(), batch_loss_with(&model, &data, 16, 1.0).scalar().unwrap());
    let dir = scratch("patch-term");
    let options = PretrainOptions { patch_loss_weight: 1.0, ..options(40, 1e-3) };
    pretrain::pretrain(&model, &data, &options, &run(&dir), None).unwrap();
    let after =
        (batch_loss(&model, &data, 16).scalar().unwrap(), batch_loss_with(&model, &data, 16, 1.0).scalar().unwrap());
    let patch_term = |(class, both): (f32, f32)| both - class;
    assert!(after.0 < 0.6 * before.0, "class-token loss {} -> {}", before.0, after.0);
    assert!(patch_term(after) < 0.6 * patch_term(before), "patch term {} -> {}", patch_term(before), patch_term(after));
}

#[test]
fn shape_sibling_pretraining_steps_over_whole_groups() {
    // 10 scenes in groups of 4 and batches of 8: 2 scenes per batch, 5 steps.
    let dir = scratch("siblings");
    let model = tiny_clip(4);
    pretrain::pretrain(&model, &data_with_siblings(10, 4), &options(1, 1e-3), &run(&dir), None).unwrap();
    assert_eq!(checkpoint::load(&dir, &Device::Cpu).unwrap().state.step, 5);
    let err =
        pretrain::pretrain(&tiny_clip(4), &data_with_siblings(10, 3), &options(1, 1e-3), &run(&dir), None).unwrap_err();
    assert!(err.to_string().contains("multiple of --shape-siblings 3"), "{err:#}");
}

#[test]
fn count_grouped_pretraining_steps_over_whole_batches_only() {
    let data = data(40);
    let counts: Vec<usize> = (0..40).map(|i| data.pairs.scene(i).objects.len()).collect();
    let whole_batches: usize = (1..=4).map(|c| counts.iter().filter(|&&n| n == c).count() / 8).sum();
    let dir = scratch("grouped");
    let model = tiny_clip(4);
    let options = PretrainOptions { group_by_count: true, ..options(1, 1e-3) };
    pretrain::pretrain(&model, &data, &options, &run(&dir), None).unwrap();
    let loaded = checkpoint::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(loaded.state.step, whole_batches);
}

/// Central differences of the whole batch loss against the analytic
/// gradient, for a few entries of every weight of both towers.
#[test]
fn tower_weight_gradients_match_finite_differences() {
    let model = tiny_clip(6);
    let data = data(6);
    batch_loss(&model, &data, 6).backward().unwrap();
    let _no_grad = mlrpl_engine::autograd::no_grad();
    let mut rng = mlrpl_engine::rng::Rng::new(6);
    let eps = 1e-2f32;
    let mut worst: (f64, String) = (0.0, String::new());
    for (name, param) in &model.named {
        let grad = param.grad().map(|g| g.to_vec().unwrap()).unwrap_or_else(|| vec![0.0; param.elem_count()]);
        let values = param.to_vec().unwrap();
        // The largest-gradient entry plus two random ones.
        let largest = (0..grad.len()).max_by(|&a, &b| grad[a].abs().total_cmp(&grad[b].abs())).unwrap();
        for index in [largest, rng.below(values.len()), rng.below(values.len())] {
            let at = |delta: f32| {
                let mut moved = values.clone();
                moved[index] += delta;
                param.copy_from(&Tensor::from_vec(moved, param.shape().clone(), &Device::Cpu).unwrap()).unwrap();
                batch_loss(&model, &data, 6).scalar().unwrap() as f64
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps as f64);
            param.copy_from(&Tensor::from_vec(values.clone(), param.shape().clone(), &Device::Cpu).unwrap()).unwrap();
            let analytic = grad[index] as f64;
            let error = (fd - analytic).abs() / (analytic.abs().max(fd.abs()).max(1e-2));
            if error > worst.0 {
                worst = (error, format!("{name}[{index}]: analytic {analytic:.6} vs finite difference {fd:.6}"));
            }
        }
    }
    assert!(worst.0 < 0.05, "worst gradient: {}", worst.1);
    eprintln!("worst relative gradient error {:.2e}: {}", worst.0, worst.1);
}
