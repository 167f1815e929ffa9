//! Softmax over the last dimension.

use super::{check_float_operands, grads_like};
use crate::autograd;
use crate::tensor::Tensor;
use anyhow::Result;

impl Tensor {
    pub fn softmax(&self) -> Result<Tensor> {
        check_float_operands("softmax", &[self])?;
        let (_, cols) = self.shape().rows_cols()?;
        let out = Tensor::op_output(self.storage().softmax(cols)?, self.shape().clone(), &[self]);
        let y = out.detach();
        autograd::record(&out, &[self], move |g, _| {
            let dx = y.storage().softmax_backward(&g.storage(), cols)?;
            grads_like(vec![dx], &[&y])
        });
        Ok(out)
    }
}
