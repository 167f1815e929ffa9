//! Data movement: permutes, narrows and concatenations as 16- or 32-bit
//! word copies (`kernels/layout.cu`), row gathers and their deterministic
//! scatter-add (`kernels/index.cu`).

use super::device::{grid_for, int, launch, CudaDevice, KernelElem, BLOCK};
use super::elementwise::IndexMap;
use crate::tensor::Shape;
use anyhow::{bail, Result};
use cudarc::driver::{CudaSlice, DeviceRepr};

/// A buffer seen as words to copy: f32 and u32 are 32-bit, bf16/f16 16-bit.
pub enum Words<'a> {
    F32(&'a CudaSlice<f32>),
    U32(&'a CudaSlice<u32>),
    Half(&'a CudaSlice<u16>),
}

/// The copied words, in the same element type as the input.
pub enum WordsOut {
    F32(CudaSlice<f32>),
    U32(CudaSlice<u32>),
    Half(CudaSlice<u16>),
}

/// (outer, dim, inner) sizes around axis `dim`.
fn split_at_dim(shape: &Shape, dim: usize) -> (usize, usize, usize) {
    let dims = shape.dims();
    (dims[..dim].iter().product(), dims[dim], dims[dim + 1..].iter().product())
}

fn permute_typed<T: DeviceRepr>(dev: &CudaDevice, suffix: &str, x: &CudaSlice<T>, shape: &Shape, perm: &[usize]) -> Result<CudaSlice<T>> {
    let mut out = dev.alloc::<T>(x.len())?;
    if x.is_empty() {
        return Ok(out);
    }
    let strides = shape.strides();
    let out_dims: Vec<usize> = perm.iter().map(|&p| shape.dims()[p]).collect();
    let src_strides: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
    let map = IndexMap::new(&out_dims, &src_strides, &[])?;
    let n = int(x.len(), "elements")?;
    let kernel = dev.kernel("layout", if suffix == "b32" { "permute_b32" } else { "permute_b16" })?;
    // SAFETY: perm is a permutation of the dims of `shape` (checked by the
    // op), so every output index maps to one element of x; x and out hold n
    // words of the kernel's width.
    unsafe { launch!(kernel, grid_for(x.len(), BLOCK); x, &mut out, &n, &map) }?;
    Ok(out)
}

/// Geometry of one block copy: `dst[o, dst_start + j, k] = src[o, src_start + j, k]`.
struct BlockCopy {
    outer: usize,
    rows: usize,
    inner: usize,
    src_rows: usize,
    src_start: usize,
    dst_rows: usize,
    dst_start: usize,
}

fn block_copy<T: DeviceRepr>(dev: &CudaDevice, suffix: &str, src: &CudaSlice<T>, dst: &mut CudaSlice<T>, c: &BlockCopy) -> Result<()> {
    let total = c.outer * c.rows * c.inner;
    if total == 0 {
        return Ok(());
    }
    if c.outer * c.src_rows * c.inner > src.len() || c.outer * c.dst_rows * c.inner > dst.len() {
        bail!("block copy out of bounds ({} and {} words for {} rows)", src.len(), dst.len(), c.rows);
    }
    let args = [c.outer, c.rows, c.inner, c.src_rows, c.src_start, c.dst_rows, c.dst_start]
        .iter()
        .map(|&v| int(v, "layout size"))
        .collect::<Result<Vec<i32>>>()?;
    let kernel = dev.kernel("layout", if suffix == "b32" { "block_copy_b32" } else { "block_copy_b16" })?;
    // SAFETY: checked just above: src holds outer * src_rows * inner words
    // and dst outer * dst_rows * inner, and src_start + rows <= src_rows,
    // dst_start + rows <= dst_rows by construction in narrow and concat.
    unsafe {
        launch!(kernel, grid_for(total, BLOCK); src, dst, &args[0], &args[1], &args[2], &args[3], &args[4], &args[5], &args[6])
    }?;
    Ok(())
}

pub fn permute(dev: &CudaDevice, words: Words<'_>, shape: &Shape, perm: &[usize]) -> Result<WordsOut> {
    Ok(match words {
        Words::F32(x) => WordsOut::F32(permute_typed(dev, "b32", x, shape, perm)?),
        Words::U32(x) => WordsOut::U32(permute_typed(dev, "b32", x, shape, perm)?),
        Words::Half(x) => WordsOut::Half(permute_typed(dev, "b16", x, shape, perm)?),
    })
}

fn narrow_typed<T: DeviceRepr>(dev: &CudaDevice, suffix: &str, x: &CudaSlice<T>, shape: &Shape, dim: usize, start: usize, len: usize) -> Result<CudaSlice<T>> {
    let (outer, size, inner) = split_at_dim(shape, dim);
    if start + len > size {
        bail!("narrow: rows {start}..{} of a dim of {size}", start + len);
    }
    let mut out = dev.alloc::<T>(outer * len * inner)?;
    let geometry = BlockCopy { outer, rows: len, inner, src_rows: size, src_start: start, dst_rows: len, dst_start: 0 };
    block_copy(dev, suffix, x, &mut out, &geometry)?;
    Ok(out)
}

pub fn narrow(dev: &CudaDevice, words: Words<'_>, shape: &Shape, dim: usize, start: usize, len: usize) -> Result<WordsOut> {
    Ok(match words {
        Words::F32(x) => WordsOut::F32(narrow_typed(dev, "b32", x, shape, dim, start, len)?),
        Words::U32(x) => WordsOut::U32(narrow_typed(dev, "b32", x, shape, dim, start, len)?),
        Words::Half(x) => WordsOut::Half(narrow_typed(dev, "b16", x, shape, dim, start, len)?),
    })
}

fn concat_typed<T: DeviceRepr>(dev: &CudaDevice, suffix: &str, parts: &[&CudaSlice<T>], shapes: &[&Shape], dim: usize) -> Result<CudaSlice<T>> {
    let total_rows: usize = shapes.iter().map(|s| s.dims()[dim]).sum();
    let (outer, _, inner) = split_at_dim(shapes[0], dim);
    let mut out = dev.alloc::<T>(outer * total_rows * inner)?;
    let mut dst_start = 0;
    for (part, shape) in parts.iter().zip(shapes) {
        let rows = shape.dims()[dim];
        let geometry = BlockCopy { outer, rows, inner, src_rows: rows, src_start: 0, dst_rows: total_rows, dst_start };
        block_copy(dev, suffix, part, &mut out, &geometry)?;
        dst_start += rows;
    }
    Ok(out)
}

pub fn concat(dev: &CudaDevice, parts: &[Words<'_>], shapes: &[&Shape], dim: usize) -> Result<WordsOut> {
    fn all<'a, T>(parts: &[Words<'a>], pick: impl Fn(&Words<'a>) -> Option<&'a CudaSlice<T>>) -> Result<Vec<&'a CudaSlice<T>>> {
        parts.iter().map(|p| pick(p).ok_or_else(|| anyhow::anyhow!("concat: parts have different dtypes"))).collect()
    }
    Ok(match parts.first() {
        Some(Words::F32(_)) => WordsOut::F32(concat_typed(dev, "b32", &all(parts, |p| if let Words::F32(b) = p { Some(*b) } else { None })?, shapes, dim)?),
        Some(Words::U32(_)) => WordsOut::U32(concat_typed(dev, "b32", &all(parts, |p| if let Words::U32(b) = p { Some(*b) } else { None })?, shapes, dim)?),
        Some(Words::Half(_)) => WordsOut::Half(concat_typed(dev, "b16", &all(parts, |p| if let Words::Half(b) = p { Some(*b) } else { None })?, shapes, dim)?),
        None => bail!("concat needs at least one tensor"),
    })
}

/// `out[i] = table[ids[i]]`; an out-of-range id is reported by the next
/// download ([`CudaDevice::with_index_fault`]), so this never waits.
pub fn index_select<T: KernelElem>(dev: &CudaDevice, table: &CudaSlice<T>, ids: &CudaSlice<u32>, rows: usize, cols: usize) -> Result<CudaSlice<T>> {
    let len = ids.len() * cols;
    let mut out = dev.alloc::<T>(len)?;
    if len == 0 {
        return Ok(out);
    }
    let (n_ids, rows_i, cols_i) = (int(ids.len(), "ids")?, int(rows, "rows")?, int(cols, "cols")?);
    let kernel = dev.kernel("index", T::pick("index_select", "index_select_bf16"))?;
    dev.with_index_fault(|bad| {
        // SAFETY: table holds rows * cols elements (the op checked its shape)
        // and out n_ids * cols, both of the kernel instance's type; ids n_ids
        // u32, bad one u32; ids >= rows are never dereferenced (the kernel
        // writes NaN and flags them).
        unsafe { launch!(kernel, grid_for(len, BLOCK); table, ids, &mut out, &n_ids, &rows_i, &cols_i, bad) }
    })?;
    Ok(out)
}

/// Sums rows of `grad` into a zeroed [rows, cols] table at `ids`, in the
/// order of `ids`; out-of-range ids are reported as in [`index_select`].
pub fn index_add(dev: &CudaDevice, grad: &CudaSlice<f32>, ids: &CudaSlice<u32>, rows: usize, cols: usize) -> Result<CudaSlice<f32>> {
    let mut out = dev.alloc_zeros::<f32>(rows * cols)?;
    if ids.is_empty() || cols == 0 {
        return Ok(out);
    }
    let (n_ids, rows_i, cols_i) = (int(ids.len(), "ids")?, int(rows, "rows")?, int(cols, "cols")?);
    let kernel = dev.kernel("index", "index_add")?;
    dev.with_index_fault(|bad| {
        // SAFETY: grad holds n_ids * cols f32, ids n_ids u32, out rows * cols
        // f32 (zeroed), bad one u32; an id >= rows is flagged, never written.
        unsafe { launch!(kernel, super::device::rows_config(ids.len(), BLOCK, 0); grad, ids, &mut out, &n_ids, &rows_i, &cols_i, bad) }
    })?;
    Ok(out)
}
