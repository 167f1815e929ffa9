//! Elementwise maps, broadcasting binaries and broadcast reductions
//! (`kernels/elementwise.cu`, `kernels/reduce.cu`).

use super::device::{grid_for, int, launch, rows_config, CudaDevice, KernelElem, BLOCK};
use crate::backend::{BinaryOp, UnaryOp};
use crate::tensor::Shape;
use anyhow::{bail, Result};
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig};

/// `struct IndexMap` of `kernels/common.cuh`: up to 8 dims with two sets of
/// element strides.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IndexMap {
    rank: i32,
    dims: [i32; MAX_RANK],
    a: [i32; MAX_RANK],
    b: [i32; MAX_RANK],
}

pub const MAX_RANK: usize = 8;

// SAFETY: IndexMap is #[repr(C)] plain data (i32 fields only) with the same
// layout as the CUDA struct, so it can be passed by value as a kernel argument.
unsafe impl DeviceRepr for IndexMap {}

impl IndexMap {
    /// `dims` with strides `a` and `b` (missing strides are 0).
    pub fn new(dims: &[usize], a: &[usize], b: &[usize]) -> Result<IndexMap> {
        if dims.len() > MAX_RANK {
            bail!("the CUDA kernels handle tensors of rank <= {MAX_RANK}, got rank {}", dims.len());
        }
        let mut map = IndexMap { rank: dims.len() as i32, ..Default::default() };
        for (d, &size) in dims.iter().enumerate() {
            map.dims[d] = int(size, "dimension")?;
            map.a[d] = int(a.get(d).copied().unwrap_or(0), "stride")?;
            map.b[d] = int(b.get(d).copied().unwrap_or(0), "stride")?;
        }
        Ok(map)
    }
}

/// The op codes of `kernels/elementwise.cu`.
fn unary_code(op: UnaryOp) -> (i32, f32, f32) {
    match op {
        UnaryOp::Neg => (0, 1.0, 0.0),
        UnaryOp::Exp => (1, 1.0, 0.0),
        UnaryOp::Log => (2, 1.0, 0.0),
        UnaryOp::Sqrt => (3, 1.0, 0.0),
        UnaryOp::Tanh => (4, 1.0, 0.0),
        UnaryOp::Sigmoid => (5, 1.0, 0.0),
        UnaryOp::QuickGelu => (6, 1.0, 0.0),
        UnaryOp::Affine { scale, shift } => (7, scale, shift),
        UnaryOp::Clamp { min, max } => (8, min, max),
    }
}

fn binary_code(op: BinaryOp) -> i32 {
    match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
    }
}

/// `y = op(x)` on f32 or bf16 storage (computed in f32).
pub fn unary<T: KernelElem>(dev: &CudaDevice, x: &CudaSlice<T>, op: UnaryOp) -> Result<CudaSlice<T>> {
    let mut y = dev.alloc::<T>(x.len())?;
    if x.is_empty() {
        return Ok(y);
    }
    let (code, scale, shift) = unary_code(op);
    let n = int(x.len(), "elements")?;
    let kernel = dev.kernel("elementwise", T::pick("unary_forward", "unary_forward_bf16"))?;
    // SAFETY: x and y hold n elements of the kernel instance's type each;
    // the kernel reads x[i] and writes y[i] for i < n only.
    unsafe { launch!(kernel, grid_for(x.len().div_ceil(T::LANES), BLOCK); x, &mut y, &n, &code, &scale, &shift) }?;
    Ok(y)
}

/// `dx = grad * op'(x)` (from the forward output y where cheaper), on f32 or
/// bf16 storage (computed in f32).
pub fn unary_backward<T: KernelElem>(
    dev: &CudaDevice,
    x: &CudaSlice<T>,
    y: &CudaSlice<T>,
    grad: &CudaSlice<T>,
    op: UnaryOp,
) -> Result<CudaSlice<T>> {
    let mut dx = dev.alloc::<T>(x.len())?;
    if x.is_empty() {
        return Ok(dx);
    }
    let (code, scale, shift) = unary_code(op);
    let n = int(x.len(), "elements")?;
    let kernel = dev.kernel("elementwise", T::pick("unary_backward", "unary_backward_bf16"))?;
    // SAFETY: x, y, grad and dx hold n elements of the kernel instance's type
    // each (same shape, checked by the op); indices < n only.
    unsafe { launch!(kernel, grid_for(x.len(), BLOCK); x, y, grad, &mut dx, &n, &code, &scale, &shift) }?;
    Ok(dx)
}

/// `lhs op rhs` broadcast to `out_shape`, on f32 or bf16 storage (computed
/// in f32).
pub fn binary<T: KernelElem>(
    dev: &CudaDevice,
    lhs: &CudaSlice<T>,
    rhs: &CudaSlice<T>,
    op: BinaryOp,
    lhs_shape: &Shape,
    rhs_shape: &Shape,
    out_shape: &Shape,
) -> Result<CudaSlice<T>> {
    let len = out_shape.elem_count();
    let mut out = dev.alloc::<T>(len)?;
    if len == 0 {
        return Ok(out);
    }
    let map = IndexMap::new(
        out_shape.dims(),
        &lhs_shape.broadcast_strides(out_shape),
        &rhs_shape.broadcast_strides(out_shape),
    )?;
    let (n, code) = (int(len, "elements")?, binary_code(op));
    let kernel = dev.kernel("elementwise", T::pick("binary_broadcast", "binary_broadcast_bf16"))?;
    // SAFETY: the broadcast strides map every output index to an element of
    // lhs (of lhs_shape) and rhs (of rhs_shape), which broadcast to
    // out_shape (checked by the op); out holds n elements; all three have
    // the kernel instance's type.
    unsafe { launch!(kernel, grid_for(len, BLOCK); lhs, rhs, &mut out, &n, &code, &map) }?;
    Ok(out)
}

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

/// `acc += x`, in place.
pub fn add_in_place(dev: &CudaDevice, acc: &mut CudaSlice<f32>, x: &CudaSlice<f32>) -> Result<()> {
    if acc.len() != x.len() {
        bail!("add_assign: {} elements += {} elements", acc.len(), x.len());
    }
    if acc.is_empty() {
        return Ok(());
    }
    let n = int(acc.len(), "elements")?;
    let kernel = dev.kernel("elementwise", "add_in_place")?;
    // SAFETY: acc and x hold n f32 each and are different buffers (acc is
    // uniquely owned); each thread reads and writes its own elements.
    unsafe { launch!(kernel, grid_for(acc.len().div_ceil(4), BLOCK); acc, x, &n) }?;
    Ok(())
}
