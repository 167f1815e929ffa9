//! Row L2 normalisation forward and backward (`kernels/l2_normalize.cu`):
//! one warp per row, f32 sums in a fixed order.

use super::common::{int, launch, rows_of, warp_per_row};
use super::device::CudaDevice;
use anyhow::Result;
use cudarc::driver::CudaSlice;

/// Returns (y, norms).
pub fn forward(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    cols: usize,
    eps: f32,
) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
    let rows = rows_of(x, cols);
    let mut y = dev.alloc::<f32>(x.len())?;
    let mut norms = dev.alloc::<f32>(rows)?;
    if rows == 0 {
        return Ok((y, norms));
    }
    let (rows_i, cols_i) = (int(rows, "rows")?, int(cols, "cols")?);
    let kernel = dev.kernel("l2_normalize", "l2_normalize_forward")?;
    // SAFETY: x and y hold rows * cols f32, norms rows; one warp per row.
    unsafe { launch!(kernel, warp_per_row(rows); x, &mut y, &mut norms, &rows_i, &cols_i, &eps) }?;
    Ok((y, norms))
}

pub fn backward(
    dev: &CudaDevice,
    y: &CudaSlice<f32>,
    norms: &CudaSlice<f32>,
    grad: &CudaSlice<f32>,
    cols: usize,
) -> Result<CudaSlice<f32>> {
    let rows = rows_of(y, cols);
    let mut dx = dev.alloc::<f32>(y.len())?;
    if rows == 0 {
        return Ok(dx);
    }
    let (rows_i, cols_i) = (int(rows, "rows")?, int(cols, "cols")?);
    let kernel = dev.kernel("l2_normalize", "l2_normalize_backward")?;
    // SAFETY: y, grad and dx hold rows * cols f32, norms rows; one warp per row.
    unsafe { launch!(kernel, warp_per_row(rows); y, norms, grad, &mut dx, &rows_i, &cols_i) }?;
    Ok(dx)
}
