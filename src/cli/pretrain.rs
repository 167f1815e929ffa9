//! `mlrpl-engine pretrain`: a small CLIP trained from scratch with CLIP's
//! contrastive loss on the embedded set's image-caption pairs, exported in
//! OpenAI's naming with a JSON card (the bundled CLIP is one such run).

use super::data::{embedded_set, Part};
use super::run_folder::RunFolderArgs;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use mlrpl_engine::clip::init::init_weights;
use mlrpl_engine::clip::{Clip, ClipConfig, TextConfig, VisionConfig};
use mlrpl_engine::data::dataset::MultiLabelDataset;
use mlrpl_engine::data::shape_siblings::ShapeSiblings;
use mlrpl_engine::data::synthetic::{Split, SyntheticSet};
use mlrpl_engine::nn::WeightMap;
use mlrpl_engine::train::pretrain::{self, zero_shot_metrics, PretrainData, PretrainOptions, TrainableClip};
use mlrpl_engine::train::{checkpoint, Run};
use mlrpl_engine::{DType, Device};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// CLIP's BPE vocabulary size, which the tokenizer needs.
const VOCAB_SIZE: usize = 49408;
const CONTEXT_LENGTH: usize = 77;
/// Images per forward pass of the card's zero-shot evaluation (as `eval`).
const EVAL_BATCH_SIZE: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum StoredDType {
    F32,
    F16,
    Bf16,
}

#[derive(Args, Debug, Serialize)]
pub struct PretrainArgs {
    /// Side of the square training images (the CLIP's native resolution).
    #[arg(long, default_value_t = 64)]
    image_size: usize,
    #[arg(long, default_value_t = 8)]
    patch: usize,
    #[arg(long, default_value_t = 128)]
    vision_width: usize,
    #[arg(long, default_value_t = 4)]
    vision_layers: usize,
    #[arg(long, default_value_t = 128)]
    text_width: usize,
    #[arg(long, default_value_t = 4)]
    text_layers: usize,
    /// Width of the joint image-text embedding.
    #[arg(long, default_value_t = 128)]
    embed_dim: usize,
    /// Scenes per epoch from the embedded set's pretrain split; each gives
    /// `--shape-siblings` image-caption pairs.
    #[arg(long, default_value_t = 20000)]
    pairs: usize,
    #[arg(long, default_value_t = 16)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f32,
    /// Steps of linear learning-rate warm-up.
    #[arg(long, default_value_t = 200)]
    warmup_steps: usize,
    /// Data-loading threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Seed of the initial weights and of the data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    #[serde(flatten)]
    run_folder: RunFolderArgs,
    /// Where to write the CLIP (safetensors, OpenAI naming) and, beside it, its
    /// JSON card (default: clip.safetensors in the run folder).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Storage type of the written CLIP.
    #[arg(long, value_enum, default_value_t = StoredDType::F16)]
    out_dtype: StoredDType,
    /// Steps between two lines of metrics.jsonl.
    #[arg(long, default_value_t = 10)]
    log_every: usize,
    /// Fill each batch with scenes of one object count, so that captions
    /// must be told apart by what they name, not by how many (see
    /// docs/pretrain.md).
    #[arg(long)]
    group_by_count: bool,
    /// Pairs per scene: the scene and K - 1 copies with every object's
    /// shape changed, in one batch, so that captions that differ only in
    /// their shape words must be told apart (see docs/pretrain.md). 1 = off.
    #[arg(long, default_value_t = 1)]
    shape_siblings: usize,
    /// Add this weight times a second contrastive loss whose image feature
    /// is the mean of the projected patch tokens, so that the patch tokens
    /// (what the semantic decoupling module reads) are trained towards the
    /// text too (see docs/pretrain.md). 0 = CLIP's loss alone.
    #[arg(long, default_value_t = 0.0)]
    patch_loss_weight: f32,
}

impl PretrainArgs {
    fn config(&self) -> Result<ClipConfig> {
        if self.patch == 0 || !self.image_size.is_multiple_of(self.patch) {
            bail!("--image-size {} must be a multiple of --patch {}", self.image_size, self.patch);
        }
        if !(self.patch_loss_weight.is_finite() && self.patch_loss_weight >= 0.0) {
            bail!("--patch-loss-weight must be a finite number >= 0, got {}", self.patch_loss_weight);
        }
        for (flag, count) in [
            ("--embed-dim", self.embed_dim),
            ("--vision-layers", self.vision_layers),
            ("--text-layers", self.text_layers),
            ("--pairs", self.pairs),
            ("--epochs", self.epochs),
            ("--batch-size", self.batch_size),
            ("--log-every", self.log_every),
            ("--shape-siblings", self.shape_siblings),
        ] {
            super::checks::at_least_one(flag, count)?;
        }
        super::checks::positive("--lr", self.lr)?;
        super::checks::in_range("--weight-decay", self.weight_decay, 0.0, 1.0)?;
        for (flag, width) in [("--vision-width", self.vision_width), ("--text-width", self.text_width)] {
            if width == 0 || width % 64 != 0 {
                bail!("{flag} {width} must be a positive multiple of 64 (CLIP's head width)");
            }
        }
        Ok(ClipConfig {
            vision: VisionConfig {
                width: self.vision_width,
                layers: self.vision_layers,
                heads: self.vision_width / 64,
                patch: self.patch,
                grid: self.image_size / self.patch,
                embed_dim: self.embed_dim,
            },
            text: TextConfig {
                width: self.text_width,
                layers: self.text_layers,
                heads: self.text_width / 64,
                context_length: CONTEXT_LENGTH,
                vocab_size: VOCAB_SIZE,
                embed_dim: self.embed_dim,
            },
        })
    }
}

/// The card written beside a pre-trained CLIP.
#[derive(Serialize)]
struct Card {
    command: String,
    seed: u64,
    engine_version: &'static str,
    engine_commit: String,
    device: String,
    training_seconds: f64,
    epochs: usize,
    best_epoch: Option<usize>,
    zero_shot_prompt: &'static str,
    zero_shot_val_map: Option<f64>,
    zero_shot_test_map: f64,
    stored_dtype: StoredDType,
    config: serde_json::Value,
}

fn card_path(out: &Path) -> PathBuf {
    out.with_extension("json")
}

pub fn run(mut args: PretrainArgs, device: &Device) -> Result<()> {
    let config = args.config()?;
    let run_dir = args.run_folder.resolve("pretrain")?;
    let out = args.out.clone().unwrap_or_else(|| run_dir.join("clip.safetensors"));
    let resume = if args.run_folder.resume { Some(checkpoint::load(&run_dir, device)?) } else { None };
    let model = TrainableClip::new(init_weights(&config, args.seed, device)?)?;
    let scenes = Arc::new(SyntheticSet::new(Split::Pretrain, 0, args.image_size)?.with_len(args.pairs)?);
    let pairs = Arc::new(ShapeSiblings::new(scenes, args.shape_siblings)?);
    let validation: Arc<dyn MultiLabelDataset> = Arc::new(SyntheticSet::new(Split::Val, 0, args.image_size)?);
    let options = PretrainOptions {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        weight_decay: args.weight_decay,
        betas: (0.9, 0.98),
        eps: 1e-6,
        warmup_steps: args.warmup_steps,
        workers: args.workers,
        seed: args.seed,
        log_every: args.log_every,
        progress: true,
        group_by_count: args.group_by_count,
        patch_loss_weight: args.patch_loss_weight,
    };
    let parameters: usize = model.named.iter().map(|(_, t)| t.elem_count()).sum();
    eprintln!(
        "pre-training a CLIP of {:.1} M parameters (vision {}x{} patch {} width {} x {} layers, text width {} x {} layers, \
         embedding {}) on {} image-caption pairs, run folder {}",
        parameters as f64 / 1e6,
        args.image_size,
        args.image_size,
        args.patch,
        args.vision_width,
        args.vision_layers,
        args.text_width,
        args.text_layers,
        args.embed_dim,
        pairs.len(),
        run_dir.display()
    );
    let commit = super::engine_commit();
    let started = Instant::now();
    let run = Run {
        dir: run_dir.clone(),
        clip: "none (pre-training from scratch)".to_string(),
        config: serde_json::to_value(&args)?,
    };
    let outcome = pretrain::pretrain(&model, &PretrainData { pairs, validation }, &options, &run, resume)?;
    let training_seconds = started.elapsed().as_secs_f64();
    super::report_gpu_memory(device)?;

    let best = checkpoint::load(&checkpoint::state_path(&run_dir, "best"), device)?;
    let dtype = match args.out_dtype {
        StoredDType::F32 => DType::F32,
        StoredDType::F16 => DType::F16,
        StoredDType::Bf16 => DType::BF16,
    };
    let mut tensors: Vec<(String, mlrpl_engine::Tensor)> = best.params.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    WeightMap::save_as(&out, &tensors, HashMap::from([("format".to_string(), "pt".to_string())]), dtype)?;

    // The card's figure is measured on the file as written (rounded weights),
    // as `eval --zero-shot` measures it.
    let exported = Clip::load(&out, device)?;
    let test = embedded_set(Part::Test)?;
    let all: Vec<usize> = (0..test.len()).collect();
    let test_map = zero_shot_metrics(&exported, &test, &all, EVAL_BATCH_SIZE, args.workers, true)?.map;
    let card = Card {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        seed: args.seed,
        engine_version: env!("CARGO_PKG_VERSION"),
        engine_commit: commit,
        device: super::device_description(device),
        training_seconds,
        epochs: args.epochs,
        best_epoch: outcome.best_epoch,
        zero_shot_prompt: mlrpl_engine::clip::zero_shot::PROMPT,
        zero_shot_val_map: outcome.best_val_map,
        zero_shot_test_map: test_map,
        stored_dtype: args.out_dtype,
        config: serde_json::to_value(&args)?,
    };
    let card_file = card_path(&out);
    checkpoint::write_atomically(&card_file, serde_json::to_string_pretty(&card)?.as_bytes())?;
    println!(
        "pre-trained CLIP written to {} (card {}); zero-shot mAP on the embedded test split {:.2}",
        out.display(),
        card_file.display(),
        100.0 * test_map
    );
    Ok(())
}
