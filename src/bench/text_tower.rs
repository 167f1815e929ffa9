//! `text_tower_step/vit-b16-c80` (`text_tower_step_bf16` with bf16
//! towers): the prompt text pass of issue 16 part 3 timed on its own, the
//! whole text tower forward and backward for COCO's 80 categories on a
//! random-weight ViT-B/16 CLIP (text width 512, 12 layers, 8 heads), 16
//! per-category context vectors: the prompt assembly (one op, truncated to
//! the longest EOT + 1 positions), the blocks (the last on EOT rows only),
//! `ln_final` and `text_projection`, then the backward into the context
//! from the loss `sum(features * R)` with a fixed random R.
//!
//! On a GPU the features and the context gradient are first checked against
//! the CPU backend on the same weights. `tools/bench_torch_kernels.py`
//! times the CoOp-style pass PyTorch users run (all 77 positions, OpenAI's
//! text transformer) at the same sizes, so the ratio is the target.

use super::case::{case_id, Work};
use super::check::{compare, tolerance_for};
use super::report::Figure;
use super::timing::{measure, Plan};
use super::train_step::{random_clip_weights, text_flops};
use crate::clip::tokenizer::Tokenizer;
use crate::clip::{Clip, TextTower};
use crate::data::coco::COCO_CATEGORIES;
use crate::device::Device;
use crate::mlrpl::{PromptConfig, PromptLearner};
use crate::precision::Precision;
use crate::rng::Rng;
use crate::Tensor;
use anyhow::{Context, Result};

pub const TEXT_TOWER_STEP: &str = "text_tower_step";
pub const SETUP: &str = "vit-b16-c80";
const MODEL: &str = "vit-b16";
const N_CTX: usize = 16;
const SEED: u64 = 16;

/// Whether `filter` selects the text tower step (always when None).
pub fn selected(filter: Option<&str>) -> bool {
    filter.is_none_or(|f| case_id(TEXT_TOWER_STEP, SETUP).contains(f))
}

/// The frozen tower, the prompts and the loss weights on one device.
pub struct TextPass {
    text: TextTower,
    prompts: PromptLearner,
    /// R [C, embed]: the loss is `sum(features * R)`.
    weights: Tensor,
}

impl TextPass {
    /// The first `classes` COCO categories on a random-weight ViT-B/16
    /// stored as `precision` says, on `device`.
    pub fn new(classes: usize, device: &Device, precision: Precision) -> Result<TextPass> {
        let clip = Clip::from_weights(random_clip_weights(MODEL, SEED, device, precision.frozen_dtype())?)?;
        let names: Vec<String> = COCO_CATEGORIES.iter().take(classes).map(|n| n.to_string()).collect();
        let config = PromptConfig { n_ctx: N_CTX, ..PromptConfig::default() };
        let prompts = PromptLearner::new(&clip.text, Tokenizer::shared()?, &names, &config, &mut Rng::new(SEED + 1))?;
        let weights = Tensor::randn([names.len(), clip.config.text.embed_dim], 1.0, &mut Rng::new(SEED + 2), device)?;
        Ok(TextPass { text: clip.text, prompts, weights })
    }

    /// One forward and backward: the features [C, embed] and the context
    /// gradient [C, M, W].
    pub fn step(&self) -> Result<[Tensor; 2]> {
        self.prompts.ctx.zero_grad();
        let features = self.prompts.text_features(&self.text)?;
        features.mul(&self.weights)?.sum_all()?.backward()?;
        let dctx = self.prompts.ctx.grad().context("the text pass left no context gradient")?;
        Ok([features, dctx])
    }

    fn params(&self) -> Vec<(&'static str, usize)> {
        let t = &self.text.config;
        vec![
            ("classes", self.prompts.eot_positions().len()),
            ("n_ctx", self.prompts.n_ctx()),
            ("len", self.len()),
            ("context", t.context_length),
            ("layers", t.layers),
            ("width", t.width),
            ("heads", t.heads),
            ("embed", t.embed_dim),
        ]
    }

    /// Positions run: the longest EOT + 1.
    fn len(&self) -> usize {
        self.prompts.eot_positions().iter().max().map_or(0, |e| e + 1)
    }
}

/// Times the text tower step on `device` (after checking it against the
/// CPU on a GPU).
pub fn run(device: &Device, precision: Precision, plan: &Plan) -> Result<Figure> {
    let classes = COCO_CATEGORIES.len();
    let pass = TextPass::new(classes, device, precision).context("setting up the text tower benchmark")?;
    let what = format!(
        "{} ({})",
        case_id(TEXT_TOWER_STEP, SETUP),
        pass.params().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    );
    let values = |p: &TextPass| -> Result<Vec<Vec<f32>>> { p.step()?.iter().map(Tensor::to_vec).collect() };
    let check_error = if device.is_cuda() {
        let cpu = TextPass::new(classes, &Device::Cpu, precision)?;
        Some(compare(&what, &values(&pass)?, &values(&cpu)?, tolerance_for(precision.frozen_dtype()))?)
    } else {
        None
    };
    let timing = measure(device, &Plan { min_sample_ms: 0.0, ..*plan }, &mut || {
        std::hint::black_box(pass.step()?);
        Ok(())
    })?;
    let (forward, backward) = text_flops(&pass.text.config, classes, pass.len());
    let dtype = precision.frozen_dtype();
    let op = if dtype == crate::DType::BF16 { "text_tower_step_bf16" } else { TEXT_TOWER_STEP };
    Ok(Figure::new(
        op,
        SETUP,
        "end_to_end",
        &pass.params(),
        dtype.to_string(),
        Work::Flops(forward + backward),
        &timing,
        check_error,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two categories on the CPU: the features and a context gradient of
    /// the prompts' shapes, finite, the gradient not all zero; a second
    /// step gives the same gradient (zero_grad runs first).
    #[test]
    fn the_text_pass_runs_on_the_cpu() {
        let pass = TextPass::new(2, &Device::Cpu, Precision::F32).unwrap();
        let [features, dctx] = pass.step().unwrap();
        assert_eq!(features.dims(), &[2, 512]);
        assert_eq!(dctx.dims(), &[2, N_CTX, 512]);
        let g = dctx.to_vec().unwrap();
        assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|&v| v != 0.0));
        assert_eq!(pass.step().unwrap()[1].to_vec().unwrap(), g);
        assert!(selected(None) && selected(Some("text_tower")) && !selected(Some("mini-clip")));
    }
}
