//! Elementwise maps, broadcasting binaries and broadcast reductions.

use crate::backend::{BinaryOp, UnaryOp};
use crate::Shape;
use rayon::prelude::*;

/// Elements per rayon task: below this, threading costs more than it saves.
const PAR_CHUNK: usize = 1 << 14;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

const QUICK_GELU_ALPHA: f32 = 1.702;

pub fn unary(x: &[f32], op: UnaryOp) -> Vec<f32> {
    let f = move |x: f32| match op {
        UnaryOp::Neg => -x,
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Sigmoid => sigmoid(x),
        UnaryOp::QuickGelu => x * sigmoid(QUICK_GELU_ALPHA * x),
        UnaryOp::Affine { scale, shift } => scale * x + shift,
        UnaryOp::Clamp { min, max } => x.clamp(min, max),
    };
    let mut out = vec![0.0; x.len()];
    out.par_chunks_mut(PAR_CHUNK)
        .zip(x.par_chunks(PAR_CHUNK))
        .for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(o, &x)| *o = f(x)));
    out
}

/// `grad * op'(x)`, using the forward output `y` where that is cheaper.
pub fn unary_backward(x: &[f32], y: &[f32], grad: &[f32], op: UnaryOp) -> Vec<f32> {
    let d = move |x: f32, y: f32| match op {
        UnaryOp::Neg => -1.0,
        UnaryOp::Exp => y,
        UnaryOp::Log => 1.0 / x,
        UnaryOp::Sqrt => 0.5 / y,
        UnaryOp::Tanh => 1.0 - y * y,
        UnaryOp::Sigmoid => y * (1.0 - y),
        UnaryOp::QuickGelu => {
            let s = sigmoid(QUICK_GELU_ALPHA * x);
            s + QUICK_GELU_ALPHA * x * s * (1.0 - s)
        }
        UnaryOp::Affine { scale, .. } => scale,
        UnaryOp::Clamp { min, max } => f32::from((min..=max).contains(&x)),
    };
    let mut out = vec![0.0; x.len()];
    out.par_chunks_mut(PAR_CHUNK).enumerate().for_each(|(c, o)| {
        let base = c * PAR_CHUNK;
        for (i, o) in o.iter_mut().enumerate() {
            let j = base + i;
            *o = grad[j] * d(x[j], y[j]);
        }
    });
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
    let f = move |a: f32, b: f32| match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
    };
    let mut out = vec![0.0; out_shape.elem_count()];
    for_each_broadcast_row(&mut out, lhs_shape, rhs_shape, out_shape, |row, lo, ro, ls, rs| {
        for (j, o) in row.iter_mut().enumerate() {
            *o = f(lhs[lo + j * ls], rhs[ro + j * rs]);
        }
    });
    out
}

pub fn broadcast_to(x: &[f32], shape: &Shape, out_shape: &Shape) -> Vec<f32> {
    let mut out = vec![0.0; out_shape.elem_count()];
    for_each_broadcast_row(&mut out, shape, out_shape, out_shape, |row, xo, _, xs, _| {
        for (j, o) in row.iter_mut().enumerate() {
            *o = x[xo + j * xs];
        }
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
