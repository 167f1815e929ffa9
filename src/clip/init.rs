//! Fresh CLIP weights in OpenAI's naming, initialised as OpenAI's
//! `CLIP.initialize_parameters` does (normal draws with width-scaled
//! standard deviations, layer norms at (1, 0), zero biases): the starting
//! point of `pretrain` and the stand-in for real weights in benchmarks.

use super::config::ClipConfig;
use crate::device::Device;
use crate::nn::WeightMap;
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::DType;
use anyhow::Result;

/// CLIP's initial temperature: logit_scale = ln(1 / 0.07).
pub const INITIAL_LOGIT_SCALE: f32 = 2.659_26;

struct Init<'a> {
    weights: WeightMap,
    rng: &'a mut Rng,
    device: Device,
}

impl Init<'_> {
    fn normal(&mut self, name: String, dims: &[usize], std: f32) -> Result<()> {
        let t = Tensor::randn(dims.to_vec(), std, self.rng, &self.device)?;
        self.weights.insert(name, t);
        Ok(())
    }

    fn constant(&mut self, name: String, dims: &[usize], value: f32) -> Result<()> {
        self.weights.insert(name, Tensor::full(value, dims.to_vec(), DType::F32, &self.device)?);
        Ok(())
    }

    fn layer_norm(&mut self, prefix: &str, width: usize) -> Result<()> {
        self.constant(format!("{prefix}.weight"), &[width], 1.0)?;
        self.constant(format!("{prefix}.bias"), &[width], 0.0)
    }

    fn transformer(&mut self, prefix: &str, width: usize, layers: usize) -> Result<()> {
        let attn_std = (width as f32).powf(-0.5);
        let proj_std = attn_std * ((2 * layers) as f32).powf(-0.5);
        let fc_std = ((2 * width) as f32).powf(-0.5);
        for i in 0..layers {
            let p = format!("{prefix}.resblocks.{i}");
            self.normal(format!("{p}.attn.in_proj_weight"), &[3 * width, width], attn_std)?;
            self.constant(format!("{p}.attn.in_proj_bias"), &[3 * width], 0.0)?;
            self.normal(format!("{p}.attn.out_proj.weight"), &[width, width], proj_std)?;
            self.constant(format!("{p}.attn.out_proj.bias"), &[width], 0.0)?;
            self.layer_norm(&format!("{p}.ln_1"), width)?;
            self.layer_norm(&format!("{p}.ln_2"), width)?;
            self.normal(format!("{p}.mlp.c_fc.weight"), &[4 * width, width], fc_std)?;
            self.constant(format!("{p}.mlp.c_fc.bias"), &[4 * width], 0.0)?;
            self.normal(format!("{p}.mlp.c_proj.weight"), &[width, 4 * width], proj_std)?;
            self.constant(format!("{p}.mlp.c_proj.bias"), &[width], 0.0)?;
        }
        Ok(())
    }
}

/// Freshly initialised weights for `config`, deterministic in `seed`.
pub fn init_weights(config: &ClipConfig, seed: u64, device: &Device) -> Result<WeightMap> {
    let mut rng = Rng::new(seed);
    let mut init = Init { weights: WeightMap::default(), rng: &mut rng, device: device.clone() };
    let v = &config.vision;
    let scale = (v.width as f32).powf(-0.5);
    init.normal(
        "visual.conv1.weight".into(),
        &[v.width, 3, v.patch, v.patch],
        ((3 * v.patch * v.patch) as f32).powf(-0.5),
    )?;
    init.normal("visual.class_embedding".into(), &[v.width], scale)?;
    init.normal("visual.positional_embedding".into(), &[v.grid * v.grid + 1, v.width], scale)?;
    init.layer_norm("visual.ln_pre", v.width)?;
    init.transformer("visual.transformer", v.width, v.layers)?;
    init.layer_norm("visual.ln_post", v.width)?;
    init.normal("visual.proj".into(), &[v.width, v.embed_dim], scale)?;
    let t = &config.text;
    init.normal("token_embedding.weight".into(), &[t.vocab_size, t.width], 0.02)?;
    init.normal("positional_embedding".into(), &[t.context_length, t.width], 0.01)?;
    init.transformer("transformer", t.width, t.layers)?;
    init.layer_norm("ln_final", t.width)?;
    init.normal("text_projection".into(), &[t.width, t.embed_dim], (t.width as f32).powf(-0.5))?;
    init.constant("logit_scale".into(), &[], INITIAL_LOGIT_SCALE)?;
    Ok(init.weights)
}
