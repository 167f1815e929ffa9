//! f32 matrix products on the CPU through the `gemm` crate (packed,
//! SIMD-dispatched, rayon-parallel microkernels). Transposes are expressed as
//! strides, so no operand is ever copied.

use crate::backend::GemmSpec;
use gemm::Parallelism;
use rayon::prelude::*;

/// Below this many multiply-adds per matrix a batch is spread across threads
/// one matrix each instead of splitting every matrix across threads.
const SMALL_GEMM_FLOPS: usize = 64 * 64 * 64;

/// Computes `out[b] = op(a[b]) @ op(b[b]) (+ bias)` for the whole batch (see
/// [`GemmSpec`]); `bias` [n] is added to every row inside the product's
/// accumulation, one rounding per element as in a fused GEMM epilogue.
pub fn gemm_f32(a: &[f32], b: &[f32], bias: Option<&[f32]>, spec: &GemmSpec) -> Vec<f32> {
    let GemmSpec { batch, m, n, k, .. } = *spec;
    let mut out = match bias {
        Some(bias) => bias.repeat(batch * m),
        None => vec![0.0f32; batch * m * n],
    };
    if m * n == 0 {
        return out;
    }
    let accumulate = bias.is_some();
    let per_matrix = m * n * k;
    if batch > 1 && per_matrix < SMALL_GEMM_FLOPS {
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, dst)| matmul_into(dst, accumulate, a, b, spec, i, Parallelism::None));
    } else {
        let threads = rayon::current_num_threads();
        let parallelism =
            if per_matrix >= SMALL_GEMM_FLOPS && threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
        out.chunks_mut(m * n).enumerate().for_each(|(i, dst)| matmul_into(dst, accumulate, a, b, spec, i, parallelism));
    }
    out
}

/// One matrix of the batch: `dst = op(A_i) @ op(B_i)` with `dst` dense [m, n],
/// or `dst += ...` when `accumulate`.
fn matmul_into(
    dst: &mut [f32],
    accumulate: bool,
    a: &[f32],
    b: &[f32],
    spec: &GemmSpec,
    i: usize,
    parallelism: Parallelism,
) {
    let GemmSpec { m, n, k, trans_a, trans_b, .. } = *spec;
    let a = &a[i * spec.a_batch_stride..][..m * k];
    let b = &b[i * spec.b_batch_stride..][..k * n];
    // (column stride, row stride) of op(A) [m, k] and op(B) [k, n].
    let (a_cs, a_rs) = if trans_a { (m as isize, 1) } else { (1, k as isize) };
    let (b_cs, b_rs) = if trans_b { (k as isize, 1) } else { (1, n as isize) };
    // SAFETY: `dst` holds m*n elements written with row stride n; `a` and `b`
    // were sliced to exactly m*k and k*n elements above and every index the
    // strides reach lies inside them. `dst` is read (alpha = 1) only when
    // `accumulate`, and the three slices do not alias.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], bias: &[f32], spec: &GemmSpec) -> Vec<f32> {
        let GemmSpec { batch, m, n, k, trans_a, trans_b, .. } = *spec;
        let mut out = vec![0.0; batch * m * n];
        for bi in 0..batch {
            let a = &a[bi * spec.a_batch_stride..];
            let b = &b[bi * spec.b_batch_stride..];
            for i in 0..m {
                for j in 0..n {
                    let mut acc = f64::from(bias[j]);
                    for p in 0..k {
                        let x = if trans_a { a[p * m + i] } else { a[i * k + p] };
                        let y = if trans_b { b[j * k + p] } else { b[p * n + j] };
                        acc += x as f64 * y as f64;
                    }
                    out[bi * m * n + i * n + j] = acc as f32;
                }
            }
        }
        out
    }

    #[test]
    fn every_transpose_and_broadcast_matches_naive() {
        let mut rng = crate::rng::Rng::new(7);
        for (batch, m, n, k) in [(1, 3, 5, 4), (3, 70, 65, 66), (4, 2, 1, 9)] {
            for trans_a in [false, true] {
                for trans_b in [false, true] {
                    for shared_b in [false, true] {
                        let spec = GemmSpec {
                            batch,
                            m,
                            n,
                            k,
                            trans_a,
                            trans_b,
                            a_batch_stride: m * k,
                            b_batch_stride: if shared_b { 0 } else { k * n },
                        };
                        let a = rng.normal_vec(batch * m * k, 1.0);
                        let b = rng.normal_vec(batch * k * n, 1.0);
                        let bias = rng.normal_vec(n, 1.0);
                        for (bias, want) in [
                            (None, naive(&a, &b, &vec![0.0; n], &spec)),
                            (Some(&bias[..]), naive(&a, &b, &bias, &spec)),
                        ] {
                            let got = gemm_f32(&a, &b, bias, &spec);
                            for (g, w) in got.iter().zip(&want) {
                                assert!(
                                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                                    "{spec:?} bias {}: {g} vs {w}",
                                    bias.is_some()
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
