//! What every launcher of `kernels/*.cu` shares, beside `kernels/common.cuh`:
//! block and grid shapes, the storage types of the templated kernels, the
//! `int` size check, `common.cuh`'s `IndexMap` and the [`launch!`] macro.

use anyhow::{anyhow, bail, Result};
use cudarc::cublaslt::sys::cudaDataType;
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig};
use std::sync::OnceLock;

/// Threads per block of the elementwise and row kernels.
pub const BLOCK: u32 = 256;
/// The hardware's largest grid.y and grid.z.
const GRID_LIMIT: usize = 65535;

/// The largest grid.x the grid-stride launches use: 65535, or
/// `MLRPL_CUDA_MAX_GRID` blocks when set (the tests set a few, so that every
/// grid-stride loop walks several items and every per-block partial is
/// summed from a grid the host sized itself).
pub fn max_grid() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        let set = std::env::var("MLRPL_CUDA_MAX_GRID").ok().and_then(|v| v.parse::<usize>().ok());
        set.map_or(GRID_LIMIT, |m| m.clamp(1, GRID_LIMIT))
    })
}

/// A grid-stride launch over `n` items with `block` threads per block.
pub fn grid_for(n: usize, block: u32) -> LaunchConfig {
    let blocks = n.div_ceil(block as usize).clamp(1, max_grid()) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 }
}

/// One block of `BLOCK` threads: the final stage of a two-stage reduction.
pub fn single_block() -> LaunchConfig {
    LaunchConfig { grid_dim: (1, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// One block per row (grid-stride over rows), with `shared` dynamic bytes.
pub fn rows_config(rows: usize, block: u32, shared: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.clamp(1, max_grid()) as u32, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: shared,
    }
}

/// A storage type of the templated kernels (`kernels/common.cuh`): f32, or
/// bf16 as its u16 bit pattern (f16 buffers never reach these kernels).
pub trait KernelElem: DeviceRepr {
    /// Elements per 16-byte load.
    const LANES: usize;
    /// The type as cuBLASLt names it.
    const BLAS_TYPE: cudaDataType;
    /// The kernel instance for this type: the f32 one or the `_bf16` one.
    fn pick(f32_kernel: &'static str, bf16_kernel: &'static str) -> &'static str;
}

impl KernelElem for f32 {
    const LANES: usize = 4;
    const BLAS_TYPE: cudaDataType = cudaDataType::CUDA_R_32F;
    fn pick(f32_kernel: &'static str, _: &'static str) -> &'static str {
        f32_kernel
    }
}

impl KernelElem for u16 {
    const LANES: usize = 8;
    const BLAS_TYPE: cudaDataType = cudaDataType::CUDA_R_16BF;
    fn pick(_: &'static str, bf16_kernel: &'static str) -> &'static str {
        bf16_kernel
    }
}

/// One warp per row, `BLOCK / 32` rows per block.
pub fn warp_per_row(rows: usize) -> LaunchConfig {
    grid_for(rows * 32, BLOCK)
}

/// Rows of `cols` elements in `x` (0 for zero columns).
pub fn rows_of<T>(x: &CudaSlice<T>, cols: usize) -> usize {
    x.len().checked_div(cols).unwrap_or(0)
}

/// A size as the `int` kernels take, or an error naming what is too large.
pub fn int(n: usize, what: &str) -> Result<i32> {
    i32::try_from(n).map_err(|_| anyhow!("{what} = {n} is too large for the CUDA kernels (limit 2^31 - 1)"))
}

/// `struct IndexMap` of `kernels/common.cuh`: up to 8 dims with two sets of
/// element strides.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IndexMap {
    rank: i32,
    dims: [i32; MAX_RANK],
    a: [i32; MAX_RANK],
    b: [i32; MAX_RANK],
}

pub const MAX_RANK: usize = 8;

// SAFETY: IndexMap is #[repr(C)] plain data (i32 fields only) with the same
// layout as the CUDA struct, so it can be passed by value as a kernel argument.
unsafe impl DeviceRepr for IndexMap {}

impl IndexMap {
    /// `dims` with strides `a` and `b` (missing strides are 0).
    pub fn new(dims: &[usize], a: &[usize], b: &[usize]) -> Result<IndexMap> {
        if dims.len() > MAX_RANK {
            bail!("the CUDA kernels handle tensors of rank <= {MAX_RANK}, got rank {}", dims.len());
        }
        let mut map = IndexMap { rank: dims.len() as i32, ..Default::default() };
        for (d, &size) in dims.iter().enumerate() {
            map.dims[d] = int(size, "dimension")?;
            map.a[d] = int(a.get(d).copied().unwrap_or(0), "stride")?;
            map.b[d] = int(b.get(d).copied().unwrap_or(0), "stride")?;
        }
        Ok(map)
    }
}

/// Launches `kernel` with `cfg` and the listed arguments (device buffers by
/// reference, scalars as references to locals), mapping errors to one line
/// naming the kernel. Expands to a call of the unsafe `LaunchArgs::launch`:
/// use it inside `unsafe { }` with a `// SAFETY:` comment.
macro_rules! launch {
    ($kernel:expr, $cfg:expr; $($arg:expr),+ $(,)?) => {{
        let kernel: &$crate::backend::cuda::device::Kernel = &$kernel;
        let cfg: cudarc::driver::LaunchConfig = $cfg;
        let mut builder = kernel.stream.launch_builder(&kernel.func);
        $( cudarc::driver::PushKernelArg::arg(&mut builder, $arg); )+
        kernel.check(builder.launch(cfg))
    }};
}
pub(crate) use launch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_are_clamped_and_sizes_checked() {
        assert_eq!(grid_for(0, 256).grid_dim.0, 1);
        assert_eq!(grid_for(257, 256).grid_dim.0, 2);
        assert_eq!(grid_for(1 << 40, 256).grid_dim.0 as usize, max_grid());
        assert!(int(1 << 31, "n").unwrap_err().to_string().contains("n = 2147483648"));
    }
}
