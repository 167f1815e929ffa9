//! Scaled dot-product attention (`kernels/attention.cu`): one block per
//! query row (key row for dk/dv), the row's scores in shared memory. The
//! forward saves each row's log-sum-exp; the backward recomputes the
//! probabilities from it. f32 attention and bf16 at head widths other than
//! 64 (bf16 at 64 goes to `flash_attention.rs`).

use super::common::{int, launch, rows_config, KernelElem};
use super::device::CudaDevice;
use crate::backend::AttentionSpec;
use anyhow::Result;
use cudarc::driver::CudaSlice;

/// Threads per block of the attention kernels.
const ATTENTION_BLOCK: u32 = 128;

/// What the forward saved, for the backward: q, k, v and out in one storage
/// type (f32 or bf16), lse f32.
pub struct Saved<'a, T> {
    pub q: &'a CudaSlice<T>,
    pub k: &'a CudaSlice<T>,
    pub v: &'a CudaSlice<T>,
    pub out: &'a CudaSlice<T>,
    pub lse: &'a CudaSlice<f32>,
}

/// The spec as kernel arguments: (bh, q_len, kv_len, head_dim, causal).
fn sizes(spec: &AttentionSpec) -> Result<[i32; 5]> {
    Ok([
        int(spec.batch_heads, "batch_heads")?,
        int(spec.q_len, "q_len")?,
        int(spec.kv_len, "kv_len")?,
        int(spec.head_dim, "head_dim")?,
        spec.causal as i32,
    ])
}

/// Returns (out [bh, q_len, head_dim] in the storage type of q, k and v
/// (f32 or bf16), lse [bh, q_len] f32).
pub fn forward<T: KernelElem>(
    dev: &CudaDevice,
    q: &CudaSlice<T>,
    k: &CudaSlice<T>,
    v: &CudaSlice<T>,
    spec: &AttentionSpec,
) -> Result<(CudaSlice<T>, CudaSlice<f32>)> {
    let rows = spec.batch_heads * spec.q_len;
    let mut out = dev.alloc::<T>(rows * spec.head_dim)?;
    let mut lse = dev.alloc::<f32>(rows)?;
    if rows == 0 || spec.kv_len == 0 {
        return Ok((out, lse));
    }
    let shared = dev.check_shared("attention forward", spec.head_dim + spec.kv_len)?;
    let [bh, q_len, kv_len, hd, causal] = sizes(spec)?;
    let kernel = dev.kernel("attention", T::pick("attention_forward", "attention_forward_bf16"))?;
    // SAFETY: q and out hold bh * q_len * hd elements, k and v bh * kv_len *
    // hd (all of the kernel instance's type), lse bh * q_len f32 (shapes
    // checked by ops::attention); the dynamic shared memory holds the hd +
    // kv_len floats the kernel indexes.
    unsafe {
        launch!(kernel, rows_config(rows, ATTENTION_BLOCK, shared); q, k, v, &mut out, &mut lse, &bh, &q_len, &kv_len, &hd, &causal, &spec.scale)
    }?;
    Ok((out, lse))
}

/// Returns (dq, dk, dv) in the storage type of the saved tensors and grad.
pub fn backward<T: KernelElem>(
    dev: &CudaDevice,
    saved: &Saved<'_, T>,
    grad: &CudaSlice<T>,
    spec: &AttentionSpec,
) -> Result<(CudaSlice<T>, CudaSlice<T>, CudaSlice<T>)> {
    let q_rows = spec.batch_heads * spec.q_len;
    let kv_rows = spec.batch_heads * spec.kv_len;
    let mut dq = dev.alloc::<T>(q_rows * spec.head_dim)?;
    let mut dk = dev.alloc::<T>(kv_rows * spec.head_dim)?;
    let mut dv = dev.alloc::<T>(kv_rows * spec.head_dim)?;
    if q_rows == 0 || kv_rows == 0 {
        return Ok((dq, dk, dv));
    }
    let mut delta = dev.alloc::<f32>(q_rows)?;
    let dq_shared = dev.check_shared("attention backward (dq)", 2 * spec.head_dim + spec.kv_len)?;
    let dkdv_shared = dev.check_shared("attention backward (dk, dv)", 2 * spec.head_dim + 2 * spec.q_len)?;
    let [bh, q_len, kv_len, hd, causal] = sizes(spec)?;
    let Saved { q, k, v, out, lse } = *saved;
    let dq_kernel = dev.kernel("attention", T::pick("attention_backward_dq", "attention_backward_dq_bf16"))?;
    // SAFETY: buffer sizes as in `forward`, grad and dq like q (all of the
    // kernel instance's type), delta q_rows f32; the dynamic shared memory
    // holds 2 hd + kv_len floats.
    unsafe {
        launch!(dq_kernel, rows_config(q_rows, ATTENTION_BLOCK, dq_shared);
            q, k, v, out, lse, grad, &mut dq, &mut delta, &bh, &q_len, &kv_len, &hd, &causal, &spec.scale)
    }?;
    let dkdv_kernel = dev.kernel("attention", T::pick("attention_backward_dkdv", "attention_backward_dkdv_bf16"))?;
    // SAFETY: dk and dv hold kv_rows * hd elements of the kernel instance's
    // type; delta was written by the launch above on the same stream;
    // shared memory holds 2 hd + 2 q_len floats.
    unsafe {
        launch!(dkdv_kernel, rows_config(kv_rows, ATTENTION_BLOCK, dkdv_shared);
            q, k, v, lse, grad, &delta, &mut dk, &mut dv, &bh, &q_len, &kv_len, &hd, &causal, &spec.scale)
    }?;
    Ok((dq, dk, dv))
}
