//! Layer normalisation, L2 normalisation and cosine similarity over the last
//! dimension.

use super::{check_float_operands, grads_like};
use crate::autograd;
use crate::tensor::Tensor;
use anyhow::{bail, Result};

/// The clamp on the norm in `l2_normalize` (as `F.normalize`'s eps).
pub const L2_EPS: f32 = 1e-12;

impl Tensor {
    /// `(x - mean) / sqrt(var + eps) * gamma + beta` over the last dim
    /// (biased variance, as `nn.LayerNorm`).
    pub fn layer_norm(&self, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
        check_float_operands("layer_norm", &[self, gamma, beta])?;
        let (_, cols) = self.shape().rows_cols()?;
        if gamma.dims() != [cols] || beta.dims() != [cols] {
            bail!(
                "layer_norm: gamma {} and beta {} must both be [{cols}] for input shape {}",
                gamma.shape(),
                beta.shape(),
                self.shape()
            );
        }
        let (y, mean, rstd) = self.storage().layernorm(&gamma.storage(), &beta.storage(), cols, eps)?;
        let out = Tensor::op_output(y, self.shape().clone(), &[self, gamma, beta]);
        let (x, gamma_saved, beta_saved) = (self.clone(), gamma.clone(), beta.clone());
        autograd::record(&out, &[self, gamma, beta], move |g, _| {
            let (dx, dgamma, dbeta) =
                x.storage().layernorm_backward(&gamma_saved.storage(), &mean, &rstd, &g.storage(), cols)?;
            grads_like(vec![dx, dgamma, dbeta], &[&x, &gamma_saved, &beta_saved])
        });
        Ok(out)
    }

    /// `x / max(||x||, 1e-12)` over the last dim.
    pub fn l2_normalize(&self) -> Result<Tensor> {
        check_float_operands("l2_normalize", &[self])?;
        let (_, cols) = self.shape().rows_cols()?;
        let (y, norm) = self.storage().l2_normalize(cols, L2_EPS)?;
        let out = Tensor::op_output(y, self.shape().clone(), &[self]);
        let y = out.detach();
        autograd::record(&out, &[self], move |g, _| {
            let dx = y.storage().l2_normalize_backward(&norm, &g.storage(), cols)?;
            grads_like(vec![dx], &[&y])
        });
        Ok(out)
    }

    /// Cosine similarity along the last dim, broadcasting the other dims:
    /// [..., d] x [..., d] -> [...].
    pub fn cosine_similarity(&self, other: &Tensor) -> Result<Tensor> {
        if self.dims().last() != other.dims().last() {
            bail!("cosine_similarity: last dims of shapes {} and {} differ", self.shape(), other.shape());
        }
        self.l2_normalize()?.mul(&other.l2_normalize()?)?.sum(&[-1], false)
    }
}
