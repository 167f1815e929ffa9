//! dtype conversion; the gradient is converted back.

use crate::autograd;
use crate::tensor::Tensor;
use crate::DType;
use anyhow::{bail, Result};

impl Tensor {
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        if !dtype.is_float() && self.requires_grad() {
            bail!("to_dtype: cannot cast a tensor that requires grad (shape {}) to {dtype}", self.shape());
        }
        let storage = self.storage().to_dtype(dtype)?;
        let out = Tensor::op_output(storage, self.shape().clone(), &[self]);
        let from = self.dtype();
        autograd::record(&out, &[self], move |g, _| Ok(vec![Some(g.to_dtype(from)?)]));
        Ok(out)
    }
}
