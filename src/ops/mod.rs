//! Differentiable ops on [`Tensor`], one family per file. Each op validates
//! shapes (errors name the shapes involved), calls one backend primitive and
//! records its backward, written with these ops (under `no_grad`) or with the
//! primitive's own backward. Model ops with kernels of their own are in
//! [`custom`], one file each with their CPU and CUDA implementations.

mod attention;
mod binary;
mod cast;
pub mod custom;
mod index;
mod layout;
mod matmul;
mod norm;
mod reduce;
mod softmax;
mod unary;

pub use norm::L2_EPS;

use crate::backend::Storage;
use crate::tensor::Tensor;
use crate::DType;
use anyhow::{bail, Result};

/// Fails unless every tensor is a float tensor of one dtype on one device.
pub(crate) fn check_float_operands(op: &str, tensors: &[&Tensor]) -> Result<()> {
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

/// Backward results as gradients: each buffer a tensor of its input's shape
/// and device.
pub(crate) fn grads_like(grads: Vec<Storage>, inputs: &[&Tensor]) -> Result<Vec<Option<Tensor>>> {
    if grads.len() != inputs.len() {
        bail!("a backward returned {} gradients for {} inputs", grads.len(), inputs.len());
    }
    grads
        .into_iter()
        .zip(inputs)
        .map(|(g, t)| Tensor::from_storage(g, t.shape().clone(), t.device().clone()).map(Some))
        .collect()
}

/// The one output of a custom op.
pub(crate) fn single(outputs: Vec<Storage>) -> Result<Storage> {
    let count = outputs.len();
    let [out] = outputs.try_into().map_err(|_| anyhow::anyhow!("expected one output, got {count}"))?;
    Ok(out)
}
