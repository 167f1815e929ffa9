//! Scaled dot-product attention, one head at a time across threads. The
//! forward keeps only each query row's log-sum-exp; the backward recomputes
//! the probabilities from it (the same contract as the fused GPU kernel, so
//! both backends save the same tensors).

use super::gemm::gemm_f32;
use super::vmath;
use crate::backend::{AttentionSpec, GemmSpec};
use rayon::prelude::*;

fn matmul(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> Vec<f32> {
    let spec = GemmSpec { batch: 1, m, n, k, trans_a, trans_b, a_batch_stride: 0, b_batch_stride: 0 };
    gemm_f32(a, b, None, &spec)
}

/// Scaled scores of one head with masked entries at -inf: [q_len, kv_len].
fn scores(q: &[f32], k: &[f32], spec: &AttentionSpec) -> Vec<f32> {
    let (lq, lk) = (spec.q_len, spec.kv_len);
    let mut s = matmul(q, k, lq, lk, spec.head_dim, false, true);
    for i in 0..lq {
        for j in 0..lk {
            let v = &mut s[i * lk + j];
            *v = if spec.causal && j > i { f32::NEG_INFINITY } else { *v * spec.scale };
        }
    }
    s
}

/// Per head: the slices of q (or out), and of k and v.
fn head_slices(x: &[f32], h: usize, len: usize, d: usize) -> &[f32] {
    &x[h * len * d..(h + 1) * len * d]
}

/// Returns (out [bh, q_len, head_dim], lse [bh, q_len]).
pub fn forward(q: &[f32], k: &[f32], v: &[f32], spec: &AttentionSpec) -> (Vec<f32>, Vec<f32>) {
    let AttentionSpec { batch_heads, q_len, kv_len, head_dim, .. } = *spec;
    let per_head: Vec<(Vec<f32>, Vec<f32>)> = (0..batch_heads)
        .into_par_iter()
        .map(|h| {
            let mut s = scores(head_slices(q, h, q_len, head_dim), head_slices(k, h, kv_len, head_dim), spec);
            let mut lse = vec![0.0; q_len];
            for (row, lse) in s.chunks_mut(kv_len).zip(lse.iter_mut()) {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                vmath::map_in_place(row, |x| vmath::exp(x - max));
                let sum: f32 = row.iter().sum();
                *lse = max + sum.ln();
                vmath::map_in_place(row, |p| p / sum);
            }
            (matmul(&s, head_slices(v, h, kv_len, head_dim), q_len, head_dim, kv_len, false, false), lse)
        })
        .collect();
    let mut out = Vec::with_capacity(q.len());
    let mut lse = Vec::with_capacity(batch_heads * q_len);
    for (o, l) in per_head {
        out.extend(o);
        lse.extend(l);
    }
    (out, lse)
}

/// Returns (dq, dk, dv).
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    grad: &[f32],
    spec: &AttentionSpec,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let AttentionSpec { batch_heads, q_len, kv_len, head_dim, scale, .. } = *spec;
    let per_head: Vec<_> = (0..batch_heads)
        .into_par_iter()
        .map(|h| {
            let qh = head_slices(q, h, q_len, head_dim);
            let kh = head_slices(k, h, kv_len, head_dim);
            let vh = head_slices(v, h, kv_len, head_dim);
            let oh = head_slices(out, h, q_len, head_dim);
            let gh = head_slices(grad, h, q_len, head_dim);
            let mut p = scores(qh, kh, spec);
            for (row, &l) in p.chunks_mut(kv_len).zip(&lse[h * q_len..(h + 1) * q_len]) {
                vmath::map_in_place(row, |x| vmath::exp(x - l));
            }
            let dv = matmul(&p, gh, kv_len, head_dim, q_len, true, false);
            let mut ds = matmul(gh, vh, q_len, kv_len, head_dim, false, true);
            for i in 0..q_len {
                let row_dot = vmath::dot(&gh[i * head_dim..][..head_dim], &oh[i * head_dim..][..head_dim]);
                for j in 0..kv_len {
                    let idx = i * kv_len + j;
                    ds[idx] = p[idx] * (ds[idx] - row_dot) * scale;
                }
            }
            let dq = matmul(&ds, kh, q_len, head_dim, kv_len, false, false);
            let dk = matmul(&ds, qh, kv_len, head_dim, q_len, true, false);
            (dq, dk, dv)
        })
        .collect();
    let (mut dq, mut dk, mut dv) = (Vec::new(), Vec::new(), Vec::new());
    for (q, k, v) in per_head {
        dq.extend(q);
        dk.extend(k);
        dv.extend(v);
    }
    (dq, dk, dv)
}
