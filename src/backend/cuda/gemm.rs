//! Batched matrix products.
//!
//! * f32: cuBLAS `cublasSgemmStridedBatched`, f32 accumulation; the handle
//!   keeps cuBLAS's default math mode, which does not use TF32 tensor cores
//!   for f32 (NVIDIA_TF32_OVERRIDE=1 in the environment would change that
//!   and break the 1e-4 parity). A bias is added by the broadcast-add kernel.
//! * bf16 (the frozen towers of `--precision bf16`): cuBLASLt, bf16 inputs
//!   and output, f32 accumulation (`CUBLAS_COMPUTE_32F`, tensor cores), the
//!   bias added in the epilogue (`CUBLASLT_EPILOGUE_BIAS`) before the one
//!   rounding to bf16. CLIP's QuickGELU is not one of cuBLASLt's epilogue
//!   activations (GELU there is the erf/tanh one), so it stays a kernel.
//!
//! Both libraries are column-major; a row-major [m, n] product C = op(A)
//! op(B) is the column-major product C^T = op(B)^T op(A)^T, so A and B swap
//! places and each keeps its own transpose flag.

use super::device::CudaDevice;
use crate::backend::GemmSpec;
use anyhow::{anyhow, Result};
use cudarc::cublas::{sys::cublasOperation_t, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::cublaslt::{Matmul, MatmulConfig};
use cudarc::driver::CudaSlice;
use half::bf16;

fn c_int(n: usize, what: &str) -> Result<i32> {
    i32::try_from(n).map_err(|_| anyhow!("GEMM {what} = {n} exceeds cuBLAS's 32-bit sizes"))
}

/// `out[b] = op(A[b]) @ op(B[b])` for the whole batch (see [`GemmSpec`]).
pub fn gemm(
    dev: &CudaDevice,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    spec: &GemmSpec,
) -> Result<CudaSlice<f32>> {
    let GemmSpec {
        batch,
        m,
        n,
        k,
        trans_a,
        trans_b,
        a_batch_stride,
        b_batch_stride,
    } = *spec;
    let out_len = batch * m * n;
    if out_len == 0 {
        return dev.alloc::<f32>(0);
    }
    if k == 0 {
        return dev.alloc_zeros::<f32>(out_len);
    }
    let mut out = dev.alloc::<f32>(out_len)?;
    let op = |t: bool| {
        if t {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
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
    unsafe { dev.blas().gemm_strided_batched(cfg, b, a, &mut out) }.map_err(|e| {
        anyhow!("cuBLAS sgemm_strided_batched ({batch} x [{m}, {k}] @ [{k}, {n}]) failed: {e}")
    })?;
    Ok(out)
}

/// Whether [`gemm_bf16`] takes `spec`: cuBLASLt needs k >= 1, and a batch
/// that reuses one operand (stride 0) is left to the f32 path, whose
/// strided-batched cuBLAS call documents stride 0.
pub fn bf16_supports(spec: &GemmSpec) -> bool {
    spec.k > 0 && (spec.batch == 1 || (spec.a_batch_stride > 0 && spec.b_batch_stride > 0))
}

/// `out[b] = op(A[b]) @ op(B[b]) (+ bias)` on bf16 bit patterns through
/// cuBLASLt (see the module documentation); `spec` must pass
/// [`bf16_supports`].
pub fn gemm_bf16(
    dev: &CudaDevice,
    a: &CudaSlice<u16>,
    b: &CudaSlice<u16>,
    bias: Option<&CudaSlice<u16>>,
    spec: &GemmSpec,
) -> Result<CudaSlice<u16>> {
    let GemmSpec {
        batch,
        m,
        n,
        k,
        trans_a,
        trans_b,
        a_batch_stride,
        b_batch_stride,
    } = *spec;
    let out_len = batch * m * n;
    if out_len == 0 {
        return dev.alloc::<u16>(0);
    }
    let batched = batch > 1;
    let cfg = MatmulConfig {
        // Column-major view: first operand B^T (n x k), second A^T (k x m).
        transa: trans_b,
        transb: trans_a,
        transc: false,
        m: n as u64,
        n: m as u64,
        k: k as u64,
        alpha: 1.0,
        lda: if trans_b { k } else { n } as i64,
        ldb: if trans_a { m } else { k } as i64,
        beta: 0.0,
        ldc: n as i64,
        stride_a: batched.then_some(b_batch_stride as i64),
        stride_b: batched.then_some(a_batch_stride as i64),
        stride_c: batched.then_some((m * n) as i64),
        // One bias for every matrix of the batch.
        stride_bias: None,
        batch_size: batched.then(|| c_int(batch, "batch")).transpose()?,
    };
    let mut out = dev.alloc::<u16>(out_len)?;
    let shape = || {
        format!(
            "{batch} x [{m}, {k}] @ [{k}, {n}]{}",
            if bias.is_some() { " + bias" } else { "" }
        )
    };
    // SAFETY: bf16 and u16 have the same size and every u16 pattern is a
    // bf16 value, so the views reinterpret the buffers exactly (a length
    // mismatch would return None, reported below).
    let (a16, b16, bias16, mut out16) = unsafe {
        (
            a.transmute::<bf16>(a.len()),
            b.transmute::<bf16>(b.len()),
            bias.map(|v| v.transmute::<bf16>(v.len())),
            out.transmute_mut::<bf16>(out_len),
        )
    };
    let (Some(a16), Some(b16), Some(out16)) = (a16, b16, out16.as_mut()) else {
        anyhow::bail!(
            "cannot view the operands of the bf16 GEMM {} as bf16",
            shape()
        );
    };
    let bias16 = bias16
        .map(|v| {
            v.ok_or_else(|| anyhow!("cannot view the bias of the bf16 GEMM {} as bf16", shape()))
        })
        .transpose()?;
    // SAFETY: as for the f32 GEMM, the caller (ops::matmul) checked that A
    // holds (batch - 1) * a_batch_stride + m k elements and B likewise, so
    // every matrix cuBLASLt reads lies inside `a` and `b`; `out` holds
    // batch * m * n elements written with ldc = n (beta = 0: only written);
    // the bias, when given, holds n elements (ops::linear checked its
    // shape), read once per output row. The handle, its workspace and the
    // buffers all belong to the device's compute stream.
    unsafe {
        dev.blas_lt()
            .matmul(cfg, &a16, &b16, out16, bias16.as_ref(), None)
    }
    .map_err(|e| anyhow!("cuBLASLt bf16 matmul ({}) failed: {e}", shape()))?;
    Ok(out)
}
