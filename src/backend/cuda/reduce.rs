//! Broadcast copies and sums down to a broadcast shape, column sums
//! (`kernels/reduce.cu`).

use super::common::{grid_for, int, launch, rows_config, IndexMap, KernelElem, BLOCK};
use super::device::CudaDevice;
use crate::Shape;
use anyhow::Result;
use cudarc::driver::{CudaSlice, LaunchConfig};

/// `x` (of `shape`) repeated along the broadcast dims of `out_shape`.
pub fn broadcast_to(dev: &CudaDevice, x: &CudaSlice<f32>, shape: &Shape, out_shape: &Shape) -> Result<CudaSlice<f32>> {
    let len = out_shape.elem_count();
    let mut out = dev.alloc::<f32>(len)?;
    if len == 0 {
        return Ok(out);
    }
    let map = IndexMap::new(out_shape.dims(), &shape.broadcast_strides(out_shape), &[])?;
    let n = int(len, "elements")?;
    let kernel = dev.kernel("reduce", "broadcast_copy")?;
    // SAFETY: the broadcast strides map every output index into x (of
    // `shape`, which broadcasts to out_shape); out holds n f32.
    unsafe { launch!(kernel, grid_for(len, BLOCK); x, &mut out, &n, &map) }?;
    Ok(out)
}

/// Rows each block of a column reduction sums serially; one thread per
/// column then adds up the chunks' partial sums.
const ROWS_PER_CHUNK: usize = 64;

/// (rows per chunk, chunks) of a column reduction over `rows`: at most
/// 65535 chunks, the grid's y limit.
pub fn row_chunks(rows: usize) -> (usize, usize) {
    let rows_per_chunk = ROWS_PER_CHUNK.max(rows.div_ceil(65535));
    (rows_per_chunk, rows.div_ceil(rows_per_chunk))
}

/// The grid of the column kernels: a thread per column, `chunks` rows of blocks.
pub fn column_grid(cols: usize, chunks: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (cols.div_ceil(BLOCK as usize) as u32, chunks as u32, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `out[j] = sum over c of partials[c, j]`, in chunk order, in the storage
/// type `T` (`kernels/reduce.cu` column_sum).
pub fn column_sum<T: KernelElem>(
    dev: &CudaDevice,
    partials: &CudaSlice<f32>,
    chunks: usize,
    cols: usize,
) -> Result<CudaSlice<T>> {
    let mut out = dev.alloc::<T>(cols)?;
    let (chunks_i, cols_i) = (int(chunks, "chunks")?, int(cols, "cols")?);
    let kernel = dev.kernel("reduce", T::pick("column_sum", "column_sum_bf16"))?;
    // SAFETY: partials hold chunks * cols f32 (callers size them so), out
    // cols elements of the instance's type; a thread per column.
    unsafe { launch!(kernel, column_grid(cols, 1); partials, &mut out, &chunks_i, &cols_i) }?;
    Ok(out)
}

/// The column sums of `x` seen as [rows, cols]: partial sums over chunks of
/// rows (coalesced reads across columns), then [`column_sum`].
fn column_sums(dev: &CudaDevice, x: &CudaSlice<f32>, rows: usize, cols: usize) -> Result<CudaSlice<f32>> {
    let (rows_per_chunk, chunks) = row_chunks(rows);
    let mut partials = dev.alloc::<f32>(chunks * cols)?;
    let (rows_i, cols_i, rpc) = (int(rows, "rows")?, int(cols, "cols")?, int(rows_per_chunk, "rows per chunk")?);
    let kernel = dev.kernel("reduce", "column_partials")?;
    // SAFETY: x holds rows * cols f32 (the caller's view of it); the grid
    // covers each (chunk, column) once and partials hold chunks * cols f32.
    unsafe { launch!(kernel, column_grid(cols, chunks); x, &mut partials, &rows_i, &cols_i, &rpc) }?;
    column_sum(dev, &partials, chunks, cols)
}

/// Columns from which [`sum_to`] takes [`column_sums`] when it keeps the
/// innermost dims: enough for a warp's reads to be one run. Fewer kept
/// elements (a full or nearly full reduction) are better served by a block
/// per output.
const MIN_COLUMNS: usize = 32;

/// Sums `x` (of `shape`) over the dims where `out_shape` (right-aligned) is 1
/// or absent, as `cpu::elementwise::sum_to` does.
pub fn sum_to(dev: &CudaDevice, x: &CudaSlice<f32>, shape: &Shape, out_shape: &Shape) -> Result<CudaSlice<f32>> {
    let out_len = out_shape.elem_count();
    if out_len == 0 {
        return dev.alloc::<f32>(0);
    }
    let dims = shape.dims();
    let strides = shape.strides();
    let offset = shape.rank() - out_shape.rank();
    let kept = |d: usize| d >= offset && out_shape.dims()[d - offset] != 1;
    let (kept_dims, kept_strides): (Vec<usize>, Vec<usize>) =
        (0..dims.len()).filter(|&d| kept(d)).map(|d| (dims[d], strides[d])).unzip();
    let (reduced_dims, reduced_strides): (Vec<usize>, Vec<usize>) =
        (0..dims.len()).filter(|&d| !kept(d)).map(|d| (dims[d], strides[d])).unzip();
    let reduced_len: usize = reduced_dims.iter().product();
    // Summing leading dims and keeping the trailing ones (bias gradients):
    // x is [reduced_len, out_len] row-major.
    let reduced_lead = (0..dims.len()).take_while(|&d| !kept(d)).count() == reduced_dims.len();
    if reduced_lead && out_len >= MIN_COLUMNS && reduced_len > 0 {
        return column_sums(dev, x, reduced_len, out_len);
    }
    let mut out = dev.alloc::<f32>(out_len)?;
    let kept_map = IndexMap::new(&kept_dims, &kept_strides, &[])?;
    let reduced_map = IndexMap::new(&reduced_dims, &reduced_strides, &[])?;
    let (outputs, reduced) = (int(out_len, "outputs")?, int(reduced_len, "summed elements")?);
    let kernel = dev.kernel("reduce", "sum_to")?;
    // SAFETY: kept and reduced dims partition the dims of `shape`, so base +
    // reduced offset stays inside x for every output o < out_len and every
    // r < reduced_len; out holds out_len f32, each written by one block.
    unsafe {
        launch!(kernel, rows_config(out_len, BLOCK, 0); x, &mut out, &outputs, &reduced, &kept_map, &reduced_map)
    }?;
    Ok(out)
}
