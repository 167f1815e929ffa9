//! Layer normalisation forward and backward (`kernels/layernorm.cu`): one
//! warp per row, f32 sums in a fixed order; dgamma/dbeta as column partials
//! summed in chunk order.

use super::common::{int, launch, rows_of, warp_per_row, KernelElem};
use super::device::CudaDevice;
use super::reduce::{column_grid, column_sum, row_chunks};
use anyhow::Result;
use cudarc::driver::{CudaSlice, ValidAsZeroBits};

/// Returns (y, mean, rstd): y in the storage type of x, gamma and beta (f32
/// or bf16), the statistics f32.
pub fn forward<T: KernelElem>(
    dev: &CudaDevice,
    x: &CudaSlice<T>,
    gamma: &CudaSlice<T>,
    beta: &CudaSlice<T>,
    cols: usize,
    eps: f32,
) -> Result<(CudaSlice<T>, CudaSlice<f32>, CudaSlice<f32>)> {
    let rows = rows_of(x, cols);
    let mut y = dev.alloc::<T>(x.len())?;
    let mut mean = dev.alloc::<f32>(rows)?;
    let mut rstd = dev.alloc::<f32>(rows)?;
    if rows == 0 {
        return Ok((y, mean, rstd));
    }
    let (rows_i, cols_i) = (int(rows, "rows")?, int(cols, "cols")?);
    let kernel = dev.kernel("layernorm", T::pick("layernorm_forward", "layernorm_forward_bf16"))?;
    // SAFETY: x and y hold rows * cols elements, gamma and beta cols (all
    // of the kernel instance's type), mean and rstd rows f32; one warp per
    // row reads and writes that row only.
    unsafe {
        launch!(kernel, warp_per_row(rows); x, gamma, beta, &mut y, &mut mean, &mut rstd, &rows_i, &cols_i, &eps)
    }?;
    Ok((y, mean, rstd))
}

/// Returns (dx, dgamma, dbeta), in the storage type of x, gamma and grad
/// (f32 or bf16); mean and rstd are f32.
pub fn backward<T: KernelElem + ValidAsZeroBits>(
    dev: &CudaDevice,
    x: &CudaSlice<T>,
    gamma: &CudaSlice<T>,
    mean: &CudaSlice<f32>,
    rstd: &CudaSlice<f32>,
    grad: &CudaSlice<T>,
    cols: usize,
) -> Result<(CudaSlice<T>, CudaSlice<T>, CudaSlice<T>)> {
    let rows = rows_of(x, cols);
    let mut dx = dev.alloc::<T>(x.len())?;
    if rows == 0 {
        // All-zero bits are 0.0 in f32 and in bf16.
        return Ok((dx, dev.alloc_zeros::<T>(cols)?, dev.alloc_zeros::<T>(cols)?));
    }
    let (rows_i, cols_i) = (int(rows, "rows")?, int(cols, "cols")?);
    let input = dev.kernel("layernorm", T::pick("layernorm_backward_input", "layernorm_backward_input_bf16"))?;
    // SAFETY: x, grad and dx hold rows * cols elements, gamma cols (all of
    // the kernel instance's type), mean and rstd rows f32; one warp per row.
    unsafe { launch!(input, warp_per_row(rows); x, gamma, mean, rstd, grad, &mut dx, &rows_i, &cols_i) }?;

    let (rows_per_chunk, chunks) = row_chunks(rows);
    let mut partial_gamma = dev.alloc::<f32>(chunks * cols)?;
    let mut partial_beta = dev.alloc::<f32>(chunks * cols)?;
    let rpc = int(rows_per_chunk, "rows per chunk")?;
    let partials = dev
        .kernel("layernorm", T::pick("layernorm_backward_param_partials", "layernorm_backward_param_partials_bf16"))?;
    // SAFETY: grid (ceil(cols / 256), chunks) covers each (chunk, column)
    // once; the partial buffers hold chunks * cols f32; x and grad (of the
    // kernel instance's type) are read in rows [chunk * rpc, min(rows,
    // (chunk + 1) * rpc)).
    unsafe {
        launch!(partials, column_grid(cols, chunks); x, mean, rstd, grad, &mut partial_gamma, &mut partial_beta, &rows_i, &cols_i, &rpc)
    }?;
    let dgamma = column_sum::<T>(dev, &partial_gamma, chunks, cols)?;
    let dbeta = column_sum::<T>(dev, &partial_beta, chunks, cols)?;
    Ok((dx, dgamma, dbeta))
}
