//! Batched matrix products through cuBLAS (`cublasSgemmStridedBatched`).
//!
//! cuBLAS is column-major; a row-major [m, n] product C = op(A) op(B) is the
//! column-major product C^T = op(B)^T op(A)^T, so A and B swap places and
//! each keeps its own transpose flag. f32 inputs, f32 accumulation; the
//! handle keeps cuBLAS's default math mode, which does not use TF32 tensor
//! cores for f32 (NVIDIA_TF32_OVERRIDE=1 in the environment would change
//! that and break the 1e-4 parity).

use super::device::CudaDevice;
use crate::backend::GemmSpec;
use anyhow::{anyhow, Result};
use cudarc::cublas::{sys::cublasOperation_t, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::CudaSlice;

fn c_int(n: usize, what: &str) -> Result<i32> {
    i32::try_from(n).map_err(|_| anyhow!("GEMM {what} = {n} exceeds cuBLAS's 32-bit sizes"))
}

/// `out[b] = op(A[b]) @ op(B[b])` for the whole batch (see [`GemmSpec`]).
pub fn gemm(dev: &CudaDevice, a: &CudaSlice<f32>, b: &CudaSlice<f32>, spec: &GemmSpec) -> Result<CudaSlice<f32>> {
    let GemmSpec { batch, m, n, k, trans_a, trans_b, a_batch_stride, b_batch_stride } = *spec;
    let out_len = batch * m * n;
    if out_len == 0 {
        return dev.alloc::<f32>(0);
    }
    if k == 0 {
        return dev.alloc_zeros::<f32>(out_len);
    }
    let mut out = dev.alloc::<f32>(out_len)?;
    let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
    let cfg = StridedBatchedConfig {
        gemm: GemmConfig {
            // Column-major view: first operand B^T (n x k), second A^T (k x m).
            transa: op(trans_b),
            transb: op(trans_a),
            m: c_int(n, "n")?,
            n: c_int(m, "m")?,
            k: c_int(k, "k")?,
            alpha: 1.0f32,
            lda: c_int(if trans_b { k } else { n }, "leading dimension of B")?,
            ldb: c_int(if trans_a { m } else { k }, "leading dimension of A")?,
            beta: 0.0f32,
            ldc: c_int(n, "n")?,
        },
        batch_size: c_int(batch, "batch")?,
        stride_a: b_batch_stride as i64,
        stride_b: a_batch_stride as i64,
        stride_c: (m * n) as i64,
    };
    // SAFETY: the caller (ops::matmul) checked that A holds (batch - 1) *
    // a_batch_stride + m k elements and B likewise, so every matrix cuBLAS
    // reads lies inside `a` and `b`; `out` holds batch * m * n elements
    // written with ldc = n; beta = 0, so `out` is only written. All three
    // buffers belong to the stream the cuBLAS handle is bound to.
    unsafe { dev.blas().gemm_strided_batched(cfg, b, a, &mut out) }
        .map_err(|e| anyhow!("cuBLAS sgemm_strided_batched ({batch} x [{m}, {k}] @ [{k}, {n}]) failed: {e}"))?;
    Ok(out)
}
