//! Contrastive pre-training of a CLIP from scratch (`mlrpl-engine
//! pretrain`): both towers and the temperature are parameters, trained with
//! CLIP's symmetric contrastive loss on image-caption pairs of the embedded
//! set's pretrain split (a split whose scenes the MLR-PL splits never use),
//! with AdamW and a linear warm-up then cosine decay. Every epoch the
//! zero-shot mAP on a validation split picks the best checkpoint; checkpoints
//! and `--resume` work as for `train` (see [`super::checkpoint`]).

use crate::clip::tokenizer::Tokenizer;
use crate::clip::zero_shot::class_features;
use crate::clip::Clip;
use crate::data::augment::{derive_seed, Augment};
use crate::data::dataset::MultiLabelDataset;
use crate::data::loader::{epoch_order, Loader, LoaderOptions};
use crate::data::shape_siblings::ShapeSiblings;
use crate::metrics::{evaluate, MultiLabelMetrics};
use crate::nn::WeightMap;
use crate::optim::{epoch_steps, AdamW, CosineSchedule, Optimizer, ParamGroup, Warmup};
use crate::tensor::Tensor;
use crate::train::checkpoint::{self, TrainState};
use crate::train::progress::{step_figures, Progress};
use crate::train::{append_line, batched_outputs, write_run_plots, LossMeter, Outcome, Run, THRESHOLD};
use anyhow::{bail, Context, Result};
use std::sync::Arc;
use std::time::Instant;

/// The largest logit scale CLIP allows: its log is clamped to ln 100 after
/// every step, as in OpenAI's training.
pub const MAX_LOG_LOGIT_SCALE: f32 = 4.605_170_2;

#[derive(Clone, Debug)]
pub struct PretrainOptions {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub weight_decay: f32,
    pub betas: (f32, f32),
    pub eps: f32,
    /// Optimizer steps of the linear warm-up.
    pub warmup_steps: usize,
    pub workers: usize,
    pub seed: u64,
    /// Steps between two lines of the metrics file.
    pub log_every: usize,
    /// Show the steps' progress on stderr ([`crate::train::progress`]).
    pub progress: bool,
    /// Fill each batch with scenes of one object count
    /// ([`count_grouped_order`]).
    pub group_by_count: bool,
    /// Weight of a second contrastive term that uses the mean of the
    /// projected patch tokens as the image feature ([`pair_loss`]); 0 = off.
    pub patch_loss_weight: f32,
}

/// What pre-training reads: the image-caption pairs (in groups of shape
/// siblings, one pair per group without them), and the labelled split whose
/// zero-shot mAP selects the best checkpoint.
pub struct PretrainData {
    pub pairs: Arc<ShapeSiblings>,
    pub validation: Arc<dyn MultiLabelDataset>,
}

/// A CLIP whose every weight is a parameter, and those parameters by their
/// OpenAI names (the checkpoint's tensor names).
pub struct TrainableClip {
    pub clip: Clip,
    pub named: Vec<(String, Tensor)>,
}

impl TrainableClip {
    /// Makes every tensor of `weights` (OpenAI naming) a parameter and builds
    /// the towers on them, so the forward pass records for backward.
    pub fn new(weights: WeightMap) -> Result<TrainableClip> {
        let mut named = Vec::new();
        let mut params = weights.empty_like();
        for name in weights.names() {
            let param = weights.get(name)?.into_parameter()?;
            params.insert(name, param.clone());
            named.push((name.to_string(), param));
        }
        if !params.contains("logit_scale") {
            bail!("{}: pre-training needs a `logit_scale` tensor", weights.source().display());
        }
        Ok(TrainableClip { clip: Clip::from_weights(params)?, named })
    }

    /// The learnable log temperature.
    pub fn log_logit_scale(&self) -> Result<&Tensor> {
        self.clip.logit_scale.as_ref().context("this CLIP has no logit_scale")
    }

    /// AdamW groups as open_clip makes them: weight decay on the matrices,
    /// none on gains, biases, embeddings and the temperature.
    pub fn parameter_groups(&self) -> Vec<ParamGroup> {
        let (decay, no_decay): (Vec<_>, Vec<_>) = self
            .named
            .iter()
            .partition(|(name, t)| t.rank() >= 2 && !name.contains("embedding") && !name.contains("ln_"));
        let params = |v: Vec<&(String, Tensor)>| v.into_iter().map(|(_, t)| t.clone()).collect();
        vec![ParamGroup::new(params(decay)), ParamGroup::no_decay(params(no_decay))]
    }

    /// Clamps the log temperature to [0, ln 100] in place, on its device.
    fn clamp_logit_scale(&self) -> Result<()> {
        let log_scale = self.log_logit_scale()?;
        log_scale.copy_from(&log_scale.detach().clamp(0.0, MAX_LOG_LOGIT_SCALE)?)
    }
}

/// CLIP's training loss: `exp(log_scale) * cos(image_i, text_j)` logits,
/// symmetric cross-entropy with the matching pairs on the diagonal.
pub fn clip_loss(image_features: &Tensor, text_features: &Tensor, log_scale: &Tensor) -> Result<Tensor> {
    let image = image_features.l2_normalize()?;
    let text = text_features.l2_normalize()?;
    image.matmul(&text.transpose(0, 1)?)?.mul(&log_scale.exp()?)?.contrastive_loss()
}

/// The loss of one batch of pairs: [`clip_loss`] on the class token and,
/// with `patch_weight > 0`, plus `patch_weight` times [`clip_loss`] on the
/// mean of the projected patch tokens.
///
/// Why the second term: CLIP's loss reads only the class token, so nothing
/// trains the last block's patch outputs, and the semantic decoupling
/// module compares mixtures of exactly those tokens with text features.
/// Through a mean, every patch token gets its own gradient towards the
/// caption (as in a ViT trained with global average pooling).
pub fn pair_loss(
    clip: &Clip,
    images: &Tensor,
    tokens: &[Vec<u32>],
    log_scale: &Tensor,
    patch_weight: f32,
) -> Result<Tensor> {
    let text = clip.text.encode(tokens)?;
    if patch_weight == 0.0 {
        return clip_loss(&clip.vision.encode(images)?, &text, log_scale);
    }
    let dense = clip.vision.encode_dense(images)?;
    let &[b, l, d] = dense.dims() else { bail!("dense image tokens must be [B, 1 + N, D], got {}", dense.shape()) };
    let class = dense.narrow(1, 0, 1)?.reshape([b, d])?;
    let patches = dense.narrow(1, 1, l - 1)?.mean(&[1], false)?;
    clip_loss(&class, &text, log_scale)?.add(&clip_loss(&patches, &text, log_scale)?.scale(patch_weight)?)
}

/// Zero-shot metrics of `clip` on `indices` of `dataset` (the prompt "a
/// photo of a {}." per class), with no tape; with `show_progress`, the
/// images counted on stderr.
pub fn zero_shot_metrics(
    clip: &Clip,
    dataset: &Arc<dyn MultiLabelDataset>,
    indices: &[usize],
    batch_size: usize,
    workers: usize,
    show_progress: bool,
) -> Result<MultiLabelMetrics> {
    let _no_grad = crate::autograd::no_grad();
    let classes = class_features(clip, dataset.class_names())?;
    let loader =
        LoaderOptions { batch_size, workers, image_size: clip.config.vision.resolution(), ..LoaderOptions::default() };
    let (scores, labels) = batched_outputs(dataset, indices, loader, classes.device(), show_progress, |images| {
        crate::clip::zero_shot::logits(clip, images, &classes)?.sigmoid()
    })?;
    evaluate(&scores, &labels, classes.dims()[0], THRESHOLD)
}

/// One epoch's pair order for batches whose scenes all hold the same number
/// of objects (`counts[i]` for pair `i`): the epoch's shuffle, split by
/// count, cut into whole batches (a group's remainder is left out), and the
/// batches put in a seeded random order.
///
/// Why: in a mixed batch the number of objects a caption names already tells
/// most pairs apart, and the model learns that cue (and colours and
/// backgrounds) long before the shapes. Within one count, a shapes-only
/// caption ("a photo of a circle and a star.") matches its image only
/// through the shapes. On the embedded set this removes the count bias of
/// zero-shot scores but did not, in 50,000-pair runs, teach the shapes
/// (`docs/pretrain.md`), so it is off by default.
pub fn count_grouped_order(counts: &[usize], batch_size: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let all: Vec<usize> = (0..counts.len()).collect();
    let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for i in epoch_order(&all, true, seed, epoch) {
        groups.entry(counts[i]).or_default().push(i);
    }
    let batches: Vec<&[usize]> = groups.values().flat_map(|group| group.chunks_exact(batch_size)).collect();
    let batch_ids: Vec<usize> = (0..batches.len()).collect();
    epoch_order(&batch_ids, true, derive_seed(&[seed, BATCH_ORDER_TAG]), epoch)
        .into_iter()
        .flat_map(|b| batches[b].iter().copied())
        .collect()
}

/// Keeps the batch order's generator apart from the pair shuffle's.
const BATCH_ORDER_TAG: u64 = 0x6261_7463_686f_7264; // "batchord"

/// Pre-trains `model` for `options.epochs` epochs on `data`, from `resume`
/// when given; checkpoints "best" (by zero-shot validation mAP) and "last"
/// go to `run.dir`.
pub fn pretrain(
    model: &TrainableClip,
    data: &PretrainData,
    options: &PretrainOptions,
    run: &Run,
    resume: Option<checkpoint::Loaded>,
) -> Result<Outcome> {
    if options.epochs == 0 || options.batch_size < 2 {
        bail!("--epochs must be at least 1 and --batch-size at least 2 (a contrastive batch needs negatives)");
    }
    let siblings = data.pairs.siblings();
    if !options.batch_size.is_multiple_of(siblings) {
        bail!(
            "--batch-size {} must be a multiple of --shape-siblings {siblings} (batches hold whole groups)",
            options.batch_size
        );
    }
    let (scenes, scenes_per_batch) = (data.pairs.groups(), options.batch_size / siblings);
    if scenes < scenes_per_batch {
        bail!("--pairs {scenes} is too few for one batch of {scenes_per_batch} scenes");
    }
    std::fs::create_dir_all(&run.dir).with_context(|| format!("cannot create run folder {}", run.dir.display()))?;
    // Scene object counts (shared by a scene's siblings), drawn once and
    // only when batches are grouped.
    let counts: Option<Vec<usize>> =
        options.group_by_count.then(|| (0..scenes).map(|g| data.pairs.scene(g * siblings).objects.len()).collect());
    let epoch_pairs = |epoch: usize| {
        data.pairs.expand(&match &counts {
            Some(counts) => count_grouped_order(counts, scenes_per_batch, options.seed, epoch as u64),
            None => epoch_order(&(0..scenes).collect::<Vec<_>>(), true, options.seed, epoch as u64),
        })
    };
    // The same for every epoch: the group sizes do not depend on the shuffle.
    let steps_per_epoch = epoch_pairs(0).len() / options.batch_size;
    if steps_per_epoch == 0 {
        bail!("--pairs {scenes} gives no whole batch of {scenes_per_batch} scenes with one object count");
    }
    let schedule = CosineSchedule {
        base_lr: options.lr,
        min_lr: 0.0,
        warmup: Warmup::Linear,
        warmup_steps: options.warmup_steps,
        total_steps: epoch_steps("--epochs", options.epochs, steps_per_epoch)?,
    };
    let mut optimizer =
        AdamW::new(model.parameter_groups(), schedule.lr(0), options.betas, options.eps, options.weight_decay)?;
    let mut state =
        TrainState::new(options.seed, run.clip.clone(), data.validation.class_names().to_vec(), run.config.clone());
    if let Some(loaded) = resume {
        checkpoint::restore_params(&model.named, &loaded.params, "resumed checkpoint")?;
        optimizer.load_state_tensors(&loaded.optimizer_state)?;
        state = loaded.state;
        eprintln!("resuming after epoch {} (step {})", state.epoch, state.step);
    }
    let tokenizer = Tokenizer::shared()?;
    let context = model.clip.config.text.context_length;
    let pair_set: Arc<dyn MultiLabelDataset> = data.pairs.clone();
    let validation: Vec<usize> = (0..data.validation.len()).collect();
    let metrics_path = run.dir.join("metrics.jsonl");
    crate::train::prepare_run_folder(&run.dir, &metrics_path, state.step, state.step == 0)?;
    let progress = if options.progress {
        Progress::new("pretrain", schedule.total_steps, state.step, "steps")
    } else {
        Progress::off()
    };
    let start_epoch = state.epoch;
    for epoch in start_epoch..options.epochs {
        let loader = Loader::new(
            pair_set.clone(),
            epoch_pairs(epoch),
            LoaderOptions {
                batch_size: options.batch_size,
                seed: options.seed,
                epoch: epoch as u64,
                workers: options.workers,
                image_size: model.clip.config.vision.resolution(),
                augment: Augment::Eval,
                drop_last: true,
                ..LoaderOptions::default()
            },
        )?;
        let started = Instant::now();
        let (mut pairs_seen, mut losses) = (0usize, LossMeter::default());
        for (i, batch) in loader.enumerate() {
            let batch = batch?;
            // A new wording of each caption every epoch.
            let tokens = batch
                .indices
                .iter()
                .map(|&index| tokenizer.tokenize(&data.pairs.caption(index, epoch as u64), context))
                .collect::<Result<Vec<_>>>()?;
            let lr = schedule.lr(state.step);
            optimizer.set_lr(lr);
            optimizer.zero_grad();
            let images = batch.images.to_device(model.log_logit_scale()?.device())?;
            let loss = pair_loss(&model.clip, &images, &tokens, model.log_logit_scale()?, options.patch_loss_weight)?;
            loss.backward()?;
            optimizer.step()?;
            model.clamp_logit_scale()?;
            losses.add(&loss)?;
            state.step += 1;
            pairs_seen += batch.len();
            progress.set(state.step, None);
            let logged = state.step.is_multiple_of(options.log_every.max(1));
            if !logged && i + 1 < steps_per_epoch {
                continue;
            }
            let Some(loss) = losses.read(epoch, state.step)? else { continue };
            let rate = pairs_seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
            progress
                .set(state.step, Some(step_figures(epoch, options.epochs, losses.epoch_mean(), lr, rate, "pairs/s")));
            if logged {
                let scale = model.log_logit_scale()?.scalar()?.exp();
                append_line(
                    &metrics_path,
                    &serde_json::json!({
                        "epoch": epoch + 1, "step": state.step, "loss": loss, "lr": lr,
                        "logit_scale": scale, "pairs_per_s": rate,
                    }),
                )?;
            }
        }
        losses.read(epoch, state.step)?; // any steps after the last read
        let val =
            zero_shot_metrics(&model.clip, &data.validation, &validation, options.batch_size, options.workers, false)
                .context("zero-shot validation")?;
        let improved = state.finish_epoch(epoch, val.map);
        let train_loss = losses.epoch_mean();
        append_line(
            &metrics_path,
            &serde_json::json!({
                "epoch": state.epoch, "step": state.step, "train_loss": train_loss,
                "val_zero_shot_map": val.map, "best": improved,
            }),
        )?;
        progress.println(&format!(
            "epoch {}/{}: train loss {train_loss:.4}, zero-shot validation mAP {:.2}{} ({:.0} s)",
            state.epoch,
            options.epochs,
            100.0 * val.map,
            if improved { " (best so far)" } else { "" },
            started.elapsed().as_secs_f64()
        ));
        checkpoint::save_epoch(&run.dir, &model.named, &optimizer.state_tensors()?, &state, improved)?;
        write_run_plots(&run.dir, &progress);
    }
    progress.finish();
    Ok(Outcome {
        best_val_map: state.best_val_map,
        best_epoch: state.best_epoch,
        epochs_run: options.epochs - start_epoch,
    })
}
