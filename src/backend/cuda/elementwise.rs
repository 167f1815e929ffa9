//! Elementwise maps, broadcasting binaries and the in-place gradient
//! accumulation (`kernels/elementwise.cu`).

use super::common::{grid_for, int, launch, IndexMap, KernelElem, BLOCK};
use super::device::CudaDevice;
use crate::backend::{BinaryOp, UnaryOp};
use crate::Shape;
use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;

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
