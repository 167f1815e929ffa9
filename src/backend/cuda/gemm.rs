//! Batched matrix products.
//!
//! * cuBLASLt, for f32 and bf16 alike (`blas_lt.rs`: plans cached per
//!   shape): f32 accumulation with `CUBLAS_COMPUTE_32F`, which for f32 data
//!   uses no TF32 (so the 1e-4 parity holds) and for bf16 the tensor cores;
//!   `linear`'s bias added in the epilogue (`CUBLASLT_EPILOGUE_BIAS`) before
//!   the one rounding of the output. CLIP's QuickGELU is not one of
//!   cuBLASLt's epilogue activations (GELU there is the erf/tanh one), so it
//!   stays a kernel.
//! * cuBLAS `cublasSgemmStridedBatched` for what cuBLASLt is not given: a
//!   batch that reuses one operand (stride 0, documented for cuBLAS), k = 0,
//!   and any shape cuBLASLt's heuristic has no algorithm for, in f32 (bf16
//!   operands widened by the caller); a bias is then added by the
//!   broadcast-add kernel. The cuBLAS handle keeps its default
//!   math mode, which does not use TF32 for f32 (NVIDIA_TF32_OVERRIDE=1 in
//!   the environment would change that and break the 1e-4 parity).
//!
//! Both libraries are column-major; a row-major [m, n] product C = op(A)
//! op(B) is the column-major product C^T = op(B)^T op(A)^T, so A and B swap
//! places and each keeps its own transpose flag.

use super::blas_lt::{Launch, LtOperands, LtShape};
use super::common::KernelElem;
use super::device::CudaDevice;
use super::elementwise;
use crate::backend::{BinaryOp, GemmSpec};
use crate::Shape;
use anyhow::{anyhow, Result};
use cudarc::cublas::{sys::cublasOperation_t, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};

fn c_int(n: usize, what: &str) -> Result<i32> {
    i32::try_from(n).map_err(|_| anyhow!("GEMM {what} = {n} exceeds cuBLAS's 32-bit sizes"))
}

fn describe(spec: &GemmSpec, bias: bool) -> String {
    let GemmSpec { batch, m, n, k, .. } = *spec;
    format!("{batch} x [{m}, {k}] @ [{k}, {n}]{}", if bias { " + bias" } else { "" })
}

/// Whether [`gemm_lt`] takes `spec`: cuBLASLt needs k >= 1, and a batch
/// that reuses one operand (stride 0) is left to [`gemm_sgemm`].
pub fn lt_supports(spec: &GemmSpec) -> bool {
    spec.k > 0 && (spec.batch == 1 || (spec.a_batch_stride > 0 && spec.b_batch_stride > 0))
}

/// `out[b] = op(A[b]) @ op(B[b]) (+ bias)` through cuBLASLt (see the module
/// documentation), in the operands' storage type; `spec` must pass
/// [`lt_supports`]. None when cuBLASLt has no algorithm for the shape.
pub fn gemm_lt<T: KernelElem>(
    dev: &CudaDevice,
    a: &CudaSlice<T>,
    b: &CudaSlice<T>,
    bias: Option<&CudaSlice<T>>,
    spec: &GemmSpec,
) -> Result<Option<CudaSlice<T>>> {
    let GemmSpec { batch, m, n, k, trans_a, trans_b, a_batch_stride, b_batch_stride } = *spec;
    let out_len = batch * m * n;
    if out_len == 0 {
        return dev.alloc::<T>(0).map(Some);
    }
    let batched = batch > 1;
    let shape = LtShape {
        data_type: T::BLAS_TYPE,
        // Column-major view: first operand B^T (n x k), second A^T (k x m).
        trans_a: trans_b,
        trans_b: trans_a,
        m: n as u64,
        n: m as u64,
        k: k as u64,
        lda: if trans_b { k } else { n } as i64,
        ldb: if trans_a { m } else { k } as i64,
        ldc: n as i64,
        batch: c_int(batch, "batch")?,
        stride_a: if batched { b_batch_stride as i64 } else { 0 },
        stride_b: if batched { a_batch_stride as i64 } else { 0 },
        stride_c: if batched { (m * n) as i64 } else { 0 },
        bias: bias.is_some(),
    };
    let lt = dev.blas_lt()?;
    let mut out = dev.alloc::<T>(out_len)?;
    let stream = dev.stream();
    let launch = {
        // Event tracking is off (one stream), so the address guards record
        // nothing; they live until the call is queued all the same.
        let (a_ptr, _a) = a.device_ptr(stream);
        let (b_ptr, _b) = b.device_ptr(stream);
        let bias_ptr = bias.map(|v| v.device_ptr(stream));
        let (out_ptr, _out) = out.device_ptr_mut(stream);
        let operands = LtOperands { a: b_ptr, b: a_ptr, bias: bias_ptr.as_ref().map(|(p, _)| *p), out: out_ptr };
        // SAFETY: the caller (ops::matmul, ops::linear) checked that A holds
        // (batch - 1) * a_batch_stride + m k elements and B likewise, so
        // every matrix cuBLASLt reads lies inside `a` and `b`; `out` is a
        // fresh buffer of batch * m * n elements, written with ldc = n
        // (beta = 0: only written); the bias, when given, holds n elements,
        // read once per output row. All are whole pool allocations of the
        // compute stream, which the call is enqueued on.
        unsafe { lt.matmul(&shape, &operands, stream, &|| describe(spec, bias.is_some())) }?
    };
    Ok((launch == Launch::Queued).then_some(out))
}

/// `out[b] = op(A[b]) @ op(B[b]) (+ bias)` in f32 through cuBLAS sgemm, for
/// what [`lt_supports`] refuses (any spec works).
pub fn gemm_sgemm(
    dev: &CudaDevice,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    bias: Option<&CudaSlice<f32>>,
    spec: &GemmSpec,
) -> Result<CudaSlice<f32>> {
    let GemmSpec { batch, m, n, k, trans_a, trans_b, a_batch_stride, b_batch_stride } = *spec;
    let out_len = batch * m * n;
    if out_len == 0 {
        return dev.alloc::<f32>(0);
    }
    let mut out = if k == 0 {
        dev.alloc_zeros::<f32>(out_len)?
    } else {
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
        // a_batch_stride + m k elements and B likewise (a stride of 0 reuses
        // one matrix), so every matrix cuBLAS reads lies inside `a` and `b`;
        // `out` holds batch * m * n elements written with ldc = n; beta = 0,
        // so `out` is only written. All three buffers belong to the stream
        // the cuBLAS handle is bound to.
        unsafe { dev.blas().gemm_strided_batched(cfg, b, a, &mut out) }
            .map_err(|e| anyhow!("cuBLAS sgemm_strided_batched ({}) failed: {e}", describe(spec, false)))?;
        out
    };
    if let Some(bias) = bias {
        let rows = Shape::new(vec![batch * m, n]);
        out = elementwise::binary(dev, &out, bias, BinaryOp::Add, &rows, &Shape::new(vec![1, n]), &rows)?;
    }
    Ok(out)
}
