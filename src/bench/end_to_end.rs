//! End-to-end figures of the default `train` run (the bundled CLIP, the
//! embedded set, batch 32 at the CLIP's resolution, default model flags):
//!
//! * `train_step`: one MLR-PL training step, forward (frozen image tower
//!   without a tape, prompts through the text tower, semantic decoupling,
//!   classifier, masked BCE), backward and the SGD update;
//! * `clip_image_forward`: the frozen image encoder's dense tokens, the
//!   forward every step starts with.
//!
//! The batch is drawn and uploaded once: data loading is not timed. On a
//! GPU, the logits and loss (or the image tokens) are first checked against
//! the CPU backend on the same batch and weights.

use super::case::{case_id, Work};
use super::check::{compare, tolerance_for};
use super::kernels::MINI_CLIP;
use super::report::Figure;
use super::text_tower;
use super::timing::{measure, Plan};
use crate::clip::Clip;
use crate::data::image::Preprocess;
use crate::data::partial::LabelMask;
use crate::data::synthetic::{Split, SyntheticSet};
use crate::device::Device;
use crate::mlrpl::{MlrplConfig, MlrplModel};
use crate::optim::{Optimizer, Sgd};
use crate::precision::Precision;
use crate::rng::Rng;
use crate::Tensor;
use anyhow::{Context, Result};

pub const TRAIN_STEP: &str = "train_step";
pub const CLIP_IMAGE_FORWARD: &str = "clip_image_forward";

/// The end-to-end ids that contain `filter` (all when None), the text
/// tower step ([`text_tower`]) last.
pub fn selected(filter: Option<&str>) -> Vec<&'static str> {
    let mut ops: Vec<&'static str> = [TRAIN_STEP, CLIP_IMAGE_FORWARD]
        .into_iter()
        .filter(|op| filter.is_none_or(|f| case_id(op, MINI_CLIP.name).contains(f)))
        .collect();
    if text_tower::selected(filter) {
        ops.push(text_tower::TEXT_TOWER_STEP);
    }
    ops
}

/// The default model on `device` and one batch of the embedded set with
/// the default known-label proportion (0.5).
struct Scenario {
    model: MlrplModel,
    images: Tensor,
    labels: Tensor,
}

impl Scenario {
    fn new(clip: Clip, device: &Device) -> Result<Scenario> {
        let size = clip.config.vision.resolution();
        let set = SyntheticSet::new(Split::Train, 0, size)?;
        let classes: Vec<String> = crate::data::synthetic::CATEGORIES.iter().map(|c| c.to_string()).collect();
        let batch = MINI_CLIP.batch;
        let indices: Vec<usize> = (0..batch).collect();
        let images = set.images_tensor(&indices, Preprocess::Resize { size })?.to_device(device)?;
        let mask = LabelMask::sample(batch, classes.len(), 0.5, 0)?;
        let full = set.labels_tensor(&indices)?.to_vec()?;
        let partial: Vec<f32> =
            full.chunks(classes.len()).enumerate().flat_map(|(i, row)| mask.apply(row, i)).collect();
        let labels = Tensor::from_vec(partial, [batch, classes.len()], device)?;
        let model = MlrplModel::new(clip, classes, &MlrplConfig::default(), &mut Rng::new(0))?;
        Ok(Scenario { model, images, labels })
    }

    /// What the check compares: logits and loss of one forward.
    fn forward(&self) -> Result<Vec<Vec<f32>>> {
        let logits = self.model.logits(&self.images)?;
        let loss = logits.masked_bce_with_logits(&self.labels)?;
        Ok(vec![logits.to_vec()?, loss.to_vec()?])
    }

    fn params(&self) -> Vec<(&'static str, usize)> {
        let d = self.images.dims();
        vec![
            ("batch", d[0]),
            ("image", d[2]),
            ("classes", self.model.num_classes()),
            ("n_ctx", MlrplConfig::default().prompt.n_ctx),
        ]
    }
}

/// Runs the selected end-to-end benchmarks; `load_clip` gives the CLIP on
/// a device (called for the CPU too when checking a GPU), its towers in
/// `precision`, which also sets the check's tolerance.
pub fn run(
    ops: &[&str],
    device: &Device,
    precision: Precision,
    plan: &Plan,
    load_clip: &dyn Fn(&Device) -> Result<Clip>,
    mut report: impl FnMut(&Figure),
) -> Result<Vec<Figure>> {
    let (text, ops): (Vec<&str>, Vec<&str>) = ops.iter().partition(|&&op| op == text_tower::TEXT_TOWER_STEP);
    let mut figures =
        if ops.is_empty() { Vec::new() } else { mini_clip(&ops, device, precision, plan, load_clip, &mut report)? };
    if !text.is_empty() {
        let figure = text_tower::run(device, precision, plan)?;
        report(&figure);
        figures.push(figure);
    }
    Ok(figures)
}

/// The end-to-end figures of the default `train` run.
fn mini_clip(
    ops: &[&str],
    device: &Device,
    precision: Precision,
    plan: &Plan,
    load_clip: &dyn Fn(&Device) -> Result<Clip>,
    report: &mut impl FnMut(&Figure),
) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let on_device = Scenario::new(load_clip(device)?, device).context("setting up the end-to-end benchmark")?;
    let reference = if device.is_cuda() { Some(Scenario::new(load_clip(&Device::Cpu)?, &Device::Cpu)?) } else { None };
    let tolerance = tolerance_for(precision.frozen_dtype());
    // Whole steps are long: one per sample.
    let plan = Plan { min_sample_ms: 0.0, ..*plan };
    for &op in ops {
        let what = format!(
            "{} ({})",
            case_id(op, MINI_CLIP.name),
            on_device.params().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
        );
        let (check_error, timing) = if op == TRAIN_STEP {
            let check_error = match &reference {
                Some(cpu) => Some(compare(&what, &on_device.forward()?, &cpu.forward()?, tolerance)?),
                None => None,
            };
            let mut sgd = Sgd::new(on_device.model.parameter_groups(), 0.002, 0.9, 5e-4)?;
            let timing = measure(device, &plan, &mut || {
                sgd.zero_grad();
                let loss = on_device.model.logits(&on_device.images)?.masked_bce_with_logits(&on_device.labels)?;
                loss.backward()?;
                sgd.step()
            })?;
            (check_error, timing)
        } else {
            let tokens =
                |s: &Scenario| -> Result<Vec<Vec<f32>>> { Ok(vec![s.model.image_tokens(&s.images)?.to_vec()?]) };
            let check_error = match &reference {
                Some(cpu) => Some(compare(&what, &tokens(&on_device)?, &tokens(cpu)?, tolerance)?),
                None => None,
            };
            let timing = measure(device, &plan, &mut || {
                std::hint::black_box(on_device.model.image_tokens(&on_device.images)?);
                Ok(())
            })?;
            (check_error, timing)
        };
        let work = Work::Images(on_device.images.dims()[0]);
        let figure = Figure::new(
            op,
            MINI_CLIP.name,
            "end_to_end",
            &on_device.params(),
            precision.frozen_dtype().to_string(),
            work,
            &timing,
            check_error,
        );
        report(&figure);
        figures.push(figure);
    }
    Ok(figures)
}
