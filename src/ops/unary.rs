//! Elementwise maps: neg, exp, log, sqrt, tanh, sigmoid, QuickGELU, affine,
//! clamp.

use super::{check_float_operands, grads_like};
use crate::autograd;
use crate::backend::UnaryOp;
use crate::tensor::Tensor;
use anyhow::Result;

impl Tensor {
    pub fn neg(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Neg)
    }

    pub fn exp(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Exp)
    }

    pub fn log(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Log)
    }

    pub fn sqrt(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Sqrt)
    }

    pub fn tanh(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Tanh)
    }

    pub fn sigmoid(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Sigmoid)
    }

    /// `x * sigmoid(1.702 x)`, the activation of OpenAI's CLIP.
    pub fn quick_gelu(&self) -> Result<Tensor> {
        unary(self, UnaryOp::QuickGelu)
    }

    /// `scale * x + shift`.
    pub fn affine(&self, scale: f32, shift: f32) -> Result<Tensor> {
        unary(self, UnaryOp::Affine { scale, shift })
    }

    pub fn scale(&self, scale: f32) -> Result<Tensor> {
        self.affine(scale, 0.0)
    }

    /// Each value limited to `[min, max]`; the gradient passes inside the
    /// range (ends included, as torch's `clamp`) and is 0 outside.
    pub fn clamp(&self, min: f32, max: f32) -> Result<Tensor> {
        if min.is_nan() || max.is_nan() || min > max {
            anyhow::bail!("clamp: the range [{min}, {max}] is empty");
        }
        unary(self, UnaryOp::Clamp { min, max })
    }
}

fn unary(x: &Tensor, op: UnaryOp) -> Result<Tensor> {
    check_float_operands(&format!("{op:?}"), &[x])?;
    let storage = x.storage().unary(op)?;
    let out = Tensor::op_output(storage, x.shape().clone(), &[x]);
    let (input, output) = (x.clone(), out.detach());
    autograd::record(&out, &[x], move |g, _| {
        let dx = input.storage().unary_backward(&output.storage(), &g.storage(), op)?;
        grads_like(vec![dx], &[&input])
    });
    Ok(out)
}
