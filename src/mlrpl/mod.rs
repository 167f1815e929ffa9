//! The MLR-PL model of docs/model.md: a frozen CLIP, category-specific
//! learnable prompts, the semantic decoupling module and a cosine
//! classifier trained with the masked BCE.

mod classifier;
mod decoupling;
mod model;
mod prompt;

pub use classifier::{BiasInit, CosineClassifier};
pub use decoupling::SemanticDecoupling;
pub use model::{MlrplConfig, MlrplModel};
pub use prompt::{PromptConfig, PromptLearner};

use crate::device::Device;
use crate::rng::Rng;
use crate::tensor::Tensor;
use anyhow::Result;

/// A trainable tensor drawn from U(-bound, bound), `nn.Linear`'s default
/// initialisation with bound = 1 / sqrt(fan_in).
fn uniform_parameter(dims: &[usize], fan_in: usize, rng: &mut Rng, device: &Device) -> Result<Tensor> {
    let bound = 1.0 / (fan_in as f32).sqrt();
    Tensor::rand_uniform(dims.to_vec(), -bound, bound, rng, device)?.into_parameter()
}
