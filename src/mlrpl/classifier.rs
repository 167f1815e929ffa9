//! The cosine classifier (docs/model.md §5): `logit[b,c] = kappa cos(f[b,c],
//! t_c) + beta_c` with a learnable scale `kappa = exp(log_kappa)` and a
//! per-category bias.

use crate::device::Device;
use crate::tensor::Tensor;
use crate::DType;
use anyhow::Result;

/// kappa = exp(log_kappa) starts at 20.
const INITIAL_KAPPA: f32 = 20.0;
/// beta starts at -5, so first predictions are not saturated.
const INITIAL_BETA: f32 = -5.0;

#[derive(Clone, Debug)]
pub struct CosineClassifier {
    /// Scalar log of the cosine scale kappa.
    pub log_kappa: Tensor,
    /// Per-category bias [C].
    pub beta: Tensor,
}

impl CosineClassifier {
    pub fn new(classes: usize, device: &Device) -> Result<Self> {
        let log_kappa = Tensor::full(INITIAL_KAPPA.ln(), [1], DType::F32, device)?.into_parameter()?;
        let beta = Tensor::full(INITIAL_BETA, [classes], DType::F32, device)?.into_parameter()?;
        Ok(CosineClassifier { log_kappa, beta })
    }

    /// Logits [B, C] from per-category visual features [B, C, D] and the
    /// categories' text features [C, D].
    pub fn forward(&self, visual: &Tensor, text: &Tensor) -> Result<Tensor> {
        visual.cosine_similarity(text)?.mul(&self.log_kappa.exp()?)?.add(&self.beta)
    }

    /// The trainable tensors with their names within the classifier. Both
    /// are scale and offset of the logits, which weight decay must not pull
    /// towards 0 (docs/model.md §6).
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("log_kappa".to_string(), self.log_kappa.clone()), ("beta".to_string(), self.beta.clone())]
    }
}
