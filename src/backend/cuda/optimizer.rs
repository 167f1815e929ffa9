//! Fused optimizer updates, in place on f32 buffers
//! (`kernels/optimizer.cu`): one launch per [`MAX_UPDATE_TENSORS`] tensors,
//! their buffers listed in a table passed by value.

use super::common::{int, launch, max_grid, BLOCK};
use super::device::{CudaDevice, Kernel};
use crate::backend::{AdamWStep, SgdStep};
use anyhow::{bail, Result};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig};

/// Tensors per launch: `MAX_UPDATE_TENSORS` of `kernels/optimizer.cu`, which
/// keeps the table (48 bytes a tensor) within the 4 KiB of kernel parameters.
pub const MAX_UPDATE_TENSORS: usize = 48;
/// Elements per block and chunk: `UPDATE_CHUNK` of `kernels/optimizer.cu`.
const UPDATE_CHUNK: usize = 4096;

/// The f32 buffers of one tensor's update: SGD keeps one state buffer (the
/// momentum), AdamW two (the moments).
pub struct UpdateBuffers<'a> {
    pub param: &'a mut CudaSlice<f32>,
    pub grad: &'a CudaSlice<f32>,
    pub state: Vec<&'a mut CudaSlice<f32>>,
    pub weight_decay: f32,
}

/// `struct UpdateTensor` of `kernels/optimizer.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct UpdateTensor {
    p: u64,
    grad: u64,
    m: u64,
    v: u64,
    offset: i64,
    n: i32,
    weight_decay: f32,
}

/// `struct UpdateTable` of `kernels/optimizer.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct UpdateTable {
    t: [UpdateTensor; MAX_UPDATE_TENSORS],
    count: i32,
}

// SAFETY: UpdateTable is #[repr(C)] plain data (integers, floats and device
// addresses) with the layout of the CUDA struct, passed by value.
unsafe impl DeviceRepr for UpdateTable {}

/// Where each of tensors of `lens` elements starts in the packed index
/// space (a multiple of 4, so 4-element groups never straddle two tensors
/// and stay 16-byte aligned), and the size of that space.
fn pack(lens: &[usize]) -> (Vec<usize>, usize) {
    let mut end = 0;
    let offsets = lens
        .iter()
        .map(|&n| {
            let start = end;
            end += n.next_multiple_of(4);
            start
        })
        .collect();
    (offsets, end)
}

/// Checks that every tensor's gradient and state match its length, then
/// calls `launch_batch` with the table, the packed size and the grid of
/// each batch of up to [`MAX_UPDATE_TENSORS`] tensors.
fn for_each_batch(
    kernel: &Kernel,
    tensors: &mut [UpdateBuffers<'_>],
    what: &str,
    mut launch_batch: impl FnMut(&UpdateTable, i64, LaunchConfig) -> Result<()>,
) -> Result<()> {
    // Every tensor is checked before the first launch, so an error leaves
    // no tensor updated.
    for t in tensors.iter() {
        let n = t.param.len();
        if t.grad.len() != n || t.state.iter().any(|s| s.len() != n) {
            let state: Vec<usize> = t.state.iter().map(|s| s.len()).collect();
            bail!("{what}: a parameter of {n} elements with a gradient of {} and state of {state:?}", t.grad.len());
        }
        int(n, "parameter elements")?;
    }
    for batch in tensors.chunks_mut(MAX_UPDATE_TENSORS) {
        let (offsets, total) = pack(&batch.iter().map(|t| t.param.len()).collect::<Vec<_>>());
        if total == 0 {
            continue;
        }
        let mut table = UpdateTable { t: [UpdateTensor::default(); MAX_UPDATE_TENSORS], count: batch.len() as i32 };
        // The address guards record nothing (event tracking is off: one
        // stream); they are kept until the launch is queued all the same.
        let mut guards = Vec::new();
        for ((entry, t), &offset) in table.t.iter_mut().zip(batch.iter_mut()).zip(&offsets) {
            entry.offset = offset as i64;
            entry.n = t.param.len() as i32; // checked above
            entry.weight_decay = t.weight_decay;
            let (p, guard) = t.param.device_ptr_mut(&kernel.stream);
            entry.p = p;
            guards.push(guard);
            let (grad, guard) = t.grad.device_ptr(&kernel.stream);
            entry.grad = grad;
            guards.push(guard);
            let mut state = t.state.iter_mut().map(|s| s.device_ptr_mut(&kernel.stream));
            if let Some((m, guard)) = state.next() {
                entry.m = m;
                guards.push(guard);
            }
            if let Some((v, guard)) = state.next() {
                entry.v = v;
                guards.push(guard);
            }
        }
        let blocks = total.div_ceil(UPDATE_CHUNK).clamp(1, max_grid()) as u32;
        let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
        launch_batch(&table, total as i64, cfg)?;
    }
    Ok(())
}

/// PyTorch's SGD with momentum and (coupled) weight decay, on every tensor.
pub fn sgd(dev: &CudaDevice, tensors: &mut [UpdateBuffers<'_>], step: &SgdStep) -> Result<()> {
    if tensors.iter().any(|t| t.state.len() != 1) {
        bail!("sgd_step: every tensor needs exactly one momentum buffer");
    }
    let kernel = dev.kernel("optimizer", "sgd_step")?;
    for_each_batch(&kernel, tensors, "sgd_step", |table, total, cfg| {
        // SAFETY: every table entry holds the addresses of a parameter, its
        // gradient and momentum of `n` f32 each (checked in for_each_batch),
        // distinct uniquely owned buffers of this stream (the caller copied
        // shared ones); the packed ranges [offset, offset + n) do not
        // overlap and end before `total`, so each element is updated by one
        // thread.
        unsafe { launch!(kernel, cfg; table, &total, &step.lr, &step.momentum) }
    })
}

/// PyTorch's AdamW (decoupled weight decay, bias-corrected moments), on
/// every tensor.
pub fn adamw(dev: &CudaDevice, tensors: &mut [UpdateBuffers<'_>], step: &AdamWStep) -> Result<()> {
    if tensors.iter().any(|t| t.state.len() != 2) {
        bail!("adamw_step: every tensor needs exactly two moment buffers");
    }
    let bias_correction1 = 1.0 - step.beta1.powi(step.step as i32);
    let bias_correction2 = 1.0 - step.beta2.powi(step.step as i32);
    let kernel = dev.kernel("optimizer", "adamw_step")?;
    for_each_batch(&kernel, tensors, "adamw_step", |table, total, cfg| {
        // SAFETY: as for sgd_step, with both moment buffers of `n` f32 in
        // each entry.
        unsafe {
            launch!(kernel, cfg; table, &total, &step.lr, &step.beta1, &step.beta2, &step.eps, &bias_correction1, &bias_correction2)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_are_packed_at_multiples_of_four() {
        let lens = [5, 4, 1, 0, 4097, 3];
        let (offsets, total) = pack(&lens);
        assert_eq!(offsets, [0, 8, 12, 16, 16, 4116]);
        assert_eq!(total, 4120);
        for ((&start, &n), next) in offsets.iter().zip(&lens).zip(offsets.iter().skip(1).chain([&total])) {
            assert_eq!(start % 4, 0);
            assert!(start + n <= *next, "tensor at {start} of {n} elements overlaps the next at {next}");
        }
    }

    #[test]
    fn the_table_fits_the_kernel_parameter_space() {
        // 4 KiB of kernel parameters, less the scalars after the table.
        assert_eq!(size_of::<UpdateTensor>(), 48);
        assert!(size_of::<UpdateTable>() + 8 + 6 * 4 <= 4096, "{} bytes", size_of::<UpdateTable>());
    }
}
