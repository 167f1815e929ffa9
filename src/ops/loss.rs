//! Losses: masked BCE with logits (DESIGN.md §2.4) and CLIP's symmetric
//! contrastive loss (`pretrain`).

use super::check_float_operands;
use crate::autograd;
use crate::tensor::{Shape, Tensor};
use anyhow::{bail, Result};

impl Tensor {
    /// Mean binary cross-entropy of these logits over the entries whose
    /// label is +1 or -1; label 0 (unknown) entries are ignored. Returns a
    /// scalar; 0 with a zero gradient when no label is known (never NaN).
    pub fn masked_bce_with_logits(&self, labels: &Tensor) -> Result<Tensor> {
        check_float_operands("masked_bce_with_logits", &[self])?;
        if labels.shape() != self.shape() {
            bail!("masked_bce_with_logits: logits shape {} and labels shape {} differ", self.shape(), labels.shape());
        }
        if labels.requires_grad() {
            bail!("masked_bce_with_logits: labels must not require grad");
        }
        let labels = labels.to_dtype(self.dtype())?;
        let loss = self.storage().masked_bce(&labels.storage())?;
        let out = Tensor::op_output(loss, Shape::scalar(), &[self]);
        let logits = self.clone();
        autograd::record(&out, &[self], move |g, _| {
            let d = logits.storage().masked_bce_backward(&labels.storage(), &g.storage())?;
            Ok(vec![Some(Tensor::from_storage(d, logits.shape().clone(), logits.device().clone())?)])
        });
        Ok(out)
    }
}

impl Tensor {
    /// CLIP's symmetric contrastive loss of a square logit matrix [n, n]
    /// (row i: image i against every text; the matching pairs on the
    /// diagonal): the mean of the image-to-text and text-to-image
    /// cross-entropies. Returns a scalar.
    pub fn contrastive_loss(&self) -> Result<Tensor> {
        check_float_operands("contrastive_loss", &[self])?;
        let &[n, m] = self.dims() else { bail!("contrastive_loss: logits must be [n, n], got shape {}", self.shape()) };
        if n != m || n == 0 {
            bail!("contrastive_loss: logits must be a non-empty square matrix, got shape {}", self.shape());
        }
        let loss = self.storage().contrastive_loss(n)?;
        let out = Tensor::op_output(loss, Shape::scalar(), &[self]);
        let logits = self.clone();
        autograd::record(&out, &[self], move |g, _| {
            let d = logits.storage().contrastive_loss_backward(&g.storage(), n)?;
            Ok(vec![Some(Tensor::from_storage(d, logits.shape().clone(), logits.device().clone())?)])
        });
        Ok(out)
    }
}
