//! CLIP's zero-shot classifier: each class is the text feature of a
//! hand-written prompt, each image is scored by its cosine similarity to
//! every class, times CLIP's logit scale.

use super::tokenizer::Tokenizer;
use super::Clip;
use crate::tensor::Tensor;
use anyhow::{bail, Result};

/// The hand-written prompt of CLIP's zero-shot evaluation.
pub const PROMPT: &str = "a photo of a {}.";

/// CLIP's fixed logit scale (100) when a checkpoint stores none.
const DEFAULT_LOGIT_SCALE: f32 = 100.0;

/// CLIP's `encode_text` of each string: [texts.len(), embed_dim].
pub fn encode_texts(clip: &Clip, texts: &[String]) -> Result<Tensor> {
    let tokenizer = Tokenizer::shared()?;
    let context = clip.config.text.context_length;
    let tokens = texts.iter().map(|t| tokenizer.tokenize(t, context)).collect::<Result<Vec<_>>>()?;
    if let Some(bad) = tokens.iter().flatten().find(|&&id| id as usize >= clip.config.text.vocab_size) {
        bail!(
            "token id {bad} is outside this checkpoint's vocabulary of {} (the rows of `token_embedding.weight`)",
            clip.config.text.vocab_size
        );
    }
    clip.text.encode(&tokens)
}

/// The zero-shot classifier of `classes`: L2-normalised text features of
/// [`PROMPT`] for each class name, [C, embed_dim].
pub fn class_features(clip: &Clip, classes: &[String]) -> Result<Tensor> {
    let prompts: Vec<String> = classes.iter().map(|c| PROMPT.replace("{}", c)).collect();
    encode_texts(clip, &prompts)?.l2_normalize()
}

/// `exp(logit_scale)` of the checkpoint, or CLIP's 100 when it stores none.
pub fn logit_scale(clip: &Clip) -> Result<f32> {
    match &clip.logit_scale {
        Some(log_scale) => Ok(log_scale.scalar()?.exp()),
        None => Ok(DEFAULT_LOGIT_SCALE),
    }
}

/// Zero-shot logits [B, C] of preprocessed images [B, 3, R, R]:
/// `logit_scale * cos(image, class)`.
pub fn logits(clip: &Clip, images: &Tensor, class_features: &Tensor) -> Result<Tensor> {
    let image = clip.vision.encode(images)?.l2_normalize()?;
    image.matmul(&class_features.transpose(0, 1)?)?.scale(logit_scale(clip)?)
}
