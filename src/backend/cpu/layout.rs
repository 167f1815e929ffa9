//! Data movement: permutes, narrows, concatenations, row gathers and their
//! scatter-add adjoint.

use crate::Shape;
use anyhow::{bail, Result};
use rayon::prelude::*;

/// Dense copy of `x` (of `shape`) with its dims reordered: out dim i is input
/// dim `perm[i]`. Runs of the innermost output dim are copied together.
pub fn permute<T: Copy + Send + Sync + Default>(x: &[T], shape: &Shape, perm: &[usize]) -> Vec<T> {
    let in_strides = shape.strides();
    let out_dims: Vec<usize> = perm.iter().map(|&p| shape.dims()[p]).collect();
    let src_strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let cols = out_dims.last().copied().unwrap_or(1).max(1);
    let last_stride = src_strides.last().copied().unwrap_or(1);
    let mut out = vec![T::default(); x.len()];
    out.par_chunks_mut(cols).enumerate().for_each(|(row, dst)| {
        let mut rem = row;
        let mut base = 0;
        for d in (0..out_dims.len().saturating_sub(1)).rev() {
            base += (rem % out_dims[d]) * src_strides[d];
            rem /= out_dims[d];
        }
        if last_stride == 1 {
            dst.copy_from_slice(&x[base..base + cols]);
        } else {
            dst.iter_mut().enumerate().for_each(|(j, d)| *d = x[base + j * last_stride]);
        }
    });
    out
}

/// (outer, dim, inner) sizes around axis `dim`.
fn split_at_dim(shape: &Shape, dim: usize) -> (usize, usize, usize) {
    let dims = shape.dims();
    (dims[..dim].iter().product(), dims[dim], dims[dim + 1..].iter().product())
}

pub fn narrow<T: Copy>(x: &[T], shape: &Shape, dim: usize, start: usize, len: usize) -> Vec<T> {
    let (outer, size, inner) = split_at_dim(shape, dim);
    let mut out = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let base = (o * size + start) * inner;
        out.extend_from_slice(&x[base..base + len * inner]);
    }
    out
}

pub fn concat<T: Copy>(parts: &[&[T]], shapes: &[&Shape], dim: usize) -> Vec<T> {
    let outer = split_at_dim(shapes[0], dim).0;
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(total);
    for o in 0..outer {
        for (part, shape) in parts.iter().zip(shapes) {
            let (_, size, inner) = split_at_dim(shape, dim);
            out.extend_from_slice(&part[o * size * inner..(o + 1) * size * inner]);
        }
    }
    out
}

fn check_ids(ids: &[u32], rows: usize) -> Result<()> {
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= rows) {
        bail!("index {bad} is out of range for a table of {rows} rows");
    }
    Ok(())
}

pub fn index_select(table: &[f32], ids: &[u32], rows: usize, cols: usize) -> Result<Vec<f32>> {
    check_ids(ids, rows)?;
    let mut out = vec![0.0; ids.len() * cols];
    out.par_chunks_mut(cols.max(1)).zip(ids.par_iter()).for_each(|(dst, &id)| {
        dst.copy_from_slice(&table[id as usize * cols..(id as usize + 1) * cols]);
    });
    Ok(out)
}

/// Sums rows of `grad` into a zeroed [rows, cols] table at `ids`. Serial in
/// the order of `ids`, so repeated ids accumulate deterministically.
pub fn index_add(grad: &[f32], ids: &[u32], rows: usize, cols: usize) -> Result<Vec<f32>> {
    check_ids(ids, rows)?;
    let mut out = vec![0.0; rows * cols];
    for (i, &id) in ids.iter().enumerate() {
        let dst = &mut out[id as usize * cols..(id as usize + 1) * cols];
        dst.iter_mut().zip(&grad[i * cols..(i + 1) * cols]).for_each(|(d, g)| *d += g);
    }
    Ok(out)
}
