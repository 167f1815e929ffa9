//! The semantic decoupling module (docs/model.md §4): each category's text
//! feature decides where to look in the patch feature map, giving one
//! visual feature per category.

use super::uniform_parameter;
use crate::device::Device;
use crate::rng::Rng;
use crate::tensor::Tensor;
use anyhow::Result;

#[derive(Clone, Debug)]
pub struct SemanticDecoupling {
    /// fc1: D -> d, no bias ([d, D], PyTorch layout).
    pub w1: Tensor,
    /// fc2: D -> d, no bias.
    pub w2: Tensor,
    /// fc3: d -> d with bias b3.
    pub w3: Tensor,
    pub b3: Tensor,
    /// fc4: d -> 1 with bias b4 ([1, d] and [1]).
    pub w4: Tensor,
    pub b4: Tensor,
}

impl SemanticDecoupling {
    /// `nn.Linear`-style initialisation for embedding width `embed` and
    /// decoupling width `width`.
    pub fn new(embed: usize, width: usize, rng: &mut Rng, device: &Device) -> Result<Self> {
        Ok(SemanticDecoupling {
            w1: uniform_parameter(&[width, embed], embed, rng, device)?,
            w2: uniform_parameter(&[width, embed], embed, rng, device)?,
            w3: uniform_parameter(&[width, width], width, rng, device)?,
            b3: uniform_parameter(&[width], width, rng, device)?,
            w4: uniform_parameter(&[1, width], width, rng, device)?,
            b4: uniform_parameter(&[1], width, rng, device)?,
        })
    }

    /// The parameters under PyTorch-style names (fc1..fc4).
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        [
            ("fc1.weight", &self.w1),
            ("fc2.weight", &self.w2),
            ("fc3.weight", &self.w3),
            ("fc3.bias", &self.b3),
            ("fc4.weight", &self.w4),
            ("fc4.bias", &self.b4),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect()
    }

    pub fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters().into_iter().map(|(_, t)| t).collect()
    }

    /// The collapsed score terms of patch features X [B, N, D] and text
    /// features T [C, D]: `s = fc4(fc3(tanh(fc1(X) * fc2(T))))` is
    /// `u . tanh(x * t) + shift` with x = fc1(X), t = fc2(T), u = W3^T w4 and
    /// shift = w4 . b3 + b4, so the [B, C, N, d] tensor z is never built; the
    /// parameters stay as written. Returns (x, t, u, shift).
    fn score_terms(&self, patches: &Tensor, text: &Tensor) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let width = self.w3.dims()[0];
        let x = patches.linear(&self.w1, None)?;
        let t = text.linear(&self.w2, None)?;
        let u = self.w4.matmul(&self.w3)?.reshape([width])?;
        let shift = self.w4.matmul(&self.b3.reshape([width, 1])?)?.reshape([1])?.add(&self.b4)?;
        Ok((x, t, u, shift))
    }

    /// Where each category looks: attention [B, C, N], each row the softmax
    /// of the scores over the N positions (for pictures: `explain`).
    pub fn attention(&self, patches: &Tensor, text: &Tensor) -> Result<Tensor> {
        let (x, t, u, shift) = self.score_terms(patches, text)?;
        x.decoupling_scores(&t, &u)?.add(&shift)?.softmax()
    }

    /// One visual feature per category [B, C, D]: the [`Self::attention`]-
    /// weighted sum of the patch features X [B, N, D], by one fused op
    /// (`Tensor::decoupling_attention`: scores, online softmax and weighted
    /// sum); the constant shift cancels in the softmax (its parameters get
    /// their exact zero gradient).
    pub fn forward(&self, patches: &Tensor, text: &Tensor) -> Result<Tensor> {
        let (x, t, u, shift) = self.score_terms(patches, text)?;
        x.decoupling_attention(&t, &u, &shift, patches)
    }
}
