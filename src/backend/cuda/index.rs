//! Row gathers and their deterministic scatter-add (`kernels/index.cu`).

use super::common::{grid_for, int, launch, rows_config, KernelElem, BLOCK};
use super::device::CudaDevice;
use anyhow::Result;
use cudarc::driver::CudaSlice;

/// `out[i] = table[ids[i]]`; an out-of-range id is reported by the next
/// download ([`CudaDevice::with_index_fault`]), so this never waits.
pub fn index_select<T: KernelElem>(
    dev: &CudaDevice,
    table: &CudaSlice<T>,
    ids: &CudaSlice<u32>,
    rows: usize,
    cols: usize,
) -> Result<CudaSlice<T>> {
    let len = ids.len() * cols;
    let mut out = dev.alloc::<T>(len)?;
    if len == 0 {
        return Ok(out);
    }
    let (n_ids, rows_i, cols_i) = (int(ids.len(), "ids")?, int(rows, "rows")?, int(cols, "cols")?);
    let kernel = dev.kernel("index", T::pick("index_select", "index_select_bf16"))?;
    // A thread per element, or per 16-byte pack when rows are whole packs.
    let threads = if cols.is_multiple_of(T::LANES) { len / T::LANES } else { len };
    dev.with_index_fault(|bad| {
        // SAFETY: table holds rows * cols elements (the op checked its shape)
        // and out n_ids * cols, both of the kernel instance's type; ids n_ids
        // u32, bad one u32; ids >= rows are never dereferenced (the kernel
        // writes NaN and flags them).
        unsafe { launch!(kernel, grid_for(threads, BLOCK); table, ids, &mut out, &n_ids, &rows_i, &cols_i, bad) }
    })?;
    Ok(out)
}

/// Sums rows of `grad` into a zeroed [rows, cols] table at `ids`, in the
/// order of `ids`; out-of-range ids are reported as in [`index_select`].
pub fn index_add(
    dev: &CudaDevice,
    grad: &CudaSlice<f32>,
    ids: &CudaSlice<u32>,
    rows: usize,
    cols: usize,
) -> Result<CudaSlice<f32>> {
    let mut out = dev.alloc_zeros::<f32>(rows * cols)?;
    if ids.is_empty() || cols == 0 {
        return Ok(out);
    }
    let (n_ids, rows_i, cols_i) = (int(ids.len(), "ids")?, int(rows, "rows")?, int(cols, "cols")?);
    let kernel = dev.kernel("index", "index_add")?;
    dev.with_index_fault(|bad| {
        // SAFETY: grad holds n_ids * cols f32, ids n_ids u32, out rows * cols
        // f32 (zeroed), bad one u32; an id >= rows is flagged, never written.
        unsafe { launch!(kernel, rows_config(ids.len(), BLOCK, 0); grad, ids, &mut out, &n_ids, &rows_i, &cols_i, bad) }
    })?;
    Ok(out)
}
