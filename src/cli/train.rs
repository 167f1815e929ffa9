//! `mlrpl-engine train`: the MLR-PL model on a dataset with partial labels.

use super::checks;
use super::data::{load_clip, DataArgs, Part};
use super::run_folder::RunFolderArgs;
use anyhow::{bail, Result};
use clap::Args;
use mlrpl_engine::data::loader::split_validation;
use mlrpl_engine::data::partial::LabelMask;
use mlrpl_engine::data::rand_augment::RandAugment;
use mlrpl_engine::mlrpl::{BiasInit, MlrplConfig, MlrplModel, PromptConfig};
use mlrpl_engine::rng::Rng;
use mlrpl_engine::train::{self, checkpoint, evaluate_split, Run, TrainData, TrainOptions};
use mlrpl_engine::viz::plots;
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
    /// The model's flags that need no CLIP to check.
    pub fn check(&self) -> Result<()> {
        if let Some(width) = self.decoupling_width {
            checks::at_least_one("--decoupling-width", width)?;
        }
        checks::at_least_one("--n-ctx", self.n_ctx)?;
        if let Some(init) = &self.ctx_init {
            if init.trim().is_empty() {
                bail!("--ctx-init is empty; give a phrase such as \"a photo of a\" or leave it out");
            }
        }
        Ok(())
    }

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
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
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
    #[arg(long, default_value_t = 0.002, allow_negative_numbers = true)]
    lr: f32,
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    momentum: f32,
    #[arg(long, default_value_t = 5e-4, allow_negative_numbers = true)]
    weight_decay: f32,
    /// Epochs at the constant warm-up learning rate before the cosine decay.
    #[arg(long, default_value_t = 1)]
    warmup_epochs: usize,
    #[arg(long, default_value_t = 1e-5, allow_negative_numbers = true)]
    warmup_lr: f32,
    /// How the classifier's bias starts: `constant`, -5 (docs/model.md §5);
    /// `prior`, the log-odds of each class's known positives less its mean
    /// initial logit (so the first predictions match the base rates).
    #[arg(long, value_enum, default_value_t = BiasInit::Constant)]
    bias_init: BiasInit,
    /// No Cutout augmentation.
    #[arg(long)]
    no_cutout: bool,
    /// RandAugment after flip and Cutout: N ops per image at magnitude M of 0..=30
    /// (torchvision's default is 2,9; default: off).
    #[arg(long, value_name = "N,M")]
    rand_augment: Option<RandAugment>,
    /// Fraction of the training split held out for validation.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
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

impl TrainArgs {
    /// Every flag that needs neither the CLIP nor the data, checked before
    /// anything is loaded.
    fn check(&self) -> Result<()> {
        mlrpl_engine::data::partial::check_known_ratio(self.known_ratio)?;
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) {
            bail!(
                "--val-fraction must be in (0, 1): training picks its best checkpoint on that held-out part, got {}",
                self.val_fraction
            );
        }
        self.model.check()?;
        checks::at_least_one("--epochs", self.epochs)?;
        checks::at_least_one("--batch-size", self.batch_size)?;
        checks::at_least_one("--log-every", self.log_every)?;
        checks::positive("--lr", self.lr)?;
        checks::non_negative("--warmup-lr", self.warmup_lr)?;
        if !(self.momentum >= 0.0 && self.momentum < 1.0) {
            bail!("--momentum must be in [0, 1), got {}", self.momentum);
        }
        checks::in_range("--weight-decay", self.weight_decay, 0.0, 1.0)?;
        Ok(())
    }
}

pub fn run(mut args: TrainArgs, device: &Device, precision: Precision) -> Result<()> {
    args.check()?;
    let run_dir = args.run_folder.resolve("train")?;
    let resume = if args.run_folder.resume { Some(checkpoint::load(&run_dir, device)?) } else { None };
    let (clip, clip_name) = load_clip(args.clip.as_ref(), device, precision)?;
    if let Some(previous) = resume.as_ref().map(|r| &r.state.clip).filter(|&c| *c != clip_name) {
        bail!(
            "--resume: the run in {} was trained on the CLIP {previous:?}, not {clip_name:?}; give the same --clip",
            run_dir.display()
        );
    }
    checks::text_vocabulary(&clip, &clip_name)?;
    let image_size = args.model.image_size.unwrap_or(clip.config.vision.resolution());
    checks::image_size("--image-size", image_size, args.batch_size, &clip.config.vision)?;
    let train_set = args.data.open(Part::Train)?;
    let test_set = args.data.open(Part::Test)?;
    super::data::same_classes(&*train_set, &*test_set)?;
    let classes = train_set.class_names().to_vec();
    let mask_path = run_dir.join("label-mask.json");
    let mask = match (&args.label_mask, &resume) {
        (Some(path), _) => {
            let mask = LabelMask::load(path, train_set.len(), classes.len())?;
            if mask.num_kept() == 0 {
                bail!("--label-mask {}: every label is unknown, so there is nothing to train on", path.display());
            }
            mask
        }
        (None, Some(_)) => LabelMask::load(&mask_path, train_set.len(), classes.len())?,
        (None, None) => LabelMask::sample(train_set.len(), classes.len(), args.known_ratio, args.mask_seed)?,
    };
    std::fs::create_dir_all(&run_dir)?;
    mask.save(&mask_path)?;
    let (train_indices, val_indices) = split_validation(train_set.len(), args.val_fraction, args.seed);
    let known_positive = |i: usize| mask.apply(train_set.labels(i), i).iter().any(|&v| v > 0.0);
    if !val_indices.iter().any(|&i| known_positive(i)) {
        let source = match (&args.label_mask, &resume) {
            (Some(path), _) => format!("--label-mask {}", path.display()),
            (None, Some(_)) => format!("the run's label mask {}", mask_path.display()),
            (None, None) => format!("the label mask sampled at --known-ratio {}", args.known_ratio),
        };
        bail!(
            "{source}: none of the {} validation images (--val-fraction {}) has a known positive label, so the \
             validation mAP that picks the best checkpoint is undefined; keep more labels or raise --val-fraction",
            val_indices.len(),
            args.val_fraction
        );
    }
    let model = MlrplModel::new(clip, classes, &args.model.config(), &mut Rng::new(args.seed))?;
    if let Some(resumed) = &resume {
        // Before any work: the run's tensors must fit this model.
        let source = checkpoint::state_path(&run_dir, "last").display().to_string();
        checkpoint::check_params(&model.named_parameters(), &resumed.params, &source)?;
    }
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
        progress: true,
        bias_init: args.bias_init,
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
    let (untrained, _) = evaluate_split(&model, &test_set, &all_test, None, &options, None)?;
    let mut config = serde_json::to_value(&args)?;
    config["precision"] = serde_json::json!(precision.frozen_dtype().to_string());
    let known_label_proportion = mask.kept_fraction();
    let data = TrainData { dataset: train_set, train_indices, val_indices, mask: Arc::new(mask) };
    let run = Run { dir: run_dir.clone(), clip: clip_name, config };
    let outcome = train::train(&model, &data, &options, &run, resume)?;
    super::report_gpu_memory(device)?;
    let best = checkpoint::load(&checkpoint::state_path(&run_dir, "best"), device)?;
    checkpoint::restore_params(&model.named_parameters(), &best.params, "best checkpoint")?;
    let chosen = best.state.best_threshold;
    let (tested, at_chosen) = evaluate_split(&model, &test_set, &all_test, None, &options, chosen)?;
    println!(
        "best checkpoint: epoch {} (validation mAP {:.2}), {}",
        outcome.best_epoch.unwrap_or(0),
        100.0 * outcome.best_val_map.unwrap_or(0.0),
        checkpoint::state_path(&run_dir, "best").display()
    );
    let summary = serde_json::json!({
        "untrained": untrained, "trained": tested, "class_names": model.class_names,
        "val_threshold": chosen, "trained_at_val_threshold": at_chosen,
        "known_label_proportion": known_label_proportion,
    });
    let summary_path = run_dir.join("test-metrics.json");
    checkpoint::write_atomically(&summary_path, serde_json::to_string_pretty(&summary)?.as_bytes())?;
    let run_name = run_dir.file_name().map_or_else(|| run_dir.display().to_string(), |n| n.to_string_lossy().into());
    let title = format!("Test AP per class: {run_name} (best checkpoint, epoch {})", outcome.best_epoch.unwrap_or(0));
    if let Err(e) =
        plots::draw_class_ap(&tested.per_class_ap, &model.class_names, &title, &run_dir.join(plots::TEST_AP_PLOT))
    {
        eprintln!("warning: the test AP plot was not drawn: {e:#}");
    }
    println!("test split, untrained model: mAP {:.2}", 100.0 * untrained.map);
    println!(
        "test split, trained model:\n{}",
        tested.summary_table(args.per_class_ap.then_some(&model.class_names[..]))
    );
    if let (Some(threshold), Some(at)) = (chosen, at_chosen) {
        println!("at the validation-chosen threshold {threshold:.2}: {}", at.threshold_line());
    }
    Ok(())
}
