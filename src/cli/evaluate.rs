//! `mlrpl-engine eval` and `mlrpl-engine predict`: a trained checkpoint on a
//! dataset split, or on images.

use super::checks;
use super::data::{clip_of_checkpoint, load_clip, DataArgs, Part};
use super::train::ModelArgs;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use mlrpl_engine::clip::zero_shot::PROMPT;
use mlrpl_engine::data::augment::{augmented_chw, Augment};
use mlrpl_engine::data::image::{load_rgb, RgbImage};
use mlrpl_engine::mlrpl::{BiasInit, MlrplModel};
use mlrpl_engine::rng::Rng;
use mlrpl_engine::train::pretrain::zero_shot_metrics;
use mlrpl_engine::train::progress::Progress;
use mlrpl_engine::train::{checkpoint, evaluate_split, TrainOptions, THRESHOLD};
use mlrpl_engine::{Device, Precision, Tensor};
use std::path::{Path, PathBuf};

/// A trained model rebuilt from its checkpoint: CLIP (the one the
/// checkpoint names, or `--clip`), prompts, decoupling module, classifier;
/// with its input size and its validation-chosen threshold (if recorded).
fn load_model(
    path: &Path,
    clip_path: Option<&PathBuf>,
    batch_size: usize,
    device: &Device,
    precision: Precision,
) -> Result<(MlrplModel, usize, Option<f32>)> {
    let loaded = checkpoint::load(path, device)?;
    let state = &loaded.state;
    let model_args: ModelArgs = serde_json::from_value(state.config["model"].clone())
        .with_context(|| format!("{}: no model configuration in the checkpoint state", path.display()))?;
    let clip = match clip_path {
        Some(p) => load_clip(Some(p), device, precision)?.0,
        None => clip_of_checkpoint(&state.clip, device, precision)?,
    };
    model_args.check().with_context(|| format!("{}: the model configuration", path.display()))?;
    let clip_name = clip_path.map_or(state.clip.clone(), |p| p.display().to_string());
    checks::text_vocabulary(&clip, &clip_name)?;
    let image_size = model_args.image_size.unwrap_or(clip.config.vision.resolution());
    checks::image_size(&format!("{}: image size", path.display()), image_size, batch_size, &clip.config.vision)?;
    let model = MlrplModel::new(clip, state.class_names.clone(), &model_args.config(), &mut Rng::new(0))?;
    checkpoint::restore_params(&model.named_parameters(), &loaded.params, &path.display().to_string())?;
    Ok((model, image_size, state.best_threshold))
}

fn inference_options(image_size: usize, batch_size: usize, skip_bad_images: bool) -> TrainOptions {
    TrainOptions {
        epochs: 1,
        batch_size,
        lr: 0.0,
        momentum: 0.0,
        weight_decay: 0.0,
        warmup_epochs: 0,
        warmup_lr: 0.0,
        image_size,
        cutout: false,
        rand_augment: None,
        workers: 0,
        seed: 0,
        log_every: 1,
        skip_bad_images,
        progress: true,
        bias_init: BiasInit::Constant,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum EvalSplit {
    Train,
    Test,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A checkpoint state file (checkpoint-best.json) or a run folder.
    #[arg(long, required_unless_present = "zero_shot")]
    checkpoint: Option<PathBuf>,
    /// CLIP's zero-shot classifier instead of a trained checkpoint: each class
    /// scored by cos(image, "a photo of a {class}.").
    #[arg(long, conflicts_with = "checkpoint")]
    zero_shot: bool,
    /// CLIP weights: for --zero-shot (default: the bundled CLIP), or when not
    /// where the checkpoint says.
    #[arg(long)]
    clip: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    #[arg(long, value_enum, default_value_t = EvalSplit::Test)]
    split: EvalSplit,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Print every class's AP.
    #[arg(long)]
    per_class_ap: bool,
}

pub fn run_eval(args: EvalArgs, device: &Device, precision: Precision) -> Result<()> {
    checks::at_least_one("--batch-size", args.batch_size)?;
    let part = if args.split == EvalSplit::Train { Part::Train } else { Part::Test };
    let dataset = args.data.open(part)?;
    let Some(checkpoint_path) = &args.checkpoint else {
        let (clip, clip_name) = load_clip(args.clip.as_ref(), device, precision)?;
        let indices: Vec<usize> = (0..dataset.len()).collect();
        let metrics = zero_shot_metrics(&clip, &dataset, &indices, args.batch_size, 0, true)?;
        println!(
            "{} ({} images), zero-shot {clip_name} with the prompt {PROMPT:?}:",
            dataset.describe(),
            indices.len()
        );
        println!("{}", metrics.summary_table(args.per_class_ap.then_some(dataset.class_names())));
        println!("(threshold metrics count sigmoid(logit_scale * cos) >= 0.5 as present, which an uncalibrated zero-shot classifier does not mean; compare mAP and top-3)");
        return Ok(());
    };
    let (model, image_size, chosen) =
        load_model(checkpoint_path, args.clip.as_ref(), args.batch_size, device, precision)?;
    if dataset.class_names() != model.class_names.as_slice() {
        bail!(
            "the checkpoint {} has {} classes ({}), {} has {} ({})",
            checkpoint_path.display(),
            model.class_names.len(),
            model.class_names.join(", "),
            dataset.describe(),
            dataset.class_names().len(),
            dataset.class_names().join(", ")
        );
    }
    let indices: Vec<usize> = (0..dataset.len()).collect();
    let options = inference_options(image_size, args.batch_size, args.data.skip_bad_images);
    let (metrics, at_chosen) = evaluate_split(&model, &dataset, &indices, None, &options, chosen)?;
    println!("{} ({} images):", dataset.describe(), indices.len());
    println!("{}", metrics.summary_table(args.per_class_ap.then_some(&model.class_names[..])));
    if let (Some(threshold), Some(at)) = (chosen, at_chosen) {
        println!("at the validation-chosen threshold {threshold:.2}: {}", at.threshold_line());
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    model: TrainedModelArgs,
    #[command(flatten)]
    inputs: ImageInputs,
    /// Probability at or above which a category is reported as present
    /// (default: the threshold the run chose on its validation part, or 0.5
    /// for a checkpoint that records none).
    #[arg(long, allow_negative_numbers = true)]
    threshold: Option<f32>,
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    /// Write the JSON here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A trained checkpoint and the CLIP it runs on (`predict`, `explain`).
#[derive(Args, Debug)]
pub struct TrainedModelArgs {
    /// A checkpoint state file (checkpoint-best.json) or a run folder.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// CLIP weights, when not where the checkpoint says.
    #[arg(long)]
    clip: Option<PathBuf>,
}

impl TrainedModelArgs {
    /// The model, its input size and its validation-chosen threshold (see
    /// [`load_model`]), checked for batches of [`PREDICT_BATCH`] images.
    pub(super) fn load(&self, device: &Device, precision: Precision) -> Result<(MlrplModel, usize, Option<f32>)> {
        load_model(&self.checkpoint, self.clip.as_ref(), PREDICT_BATCH, device, precision)
    }
}

/// Images given by `--image` and `--folder` (`predict`, `explain`).
#[derive(Args, Debug)]
pub struct ImageInputs {
    /// An image (JPEG or PNG); repeatable.
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// A folder whose .jpg/.jpeg/.png files are all taken.
    #[arg(long)]
    folder: Option<PathBuf>,
}

impl ImageInputs {
    /// The `--image` files, then the folder's images in name order; an
    /// error when there are none.
    pub fn paths(&self, command: &str) -> Result<Vec<PathBuf>> {
        let mut paths = self.images.clone();
        if let Some(folder) = &self.folder {
            let found = images_in(folder)?;
            if found.is_empty() {
                bail!("--folder {}: no .jpg, .jpeg or .png image in it", folder.display());
            }
            paths.extend(found);
        }
        if paths.is_empty() {
            bail!("{command}: give --image or --folder");
        }
        Ok(paths)
    }
}

/// Images per forward pass of `predict` and `explain`.
pub(super) const PREDICT_BATCH: usize = 32;

/// The model input [B, 3, size, size] of decoded images: resized as in
/// evaluation, CLIP-normalised.
pub(super) fn model_input(images: &[RgbImage], image_size: usize, device: &Device) -> Result<Tensor> {
    let mut values = Vec::with_capacity(images.len() * 3 * image_size * image_size);
    for image in images {
        values.extend(augmented_chw(image, image_size, Augment::Eval, &mut Rng::new(0)));
    }
    Tensor::from_vec(values, [images.len(), 3, image_size, image_size], device)
}

/// Fails on the first probability (row-major [images, classes]) that is
/// not a number, naming the image: a broken checkpoint or CLIP.
pub(super) fn check_finite(probabilities: &[f32], classes: usize, paths: &[PathBuf], checkpoint: &Path) -> Result<()> {
    match probabilities.iter().position(|p| !p.is_finite()) {
        None => Ok(()),
        Some(i) => bail!(
            "{}: the model's probability for {} is {} (not a number); the checkpoint or the CLIP is broken",
            checkpoint.display(),
            paths[i / classes].display(),
            probabilities[i]
        ),
    }
}

fn images_in(folder: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(folder).with_context(|| format!("cannot read folder {}", folder.display()))? {
        let path = entry.with_context(|| format!("cannot read folder {}", folder.display()))?.path();
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png")) {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// Per image: the categories at or above the threshold and the top-k, with
/// their probabilities, as one JSON array.
pub fn run_predict(args: PredictArgs, device: &Device, precision: Precision) -> Result<()> {
    if let Some(threshold) = args.threshold {
        checks::in_range("--threshold", threshold, 0.0, 1.0)?;
    }
    checks::at_least_one("--top-k", args.top_k)?;
    let paths = args.inputs.paths("predict")?;
    let (model, image_size, chosen) = args.model.load(device, precision)?;
    let threshold = args.threshold.or(chosen).unwrap_or(THRESHOLD);
    let _no_grad = mlrpl_engine::autograd::no_grad();
    let progress = Progress::new("predict", paths.len(), 0, "images");
    let mut results = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(PREDICT_BATCH) {
        let images = chunk.iter().map(|path| load_rgb(path)).collect::<Result<Vec<_>>>()?;
        let probs = model.logits(&model_input(&images, image_size, device)?)?.sigmoid()?.to_vec()?;
        check_finite(&probs, model.num_classes(), chunk, &args.model.checkpoint)?;
        for (path, row) in chunk.iter().zip(probs.chunks(model.num_classes())) {
            let entry = |c: usize| serde_json::json!({ "class": model.class_names[c], "probability": row[c] });
            let mut ranked: Vec<usize> = (0..row.len()).collect();
            ranked.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            let present: Vec<_> = ranked.iter().copied().filter(|&c| row[c] >= threshold).map(entry).collect();
            let top: Vec<_> = ranked.iter().copied().take(args.top_k).map(entry).collect();
            results.push(serde_json::json!({
                "image": path.display().to_string(), "threshold": threshold, "present": present, "top": top,
            }));
        }
        progress.add(chunk.len());
    }
    progress.finish();
    let json = serde_json::to_string_pretty(&results)?;
    match &args.out {
        Some(out) => checkpoint::write_atomically(out, json.as_bytes())?,
        None => println!("{json}"),
    }
    Ok(())
}
