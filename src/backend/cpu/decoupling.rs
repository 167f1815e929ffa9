//! Semantic-decoupling scores without the [B, C, N, d] tensor:
//! `s[b,c,n] = sum_k u[k] tanh(x[b,n,k] t[c,k])`, forward and backward, the
//! tanh recomputed in the backward instead of stored.

use crate::backend::DecouplingDims;
use rayon::prelude::*;

/// Returns s [B, C, N].
pub fn scores(x: &[f32], t: &[f32], u: &[f32], dims: &DecouplingDims) -> Vec<f32> {
    let DecouplingDims { batch: _, classes, positions, width } = *dims;
    let mut s = vec![0.0; dims.batch * classes * positions];
    s.par_chunks_mut(positions).enumerate().for_each(|(bc, row)| {
        let (b, c) = (bc / classes, bc % classes);
        let tc = &t[c * width..(c + 1) * width];
        for (n, out) in row.iter_mut().enumerate() {
            let xn = &x[(b * positions + n) * width..][..width];
            *out = (0..width).map(|k| u[k] * (xn[k] * tc[k]).tanh()).sum();
        }
    });
    s
}

/// Returns (dx [B, N, d], dt [C, d], du [d]). Each batch entry accumulates its
/// own partial dt and du; the partials are summed in batch order, so the
/// result does not depend on the thread count.
pub fn scores_backward(
    x: &[f32],
    t: &[f32],
    u: &[f32],
    grad: &[f32],
    dims: &DecouplingDims,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let DecouplingDims { batch, classes, positions, width } = *dims;
    let mut dx = vec![0.0; batch * positions * width];
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(positions * width)
        .enumerate()
        .map(|(b, dx_b)| {
            let mut dt = vec![0.0; classes * width];
            let mut du = vec![0.0; width];
            for c in 0..classes {
                let tc = &t[c * width..(c + 1) * width];
                let dt_c = &mut dt[c * width..(c + 1) * width];
                for n in 0..positions {
                    let g = grad[(b * classes + c) * positions + n];
                    if g == 0.0 {
                        continue;
                    }
                    let xn = &x[(b * positions + n) * width..][..width];
                    let dx_n = &mut dx_b[n * width..(n + 1) * width];
                    for k in 0..width {
                        let z = (xn[k] * tc[k]).tanh();
                        du[k] += g * z;
                        let dpre = g * u[k] * (1.0 - z * z);
                        dx_n[k] += dpre * tc[k];
                        dt_c[k] += dpre * xn[k];
                    }
                }
            }
            (dt, du)
        })
        .collect();
    let mut dt = vec![0.0; classes * width];
    let mut du = vec![0.0; width];
    for (pt, pu) in partials {
        dt.iter_mut().zip(pt).for_each(|(a, b)| *a += b);
        du.iter_mut().zip(pu).for_each(|(a, b)| *a += b);
    }
    (dx, dt, du)
}
