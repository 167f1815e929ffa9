//! Flash attention on tensor cores (`kernels/flash_attention.cu`): bf16
//! heads of width 64, tiles of 64 queries and 64 keys, online softmax in
//! registers, `mma.sync` m16n8k16 products. The forward saves each row's
//! log-sum-exp; the backward recomputes the probabilities from it in two
//! deterministic kernels (dK and dV per key tile, dQ per query tile) after
//! the row dots `delta = rowsum(grad * out)`. f32 attention and other head
//! widths go through `attention.rs`.

use super::attention::Saved;
use super::common::{int, launch, rows_config, warp_per_row};
use super::device::CudaDevice;
use crate::backend::AttentionSpec;
use anyhow::Result;
use cudarc::driver::CudaSlice;

/// The head width the kernels are built for.
const HEAD_DIM: usize = 64;
/// Queries (or keys) per block tile.
const TILE: usize = 64;
/// Threads per block of the tile kernels: 4 warps of 16 rows.
const THREADS: u32 = 128;

/// Whether these kernels run `spec` (its bf16 instance): head width 64.
pub fn handles(spec: &AttentionSpec) -> bool {
    spec.head_dim == HEAD_DIM
}

/// The spec as kernel arguments: (bh, q_len, kv_len, causal).
fn sizes(spec: &AttentionSpec) -> Result<[i32; 4]> {
    Ok([
        int(spec.batch_heads, "batch_heads")?,
        int(spec.q_len, "q_len")?,
        int(spec.kv_len, "kv_len")?,
        spec.causal as i32,
    ])
}

/// The blocks' work items over rows of `len`: each head's tiles (the
/// kernels count them in an int).
fn tiles(spec: &AttentionSpec, len: usize) -> Result<usize> {
    let items = spec.batch_heads * len.div_ceil(TILE);
    int(items, "batch_heads x attention tiles")?;
    Ok(items)
}

/// Returns (out [bh, q_len, 64] bf16, lse [bh, q_len] f32).
pub fn forward(
    dev: &CudaDevice,
    q: &CudaSlice<u16>,
    k: &CudaSlice<u16>,
    v: &CudaSlice<u16>,
    spec: &AttentionSpec,
) -> Result<(CudaSlice<u16>, CudaSlice<f32>)> {
    let rows = spec.batch_heads * spec.q_len;
    let mut out = dev.alloc::<u16>(rows * HEAD_DIM)?;
    let mut lse = dev.alloc::<f32>(rows)?;
    if rows == 0 || spec.kv_len == 0 {
        return Ok((out, lse));
    }
    let [bh, q_len, kv_len, causal] = sizes(spec)?;
    let query_tiles = tiles(spec, spec.q_len)?;
    let kernel = dev.kernel("flash_attention", "flash_attention_forward")?;
    // SAFETY: q and out hold bh * q_len * 64 bf16, k and v bh * kv_len * 64
    // (shapes checked by ops::attention, head width by `handles`), lse
    // bh * q_len f32; each is a whole allocation (the driver aligns those
    // to 256 bytes), so the kernel's 16-byte loads of 128-byte rows are
    // aligned; its shared memory is static (18 KiB).
    unsafe {
        launch!(kernel, rows_config(query_tiles, THREADS, 0); q, k, v, &mut out, &mut lse, &bh, &q_len, &kv_len, &causal, &spec.scale)
    }?;
    Ok((out, lse))
}

/// Returns (dq, dk, dv), bf16.
pub fn backward(
    dev: &CudaDevice,
    saved: &Saved<'_, u16>,
    grad: &CudaSlice<u16>,
    spec: &AttentionSpec,
) -> Result<(CudaSlice<u16>, CudaSlice<u16>, CudaSlice<u16>)> {
    let q_rows = spec.batch_heads * spec.q_len;
    let kv_rows = spec.batch_heads * spec.kv_len;
    let mut dq = dev.alloc::<u16>(q_rows * HEAD_DIM)?;
    let mut dk = dev.alloc::<u16>(kv_rows * HEAD_DIM)?;
    let mut dv = dev.alloc::<u16>(kv_rows * HEAD_DIM)?;
    if q_rows == 0 || kv_rows == 0 {
        return Ok((dq, dk, dv));
    }
    let [bh, q_len, kv_len, causal] = sizes(spec)?;
    let Saved { q, k, v, out, lse } = *saved;
    let mut delta = dev.alloc::<f32>(q_rows)?;
    let rows = int(q_rows, "batch_heads * q_len")?;
    let delta_kernel = dev.kernel("flash_attention", "flash_attention_backward_delta")?;
    // SAFETY: out and grad hold q_rows * 64 bf16, delta q_rows f32.
    unsafe { launch!(delta_kernel, warp_per_row(q_rows); out, grad, &mut delta, &rows) }?;
    let key_tiles = tiles(spec, spec.kv_len)?;
    let dkdv_kernel = dev.kernel("flash_attention", "flash_attention_backward_dkdv")?;
    // SAFETY: sizes as in `forward`, grad like q, dk and dv like k; delta
    // was written by the launch above on the same stream; static shared
    // memory (36.5 KiB).
    unsafe {
        launch!(dkdv_kernel, rows_config(key_tiles, THREADS, 0);
            q, k, v, grad, lse, &delta, &mut dk, &mut dv, &bh, &q_len, &kv_len, &causal, &spec.scale)
    }?;
    let query_tiles = tiles(spec, spec.q_len)?;
    let dq_kernel = dev.kernel("flash_attention", "flash_attention_backward_dq")?;
    // SAFETY: as the launch above, dq like q; static shared memory (27 KiB).
    unsafe {
        launch!(dq_kernel, rows_config(query_tiles, THREADS, 0);
            q, k, v, grad, lse, &delta, &mut dq, &bh, &q_len, &kv_len, &causal, &spec.scale)
    }?;
    Ok((dq, dk, dv))
}
