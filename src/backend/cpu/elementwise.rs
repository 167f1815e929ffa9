//! Elementwise maps, broadcasting binaries and broadcast reductions.

use super::vmath;
use crate::backend::{BinaryOp, UnaryOp};
use crate::Shape;
use rayon::prelude::*;

/// Elements per rayon task: below this, threading costs more than it saves.
const PAR_CHUNK: usize = 1 << 14;

const QUICK_GELU_ALPHA: f32 = 1.702;

/// Fills `out` from `x` with `f`, in parallel chunks through [`vmath::map`].
fn par_map(out: &mut [f32], x: &[f32], f: impl Fn(f32) -> f32 + Sync) {
    out.par_chunks_mut(PAR_CHUNK).zip(x.par_chunks(PAR_CHUNK)).for_each(|(o, x)| vmath::map(o, x, &f));
}

pub fn unary(x: &[f32], op: UnaryOp) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    // One loop per op, so that each is vectorised with its own function.
    match op {
        UnaryOp::Neg => par_map(&mut out, x, |x| -x),
        UnaryOp::Exp => par_map(&mut out, x, vmath::exp),
        UnaryOp::Log => par_map(&mut out, x, f32::ln),
        UnaryOp::Sqrt => par_map(&mut out, x, f32::sqrt),
        UnaryOp::Tanh => par_map(&mut out, x, vmath::tanh),
        UnaryOp::Sigmoid => par_map(&mut out, x, vmath::sigmoid),
        UnaryOp::QuickGelu => par_map(&mut out, x, |x| x * vmath::sigmoid(QUICK_GELU_ALPHA * x)),
        UnaryOp::Affine { scale, shift } => par_map(&mut out, x, |x| scale * x + shift),
        UnaryOp::Clamp { min, max } => par_map(&mut out, x, |x| x.clamp(min, max)),
    }
    out
}

/// Fills `out` from `a`, `b` and `c` with `f`, in parallel chunks through
/// [`vmath::zip3_map`].
fn par_map3(out: &mut [f32], a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32 + Sync) {
    let inputs = a.par_chunks(PAR_CHUNK).zip(b.par_chunks(PAR_CHUNK)).zip(c.par_chunks(PAR_CHUNK));
    out.par_chunks_mut(PAR_CHUNK).zip(inputs).for_each(|(o, ((a, b), c))| vmath::zip3_map(o, a, b, c, &f));
}

/// `grad * op'(x)`, using the forward output `y` where that is cheaper.
pub fn unary_backward(x: &[f32], y: &[f32], grad: &[f32], op: UnaryOp) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    let o = &mut out;
    match op {
        UnaryOp::Neg => par_map3(o, x, y, grad, |_, _, g| -g),
        UnaryOp::Exp => par_map3(o, x, y, grad, |_, y, g| g * y),
        UnaryOp::Log => par_map3(o, x, y, grad, |x, _, g| g * (1.0 / x)),
        UnaryOp::Sqrt => par_map3(o, x, y, grad, |_, y, g| g * (0.5 / y)),
        UnaryOp::Tanh => par_map3(o, x, y, grad, |_, y, g| g * (1.0 - y * y)),
        UnaryOp::Sigmoid => par_map3(o, x, y, grad, |_, y, g| g * (y * (1.0 - y))),
        UnaryOp::QuickGelu => par_map3(o, x, y, grad, |x, _, g| {
            let s = vmath::sigmoid(QUICK_GELU_ALPHA * x);
            g * (s + QUICK_GELU_ALPHA * x * s * (1.0 - s))
        }),
        UnaryOp::Affine { scale, .. } => par_map3(o, x, y, grad, |_, _, g| g * scale),
        UnaryOp::Clamp { min, max } => par_map3(o, x, y, grad, |x, _, g| g * f32::from((min..=max).contains(&x))),
    }
    out
}

/// Offset into a tensor with `strides` (0 on broadcast dims) of the first
/// element of output row `row`, rows being runs of the last output dim.
fn row_offset(row: usize, out_dims: &[usize], strides: &[usize]) -> usize {
    let mut rem = row;
    let mut offset = 0;
    for d in (0..out_dims.len().saturating_sub(1)).rev() {
        offset += (rem % out_dims[d]) * strides[d];
        rem /= out_dims[d];
    }
    offset
}

/// Calls `f(out_row, lhs_row_offset, rhs_row_offset, rhs_last_stride,
/// lhs_last_stride)` for every row of the output, in parallel.
fn for_each_broadcast_row(
    out: &mut [f32],
    lhs_shape: &Shape,
    rhs_shape: &Shape,
    out_shape: &Shape,
    f: impl Fn(&mut [f32], usize, usize, usize, usize) + Sync,
) {
    let dims = out_shape.dims();
    let cols = dims.last().copied().unwrap_or(1).max(1);
    let ls = lhs_shape.broadcast_strides(out_shape);
    let rs = rhs_shape.broadcast_strides(out_shape);
    let (l_last, r_last) = (ls.last().copied().unwrap_or(0), rs.last().copied().unwrap_or(0));
    let rows_per_task = (PAR_CHUNK / cols).max(1);
    out.par_chunks_mut(rows_per_task * cols).enumerate().for_each(|(task, chunk)| {
        for (i, row) in chunk.chunks_mut(cols).enumerate() {
            let r = task * rows_per_task + i;
            f(row, row_offset(r, dims, &ls), row_offset(r, dims, &rs), l_last, r_last);
        }
    });
}

pub fn binary(
    lhs: &[f32],
    rhs: &[f32],
    op: BinaryOp,
    lhs_shape: &Shape,
    rhs_shape: &Shape,
    out_shape: &Shape,
) -> Vec<f32> {
    let shapes = (lhs_shape, rhs_shape, out_shape);
    match op {
        BinaryOp::Add => binary_with(lhs, rhs, shapes, |a, b| a + b),
        BinaryOp::Sub => binary_with(lhs, rhs, shapes, |a, b| a - b),
        BinaryOp::Mul => binary_with(lhs, rhs, shapes, |a, b| a * b),
        BinaryOp::Div => binary_with(lhs, rhs, shapes, |a, b| a / b),
    }
}

/// `f` over broadcast rows; rows where each side is contiguous or a single
/// repeated value (the common cases) go through vectorised loops.
fn binary_with(
    lhs: &[f32],
    rhs: &[f32],
    (lhs_shape, rhs_shape, out_shape): (&Shape, &Shape, &Shape),
    f: impl Fn(f32, f32) -> f32 + Sync + Copy,
) -> Vec<f32> {
    let mut out = vec![0.0; out_shape.elem_count()];
    for_each_broadcast_row(&mut out, lhs_shape, rhs_shape, out_shape, |row, lo, ro, ls, rs| {
        let cols = row.len();
        match (ls, rs) {
            (1, 1) => vmath::zip_map(row, &lhs[lo..lo + cols], &rhs[ro..ro + cols], f),
            (1, 0) => {
                let b = rhs[ro];
                vmath::map(row, &lhs[lo..lo + cols], |a| f(a, b))
            }
            (0, 1) => {
                let a = lhs[lo];
                vmath::map(row, &rhs[ro..ro + cols], |b| f(a, b))
            }
            _ => row.iter_mut().enumerate().for_each(|(j, o)| *o = f(lhs[lo + j * ls], rhs[ro + j * rs])),
        }
    });
    out
}

pub fn broadcast_to(x: &[f32], shape: &Shape, out_shape: &Shape) -> Vec<f32> {
    let mut out = vec![0.0; out_shape.elem_count()];
    for_each_broadcast_row(&mut out, shape, out_shape, out_shape, |row, xo, _, xs, _| match xs {
        1 => row.copy_from_slice(&x[xo..xo + row.len()]),
        0 => row.fill(x[xo]),
        _ => row.iter_mut().enumerate().for_each(|(j, o)| *o = x[xo + j * xs]),
    });
    out
}

/// Sums `x` (of `shape`) over the dims where `out_shape` (right-aligned) is 1
/// or absent. Each output element is summed in f64 in a fixed order, so the
/// result does not depend on the thread count.
pub fn sum_to(x: &[f32], shape: &Shape, out_shape: &Shape) -> Vec<f32> {
    let out_len = out_shape.elem_count();
    if out_len == 1 {
        let partial: Vec<f64> = x.par_chunks(PAR_CHUNK).map(|c| c.iter().map(|&v| v as f64).sum()).collect();
        return vec![partial.iter().sum::<f64>() as f32];
    }
    let dims = shape.dims();
    let in_strides = shape.strides();
    let offset = shape.rank() - out_shape.rank();
    let kept = |d: usize| d >= offset && out_shape.dims()[d - offset] != 1;
    // Input offsets of every combination of the summed-over dims.
    let mut reduced_offsets = vec![0usize];
    for d in (0..dims.len()).filter(|&d| !kept(d)) {
        let (size, stride) = (dims[d], in_strides[d]);
        reduced_offsets = reduced_offsets.iter().flat_map(|&base| (0..size).map(move |i| base + i * stride)).collect();
    }
    let kept_dims: Vec<usize> = (0..dims.len()).filter(|&d| kept(d)).collect();
    let mut out = vec![0.0; out_len];
    out.par_iter_mut().enumerate().for_each(|(o, value)| {
        let mut rem = o;
        let mut base = 0;
        for &d in kept_dims.iter().rev() {
            base += (rem % dims[d]) * in_strides[d];
            rem /= dims[d];
        }
        *value = reduced_offsets.iter().map(|&r| x[base + r] as f64).sum::<f64>() as f32;
    });
    out
}
