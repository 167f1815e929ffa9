//! The training loop (docs/model.md §6): SGD with momentum over the MLR-PL
//! model's trainable tensors, warm-up then cosine decay per step, validation
//! on a held-out part of the training split every epoch, the best and the
//! last checkpoint kept, a JSON-lines metrics file, and `resume`.

pub mod checkpoint;
pub mod fault;
pub mod interrupt;
pub mod pretrain;
pub mod progress;

use crate::data::augment::Augment;
use crate::data::dataset::MultiLabelDataset;
use crate::data::loader::{Loader, LoaderOptions};
use crate::data::partial::LabelMask;
use crate::data::rand_augment::RandAugment;
use crate::device::Device;
use crate::metrics::{evaluate, f1_threshold, MultiLabelMetrics};
use crate::mlrpl::{BiasInit, MlrplModel};
use crate::optim::{epoch_steps, CosineSchedule, Optimizer, Sgd, Warmup};
use crate::tensor::Tensor;
use anyhow::{bail, Context, Result};
use checkpoint::TrainState;
use progress::{step_figures, Progress};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Probability at or above which a category counts as predicted.
pub const THRESHOLD: f32 = 0.5;

#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub warmup_epochs: usize,
    /// The constant learning rate of the warm-up epochs.
    pub warmup_lr: f32,
    pub image_size: usize,
    pub cutout: bool,
    /// RandAugment after the flip and Cutout (None: off).
    pub rand_augment: Option<RandAugment>,
    pub workers: usize,
    pub seed: u64,
    /// Steps between two lines of the metrics file.
    pub log_every: usize,
    pub skip_bad_images: bool,
    /// Show progress on stderr ([`progress`]): the training steps, and the
    /// images of an evaluation outside the training loop.
    pub progress: bool,
    /// How a fresh run starts the classifier's bias.
    pub bias_init: BiasInit,
}

/// What a run trains and validates on.
pub struct TrainData {
    pub dataset: Arc<dyn MultiLabelDataset>,
    pub train_indices: Vec<usize>,
    /// Held out of the training split; selects the best checkpoint.
    pub val_indices: Vec<usize>,
    pub mask: Arc<LabelMask>,
}

/// Where a run writes, and what its checkpoints record about it.
pub struct Run {
    pub dir: PathBuf,
    pub clip: String,
    pub config: serde_json::Value,
}

#[derive(Debug)]
pub struct Outcome {
    pub best_val_map: Option<f64>,
    pub best_epoch: Option<usize>,
    pub epochs_run: usize,
}

/// `outputs(images)` (e.g. logits [N, C]) of `indices` of `dataset` and
/// their labels (after `options.label_mask` when given), in order, with the
/// evaluation preprocessing, the images on `device`, and no tape; with
/// `show_progress`, the images counted on stderr.
pub fn batched_outputs(
    dataset: &Arc<dyn MultiLabelDataset>,
    indices: &[usize],
    options: LoaderOptions,
    device: &Device,
    show_progress: bool,
    outputs: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let _no_grad = crate::autograd::no_grad();
    let loader = Loader::new(dataset.clone(), indices.to_vec(), LoaderOptions { augment: Augment::Eval, ..options })?;
    let progress = if show_progress { Progress::new("evaluate", indices.len(), 0, "images") } else { Progress::off() };
    let (mut scores, mut labels) = (Vec::new(), Vec::new());
    for batch in loader {
        let batch = batch?;
        scores.extend(outputs(&batch.images.to_device(device)?)?.to_vec()?);
        labels.extend(batch.labels.to_vec()?);
        progress.add(batch.len());
    }
    progress.finish();
    Ok((scores, labels))
}

/// How a training run's loader reads `mask`ed items for inference.
fn inference_loader(options: &TrainOptions, mask: Option<Arc<LabelMask>>) -> LoaderOptions {
    LoaderOptions {
        batch_size: options.batch_size,
        workers: options.workers,
        image_size: options.image_size,
        label_mask: mask,
        skip_bad_images: options.skip_bad_images,
        ..LoaderOptions::default()
    }
}

/// Sigmoid probabilities [N, C] of `indices` and their labels (after
/// `mask` when given), in order, with no augmentation and no tape.
pub fn predict(
    model: &MlrplModel,
    dataset: &Arc<dyn MultiLabelDataset>,
    indices: &[usize],
    mask: Option<Arc<LabelMask>>,
    options: &TrainOptions,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let loader = inference_loader(options, mask);
    let device = model.classifier.beta.device();
    batched_outputs(dataset, indices, loader, device, options.progress, |images| model.logits(images)?.sigmoid())
}

/// Training images whose initial logits set the prior bias: enough for a
/// stable mean per class, a small part of an epoch.
const PRIOR_BIAS_IMAGES: usize = 256;

/// Sets the classifier's bias from each class's share of positives among
/// the known training labels (docs/model.md §5), measured on the first
/// [`PRIOR_BIAS_IMAGES`] training images; a class without a known label
/// takes the share over all classes.
fn init_prior_bias(model: &MlrplModel, data: &TrainData, options: &TrainOptions) -> Result<()> {
    let classes = model.num_classes();
    let (mut positives, mut known) = (vec![0usize; classes], vec![0usize; classes]);
    for &item in &data.train_indices {
        for (c, &label) in data.mask.apply(data.dataset.labels(item), item).iter().enumerate() {
            known[c] += (label != 0.0) as usize;
            positives[c] += (label > 0.0) as usize;
        }
    }
    let pooled = positives.iter().sum::<usize>() as f64 / known.iter().sum::<usize>().max(1) as f64;
    let priors: Vec<f64> =
        positives.iter().zip(&known).map(|(&p, &k)| if k > 0 { p as f64 / k as f64 } else { pooled }).collect();
    let sample = &data.train_indices[..data.train_indices.len().min(PRIOR_BIAS_IMAGES)];
    let device = model.classifier.beta.device();
    let (logits, _) =
        batched_outputs(&data.dataset, sample, inference_loader(options, None), device, false, |images| {
            model.logits(images)
        })
        .context("the prior bias")?;
    model.classifier.set_prior_bias(&logits, &priors)
}

/// Evaluates `indices` of `dataset`: mAP and the threshold metrics at
/// [`THRESHOLD`], and also at `chosen` (a validation-chosen threshold) when given.
pub fn evaluate_split(
    model: &MlrplModel,
    dataset: &Arc<dyn MultiLabelDataset>,
    indices: &[usize],
    mask: Option<Arc<LabelMask>>,
    options: &TrainOptions,
    chosen: Option<f32>,
) -> Result<(MultiLabelMetrics, Option<MultiLabelMetrics>)> {
    let (scores, labels) = predict(model, dataset, indices, mask, options)?;
    let classes = model.num_classes();
    let at_chosen = chosen.map(|t| evaluate(&scores, &labels, classes, t)).transpose()?;
    Ok((evaluate(&scores, &labels, classes, THRESHOLD)?, at_chosen))
}

/// The training loss, summed on the model's device between reads: reading a
/// value back waits for the device, so a step only adds its loss, and the
/// loop reads every `--log-every` steps and at the end of an epoch.
#[derive(Default)]
pub struct LossMeter {
    unread: Option<Tensor>,
    unread_steps: usize,
    epoch_sum: f64,
    epoch_steps: usize,
}

impl LossMeter {
    /// Adds one step's scalar loss (no host transfer, no tape).
    pub fn add(&mut self, loss: &Tensor) -> Result<()> {
        let loss = loss.detach();
        self.unread = Some(match self.unread.take() {
            Some(sum) => sum.add(&loss)?,
            None => loss,
        });
        self.unread_steps += 1;
        Ok(())
    }

    /// The mean loss of the steps added since the last read (None when there
    /// are none); an error when it is not finite. `step` is the last step
    /// added, for the message.
    pub fn read(&mut self, epoch: usize, step: usize) -> Result<Option<f64>> {
        let Some(sum) = self.unread.take() else { return Ok(None) };
        let steps = std::mem::take(&mut self.unread_steps);
        let value = sum.scalar()? as f64;
        if !value.is_finite() {
            bail!(
                "the loss became {value} in epoch {} between steps {} and {step}; try a lower --lr",
                epoch + 1,
                step + 1 - steps
            );
        }
        self.epoch_sum += value;
        self.epoch_steps += steps;
        Ok(Some(value / steps as f64))
    }

    /// The mean loss of the steps read in this epoch.
    pub fn epoch_mean(&self) -> f64 {
        self.epoch_sum / self.epoch_steps.max(1) as f64
    }
}

/// Appends one JSON line to the metrics file at `path`, in one write (a
/// kill leaves at most one torn last line, which [`prepare_metrics`]
/// drops).
pub fn append_line(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open metrics file {}", path.display()))?;
    let line = format!("{value}\n");
    let bytes = line.as_bytes();
    let write = |file: &mut std::fs::File| -> std::io::Result<()> {
        if std::env::var_os("MLRPL_FAULT").is_some() {
            // Fault injection: half a line, then maybe a kill.
            let half = bytes.len() / 2;
            file.write_all(&bytes[..half])?;
            fault::point("metrics-line");
            return file.write_all(&bytes[half..]);
        }
        file.write_all(bytes)
    };
    write(&mut file).with_context(|| format!("cannot write metrics file {}", path.display()))
}

/// Readies the metrics file of a run that starts at `step` (0: a fresh
/// run): every complete line about a step after `step` (written after the
/// checkpoint the run resumes from) and a torn last line of a killed run
/// are dropped, so that each step is logged once; a fresh run starts an
/// empty file. Rewritten atomically.
pub fn prepare_metrics(path: &Path, step: usize) -> Result<()> {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read metrics file {}", path.display())),
    };
    let mut kept = String::new();
    if step > 0 {
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if value["step"].as_u64().is_some_and(|s| s as usize <= step) {
                kept.push_str(line);
            }
        }
    }
    if kept != text {
        checkpoint::write_atomically(path, kept.as_bytes())?;
    }
    Ok(())
}

/// Readies a run folder for a run that starts (`fresh`) or resumes at
/// `step`: removes what an interrupted run left (see
/// [`checkpoint::clean_leftovers`]), saying so, and readies the metrics
/// file (see [`prepare_metrics`]).
pub fn prepare_run_folder(dir: &Path, metrics: &Path, step: usize, fresh: bool) -> Result<()> {
    let cleaned = checkpoint::clean_leftovers(dir, fresh)?;
    if !cleaned.files.is_empty() {
        let names: Vec<String> =
            cleaned.files.iter().filter_map(|f| f.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
        eprintln!("removed what an interrupted run left in {}: {}", dir.display(), names.join(", "));
    }
    prepare_metrics(metrics, if fresh { 0 } else { step })
}

/// Trains `model` for `options.epochs` epochs, from `resume` when given.
pub fn train(
    model: &MlrplModel,
    data: &TrainData,
    options: &TrainOptions,
    run: &Run,
    resume: Option<checkpoint::Loaded>,
) -> Result<Outcome> {
    if options.epochs == 0 || options.batch_size == 0 {
        bail!("--epochs and --batch-size must be at least 1");
    }
    if data.train_indices.is_empty() {
        bail!("no training images");
    }
    let steps_per_epoch =
        if data.train_indices.len() >= options.batch_size { data.train_indices.len() / options.batch_size } else { 1 };
    let schedule = CosineSchedule {
        base_lr: options.lr,
        min_lr: 0.0,
        warmup: Warmup::Constant(options.warmup_lr),
        warmup_steps: epoch_steps("--warmup-epochs", options.warmup_epochs, steps_per_epoch)?,
        total_steps: epoch_steps("--epochs", options.epochs, steps_per_epoch)?,
    };
    std::fs::create_dir_all(&run.dir).with_context(|| format!("cannot create run folder {}", run.dir.display()))?;
    let fresh = resume.is_none();
    if fresh && options.bias_init == BiasInit::Prior {
        init_prior_bias(model, data, options)?;
    }
    let named = model.named_parameters();
    let mut optimizer = Sgd::new(model.parameter_groups(), schedule.lr(0), options.momentum, options.weight_decay)?;
    let mut state = TrainState::new(options.seed, run.clip.clone(), model.class_names.clone(), run.config.clone());
    if let Some(loaded) = resume {
        let source = checkpoint::state_path(&run.dir, "last").display().to_string();
        if loaded.state.class_names != model.class_names {
            bail!(
                "--resume: {source} was trained on the classes {}, this dataset has {}",
                loaded.state.class_names.join(", "),
                model.class_names.join(", ")
            );
        }
        checkpoint::restore_params(&named, &loaded.params, &source)?;
        if loaded.state.step > 0 {
            // Every parameter has taken steps, so each has a momentum buffer.
            let count = optimizer.groups().iter().map(|g| g.params.len()).sum::<usize>();
            let missing: Vec<String> = (0..count)
                .map(|i| format!("p{i}.momentum"))
                .filter(|n| !loaded.optimizer_state.contains_key(n))
                .collect();
            if !missing.is_empty() {
                bail!(
                    "{source}: the checkpoint (step {}) lacks the optimizer state {} of {} tensor(s) ({}{}); it cannot be resumed exactly",
                    loaded.state.step,
                    missing.len(),
                    count,
                    missing.iter().take(3).map(|n| format!("`{}{n}`", checkpoint::OPTIMIZER_PREFIX)).collect::<Vec<_>>().join(", "),
                    if missing.len() > 3 { ", ..." } else { "" }
                );
            }
        }
        optimizer.load_state_tensors(&loaded.optimizer_state).with_context(|| source.clone())?;
        state = loaded.state;
        if state.epoch_step > 0 {
            eprintln!("resuming in epoch {} after step {}", state.epoch + 1, state.step);
        } else {
            eprintln!("resuming after epoch {} (step {})", state.epoch, state.step);
        }
    }
    let metrics_path = run.dir.join("metrics.jsonl");
    prepare_run_folder(&run.dir, &metrics_path, state.step, fresh)?;
    let train_options = LoaderOptions {
        batch_size: options.batch_size,
        shuffle: true,
        seed: options.seed,
        workers: options.workers,
        image_size: options.image_size,
        augment: Augment::Train { cutout: options.cutout, rand_augment: options.rand_augment },
        drop_last: data.train_indices.len() >= options.batch_size,
        label_mask: Some(data.mask.clone()),
        skip_bad_images: options.skip_bad_images,
        ..LoaderOptions::default()
    };
    let progress = if options.progress {
        Progress::new("train", schedule.total_steps, state.step, "steps")
    } else {
        Progress::off()
    };
    // Validation inside the loop shows no count of its own.
    let validation_options = TrainOptions { progress: false, ..options.clone() };
    let start_epoch = state.epoch;
    for epoch in start_epoch..options.epochs {
        let loader = Loader::new(
            data.dataset.clone(),
            data.train_indices.clone(),
            LoaderOptions { epoch: epoch as u64, ..train_options.clone() },
        )?;
        let batches = loader.num_batches();
        let started = Instant::now();
        let (mut images_seen, mut losses) = (0usize, LossMeter::default());
        // A checkpoint saved inside this epoch: its batches are drawn again
        // (the order depends on seed and epoch only) and skipped.
        let skip = if epoch == start_epoch { std::mem::take(&mut state.epoch_step) } else { 0 };
        if skip > 0 {
            losses.epoch_sum = std::mem::take(&mut state.epoch_loss_sum);
            losses.epoch_steps = std::mem::take(&mut state.epoch_loss_steps);
        }
        for (i, batch) in loader.enumerate() {
            let batch = batch?;
            if i < skip {
                continue;
            }
            if interrupt::requested() {
                // A step boundary: i steps of this epoch are done.
                losses.read(epoch, state.step)?;
                let partial = TrainState {
                    epoch_step: i,
                    epoch_loss_sum: losses.epoch_sum,
                    epoch_loss_steps: losses.epoch_steps,
                    ..state.clone()
                };
                checkpoint::save(&run.dir, "last", &named, &optimizer.state_tensors()?, &partial)?;
                let checkpoint = checkpoint::state_path(&run.dir, "last");
                return Err(interrupt::Interrupted { checkpoint, step: state.step }.into());
            }
            let lr = schedule.lr(state.step);
            optimizer.set_lr(lr);
            optimizer.zero_grad();
            // The loader assembles batches on the host; the model may live on a GPU.
            let device = model.classifier.beta.device();
            let (images, labels) = (batch.images.to_device(device)?, batch.labels.to_device(device)?);
            let loss = model.logits(&images)?.masked_bce_with_logits(&labels)?;
            loss.backward()?;
            optimizer.step()?;
            losses.add(&loss)?;
            state.step += 1;
            images_seen += batch.len();
            progress.set(state.step, None);
            let logged = state.step.is_multiple_of(options.log_every.max(1));
            if !logged && i + 1 < batches {
                continue;
            }
            let Some(loss) = losses.read(epoch, state.step)? else { continue };
            let rate = images_seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
            let figures = step_figures(epoch, options.epochs, losses.epoch_mean(), lr, rate, "img/s");
            progress.set(state.step, Some(figures));
            if logged {
                append_line(
                    &metrics_path,
                    &serde_json::json!({ "epoch": epoch + 1, "step": state.step, "loss": loss, "lr": lr, "images_per_s": rate }),
                )?;
            }
        }
        // Steps after the last read (when the loader yielded fewer batches
        // than it announced) still count, and a non-finite loss still stops.
        losses.read(epoch, state.step)?;
        let (scores, labels) =
            predict(model, &data.dataset, &data.val_indices, Some(data.mask.clone()), &validation_options)
                .context("validation")?;
        let val = evaluate(&scores, &labels, model.num_classes(), THRESHOLD).context("validation")?;
        let threshold = f1_threshold(&scores, &labels, model.num_classes()).context("validation")?;
        let improved = state.finish_epoch(epoch, val.map);
        if improved {
            state.best_threshold = Some(threshold);
        }
        append_line(
            &metrics_path,
            &serde_json::json!({
                "epoch": state.epoch, "step": state.step, "train_loss": losses.epoch_mean(),
                "val_map": val.map, "val_cf1": val.cf1, "val_of1": val.of1, "val_threshold": threshold,
                "best": improved,
            }),
        )?;
        progress.println(&format!(
            "epoch {}/{}: train loss {:.4}, validation mAP {:.2}{}",
            state.epoch,
            options.epochs,
            losses.epoch_mean(),
            100.0 * val.map,
            if improved { " (best so far)" } else { "" }
        ));
        checkpoint::save_epoch(&run.dir, &named, &optimizer.state_tensors()?, &state, improved)?;
        write_run_plots(&run.dir, &progress);
        if interrupt::requested() && epoch + 1 < options.epochs {
            return Err(interrupt::Interrupted {
                checkpoint: checkpoint::state_path(&run.dir, "last"),
                step: state.step,
            }
            .into());
        }
    }
    progress.finish();
    Ok(Outcome {
        best_val_map: state.best_val_map,
        best_epoch: state.best_epoch,
        epochs_run: options.epochs - start_epoch,
    })
}

/// Redraws the run's curves from its metrics file (after every epoch, so an
/// interrupted run has them). A plot that fails is reported and training
/// goes on: the pictures are a view of the metrics file, which is intact.
pub fn write_run_plots(dir: &Path, progress: &Progress) {
    if let Err(e) = crate::viz::plots::write_run_curves(dir) {
        progress.println(&format!("warning: the run's plots were not drawn: {e:#}"));
    }
}
