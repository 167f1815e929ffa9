//! `mlrpl-engine train`: the MLR-PL model on a dataset with partial labels.

use super::data::{load_clip, DataArgs, Part};
use super::run_folder::RunFolderArgs;
use anyhow::{bail, Result};
use clap::Args;
use mlrpl_engine::data::loader::split_validation;
use mlrpl_engine::data::partial::LabelMask;
use mlrpl_engine::data::rand_augment::RandAugment;
use mlrpl_engine::mlrpl::{MlrplConfig, MlrplModel, PromptConfig};
use mlrpl_engine::rng::Rng;
use mlrpl_engine::train::{self, checkpoint, evaluate_split, Run, TrainData, TrainOptions};
use mlrpl_engine::{Device, Precision};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// The model's shape: everything `eval` and `predict` need to rebuild it.
#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct ModelArgs {
    /// Context vectors per prompt (M).
    #[arg(long, default_value_t = 16)]
    pub n_ctx: usize,
    /// One context shared by all categories (CoOp) instead of one per category.
    #[arg(long)]
    pub shared_ctx: bool,
    /// Initialise the context from this phrase's token embeddings, e.g. "a photo of a".
    #[arg(long)]
    pub ctx_init: Option<String>,
    /// Width d of the semantic decoupling module (default: CLIP's embedding width).
    #[arg(long)]
    pub decoupling_width: Option<usize>,
    /// Prompts only: no semantic decoupling (every category sees the global image feature).
    #[arg(long)]
    pub no_sdm: bool,
    /// Input resolution R (default: the CLIP's own; 448 is usual for COCO/VOC with ViT-B/16).
    #[arg(long)]
    pub image_size: Option<usize>,
}

impl ModelArgs {
    pub fn config(&self) -> MlrplConfig {
        MlrplConfig {
            prompt: PromptConfig { n_ctx: self.n_ctx, shared_ctx: self.shared_ctx, ctx_init: self.ctx_init.clone() },
            decoupling_width: self.decoupling_width,
            use_sdm: !self.no_sdm,
        }
    }
}

#[derive(Args, Debug, Serialize)]
pub struct TrainArgs {
    /// CLIP weights (safetensors, OpenAI or Hugging Face naming; default: the bundled CLIP).
    #[arg(long)]
    clip: Option<PathBuf>,
    #[command(flatten)]
    #[serde(skip)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
    /// Known-label proportion p: each training label is kept with probability p.
    #[arg(long, default_value_t = 0.5)]
    known_ratio: f64,
    /// Reuse a saved label mask instead of sampling one.
    #[arg(long)]
    label_mask: Option<PathBuf>,
    /// Seed of the label mask.
    #[arg(long, default_value_t = 0)]
    mask_seed: u64,
    /// Training epochs. 30 by default: on the embedded set the decoupling
    /// module needs several times the steps the prompts alone need
    /// (docs/full-vs-prompts.md).
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 0.002)]
    lr: f32,
    #[arg(long, default_value_t = 0.9)]
    momentum: f32,
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f32,
    /// Epochs at the constant warm-up learning rate before the cosine decay.
    #[arg(long, default_value_t = 1)]
    warmup_epochs: usize,
    #[arg(long, default_value_t = 1e-5)]
    warmup_lr: f32,
    /// No Cutout augmentation.
    #[arg(long)]
    no_cutout: bool,
    /// RandAugment after flip and Cutout: N ops per image at magnitude M of 0..=30
    /// (torchvision's default is 2,9; default: off).
    #[arg(long, value_name = "N,M")]
    rand_augment: Option<RandAugment>,
    /// Fraction of the training split held out for validation.
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    /// Data-loading threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    #[serde(flatten)]
    run_folder: RunFolderArgs,
    /// Print the test AP of every class in the summary.
    #[arg(long)]
    per_class_ap: bool,
    /// Steps between two lines of metrics.jsonl.
    #[arg(long, default_value_t = 10)]
    log_every: usize,
}

pub fn run(mut args: TrainArgs, device: &Device, precision: Precision) -> Result<()> {
    mlrpl_engine::data::partial::check_known_ratio(args.known_ratio)?;
    mlrpl_engine::data::loader::check_validation_fraction(args.val_fraction)?;
    let run_dir = args.run_folder.resolve("train")?;
    let resume = if args.run_folder.resume { Some(checkpoint::load(&run_dir, device)?) } else { None };
    let (clip, clip_name) = load_clip(args.clip.as_ref(), device, precision)?;
    if let Some(previous) = resume.as_ref().map(|r| &r.state.clip).filter(|&c| *c != clip_name) {
        bail!(
            "--resume: the run in {} was trained on the CLIP {previous:?}, not {clip_name:?}; give the same --clip",
            run_dir.display()
        );
    }
    let image_size = args.model.image_size.unwrap_or(clip.config.vision.resolution());
    let train_set = args.data.open(Part::Train)?;
    let test_set = args.data.open(Part::Test)?;
    if train_set.class_names() != test_set.class_names() {
        bail!("the training and test splits have different classes");
    }
    let classes = train_set.class_names().to_vec();
    let mask_path = run_dir.join("label-mask.json");
    let mask = match (&args.label_mask, &resume) {
        (Some(path), _) => LabelMask::load(path, train_set.len(), classes.len())?,
        (None, Some(_)) => LabelMask::load(&mask_path, train_set.len(), classes.len())?,
        (None, None) => LabelMask::sample(train_set.len(), classes.len(), args.known_ratio, args.mask_seed)?,
    };
    std::fs::create_dir_all(&run_dir)?;
    mask.save(&mask_path)?;
    let (train_indices, val_indices) = split_validation(train_set.len(), args.val_fraction, args.seed);
    let model = MlrplModel::new(clip, classes, &args.model.config(), &mut Rng::new(args.seed))?;
    let options = TrainOptions {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        momentum: args.momentum,
        weight_decay: args.weight_decay,
        warmup_epochs: args.warmup_epochs,
        warmup_lr: args.warmup_lr,
        image_size,
        cutout: !args.no_cutout,
        rand_augment: args.rand_augment,
        workers: args.workers,
        seed: args.seed,
        log_every: args.log_every,
        skip_bad_images: args.data.skip_bad_images,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    eprintln!(
        "training on {} ({} images, {} for validation), {} classes, known-label proportion {:.2}, {precision}, run folder {}",
        train_set.describe(),
        train_indices.len(),
        val_indices.len(),
        model.num_classes(),
        mask.kept_fraction(),
        run_dir.display()
    );
    let all_test: Vec<usize> = (0..test_set.len()).collect();
    let untrained = evaluate_split(&model, &test_set, &all_test, None, &options)?;
    let mut config = serde_json::to_value(&args)?;
    config["precision"] = serde_json::json!(precision.frozen_dtype().to_string());
    let data = TrainData { dataset: train_set, train_indices, val_indices, mask: Arc::new(mask) };
    let run = Run { dir: run_dir.clone(), clip: clip_name, config };
    let outcome = train::train(&model, &data, &options, &run, resume)?;
    super::report_gpu_memory(device)?;
    let best = checkpoint::load(&checkpoint::state_path(&run_dir, "best"), device)?;
    checkpoint::restore_params(&model.named_parameters(), &best.params, "best checkpoint")?;
    let tested = evaluate_split(&model, &test_set, &all_test, None, &options)?;
    println!(
        "best checkpoint: epoch {} (validation mAP {:.2}), {}",
        outcome.best_epoch.unwrap_or(0),
        100.0 * outcome.best_val_map.unwrap_or(0.0),
        checkpoint::state_path(&run_dir, "best").display()
    );
    let summary = serde_json::json!({ "untrained": untrained, "trained": tested, "class_names": model.class_names });
    let summary_path = run_dir.join("test-metrics.json");
    checkpoint::write_atomically(&summary_path, serde_json::to_string_pretty(&summary)?.as_bytes())?;
    println!("test split, untrained model: mAP {:.2}", 100.0 * untrained.map);
    println!(
        "test split, trained model:\n{}",
        tested.summary_table(args.per_class_ap.then_some(&model.class_names[..]))
    );
    Ok(())
}
