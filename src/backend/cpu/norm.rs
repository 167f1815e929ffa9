//! Row-wise normalisations: layernorm, softmax and L2 normalisation, with
//! their backward passes. A row is a run of `cols` contiguous values; rows
//! are processed in parallel and each row's statistics are summed in f32 in
//! a fixed order.

use super::vmath;
use rayon::prelude::*;

/// Returns (y, mean, rstd); mean and rstd hold one value per row.
pub fn layernorm(x: &[f32], gamma: &[f32], beta: &[f32], cols: usize, eps: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let rows = x.len() / cols;
    let mut y = vec![0.0; x.len()];
    let mut mean = vec![0.0; rows];
    let mut rstd = vec![0.0; rows];
    y.par_chunks_mut(cols).zip(x.par_chunks(cols)).zip(mean.par_iter_mut().zip(rstd.par_iter_mut())).for_each(
        |((y, x), (mean, rstd))| {
            let m = x.iter().sum::<f32>() / cols as f32;
            let var = x.iter().map(|v| (v - m) * (v - m)).sum::<f32>() / cols as f32;
            let r = 1.0 / (var + eps).sqrt();
            for j in 0..cols {
                y[j] = (x[j] - m) * r * gamma[j] + beta[j];
            }
            *mean = m;
            *rstd = r;
        },
    );
    (y, mean, rstd)
}

/// Returns (dx, dgamma, dbeta).
pub fn layernorm_backward(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    grad: &[f32],
    cols: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![0.0; x.len()];
    dx.par_chunks_mut(cols).enumerate().for_each(|(r, dx)| {
        let x = &x[r * cols..(r + 1) * cols];
        let g = &grad[r * cols..(r + 1) * cols];
        let (m, rs) = (mean[r], rstd[r]);
        let mut mean_dxhat = 0.0;
        let mut mean_dxhat_xhat = 0.0;
        for j in 0..cols {
            let xhat = (x[j] - m) * rs;
            let dxhat = g[j] * gamma[j];
            mean_dxhat += dxhat;
            mean_dxhat_xhat += dxhat * xhat;
        }
        mean_dxhat /= cols as f32;
        mean_dxhat_xhat /= cols as f32;
        for j in 0..cols {
            let xhat = (x[j] - m) * rs;
            dx[j] = (g[j] * gamma[j] - mean_dxhat - xhat * mean_dxhat_xhat) * rs;
        }
    });
    // Column sums over rows, in row order.
    let mut dgamma = vec![0.0; cols];
    let mut dbeta = vec![0.0; cols];
    for r in 0..x.len() / cols {
        for j in 0..cols {
            let i = r * cols + j;
            dgamma[j] += grad[i] * (x[i] - mean[r]) * rstd[r];
            dbeta[j] += grad[i];
        }
    }
    (dx, dgamma, dbeta)
}

pub fn softmax(x: &[f32], cols: usize) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    y.par_chunks_mut(cols).zip(x.par_chunks(cols)).for_each(|(y, x)| softmax_row(x, y));
    y
}

/// Max-subtracted softmax of one row; a row of all -inf gives zeros.
pub fn softmax_row(x: &[f32], y: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        y.fill(0.0);
        return;
    }
    vmath::map(y, x, |x| vmath::exp(x - max));
    let sum: f32 = y.iter().sum();
    vmath::map_in_place(y, |y| y / sum);
}

/// dx = y * (dy - sum(dy * y)) per row.
pub fn softmax_backward(y: &[f32], grad: &[f32], cols: usize) -> Vec<f32> {
    let mut dx = vec![0.0; y.len()];
    dx.par_chunks_mut(cols).enumerate().for_each(|(r, dx)| {
        let y = &y[r * cols..(r + 1) * cols];
        let g = &grad[r * cols..(r + 1) * cols];
        let dot: f32 = y.iter().zip(g).map(|(y, g)| y * g).sum();
        for j in 0..cols {
            dx[j] = y[j] * (g[j] - dot);
        }
    });
    dx
}

/// Returns (x / n, n) with n = max(||x||, eps) per row.
pub fn l2_normalize(x: &[f32], cols: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let mut y = vec![0.0; x.len()];
    let mut norms = vec![0.0; x.len() / cols];
    y.par_chunks_mut(cols).zip(x.par_chunks(cols)).zip(norms.par_iter_mut()).for_each(|((y, x), n)| {
        *n = x.iter().map(|v| v * v).sum::<f32>().sqrt().max(eps);
        y.iter_mut().zip(x).for_each(|(y, x)| *y = x / *n);
    });
    (y, norms)
}

/// dx = (dy - y * sum(dy * y)) / n per row, from the forward outputs. Where
/// the norm was clamped to eps the map is x / eps and dx = dy / eps.
pub fn l2_normalize_backward(y: &[f32], norms: &[f32], grad: &[f32], cols: usize) -> Vec<f32> {
    let mut dx = vec![0.0; y.len()];
    dx.par_chunks_mut(cols).enumerate().for_each(|(r, dx)| {
        let y = &y[r * cols..(r + 1) * cols];
        let g = &grad[r * cols..(r + 1) * cols];
        let n = norms[r];
        let unit = y.iter().map(|v| v * v).sum::<f32>() > 0.5;
        let dot: f32 = if unit { y.iter().zip(g).map(|(y, g)| y * g).sum() } else { 0.0 };
        for j in 0..cols {
            dx[j] = (g[j] - y[j] * dot) / n;
        }
    });
    dx
}
