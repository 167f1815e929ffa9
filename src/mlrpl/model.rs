//! The whole model: frozen CLIP towers, prompt learner, semantic decoupling
//! and the cosine classifier (docs/model.md).

use super::{CosineClassifier, PromptConfig, PromptLearner, SemanticDecoupling};
use crate::autograd::no_grad;
use crate::clip::tokenizer::Tokenizer;
use crate::clip::Clip;
use crate::optim::ParamGroup;
use crate::rng::Rng;
use crate::tensor::Tensor;
use anyhow::{bail, Result};

/// A trainable tensor with its checkpoint name.
type Named = (String, Tensor);

#[derive(Clone, Debug, PartialEq)]
pub struct MlrplConfig {
    pub prompt: PromptConfig,
    /// Decoupling width d (default: CLIP's embedding width D).
    pub decoupling_width: Option<usize>,
    /// With `false`, every category uses the global image feature (the
    /// "prompts only" baseline, `--no-sdm`).
    pub use_sdm: bool,
}

impl Default for MlrplConfig {
    fn default() -> Self {
        MlrplConfig { prompt: PromptConfig::default(), decoupling_width: None, use_sdm: true }
    }
}

#[derive(Clone, Debug)]
pub struct MlrplModel {
    pub clip: Clip,
    pub class_names: Vec<String>,
    pub prompts: PromptLearner,
    pub sdm: Option<SemanticDecoupling>,
    pub classifier: CosineClassifier,
}

impl MlrplModel {
    pub fn new(clip: Clip, class_names: Vec<String>, config: &MlrplConfig, rng: &mut Rng) -> Result<Self> {
        let tokenizer = Tokenizer::shared()?;
        let prompts = PromptLearner::new(&clip.text, tokenizer, &class_names, &config.prompt, rng)?;
        let device = clip.text.token_embedding().device().clone();
        let embed = clip.config.vision.embed_dim;
        let sdm = match config.use_sdm {
            true => Some(SemanticDecoupling::new(embed, config.decoupling_width.unwrap_or(embed), rng, &device)?),
            false => None,
        };
        let classifier = CosineClassifier::new(class_names.len(), &device)?;
        Ok(MlrplModel { clip, class_names, prompts, sdm, classifier })
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Every trainable tensor with its checkpoint name (docs/checkpoints.md),
    /// weight-decayed ones first.
    pub fn named_parameters(&self) -> Vec<Named> {
        let (decayed, not_decayed) = self.parameters_by_role();
        decayed.into_iter().chain(not_decayed).collect()
    }

    /// Optimizer groups: weight decay on the prompts and the decoupling
    /// module, none on the classifier's scale and bias (docs/model.md §6).
    pub fn parameter_groups(&self) -> Vec<ParamGroup> {
        let (decayed, not_decayed) = self.parameters_by_role();
        let tensors = |v: Vec<Named>| v.into_iter().map(|(_, t)| t).collect();
        vec![ParamGroup::new(tensors(decayed)), ParamGroup::no_decay(tensors(not_decayed))]
    }

    /// (weight-decayed, not decayed) named parameters: the features' weights
    /// (prompt contexts, decoupling module) and the classifier's.
    fn parameters_by_role(&self) -> (Vec<Named>, Vec<Named>) {
        let mut decayed = vec![("prompt.ctx".to_string(), self.prompts.ctx.clone())];
        if let Some(sdm) = &self.sdm {
            decayed.extend(sdm.named_parameters().into_iter().map(|(n, t)| (format!("sdm.{n}"), t)));
        }
        let classifier =
            self.classifier.named_parameters().into_iter().map(|(n, t)| (format!("classifier.{n}"), t)).collect();
        (decayed, classifier)
    }

    /// The frozen image encoder's outputs, recorded on no tape: the dense
    /// tokens [B, 1 + N, D] (class token first).
    pub fn image_tokens(&self, images: &Tensor) -> Result<Tensor> {
        let _no_grad = no_grad();
        self.clip.vision.encode_dense(images)
    }

    /// Logits [B, C] from the image tokens of [`Self::image_tokens`].
    pub fn logits_from_tokens(&self, tokens: &Tensor) -> Result<Tensor> {
        let text = self.text_features()?;
        self.classify(&self.visual_features(tokens, &text)?, &text)
    }

    /// Probabilities [B, C] of images and, from the same pass, the
    /// decoupling module's attention [B, C, N] over the N image patches
    /// (each row sums to 1): what `explain` draws. An error for a model
    /// without the module (`--no-sdm`), which has no attention.
    pub fn probabilities_and_attention(&self, images: &Tensor) -> Result<(Tensor, Tensor)> {
        let Some(sdm) = &self.sdm else {
            bail!("the model has no semantic decoupling module (trained with --no-sdm), so no attention to show");
        };
        let patches = patch_tokens(&self.image_tokens(images)?)?;
        let text = self.text_features()?;
        let attention = sdm.attention(&patches, &text)?;
        let logits = self.classify(&attention.matmul(&patches)?, &text)?;
        Ok((logits.sigmoid()?, attention))
    }

    /// One text feature per category through the frozen text tower: [C, D].
    pub fn text_features(&self) -> Result<Tensor> {
        self.prompts.text_features(&self.clip.text)
    }

    /// One visual feature per category [B, C, D] from the image tokens and
    /// the text features: the semantic decoupling module's (one `forward`,
    /// which a backend may fuse), or the class token for every category
    /// without it (`--no-sdm`).
    pub fn visual_features(&self, tokens: &Tensor, text: &Tensor) -> Result<Tensor> {
        match &self.sdm {
            Some(sdm) => sdm.forward(&patch_tokens(tokens)?, text),
            None => {
                let [b, _, d] = token_dims(tokens)?;
                tokens.narrow(1, 0, 1)?.broadcast_to(&[b, self.num_classes(), d].into())
            }
        }
    }

    /// Logits [B, C] from the per-category visual and text features.
    pub fn classify(&self, visual: &Tensor, text: &Tensor) -> Result<Tensor> {
        self.classifier.forward(visual, text)
    }

    pub fn logits(&self, images: &Tensor) -> Result<Tensor> {
        self.logits_from_tokens(&self.image_tokens(images)?)
    }
}

/// The patch tokens [B, N, D] of image tokens [B, 1 + N, D] (class token first).
fn patch_tokens(tokens: &Tensor) -> Result<Tensor> {
    let [_, l, _] = token_dims(tokens)?;
    tokens.narrow(1, 1, l - 1)
}

/// [B, 1 + N, D] of image tokens, or an error naming their shape.
fn token_dims(tokens: &Tensor) -> Result<[usize; 3]> {
    let &[b, l, d] = tokens.dims() else { bail!("image tokens must be [B, 1 + N, D], got shape {}", tokens.shape()) };
    Ok([b, l, d])
}
