//! Dtype conversions on the device (`kernels/cast.cu`).

use super::common::{grid_for, int, launch, BLOCK};
use super::device::CudaDevice;
use anyhow::Result;
use cudarc::driver::{CudaSlice, LaunchConfig};

/// The cast kernels' launch: a thread per group of 4 elements.
fn cast_grid(len: usize) -> LaunchConfig {
    grid_for(len.div_ceil(4), BLOCK)
}

/// A buffer to widen to f32.
pub enum Source<'a> {
    Bf16(&'a CudaSlice<u16>),
    F16(&'a CudaSlice<u16>),
    U32(&'a CudaSlice<u32>),
}

/// The 16-bit dtype to narrow f32 to.
pub enum Target {
    Bf16,
    F16,
}

pub fn to_f32(dev: &CudaDevice, src: Source<'_>) -> Result<CudaSlice<f32>> {
    let (len, name) = match &src {
        Source::Bf16(b) => (b.len(), "bf16_to_f32"),
        Source::F16(b) => (b.len(), "f16_to_f32"),
        Source::U32(b) => (b.len(), "u32_to_f32"),
    };
    let mut out = dev.alloc::<f32>(len)?;
    if len == 0 {
        return Ok(out);
    }
    let kernel = dev.kernel("cast", name)?;
    let n = int(len, "elements")?;
    // SAFETY: `src` and `out` both hold `n` elements of the kernel's element
    // types (u16 / u32 in, f32 out); the kernel touches indices < n only.
    match src {
        Source::Bf16(b) | Source::F16(b) => unsafe { launch!(kernel, cast_grid(len); b, &mut out, &n) }?,
        Source::U32(b) => unsafe { launch!(kernel, cast_grid(len); b, &mut out, &n) }?,
    }
    Ok(out)
}

pub fn from_f32(dev: &CudaDevice, src: &CudaSlice<f32>, target: Target) -> Result<CudaSlice<u16>> {
    let mut out = dev.alloc::<u16>(src.len())?;
    if src.is_empty() {
        return Ok(out);
    }
    let name = match target {
        Target::Bf16 => "f32_to_bf16",
        Target::F16 => "f32_to_f16",
    };
    let kernel = dev.kernel("cast", name)?;
    let n = int(src.len(), "elements")?;
    // SAFETY: `src` holds n f32 and `out` n u16; indices < n only.
    unsafe { launch!(kernel, cast_grid(src.len()); src, &mut out, &n) }?;
    Ok(out)
}

pub fn f32_to_u32(dev: &CudaDevice, src: &CudaSlice<f32>) -> Result<CudaSlice<u32>> {
    let mut out = dev.alloc::<u32>(src.len())?;
    if src.is_empty() {
        return Ok(out);
    }
    let kernel = dev.kernel("cast", "f32_to_u32")?;
    let n = int(src.len(), "elements")?;
    // SAFETY: `src` holds n f32 and `out` n u32; indices < n only.
    unsafe { launch!(kernel, cast_grid(src.len()); src, &mut out, &n) }?;
    Ok(out)
}
