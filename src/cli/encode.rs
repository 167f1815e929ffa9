//! `mlrpl-engine encode`: CLIP embeddings of images and texts, written as
//! safetensors so anyone can check the engine against their own CLIP.

use super::checks;
use super::data::load_clip;
use super::over_image_batches;
use anyhow::{bail, Context, Result};
use clap::Args;
use mlrpl_engine::autograd::no_grad;
use mlrpl_engine::clip::zero_shot::encode_texts;
use mlrpl_engine::data::image::Preprocess;
use mlrpl_engine::nn::WeightMap;
use mlrpl_engine::{Device, Precision};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EncodeArgs {
    /// CLIP weights (safetensors, OpenAI or Hugging Face naming; default: the bundled CLIP).
    #[arg(long)]
    clip: Option<PathBuf>,
    /// An image to encode (JPEG or PNG); repeatable.
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// A text to encode; repeatable.
    #[arg(long = "text")]
    texts: Vec<String>,
    /// Also write `ln_post` + `proj` of every image token as `dense_tokens`.
    #[arg(long)]
    dense: bool,
    /// Input resolution (default: the checkpoint's); positional embeddings
    /// are interpolated bicubically when it differs.
    #[arg(long)]
    resolution: Option<usize>,
    /// Output file (safetensors).
    #[arg(long)]
    out: PathBuf,
}

/// Writes `image_embeds` [images, D], `text_embeds` [texts, D] (unnormalised,
/// as CLIP's `encode_image` / `encode_text`, in input order) and with
/// `--dense` `dense_tokens` [images, N + 1, D].
pub fn run(args: EncodeArgs, device: &Device, precision: Precision) -> Result<()> {
    if args.images.is_empty() && args.texts.is_empty() {
        bail!("encode: give at least one --image or --text");
    }
    let _no_grad = no_grad();
    let (clip, clip_name) = load_clip(args.clip.as_ref(), device, precision)?;
    let size = args.resolution.unwrap_or(clip.config.vision.resolution());
    if !args.images.is_empty() {
        let batch = args.images.len().min(super::IMAGE_BATCH);
        checks::image_size("--resolution", size, batch, &clip.config.vision)?;
    }
    if !args.texts.is_empty() {
        checks::text_vocabulary(&clip, &clip_name)?;
    }
    let mode = Preprocess::ClipCenterCrop { size };
    let mut outputs = Vec::new();
    if !args.images.is_empty() {
        outputs.push((
            "image_embeds".to_string(),
            over_image_batches(&args.images, mode, device, |x| clip.vision.encode(x))?,
        ));
        if args.dense {
            let dense = over_image_batches(&args.images, mode, device, |x| clip.vision.encode_dense(x))?;
            outputs.push(("dense_tokens".to_string(), dense));
        }
    }
    if !args.texts.is_empty() {
        outputs.push(("text_embeds".to_string(), encode_texts(&clip, &args.texts)?));
    }
    for (name, tensor) in &outputs {
        if let Some(i) = tensor.to_vec()?.iter().position(|v| !v.is_finite()) {
            bail!("{clip_name}: `{name}` element {i} is not a finite number; the CLIP's weights are broken");
        }
    }
    let metadata = HashMap::from([
        ("clip".to_string(), clip_name),
        ("resolution".to_string(), mode.size().to_string()),
        ("engine".to_string(), format!("mlrpl-engine {}", env!("CARGO_PKG_VERSION"))),
    ]);
    WeightMap::save(&args.out, &outputs, metadata)
        .with_context(|| format!("encode: cannot write {}", args.out.display()))?;
    let shapes: Vec<String> = outputs.iter().map(|(n, t)| format!("{n} {}", t.shape())).collect();
    eprintln!("wrote {}: {}", args.out.display(), shapes.join(", "));
    Ok(())
}
