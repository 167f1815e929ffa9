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
//! how a backward's gradients take their inputs' dtypes. An op whose kernels
//! also have bf16 instances may read and write its buffers as stored
//! instead ([`CustomOp::cuda_stored`]): same rule, output `i` in input `i`'s
//! dtype, rounded once from the f32 the kernel computes, as the CPU
//! reference rounds it.

use super::cuda::CudaDevice;
use anyhow::Result;
use cudarc::driver::CudaSlice;

/// A CUDA input as stored: f32, or bf16 as its 16-bit patterns.
pub enum StoredInput<'a> {
    F32(&'a CudaSlice<f32>),
    Bf16(&'a CudaSlice<u16>),
}

/// A CUDA output as stored; its dtype must be its input's.
pub enum StoredOutput {
    F32(CudaSlice<f32>),
    Bf16(CudaSlice<u16>),
}

pub trait CustomOp {
    /// Names the op in errors.
    fn name(&self) -> &'static str;
    /// The op on host values, one slice per input.
    fn cpu(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>>;
    /// The op on `dev`: enqueues its kernels on the device's stream.
    fn cuda(&self, dev: &CudaDevice, inputs: &[&CudaSlice<f32>]) -> Result<Vec<CudaSlice<f32>>>;
    /// The op on `dev` with every input as stored (called when each is f32
    /// or bf16): `None` leaves it to [`CustomOp::cuda`] on widened inputs,
    /// which is all an op without bf16 kernel instances needs.
    fn cuda_stored(&self, _dev: &CudaDevice, _inputs: &[StoredInput<'_>]) -> Result<Option<Vec<StoredOutput>>> {
        Ok(None)
    }
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
