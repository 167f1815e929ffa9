//! Model ops with kernels of their own (as candle's `CustomOp`). The core
//! trait [`super::BackendStorage`] keeps the general primitives; an op that
//! exists for one model (the decoupling scores, the losses, the bicubic
//! resize of positional embeddings) lives in one file of `src/ops/custom/`
//! with its CPU implementation, its CUDA launcher (its kernels are
//! `kernels/<file>.cu`) and the op that records its backward, so adding one
//! touches that file, its kernel and nothing in the backends.
//!
//! Both implementations compute in f32: inputs arrive widened (shared when
//! already f32) and output `i` is stored in the dtype of input `i`, which is
//! how a backward's gradients take their inputs' dtypes.

use super::cuda::CudaDevice;
use anyhow::Result;
use cudarc::driver::CudaSlice;

pub trait CustomOp {
    /// Names the op in errors.
    fn name(&self) -> &'static str;
    /// The op on host values, one slice per input.
    fn cpu(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>>;
    /// The op on `dev`: enqueues its kernels on the device's stream.
    fn cuda(&self, dev: &CudaDevice, inputs: &[&CudaSlice<f32>]) -> Result<Vec<CudaSlice<f32>>>;
}

/// Fails unless the op returned at most one output per input (output `i`
/// takes input `i`'s dtype).
pub(crate) fn check_outputs(op: &dyn CustomOp, inputs: usize, outputs: usize) -> Result<()> {
    if outputs > inputs {
        anyhow::bail!("{}: {outputs} outputs from {inputs} inputs (each output takes an input's dtype)", op.name());
    }
    Ok(())
}

/// The `N` inputs of `op`, or an error naming the op and the count.
pub fn exact_inputs<'a, T: ?Sized, const N: usize>(op: &dyn CustomOp, inputs: &[&'a T]) -> Result<[&'a T; N]> {
    inputs.try_into().map_err(|_| anyhow::anyhow!("{} takes {N} inputs, got {}", op.name(), inputs.len()))
}
