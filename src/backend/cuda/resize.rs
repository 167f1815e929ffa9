//! Bicubic resize of 2-D grids (`kernels/bicubic.cu`), PyTorch's
//! `align_corners=False` convention; forward only.

use super::device::{grid_for, int, launch, CudaDevice, BLOCK};
use anyhow::Result;
use cudarc::driver::CudaSlice;

pub fn bicubic(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    channels: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
) -> Result<CudaSlice<f32>> {
    let len = channels * out_h * out_w;
    let mut out = dev.alloc::<f32>(len)?;
    if len == 0 || h * w == 0 {
        return Ok(out);
    }
    let sizes = [int(channels, "channels")?, int(h, "h")?, int(w, "w")?, int(out_h, "out_h")?, int(out_w, "out_w")?];
    let kernel = dev.kernel("bicubic", "bicubic_resize")?;
    // SAFETY: x holds channels * h * w f32 (checked by the op), out channels
    // * out_h * out_w; source taps are clamped into [0, h) x [0, w).
    unsafe {
        launch!(kernel, grid_for(len, BLOCK); x, &mut out, &sizes[0], &sizes[1], &sizes[2], &sizes[3], &sizes[4])
    }?;
    Ok(out)
}
