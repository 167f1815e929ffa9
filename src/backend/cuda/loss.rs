//! Losses: masked BCE with logits (`kernels/masked_bce.cu`) and CLIP's
//! symmetric contrastive loss (`kernels/contrastive_loss.cu`). Both reduce
//! in a fixed two-stage order, so the loss is bit-identical across runs.

use super::device::{grid_for, int, launch, rows_config, CudaDevice, BLOCK};
use anyhow::Result;
use cudarc::driver::{CudaSlice, LaunchConfig};

/// Most partial sums of the masked BCE forward (its header's G).
const BCE_MAX_PARTIALS: usize = 1024;
/// Grid cap of the masked BCE backward.
const BCE_MAX_BACKWARD_GRID: usize = 65535;

fn single_block() -> LaunchConfig {
    LaunchConfig { grid_dim: (1, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

fn bce_grid(n: usize, cap: usize) -> u32 {
    n.div_ceil(4).div_ceil(BLOCK as usize).clamp(1, cap) as u32
}

/// Returns (loss [1], count [1] of known labels).
pub fn masked_bce(
    dev: &CudaDevice,
    logits: &CudaSlice<f32>,
    labels: &CudaSlice<f32>,
) -> Result<(CudaSlice<f32>, CudaSlice<u32>)> {
    let n = int(logits.len(), "logits")?;
    let partials = bce_grid(logits.len(), BCE_MAX_PARTIALS);
    let mut partial_loss = dev.alloc::<f32>(partials as usize)?;
    let mut partial_count = dev.alloc::<u32>(partials as usize)?;
    let forward = dev.kernel("masked_bce", "masked_bce_forward_partials")?;
    let cfg = LaunchConfig { grid_dim: (partials, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: logits and labels hold n f32 (same shape, checked by the op);
    // each of the `partials` blocks writes its own partial_* slot.
    unsafe { launch!(forward, cfg; logits, labels, &mut partial_loss, &mut partial_count, &n) }?;
    let mut loss = dev.alloc::<f32>(1)?;
    let mut count = dev.alloc::<u32>(1)?;
    let num_partials = partials as i32;
    let finalize = dev.kernel("masked_bce", "masked_bce_forward_finalize")?;
    // SAFETY: the partial buffers hold num_partials values; loss and count one.
    unsafe { launch!(finalize, single_block(); &partial_loss, &partial_count, &num_partials, &mut loss, &mut count) }?;
    Ok((loss, count))
}

/// d loss / d logits scaled by the one-element `grad` (a device scalar).
pub fn masked_bce_backward(
    dev: &CudaDevice,
    logits: &CudaSlice<f32>,
    labels: &CudaSlice<f32>,
    grad: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    // The known-label count comes from the forward's reduction, recomputed
    // here (cheap next to the model) so the backward needs no saved state.
    let (_, count) = masked_bce(dev, logits, labels)?;
    let mut dlogits = dev.alloc::<f32>(logits.len())?;
    if logits.is_empty() {
        return Ok(dlogits);
    }
    let n = int(logits.len(), "logits")?;
    let backward = dev.kernel("masked_bce", "masked_bce_backward")?;
    let cfg = LaunchConfig {
        grid_dim: (bce_grid(logits.len(), BCE_MAX_BACKWARD_GRID), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: logits, labels and dlogits hold n f32, grad and count one
    // element each; grid-stride over n.
    unsafe { launch!(backward, cfg; logits, labels, grad, &count, &mut dlogits, &n) }?;
    Ok(dlogits)
}

/// Row and column log-sum-exps of the [n, n] logits.
fn line_lses(dev: &CudaDevice, logits: &CudaSlice<f32>, n: usize) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
    let mut row_lse = dev.alloc::<f32>(n)?;
    let mut col_lse = dev.alloc::<f32>(n)?;
    let n_i = int(n, "n")?;
    let kernel = dev.kernel("contrastive_loss", "contrastive_lse")?;
    // SAFETY: logits hold n * n f32 (checked by the op), row_lse and col_lse
    // n; one block per line (2n lines).
    unsafe { launch!(kernel, rows_config(2 * n, BLOCK, 0); logits, &mut row_lse, &mut col_lse, &n_i) }?;
    Ok((row_lse, col_lse))
}

pub fn contrastive(dev: &CudaDevice, logits: &CudaSlice<f32>, n: usize) -> Result<CudaSlice<f32>> {
    if n == 0 {
        return dev.alloc_zeros::<f32>(1);
    }
    let (row_lse, col_lse) = line_lses(dev, logits, n)?;
    let mut loss = dev.alloc::<f32>(1)?;
    let n_i = int(n, "n")?;
    let finalize = dev.kernel("contrastive_loss", "contrastive_forward_finalize")?;
    // SAFETY: logits n * n f32, the lse buffers n, loss one; a single block.
    unsafe { launch!(finalize, single_block(); logits, &row_lse, &col_lse, &mut loss, &n_i) }?;
    Ok(loss)
}

pub fn contrastive_backward(
    dev: &CudaDevice,
    logits: &CudaSlice<f32>,
    grad: &CudaSlice<f32>,
    n: usize,
) -> Result<CudaSlice<f32>> {
    let mut dlogits = dev.alloc::<f32>(n * n)?;
    if n == 0 {
        return Ok(dlogits);
    }
    let (row_lse, col_lse) = line_lses(dev, logits, n)?;
    let n_i = int(n, "n")?;
    let kernel = dev.kernel("contrastive_loss", "contrastive_backward")?;
    // SAFETY: logits and dlogits n * n f32, lse buffers n, grad one element;
    // a thread per element, grid-stride.
    unsafe { launch!(kernel, grid_for(n * n, BLOCK); logits, &row_lse, &col_lse, grad, &mut dlogits, &n_i) }?;
    Ok(dlogits)
}
