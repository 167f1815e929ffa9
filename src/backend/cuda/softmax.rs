//! Row softmax forward and backward (`kernels/softmax.cu`): one warp per
//! row, f32 sums in a fixed order.

use super::common::{int, launch, rows_of, warp_per_row};
use super::device::CudaDevice;
use anyhow::Result;
use cudarc::driver::CudaSlice;

pub fn forward(dev: &CudaDevice, x: &CudaSlice<f32>, cols: usize) -> Result<CudaSlice<f32>> {
    let rows = rows_of(x, cols);
    let mut y = dev.alloc::<f32>(x.len())?;
    if rows == 0 {
        return Ok(y);
    }
    let (rows_i, cols_i) = (int(rows, "rows")?, int(cols, "cols")?);
    let kernel = dev.kernel("softmax", "softmax_forward")?;
    // SAFETY: x and y hold rows * cols f32; one warp per row.
    unsafe { launch!(kernel, warp_per_row(rows); x, &mut y, &rows_i, &cols_i) }?;
    Ok(y)
}

pub fn backward(dev: &CudaDevice, y: &CudaSlice<f32>, grad: &CudaSlice<f32>, cols: usize) -> Result<CudaSlice<f32>> {
    let rows = rows_of(y, cols);
    let mut dx = dev.alloc::<f32>(y.len())?;
    if rows == 0 {
        return Ok(dx);
    }
    let (rows_i, cols_i) = (int(rows, "rows")?, int(cols, "cols")?);
    let kernel = dev.kernel("softmax", "softmax_backward")?;
    // SAFETY: y, grad and dx hold rows * cols f32; one warp per row.
    unsafe { launch!(kernel, warp_per_row(rows); y, grad, &mut dx, &rows_i, &cols_i) }?;
    Ok(dx)
}
