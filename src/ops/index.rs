//! Row gathers (embedding lookup, EOT pooling) and their scatter-add adjoint.

use super::{check_float_operands, check_ids};
use crate::autograd;
use crate::tensor::Tensor;
use crate::Shape;
use anyhow::{bail, Result};

impl Tensor {
    /// Rows of a [rows, cols] table at `ids` (u32, any shape): the output has
    /// shape `ids.shape + [cols]`. The table's gradient sums the rows of the
    /// output gradient at each id (repeated ids accumulate).
    pub fn index_select(&self, ids: &Tensor) -> Result<Tensor> {
        check_float_operands("index_select", &[self])?;
        check_ids("index_select", ids)?;
        let &[rows, cols] = self.dims() else {
            bail!("index_select: the table must be 2-D [rows, cols], got shape {}", self.shape());
        };
        let storage = self.storage().index_select(&ids.storage(), rows, cols)?;
        let mut dims = ids.dims().to_vec();
        dims.push(cols);
        let out = Tensor::op_output(storage, Shape::new(dims), &[self]);
        let (ids, table_shape) = (ids.clone(), self.shape().clone());
        autograd::record(&out, &[self], move |g, _| {
            let dtable = g.storage().index_add(&ids.storage(), rows, cols)?;
            Ok(vec![Some(Tensor::from_storage(dtable, table_shape, g.device().clone())?)])
        });
        Ok(out)
    }
}
