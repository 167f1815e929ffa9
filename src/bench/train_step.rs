//! `bench --e2e`: the MLR-PL training step and the inference step timed end
//! to end on seeded random inputs, with the time of each phase, the peak
//! memory and the model FLOP utilisation (docs/benchmarks.md).
//!
//! A training step is `zero_grad`, the frozen image tower without a tape
//! (vision), the prompts through the frozen text tower (text), the semantic
//! decoupling module (decoupling), the cosine classifier and the masked BCE
//! (loss), one backward through all of it (backward) and the SGD update
//! (optimizer). The device is synchronised at each phase boundary, so a
//! phase's time is its own; the step's own clock runs around all of it, so
//! the phases must add up to it. The inference step is the logits of the
//! same batch without a tape (image tower, text tower, decoupling,
//! classifier).
//!
//! The first step's loss is recorded before anything is timed:
//! `tools/torch_reference.py` computes the same step in PyTorch on the files
//! `--export` writes, and `tools/bench-vs-torch.sh` compares the three.

use super::timing::median;
use crate::autograd::no_grad;
use crate::clip::Clip;
use crate::data::coco::COCO_CATEGORIES;
use crate::data::voc::VOC_CLASSES;
use crate::device::Device;
use crate::mlrpl::{MlrplConfig, MlrplModel, PromptConfig};
use crate::nn::WeightMap;
use crate::optim::{Optimizer, Sgd};
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::DType;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

/// The phases of a training step, in order.
pub const PHASES: [&str; 6] = ["vision", "text", "decoupling", "loss", "backward", "optimizer"];
const VISION: usize = 0;
const TEXT: usize = 1;
const DECOUPLING: usize = 2;
const LOSS: usize = 3;
const BACKWARD: usize = 4;
const OPTIMIZER: usize = 5;

/// The training defaults of docs/model.md §6.
const LR: f32 = 0.002;
const MOMENTUM: f32 = 0.9;
const WEIGHT_DECAY: f32 = 5e-4;

/// Share of the batch's (image, class) labels that are known, and of the
/// known ones that are positive, in the random labels.
const KNOWN_SHARE: f64 = 0.5;
const POSITIVE_SHARE: f64 = 0.25;

/// What one `bench --e2e` run measures.
#[derive(Clone, Debug, Serialize)]
pub struct StepConfig {
    pub batch: usize,
    pub image_size: usize,
    pub classes: usize,
    pub n_ctx: usize,
    pub seed: u64,
    pub warmup: usize,
    pub steps: usize,
}

/// Class names for `classes` categories: VOC's first ones up to 20, COCO's
/// up to 80, then numbered ones. Only their token counts matter here: the
/// longest prompt sets the text pass's length.
pub fn class_names(classes: usize) -> Vec<String> {
    let known: &[&str] = if classes <= VOC_CLASSES.len() { &VOC_CLASSES } else { &COCO_CATEGORIES };
    (0..classes).map(|i| known.get(i).map_or_else(|| format!("category {i}"), |n| n.to_string())).collect()
}

/// The benchmarked model and its batch.
pub struct Scenario {
    pub model: MlrplModel,
    pub images: Tensor,
    pub labels: Tensor,
}

impl Scenario {
    /// Seeded random images (N(0, 1), already "normalised"), partial labels
    /// and trainable parameters for `config` on `clip`'s device.
    pub fn random(clip: Clip, config: &StepConfig, device: &Device) -> Result<Scenario> {
        let (b, c, r) = (config.batch, config.classes, config.image_size);
        let images = Tensor::randn([b, 3, r, r], 1.0, &mut Rng::new(config.seed + 1), device)?;
        let mut rng = Rng::new(config.seed + 2);
        let labels: Vec<f32> = (0..b * c)
            .map(|_| match (rng.uniform() < KNOWN_SHARE, rng.uniform() < POSITIVE_SHARE) {
                (false, _) => 0.0,
                (true, true) => 1.0,
                (true, false) => -1.0,
            })
            .collect();
        let labels = Tensor::from_vec(labels, [b, c], device)?;
        let model = Self::model(clip, class_names(c), config)?;
        Ok(Scenario { model, images, labels })
    }

    /// The images, labels, class names and initial trainable parameters an
    /// [`Scenario::export`] wrote to `path`.
    pub fn load(clip: Clip, config: &StepConfig, path: &Path, device: &Device) -> Result<Scenario> {
        let file = WeightMap::load(path, device)?;
        let names =
            file.metadata().get("classes").with_context(|| format!("{}: no `classes` metadata", path.display()))?;
        let class_names: Vec<String> =
            serde_json::from_str(names).with_context(|| format!("{}: `classes` is not a JSON list", path.display()))?;
        let images = file.get_shaped("images", &[config.batch, 3, config.image_size, config.image_size])?;
        let labels = file.get_shaped("labels", &[config.batch, class_names.len()])?;
        let model = Self::model(clip, class_names, config)?;
        for (name, param) in model.named_parameters() {
            param
                .copy_from(&file.get_shaped(&name, param.dims())?)
                .with_context(|| format!("{}: setting {name}", path.display()))?;
        }
        Ok(Scenario { model, images, labels })
    }

    fn model(clip: Clip, class_names: Vec<String>, config: &StepConfig) -> Result<MlrplModel> {
        let model_config = MlrplConfig {
            prompt: PromptConfig { n_ctx: config.n_ctx, ..PromptConfig::default() },
            ..MlrplConfig::default()
        };
        MlrplModel::new(clip, class_names, &model_config, &mut Rng::new(config.seed + 3))
    }

    /// Writes the images, labels, class names and initial trainable
    /// parameters (under their checkpoint names) to `path`, f32.
    pub fn export(&self, path: &Path) -> Result<()> {
        let mut tensors =
            vec![("images".to_string(), self.images.clone()), ("labels".to_string(), self.labels.clone())];
        tensors.extend(self.model.named_parameters());
        let metadata = HashMap::from([
            ("classes".to_string(), serde_json::to_string(&self.model.class_names)?),
            ("n_ctx".to_string(), self.model.prompts.n_ctx().to_string()),
            ("lr".to_string(), LR.to_string()),
            ("momentum".to_string(), MOMENTUM.to_string()),
            ("weight_decay".to_string(), WEIGHT_DECAY.to_string()),
            ("generator".to_string(), "mlrpl-engine bench --e2e --export".to_string()),
        ]);
        WeightMap::save(path, &tensors, metadata).with_context(|| format!("writing {}", path.display()))
    }

    /// Positions the text tower runs: the longest prompt's EOT + 1.
    pub fn text_length(&self) -> usize {
        self.model.prompts.eot_positions().iter().max().map_or(0, |e| e + 1)
    }
}

fn synchronize(device: &Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        Device::Cuda(gpu) => gpu.synchronize(),
    }
}

/// CPU time of the whole process (every thread), milliseconds: unlike the
/// wall clock, it does not grow while other processes hold the cores.
fn process_cpu_ms() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid, exclusive pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 * 1e-6
}

/// Wall-clock and process CPU time per phase, the device synchronised at
/// each boundary.
struct Laps<'a> {
    device: &'a Device,
    last: Instant,
    last_cpu: f64,
    ms: [f64; PHASES.len()],
    cpu_ms: [f64; PHASES.len()],
}

impl<'a> Laps<'a> {
    fn start(device: &'a Device) -> Result<Laps<'a>> {
        synchronize(device)?;
        Ok(Laps {
            device,
            last: Instant::now(),
            last_cpu: process_cpu_ms(),
            ms: [0.0; PHASES.len()],
            cpu_ms: [0.0; PHASES.len()],
        })
    }

    /// Ends `phase` (its work done on the device) and starts the next.
    fn lap(&mut self, phase: usize) -> Result<()> {
        synchronize(self.device)?;
        let (now, cpu) = (Instant::now(), process_cpu_ms());
        self.ms[phase] += (now - self.last).as_secs_f64() * 1e3;
        self.cpu_ms[phase] += cpu - self.last_cpu;
        (self.last, self.last_cpu) = (now, cpu);
        Ok(())
    }
}

/// One training step; returns its loss (before the update).
fn train_step(s: &Scenario, sgd: &mut Sgd, laps: &mut Laps) -> Result<Tensor> {
    sgd.zero_grad();
    let tokens = s.model.image_tokens(&s.images)?;
    laps.lap(VISION)?;
    let text = s.model.text_features()?;
    laps.lap(TEXT)?;
    let visual = s.model.visual_features(&tokens, &text)?;
    laps.lap(DECOUPLING)?;
    let loss = s.model.classify(&visual, &text)?.masked_bce_with_logits(&s.labels)?;
    laps.lap(LOSS)?;
    loss.backward()?;
    laps.lap(BACKWARD)?;
    sgd.step()?;
    laps.lap(OPTIMIZER)?;
    Ok(loss)
}

#[derive(Clone, Debug, Serialize)]
pub struct StepFigures {
    pub median_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
    pub images_per_s: f64,
    /// Matrix-product FLOPs of one step ([`step_flops`]).
    pub model_gflop: f64,
    /// Model FLOPs per second at the median step over the measured matrix rate.
    pub mfu: f64,
}

impl StepFigures {
    fn new(times_ms: &[f64], batch: usize, flops: f64, matrix_rate: f64) -> StepFigures {
        let median_ms = median(times_ms);
        StepFigures {
            median_ms,
            mean_ms: times_ms.iter().sum::<f64>() / times_ms.len() as f64,
            min_ms: times_ms.iter().copied().fold(f64::INFINITY, f64::min),
            images_per_s: batch as f64 / median_ms * 1e3,
            model_gflop: flops / 1e9,
            mfu: flops / (median_ms * 1e-3) / matrix_rate,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct MatrixRate {
    /// `m x k x n` of the product timed.
    pub shape: String,
    pub dtype: String,
    pub gflops: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct E2eFigures {
    pub config: StepConfig,
    /// Text positions run per category (longest EOT + 1).
    pub text_length: usize,
    /// The first step's loss, before any update.
    pub first_loss: f64,
    pub train: StepFigures,
    /// Mean milliseconds per phase over the timed steps.
    pub phases_ms: BTreeMap<&'static str, f64>,
    /// Mean process CPU milliseconds (all threads) per phase: on a shared
    /// machine, a measure of the work that other processes barely change.
    pub phases_cpu_ms: BTreeMap<&'static str, f64>,
    pub inference: StepFigures,
    pub matrix_rate: MatrixRate,
    /// MiB: the process's peak resident set on the CPU, the memory pool's
    /// peak in use on a GPU.
    pub peak_memory_mib: f64,
    pub peak_memory_kind: &'static str,
}

/// Measures the training and inference steps of `s` on `device`:
/// `config.warmup` untimed steps (at least one, whose loss is the first
/// loss), then `config.steps` timed ones of each.
pub fn run(s: &Scenario, config: &StepConfig, device: &Device) -> Result<E2eFigures> {
    if let Device::Cuda(gpu) = device {
        // The peak of the steps themselves (weights included), not of loading.
        gpu.reset_peak_memory()?;
    }
    let mut sgd = Sgd::new(s.model.parameter_groups(), LR, MOMENTUM, WEIGHT_DECAY)?;
    let steps = config.steps.max(1);
    let mut first_loss = None;
    for _ in 0..config.warmup.max(1) {
        let loss = train_step(s, &mut sgd, &mut Laps::start(device)?)?;
        first_loss.get_or_insert(loss.scalar()? as f64);
    }
    let (mut step_ms, mut phase_sums, mut cpu_sums) =
        (Vec::with_capacity(steps), [0.0; PHASES.len()], [0.0; PHASES.len()]);
    for _ in 0..steps {
        let started = Instant::now();
        let mut laps = Laps::start(device)?;
        train_step(s, &mut sgd, &mut laps)?;
        step_ms.push(started.elapsed().as_secs_f64() * 1e3);
        phase_sums.iter_mut().zip(laps.ms).for_each(|(sum, ms)| *sum += ms);
        cpu_sums.iter_mut().zip(laps.cpu_ms).for_each(|(sum, ms)| *sum += ms);
    }
    let infer = || -> Result<f64> {
        let _no_grad = no_grad();
        synchronize(device)?;
        let started = Instant::now();
        std::hint::black_box(s.model.logits(&s.images)?);
        synchronize(device)?;
        Ok(started.elapsed().as_secs_f64() * 1e3)
    };
    for _ in 0..config.warmup {
        infer()?;
    }
    let infer_ms = (0..steps).map(|_| infer()).collect::<Result<Vec<f64>>>()?;
    let matrix_rate = matrix_rate(s, device)?;
    let rate = matrix_rate.gflops * 1e9;
    let flops = step_flops(s);
    let (peak_memory_mib, peak_memory_kind) = peak_memory_mib(device)?;
    Ok(E2eFigures {
        config: config.clone(),
        text_length: s.text_length(),
        first_loss: first_loss.context("no step ran")?,
        train: StepFigures::new(&step_ms, config.batch, flops.train(), rate),
        phases_ms: PHASES.iter().zip(phase_sums).map(|(&p, sum)| (p, sum / steps as f64)).collect(),
        phases_cpu_ms: PHASES.iter().zip(cpu_sums).map(|(&p, sum)| (p, sum / steps as f64)).collect(),
        inference: StepFigures::new(&infer_ms, config.batch, flops.inference(), rate),
        matrix_rate,
        peak_memory_mib,
        peak_memory_kind,
    })
}

/// The rate of the step's most common matrix product, the image tower's
/// MLP expansion (B (N + 1) x W x 4W, in the towers' dtype): the fastest
/// of five after two untimed ones (the rate the device can reach).
fn matrix_rate(s: &Scenario, device: &Device) -> Result<MatrixRate> {
    let vision = &s.model.clip.vision.config;
    let grid = s.images.dims()[2] / vision.patch;
    let (m, k, n) = (s.images.dims()[0] * (grid * grid + 1), vision.width, 4 * vision.width);
    let dtype = s.model.clip.text.token_embedding().dtype();
    let mut rng = Rng::new(7);
    let a = Tensor::randn([m, k], 1.0, &mut rng, device)?.to_dtype(dtype)?;
    let b = Tensor::randn([k, n], 1.0, &mut rng, device)?.to_dtype(dtype)?;
    let _no_grad = no_grad();
    let time = || -> Result<f64> {
        synchronize(device)?;
        let started = Instant::now();
        std::hint::black_box(a.matmul(&b)?);
        synchronize(device)?;
        Ok(started.elapsed().as_secs_f64())
    };
    for _ in 0..2 {
        time()?;
    }
    let seconds = (0..5).map(|_| time()).collect::<Result<Vec<f64>>>()?.into_iter().fold(f64::INFINITY, f64::min);
    Ok(MatrixRate {
        shape: format!("{m}x{k}x{n}"),
        dtype: dtype.to_string(),
        gflops: 2.0 * (m * k * n) as f64 / seconds / 1e9,
    })
}

/// Matrix-product FLOPs (2 per multiply-add) of the model's parts; the
/// elementwise work, normalisations and softmaxes are left out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepFlops {
    pub vision: f64,
    pub text_forward: f64,
    /// Input gradients only: the tower is frozen.
    pub text_backward: f64,
    pub decoupling_forward: f64,
    /// W1 and W2 gradients and the text features' gradient.
    pub decoupling_backward: f64,
}

impl StepFlops {
    pub fn train(&self) -> f64 {
        self.inference() + self.text_backward + self.decoupling_backward
    }

    pub fn inference(&self) -> f64 {
        self.vision + self.text_forward + self.decoupling_forward
    }
}

/// A pre-LN transformer's forward on `seqs` sequences of `len` tokens and
/// width `w`: the four linear layers (24 w^2 per token) and the two
/// attention products (4 len^2 w per sequence, half of it when causal).
fn transformer_flops(layers: usize, seqs: usize, len: usize, w: usize, causal: bool) -> f64 {
    let (seqs, len, w) = (seqs as f64, len as f64, w as f64);
    let attention = 4.0 * seqs * len * len * w * if causal { 0.5 } else { 1.0 };
    layers as f64 * (24.0 * seqs * len * w * w + attention)
}

/// Matrix-product FLOPs of the prompt text pass of `classes` prompts of
/// `len` positions through the tower `t`, forward and backward (input
/// gradients only: the tower is frozen).
pub fn text_flops(t: &crate::clip::config::TextConfig, classes: usize, len: usize) -> (f64, f64) {
    let forward =
        transformer_flops(t.layers, classes, len, t.width, true) + 2.0 * (classes * t.width * t.embed_dim) as f64;
    // Input gradients of the linear layers cost their forward; attention's
    // dQ, dK and dV cost twice its forward.
    let backward = forward + t.layers as f64 * 4.0 * (classes * len * len) as f64 * 0.5 * t.width as f64;
    (forward, backward)
}

pub fn step_flops(s: &Scenario) -> StepFlops {
    let config = &s.model.clip.config;
    let (v, t) = (&config.vision, &config.text);
    let (b, c, r) = (s.images.dims()[0] as f64, s.model.num_classes() as f64, s.images.dims()[2]);
    let patches = (r / v.patch) * (r / v.patch);
    let (n, embed) = (patches as f64, v.embed_dim as f64);
    let vision = transformer_flops(v.layers, s.images.dims()[0], patches + 1, v.width, false)
        + 2.0 * b * n * (3 * v.patch * v.patch * v.width) as f64
        + 2.0 * b * (n + 1.0) * (v.width * v.embed_dim) as f64;
    let (text_forward, text_backward) = text_flops(t, s.model.num_classes(), s.text_length());
    let d = s.model.sdm.as_ref().map_or(0.0, |sdm| sdm.w1.dims()[0] as f64);
    let decoupling_forward = match s.model.sdm {
        Some(_) => 2.0 * b * n * embed * d + 2.0 * c * embed * d + 2.0 * b * c * n * d + 2.0 * b * c * n * embed,
        None => 0.0,
    };
    let decoupling_backward = match s.model.sdm {
        Some(_) => 2.0 * b * n * embed * d + 4.0 * c * embed * d + 4.0 * b * c * n * d + 2.0 * b * c * n * embed,
        None => 0.0,
    };
    StepFlops { vision, text_forward, text_backward, decoupling_forward, decoupling_backward }
}

/// The process's peak resident set (CPU) or the memory pool's peak in use
/// (GPU), MiB, and which it is.
fn peak_memory_mib(device: &Device) -> Result<(f64, &'static str)> {
    const MIB: f64 = (1 << 20) as f64;
    match device {
        Device::Cpu => {
            let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
            let kib = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .context("/proc/self/status has no VmHWM line")?;
            Ok((kib * 1024.0 / MIB, "peak resident set of the process"))
        }
        Device::Cuda(gpu) => match gpu.pool_memory()? {
            Some(pool) => Ok((pool.peak_used as f64 / MIB, "peak GPU memory in use (engine's memory pool)")),
            None => bail!("the GPU memory pool reports no figures"),
        },
    }
}

/// A random-weight CLIP `name`d in [`crate::clip::config::NAMED_SIZES`],
/// its towers in `dtype`, OpenAI's initialisation seeded with `seed`.
pub fn random_clip_weights(name: &str, seed: u64, device: &Device, dtype: DType) -> Result<WeightMap> {
    let config = crate::clip::ClipConfig::named(name)?;
    let weights = crate::clip::init::init_weights(&config, seed, device)?;
    if dtype == DType::F32 {
        Ok(weights)
    } else {
        weights.to_dtype(dtype)
    }
}

impl E2eFigures {
    /// A human-readable summary, one figure a line.
    pub fn text(&self) -> String {
        let c = &self.config;
        let mut out = format!(
            "MLR-PL step, batch {} at {}x{}, {} classes, {} context vectors, text length {}\n",
            c.batch, c.image_size, c.image_size, c.classes, c.n_ctx, self.text_length
        );
        out += &format!("first loss {:.6}\n", self.first_loss);
        for (what, f) in [("train step", &self.train), ("inference step", &self.inference)] {
            out += &format!(
                "{what:<15} {:>9.1} ms (median of {}, min {:.1}) {:>8.2} images/s  {:.1} GFLOP, MFU {:.1}%\n",
                f.median_ms,
                c.steps,
                f.min_ms,
                f.images_per_s,
                f.model_gflop,
                100.0 * f.mfu
            );
        }
        let sum: f64 = self.phases_ms.values().sum();
        let cpu_sum: f64 = self.phases_cpu_ms.values().sum();
        out += &format!(
            "phases (mean ms; sum {sum:.1}, step mean {:.1}; process CPU ms, all threads):\n",
            self.train.mean_ms
        );
        for phase in PHASES {
            let (ms, cpu) = (self.phases_ms[phase], self.phases_cpu_ms[phase]);
            out += &format!(
                "  {phase:<11} {ms:>9.1} ms {:>5.1}%  cpu {cpu:>9.1} ms {:>5.1}%\n",
                100.0 * ms / sum.max(1e-12),
                100.0 * cpu / cpu_sum.max(1e-12)
            );
        }
        out += &format!(
            "matrix rate {:.1} GFLOP/s ({} {}); {} {:.0} MiB\n",
            self.matrix_rate.gflops,
            self.matrix_rate.shape,
            self.matrix_rate.dtype,
            self.peak_memory_kind,
            self.peak_memory_mib
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_come_from_voc_then_coco_then_numbers() {
        assert_eq!(class_names(2), ["aeroplane", "bicycle"]);
        let eighty = class_names(80);
        assert_eq!(eighty[0], COCO_CATEGORIES[0]);
        let more = class_names(82);
        assert_eq!(more[81], "category 81");
        assert_eq!(more.len(), 82);
    }

    #[test]
    fn causal_attention_counts_half_the_products() {
        let full = transformer_flops(1, 2, 10, 64, false);
        let causal = transformer_flops(1, 2, 10, 64, true);
        let linear = 24.0 * 2.0 * 10.0 * 64.0 * 64.0;
        assert_eq!(full - linear, 2.0 * (causal - linear));
    }
}
