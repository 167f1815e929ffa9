//! The two published namings of CLIP weights, mapped onto one: OpenAI's
//! state-dict names (`visual.transformer.resblocks.0.attn.in_proj_weight`)
//! are canonical; Hugging Face `transformers` `CLIPModel` names
//! (`vision_model.encoder.layers.0.self_attn.q_proj.weight`) are renamed,
//! q/k/v are packed, and the projections are transposed to match.

use crate::nn::WeightMap;
use crate::tensor::Tensor;
use anyhow::{bail, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    OpenAi,
    HuggingFace,
}

impl Naming {
    pub fn detect(w: &WeightMap) -> Result<Naming> {
        if w.contains("visual.class_embedding") {
            Ok(Naming::OpenAi)
        } else if w.contains("vision_model.embeddings.class_embedding") {
            Ok(Naming::HuggingFace)
        } else {
            bail!(
                "{}: not a CLIP checkpoint: neither `visual.class_embedding` (OpenAI naming) nor \
                 `vision_model.embeddings.class_embedding` (Hugging Face naming) is present",
                w.source().display()
            )
        }
    }
}

/// Returns the weights in OpenAI's naming, and the naming they came in.
pub fn canonicalize(w: WeightMap) -> Result<(WeightMap, Naming)> {
    match Naming::detect(&w)? {
        Naming::OpenAi => Ok((w, Naming::OpenAi)),
        Naming::HuggingFace => Ok((from_hugging_face(&w)?, Naming::HuggingFace)),
    }
}

fn from_hugging_face(hf: &WeightMap) -> Result<WeightMap> {
    let mut out = hf.empty_like();
    let mut copy = |from: &str, to: &str| -> Result<()> {
        out.insert(to, hf.get(from)?);
        Ok(())
    };
    copy("vision_model.embeddings.class_embedding", "visual.class_embedding")?;
    copy("vision_model.embeddings.patch_embedding.weight", "visual.conv1.weight")?;
    copy("vision_model.embeddings.position_embedding.weight", "visual.positional_embedding")?;
    for (hf_name, name) in [("pre_layrnorm", "ln_pre"), ("post_layernorm", "ln_post")] {
        for p in ["weight", "bias"] {
            copy(&format!("vision_model.{hf_name}.{p}"), &format!("visual.{name}.{p}"))?;
        }
    }
    copy("text_model.embeddings.token_embedding.weight", "token_embedding.weight")?;
    copy("text_model.embeddings.position_embedding.weight", "positional_embedding")?;
    for p in ["weight", "bias"] {
        copy(&format!("text_model.final_layer_norm.{p}"), &format!("ln_final.{p}"))?;
    }
    if hf.contains("logit_scale") {
        copy("logit_scale", "logit_scale")?;
    }
    out.insert("visual.proj", transpose(&hf.get("visual_projection.weight")?)?);
    out.insert("text_projection", transpose(&hf.get("text_projection.weight")?)?);
    for (hf_tower, tower) in [("vision_model", "visual.transformer"), ("text_model", "transformer")] {
        let layers =
            super::config::count_blocks_checked(hf, &format!("{hf_tower}.encoder.layers."), "self_attn.q_proj.weight")?;
        for i in 0..layers {
            let hf_block = format!("{hf_tower}.encoder.layers.{i}");
            let block = format!("{tower}.resblocks.{i}");
            for p in ["weight", "bias"] {
                let qkv = ["q", "k", "v"]
                    .iter()
                    .map(|x| hf.get(&format!("{hf_block}.self_attn.{x}_proj.{p}")))
                    .collect::<Result<Vec<_>>>()?;
                out.insert(format!("{block}.attn.in_proj_{p}"), Tensor::concat(&[&qkv[0], &qkv[1], &qkv[2]], 0)?);
                for (hf_name, name) in [
                    ("self_attn.out_proj", "attn.out_proj"),
                    ("layer_norm1", "ln_1"),
                    ("layer_norm2", "ln_2"),
                    ("mlp.fc1", "mlp.c_fc"),
                    ("mlp.fc2", "mlp.c_proj"),
                ] {
                    out.insert(format!("{block}.{name}.{p}"), hf.get(&format!("{hf_block}.{hf_name}.{p}"))?);
                }
            }
        }
    }
    Ok(out)
}

fn transpose(t: &Tensor) -> Result<Tensor> {
    let _no_grad = crate::autograd::no_grad();
    t.transpose(0, 1)
}
