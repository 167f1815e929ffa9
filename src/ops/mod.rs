//! Differentiable ops on [`Tensor`], one family per file. Each op validates
//! shapes (errors name the shapes involved), calls one backend primitive and
//! records its backward, which is itself written with these ops (under
//! `no_grad`), so every backend gets every backward for free.

mod attention;
mod binary;
mod cast;
mod decoupling;
mod index;
mod layout;
mod loss;
mod matmul;
mod norm;
mod reduce;
mod resize;
mod softmax;
mod unary;

pub use norm::L2_EPS;

use crate::tensor::{DType, Tensor};
use anyhow::{bail, Result};

/// Fails unless every tensor is a float tensor of one dtype on one device.
fn check_float_operands(op: &str, tensors: &[&Tensor]) -> Result<()> {
    let first = tensors[0];
    for t in tensors {
        if !t.dtype().is_float() {
            bail!("{op}: expected float tensors, got {} of shape {}", t.dtype(), t.shape());
        }
        if t.dtype() != first.dtype() {
            bail!(
                "{op}: dtypes differ ({} of shape {} and {} of shape {})",
                first.dtype(),
                first.shape(),
                t.dtype(),
                t.shape()
            );
        }
        if t.device() != first.device() {
            bail!("{op}: tensors live on different devices ({} and {})", first.device(), t.device());
        }
    }
    Ok(())
}

fn check_ids(op: &str, ids: &Tensor) -> Result<()> {
    if ids.dtype() != DType::U32 {
        bail!("{op}: indices must be u32, got {} of shape {}", ids.dtype(), ids.shape());
    }
    Ok(())
}

/// `Some(f())` when the gradient is needed.
fn grad_if(needed: bool, f: impl FnOnce() -> Result<Tensor>) -> Result<Option<Tensor>> {
    needed.then(f).transpose()
}
