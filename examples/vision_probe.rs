//! Supervised probe of how fast a CLIP vision tower learns the embedded
//! set's shapes (`docs/pretrain.md`): a freshly initialised tower plus a
//! linear head, trained with AdamW on the shape labels of the pretrain split,
//! validation mAP every EVERY steps. Sizes and schedule come from the
//! environment (SIZE, PATCH, WIDTH, LAYERS, STEPS, BATCH, LR, EVERY):
//!
//!     STEPS=3000 EVERY=250 cargo run --release --example vision_probe
//!
//! With CLIP=weights.safetensors it is a linear probe instead: that CLIP's
//! image tower stays frozen and only the head learns, which measures how
//! much shape information pre-training put into its image features. With
//! POOL=patches the head reads the mean of the projected patch tokens (the
//! features the semantic decoupling module attends over) instead of the
//! class token; with POOL=attention each class scores every patch token and
//! pools the scores with a softmax over the patches.
use anyhow::{Context, Result};
use mlrpl_engine::clip::init::init_weights;
use mlrpl_engine::clip::zero_shot::class_features;
use mlrpl_engine::clip::{Clip, ClipConfig, TextConfig, VisionConfig};
use mlrpl_engine::data::augment::Augment;
use mlrpl_engine::data::dataset::MultiLabelDataset;
use mlrpl_engine::data::loader::{Loader, LoaderOptions};
use mlrpl_engine::data::synthetic::{Split, SyntheticSet};
use mlrpl_engine::device::Device;
use mlrpl_engine::metrics::evaluate;
use mlrpl_engine::optim::{AdamW, CosineSchedule, Optimizer, ParamGroup, Warmup};
use mlrpl_engine::rng::Rng;
use mlrpl_engine::tensor::Tensor;
use mlrpl_engine::train::pretrain::TrainableClip;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn arg(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> Result<()> {
    mlrpl_engine::backend::cpu::heap::keep_freed_buffers();
    let size = arg("SIZE", 64.0) as usize;
    let patch = arg("PATCH", 8.0) as usize;
    let width = arg("WIDTH", 128.0) as usize;
    let layers = arg("LAYERS", 4.0) as usize;
    let steps = arg("STEPS", 400.0) as usize;
    let batch = arg("BATCH", 64.0) as usize;
    let lr = arg("LR", 1e-3) as f32;
    let every = arg("EVERY", 100.0) as usize;
    let device = Device::Cpu;
    let config = ClipConfig {
        vision: VisionConfig { width, layers, heads: width / 64, patch, grid: size / patch, embed_dim: 128 },
        text: TextConfig { width: 64, layers: 1, heads: 1, context_length: 77, vocab_size: 49408, embed_dim: 128 },
    };
    let (clip, mut params) = match std::env::var_os("CLIP") {
        Some(path) => (Clip::load(Path::new(&path), &device)?, Vec::new()),
        None => {
            let model = TrainableClip::new(init_weights(&config, 0, &device)?)?;
            let vision = model.named.iter().filter(|(n, _)| n.starts_with("visual.")).map(|(_, t)| t.clone()).collect();
            (model.clip, vision)
        }
    };
    let embed_dim = clip.config.vision.embed_dim;
    let pool = std::env::var("POOL").unwrap_or_default();
    // Logits [B, 10] from the head [10, D].
    let logits = |images: &Tensor, head: &Tensor| -> Result<Tensor> {
        let patches = || -> Result<Tensor> {
            let dense = clip.vision.encode_dense(images)?;
            dense.narrow(1, 1, dense.dims()[1] - 1)
        };
        match pool.as_str() {
            "patches" => patches()?.mean(&[1], false)?.matmul(&head.transpose(0, 1)?),
            // Each class scores every patch and pools its scores with a
            // softmax over the patches: what a class-specific attention
            // over the patch tokens can find.
            "attention" => {
                let scores = patches()?.matmul(&head.transpose(0, 1)?)?.permute(&[0, 2, 1])?;
                scores.softmax()?.mul(&scores)?.sum(&[2], false)
            }
            "" => clip.vision.encode(images)?.matmul(&head.transpose(0, 1)?),
            other => anyhow::bail!("POOL={other}: expected patches or attention"),
        }
    };
    let mut rng = Rng::new(1);
    let head = Tensor::randn([10, embed_dim], 0.05, &mut rng, &device)?.into_parameter()?;
    let schedule = CosineSchedule {
        base_lr: lr,
        min_lr: 0.0,
        warmup: Warmup::Linear,
        warmup_steps: steps / 10,
        total_steps: steps,
    };
    params.push(head.clone());
    let mut opt = AdamW::new(vec![ParamGroup::new(params)], schedule.lr(0), (0.9, 0.98), 1e-6, 0.05)?;
    let train: Arc<dyn MultiLabelDataset> =
        Arc::new(SyntheticSet::new(Split::Pretrain, 0, size)?.with_len(steps * batch)?);
    let val: Arc<dyn MultiLabelDataset> = Arc::new(SyntheticSet::new(Split::Val, 0, size)?);
    let opts = |shuffle| LoaderOptions {
        batch_size: batch,
        shuffle,
        workers: 2,
        image_size: size,
        augment: Augment::Eval,
        drop_last: shuffle,
        ..LoaderOptions::default()
    };
    {
        // How far the patch tokens sit from the class token in the joint
        // space: the decoupling module's features are mixtures of patches,
        // compared with text features by cosine.
        let _g = mlrpl_engine::autograd::no_grad();
        let vb = Loader::new(val.clone(), (0..batch.min(val.len())).collect(), opts(false))?
            .next()
            .context("empty validation split")??;
        let dense = clip.vision.encode_dense(&vb.images)?.l2_normalize()?;
        let tokens = dense.dims()[1];
        let class = dense.narrow(1, 0, 1)?;
        let cos = dense.narrow(1, 1, tokens - 1)?.mul(&class)?.sum(&[2], false)?.mean(&[0, 1], false)?.scalar()?;
        println!("mean cosine between a patch token and its image's class token: {cos:.3}");
        if std::env::var_os("CLIP").is_some() {
            // How far apart the text tower puts the classes' prompts
            // ("a photo of a {}."): near 1 when it ignores the shape word.
            let classes = class_features(&clip, val.class_names())?.l2_normalize()?;
            let c = classes.dims()[0];
            let cos = classes.matmul(&classes.transpose(0, 1)?)?.to_vec()?;
            let off_diagonal: Vec<f32> = (0..c * c).filter(|i| i / c != i % c).map(|i| cos[i]).collect();
            let mean = off_diagonal.iter().sum::<f32>() / off_diagonal.len() as f32;
            let max = off_diagonal.iter().copied().fold(f32::MIN, f32::max);
            println!("cosine between two classes' prompt features: mean {mean:.3}, max {max:.3}");
        }
    }
    let started = Instant::now();
    let mut loss_sum = 0.0;
    for (step, b) in Loader::new(train.clone(), (0..train.len()).collect(), opts(true))?.enumerate() {
        let b = b?;
        opt.set_lr(schedule.lr(step));
        opt.zero_grad();
        let loss = logits(&b.images, &head)?.masked_bce_with_logits(&b.labels)?;
        loss_sum += loss.scalar()?;
        loss.backward()?;
        opt.step()?;
        if (step + 1) % every == 0 {
            let _g = mlrpl_engine::autograd::no_grad();
            let (mut scores, mut labels) = (Vec::new(), Vec::new());
            for vb in Loader::new(val.clone(), (0..val.len()).collect(), opts(false))? {
                let vb = vb?;
                scores.extend(logits(&vb.images, &head)?.sigmoid()?.to_vec()?);
                labels.extend(vb.labels.to_vec()?);
            }
            let m = evaluate(&scores, &labels, 10, 0.5)?;
            let (loss, secs) = (loss_sum / every as f32, started.elapsed().as_secs_f64());
            println!("step {} loss {loss:.4} val mAP {:.2} ({secs:.0} s)", step + 1, 100.0 * m.map);
            loss_sum = 0.0;
        }
    }
    Ok(())
}
