//! `mlrpl-engine zero-shot`: CLIP's zero-shot baseline, each image scored
//! against every class name with the prompt "a photo of a {}.".

use super::checks;
use super::data::load_clip;
use super::over_image_batches;
use anyhow::{bail, Context, Result};
use clap::Args;
use mlrpl_engine::autograd::no_grad;
use mlrpl_engine::clip::zero_shot::{class_features, logits};
use mlrpl_engine::data::image::Preprocess;
use mlrpl_engine::{Device, Precision};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ZeroShotArgs {
    /// CLIP weights (safetensors, OpenAI or Hugging Face naming; default: the bundled CLIP).
    #[arg(long)]
    clip: Option<PathBuf>,
    /// Class names, comma-separated.
    #[arg(long, value_delimiter = ',')]
    classes: Vec<String>,
    /// A file with one class name per line (instead of --classes).
    #[arg(long)]
    classes_file: Option<PathBuf>,
    /// An image to classify; repeatable.
    #[arg(long = "image", required = true)]
    images: Vec<PathBuf>,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
}

fn class_names(args: &ZeroShotArgs) -> Result<Vec<String>> {
    let mut names: Vec<String> = args.classes.iter().map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect();
    if let Some(path) = &args.classes_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read class list {}", path.display()))?;
        names.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
    }
    if names.is_empty() {
        bail!("zero-shot: give class names with --classes or --classes-file");
    }
    Ok(names)
}

/// Prints, per image, the top-k classes by softmax probability over
/// `logit_scale * cos(image, "a photo of a {class}.")`, as JSON lines.
pub fn run(args: ZeroShotArgs, device: &Device, precision: Precision) -> Result<()> {
    checks::at_least_one("--top-k", args.top_k)?;
    let classes = class_names(&args)?;
    let _no_grad = no_grad();
    let (clip, clip_name) = load_clip(args.clip.as_ref(), device, precision)?;
    checks::text_vocabulary(&clip, &clip_name)?;
    let text = class_features(&clip, &classes)?;
    let mode = Preprocess::ClipCenterCrop { size: clip.config.vision.resolution() };
    let probs = over_image_batches(&args.images, mode, device, |x| logits(&clip, x, &text))?.softmax()?.to_vec()?;
    if probs.iter().any(|p| !p.is_finite()) {
        bail!("{clip_name}: the zero-shot probabilities are not numbers; the CLIP's weights are broken");
    }
    for (path, row) in args.images.iter().zip(probs.chunks(classes.len())) {
        let mut ranked: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top: Vec<serde_json::Value> = ranked
            .iter()
            .take(args.top_k)
            .map(|&(c, p)| serde_json::json!({ "class": classes[c], "probability": p }))
            .collect();
        println!("{}", serde_json::json!({ "image": path.display().to_string(), "top": top }));
    }
    Ok(())
}
