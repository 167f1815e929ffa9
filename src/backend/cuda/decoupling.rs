//! Semantic-decoupling scores (`kernels/decoupling.cu`): forward one warp
//! per score, backward without atomics (per-batch partials summed in order).

use super::device::{grid_for, int, launch, CudaDevice, BLOCK};
use crate::backend::DecouplingDims;
use anyhow::Result;
use cudarc::driver::CudaSlice;

/// Scores per block of the forward (one warp each).
const WARPS_PER_BLOCK: usize = BLOCK as usize / 32;

fn sizes(dims: &DecouplingDims) -> Result<[i32; 4]> {
    Ok([
        int(dims.batch, "batch")?,
        int(dims.classes, "classes")?,
        int(dims.positions, "positions")?,
        int(dims.width, "width")?,
    ])
}

/// Returns s [B, C, N].
pub fn scores(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    t: &CudaSlice<f32>,
    u: &CudaSlice<f32>,
    dims: &DecouplingDims,
) -> Result<CudaSlice<f32>> {
    let len = dims.batch * dims.classes * dims.positions;
    let mut s = dev.alloc::<f32>(len)?;
    if len == 0 {
        return Ok(s);
    }
    let [b, c, n, d] = sizes(dims)?;
    let kernel = dev.kernel("decoupling", "decoupling_forward")?;
    // SAFETY: x holds B N d f32, t C d, u d, s B C N (checked by
    // ops::decoupling); one warp per score writes it once.
    unsafe {
        launch!(kernel, grid_for(len.div_ceil(WARPS_PER_BLOCK) * BLOCK as usize, BLOCK); x, t, u, &mut s, &b, &c, &n, &d)
    }?;
    Ok(s)
}

/// Returns (dx [B, N, d], dt [C, d], du [d]).
pub fn scores_backward(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    t: &CudaSlice<f32>,
    u: &CudaSlice<f32>,
    grad: &CudaSlice<f32>,
    dims: &DecouplingDims,
) -> Result<(CudaSlice<f32>, CudaSlice<f32>, CudaSlice<f32>)> {
    let DecouplingDims { batch, classes, positions, width } = *dims;
    if batch * classes * positions * width == 0 {
        return Ok((
            dev.alloc_zeros::<f32>(batch * positions * width)?,
            dev.alloc_zeros::<f32>(classes * width)?,
            dev.alloc_zeros::<f32>(width)?,
        ));
    }
    let [b, c, n, d] = sizes(dims)?;
    let mut dx = dev.alloc::<f32>(batch * positions * width)?;
    let dx_kernel = dev.kernel("decoupling", "decoupling_backward_dx")?;
    // SAFETY: x and dx hold B N d f32, t C d, u d, grad B C N; a thread per
    // dx element.
    unsafe { launch!(dx_kernel, grid_for(dx.len(), BLOCK); x, t, u, grad, &mut dx, &b, &c, &n, &d) }?;

    let partial_len = batch * classes * width;
    let mut partial_dt = dev.alloc::<f32>(partial_len)?;
    let mut partial_du = dev.alloc::<f32>(partial_len)?;
    let partials = dev.kernel("decoupling", "decoupling_backward_partials")?;
    // SAFETY: both partial buffers hold B C d f32; a thread per (b, c, k).
    unsafe {
        launch!(partials, grid_for(partial_len, BLOCK); x, t, u, grad, &mut partial_dt, &mut partial_du, &b, &c, &n, &d)
    }?;

    let mut dt = dev.alloc::<f32>(classes * width)?;
    let reduce_dt = dev.kernel("decoupling", "decoupling_reduce_dt")?;
    // SAFETY: partial_dt holds B C d f32, dt C d; a thread per (c, k).
    unsafe { launch!(reduce_dt, grid_for(dt.len(), BLOCK); &partial_dt, &mut dt, &b, &c, &d) }?;
    let mut du = dev.alloc::<f32>(width)?;
    let reduce_du = dev.kernel("decoupling", "decoupling_reduce_du")?;
    // SAFETY: partial_du holds B C d f32, du d; a thread per k.
    unsafe { launch!(reduce_du, grid_for(width, BLOCK); &partial_du, &mut du, &b, &c, &d) }?;
    Ok((dx, dt, du))
}
