//! Masked BCE with logits (DESIGN.md §2.4).

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
