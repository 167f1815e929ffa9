//! The training loop: a resumed run ends exactly where an uninterrupted one
//! does, checkpoints are complete and name their tensors, and eval/predict
//! read them back.

use mlrpl_engine::clip::init::init_weights;
use mlrpl_engine::clip::{Clip, ClipConfig, TextConfig, VisionConfig};
use mlrpl_engine::data::dataset::MultiLabelDataset;
use mlrpl_engine::data::partial::LabelMask;
use mlrpl_engine::data::synthetic::{Split, SyntheticSet};
use mlrpl_engine::mlrpl::{BiasInit, MlrplConfig, MlrplModel, PromptConfig};
use mlrpl_engine::rng::Rng;
use mlrpl_engine::train::{self, checkpoint, Run, TrainData, TrainOptions};
use mlrpl_engine::Device;
use std::path::PathBuf;
use std::sync::Arc;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mlrpl-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn tiny_model(seed: u64) -> MlrplModel {
    let config = ClipConfig {
        vision: VisionConfig { width: 64, layers: 1, heads: 1, patch: 8, grid: 4, embed_dim: 32 },
        text: TextConfig { width: 64, layers: 1, heads: 1, context_length: 77, vocab_size: 49408, embed_dim: 32 },
    };
    let clip = Clip::from_weights(init_weights(&config, 7, &Device::Cpu).unwrap()).unwrap();
    let classes = mlrpl_engine::data::synthetic::CATEGORIES.iter().map(|c| c.to_string()).collect();
    let config = MlrplConfig {
        prompt: PromptConfig { n_ctx: 4, ..Default::default() },
        decoupling_width: Some(16),
        use_sdm: true,
    };
    MlrplModel::new(clip, classes, &config, &mut Rng::new(seed)).unwrap()
}

fn data() -> TrainData {
    let set: Arc<dyn MultiLabelDataset> =
        Arc::new(SyntheticSet::new(Split::Train, 0, 32).unwrap().with_len(48).unwrap());
    let mask = LabelMask::sample(set.len(), set.class_names().len(), 0.5, 0).unwrap();
    TrainData { dataset: set, train_indices: (0..40).collect(), val_indices: (40..48).collect(), mask: Arc::new(mask) }
}

fn options(epochs: usize) -> TrainOptions {
    TrainOptions {
        epochs,
        batch_size: 8,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 5e-4,
        warmup_epochs: 1,
        warmup_lr: 1e-3,
        image_size: 32,
        cutout: true,
        rand_augment: None,
        workers: 2,
        seed: 3,
        log_every: 1,
        skip_bad_images: false,
        progress: false,
        bias_init: BiasInit::Prior,
    }
}

fn params(model: &MlrplModel) -> Vec<Vec<f32>> {
    model.named_parameters().iter().map(|(_, t)| t.to_vec().unwrap()).collect()
}

#[test]
fn a_resumed_run_ends_where_an_uninterrupted_one_does() {
    let data = data();
    let run = |dir: &PathBuf| Run { dir: dir.clone(), clip: "random:7".into(), config: serde_json::json!({}) };

    let straight_dir = scratch("straight");
    let straight = tiny_model(1);
    train::train(&straight, &data, &options(3), &run(&straight_dir), None).unwrap();

    let resumed_dir = scratch("resumed");
    let first = tiny_model(1);
    train::train(&first, &data, &options(1), &run(&resumed_dir), None).unwrap();
    let loaded = checkpoint::load(&resumed_dir, &Device::Cpu).unwrap();
    assert_eq!((loaded.state.epoch, loaded.state.step), (1, 5));
    let second = tiny_model(99);
    let outcome = train::train(&second, &data, &options(3), &run(&resumed_dir), Some(loaded)).unwrap();
    assert_eq!(outcome.epochs_run, 2);
    assert_eq!(params(&straight), params(&second), "resumed parameters differ from the uninterrupted run's");

    // The JSON names a complete tensors file; older ones are gone.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(checkpoint::state_path(&resumed_dir, "last")).unwrap()).unwrap();
    assert_eq!(state["tensors"], "checkpoint-last-step15.safetensors");
    let tensor_files: Vec<_> = std::fs::read_dir(&resumed_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("checkpoint-last") && n.ends_with(".safetensors"))
        .collect();
    assert_eq!(tensor_files, vec!["checkpoint-last-step15.safetensors".to_string()]);
    let metrics = std::fs::read_to_string(resumed_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().filter(|l| l.contains("val_map")).count(), 3);
}

#[test]
fn the_best_checkpoint_restores_the_model() {
    let data = data();
    let dir = scratch("best");
    let model = tiny_model(2);
    let run = Run { dir: dir.clone(), clip: "random:7".into(), config: serde_json::json!({}) };
    let outcome = train::train(&model, &data, &options(2), &run, None).unwrap();
    let best = checkpoint::load(&checkpoint::state_path(&dir, "best"), &Device::Cpu).unwrap();
    assert_eq!(Some(best.state.epoch), outcome.best_epoch);
    let fresh = tiny_model(5);
    checkpoint::restore_params(&fresh.named_parameters(), &best.params, "best").unwrap();
    let indices: Vec<usize> = (40..48).collect();
    let chosen = best.state.best_threshold.expect("the best checkpoint records its validation threshold");
    assert!(chosen > 0.0 && chosen < 1.0, "{chosen}");
    let mask = Some(data.mask.clone());
    let (a, at_chosen) =
        train::evaluate_split(&fresh, &data.dataset, &indices, mask, &options(1), Some(chosen)).unwrap();
    assert!((a.map - outcome.best_val_map.unwrap()).abs() < 1e-9, "{} vs {:?}", a.map, outcome.best_val_map);
    // 0.5 is one of the thresholds the choice weighed on these images.
    assert!(at_chosen.unwrap().cf1 >= a.cf1, "the chosen threshold is worse than 0.5 on the split that chose it");
    let mut missing = best.params.clone();
    missing.remove("sdm.fc2.weight");
    let err = checkpoint::restore_params(&fresh.named_parameters(), &missing, "ckpt.json").unwrap_err();
    assert!(format!("{err:#}").contains("ckpt.json: missing tensor `sdm.fc2.weight`"), "{err:#}");
}

#[test]
fn loss_meter_reads_window_means_and_names_the_steps_of_a_bad_loss() {
    let scalar = |v: f32| mlrpl_engine::Tensor::from_vec(vec![v], mlrpl_engine::Shape::scalar(), &Device::Cpu).unwrap();
    let mut meter = train::LossMeter::default();
    assert_eq!(meter.read(0, 0).unwrap(), None, "nothing added, nothing read");
    for v in [1.0, 2.0, 3.0] {
        meter.add(&scalar(v)).unwrap();
    }
    assert_eq!(meter.read(0, 3).unwrap(), Some(2.0));
    meter.add(&scalar(4.0)).unwrap();
    assert_eq!(meter.read(0, 4).unwrap(), Some(4.0));
    assert_eq!(meter.epoch_mean(), 2.5);
    meter.add(&scalar(f32::NAN)).unwrap();
    meter.add(&scalar(1.0)).unwrap();
    let err = meter.read(1, 6).unwrap_err().to_string();
    assert!(err.contains("NaN in epoch 2 between steps 5 and 6"), "{err}");
}
