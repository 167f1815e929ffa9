//! The cosine classifier (docs/model.md §5): `logit[b,c] = kappa cos(f[b,c],
//! t_c) + beta_c` with a learnable scale `kappa = exp(log_kappa)` and a
//! per-category bias.

use crate::device::Device;
use crate::tensor::Tensor;
use crate::DType;
use anyhow::{ensure, Result};

/// kappa = exp(log_kappa) starts at 20.
const INITIAL_KAPPA: f32 = 20.0;
/// beta starts at -5, so first predictions are not saturated (before
/// [`CosineClassifier::set_prior_bias`], when the run uses it).
const INITIAL_BETA: f32 = -5.0;
/// A class prior is clamped to [PRIOR_EPS, 1 - PRIOR_EPS] before its log-odds
/// are taken, so a class with no known positive (or negative) gets a finite bias.
const PRIOR_EPS: f64 = 1e-3;

/// How a fresh training run starts β.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BiasInit {
    /// From the class priors of the known training labels
    /// ([`CosineClassifier::set_prior_bias`]).
    Prior,
    /// -5 for every class, as docs/model.md §5 first wrote it.
    Constant,
}

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

    /// Sets each β_c so that the mean logit of class c over `logits` [N, C]
    /// (computed with the current β) becomes the log-odds of `priors[c]`,
    /// the class's share of positives among its known training labels: the
    /// first predictions then match each class's base rate on average, so κ
    /// does not have to shrink to fit it while β, with its small gradient,
    /// cannot move (docs/model.md §5).
    pub fn set_prior_bias(&self, logits: &[f32], priors: &[f64]) -> Result<()> {
        let classes = priors.len();
        ensure!(
            classes == self.beta.elem_count() && !logits.is_empty() && logits.len().is_multiple_of(classes),
            "prior bias: {} logits for {classes} priors and {} classes",
            logits.len(),
            self.beta.elem_count()
        );
        let beta = self.beta.to_vec()?;
        let rows = (logits.len() / classes) as f64;
        let new_beta: Vec<f32> = (0..classes)
            .map(|c| {
                let mean_logit = logits.iter().skip(c).step_by(classes).map(|&x| x as f64).sum::<f64>() / rows;
                let prior = priors[c].clamp(PRIOR_EPS, 1.0 - PRIOR_EPS);
                (beta[c] as f64 + (prior / (1.0 - prior)).ln() - mean_logit) as f32
            })
            .collect();
        ensure!(new_beta.iter().all(|b| b.is_finite()), "prior bias: the logits are not finite");
        self.beta.copy_from(&Tensor::from_vec(new_beta, [classes], self.beta.device())?)
    }

    /// The trainable tensors with their names within the classifier. Both
    /// are scale and offset of the logits, which weight decay must not pull
    /// towards 0 (docs/model.md §6).
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("log_kappa".to_string(), self.log_kappa.clone()), ("beta".to_string(), self.beta.clone())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prior_bias_moves_each_class_mean_logit_to_its_prior_log_odds() {
        let classifier = CosineClassifier::new(2, &Device::Cpu).unwrap();
        // Two images' logits under the initial beta of -5.
        let logits = [-4.0, -6.0, -2.0, -5.0];
        let priors = [0.2, 0.0];
        classifier.set_prior_bias(&logits, &priors).unwrap();
        let beta = classifier.beta.to_vec().unwrap();
        let log_odds = |p: f64| (p / (1.0 - p)).ln();
        // Class 0: mean logit -3 becomes logit(0.2); class 1's prior is clamped to 1e-3.
        assert!((beta[0] as f64 - (-5.0 + log_odds(0.2) + 3.0)).abs() < 1e-5, "{beta:?}");
        assert!((beta[1] as f64 - (-5.0 + log_odds(PRIOR_EPS) + 5.5)).abs() < 1e-5, "{beta:?}");
        assert!(classifier.set_prior_bias(&logits[..3], &priors).is_err(), "3 logits for 2 classes");
    }
}
