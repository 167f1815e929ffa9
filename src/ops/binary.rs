//! Broadcasting add, sub, mul, div.

use super::{check_float_operands, grad_if};
use crate::autograd;
use crate::backend::BinaryOp;
use crate::tensor::Tensor;
use anyhow::{Context, Result};

impl Tensor {
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(self, rhs, BinaryOp::Add)
    }

    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(self, rhs, BinaryOp::Sub)
    }

    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(self, rhs, BinaryOp::Mul)
    }

    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(self, rhs, BinaryOp::Div)
    }
}

fn binary(lhs: &Tensor, rhs: &Tensor, op: BinaryOp) -> Result<Tensor> {
    let name = format!("{op:?}").to_lowercase();
    check_float_operands(&name, &[lhs, rhs])?;
    let out_shape = lhs.shape().broadcast(rhs.shape()).with_context(|| name.clone())?;
    let storage = lhs.storage().binary(&rhs.storage(), op, lhs.shape(), rhs.shape(), &out_shape)?;
    let out = Tensor::op_output(storage, out_shape, &[lhs, rhs]);
    let (a, b) = (lhs.clone(), rhs.clone());
    autograd::record(&out, &[lhs, rhs], move |g, needs| {
        let da = grad_if(needs[0], || {
            match op {
                BinaryOp::Add | BinaryOp::Sub => g.clone(),
                BinaryOp::Mul => g.mul(&b)?,
                BinaryOp::Div => g.div(&b)?,
            }
            .sum_to(a.shape())
        })?;
        let db = grad_if(needs[1], || {
            match op {
                BinaryOp::Add => g.clone(),
                BinaryOp::Sub => g.neg()?,
                BinaryOp::Mul => g.mul(&a)?,
                BinaryOp::Div => g.mul(&a)?.div(&b.mul(&b)?)?.neg()?,
            }
            .sum_to(b.shape())
        })?;
        Ok(vec![da, db])
    });
    Ok(out)
}
