//! The CUDA backend: buffers on one GPU, every primitive a handwritten
//! kernel of `kernels/*.cu` (one op family per file, mirrored here file for
//! file) except the matrix products, which go through cuBLASLt (f32 and
//! bf16, bias epilogue) and cuBLAS (stride-0 batches).
//!
//! Storage dtypes are f32, bf16, f16 and u32. What the bf16 towers of
//! `--precision bf16` run reads and writes bf16 directly: GEMMs (cuBLASLt,
//! f32 accumulation), unary maps, broadcasting binaries, the row gather,
//! layernorm and attention, forward and backward (the `_bf16` kernel
//! instances: widened on load, computed in f32, rounded once on store;
//! attention with head width 64 runs the tensor-core flash kernels), and
//! the custom ops that take their buffers as stored
//! ([`CustomOp::cuda_stored`]: the prompt assembly).
//! Every other primitive widens a bf16/f16 operand with a cast kernel, runs
//! in f32 and narrows its output back to the dtype of the first float
//! input. Either way the result is what the CPU reference computes, up to
//! f32 rounding before the bf16 one.
//! Layout ops (permute, narrow, concat) copy 2- to 16-byte words and never
//! convert. What mixed precision still needs is listed in docs/gpu/README.md.
//!
//! Buffers are `Arc`-shared, so cloning a storage is free; the in-place
//! primitives (gradient accumulation, optimizer steps) copy a shared buffer
//! first, never writing through another handle.

mod attention;
mod blas_lt;
mod cast;
pub(crate) mod common;
pub mod device;
mod elementwise;
mod flash_attention;
mod gemm;
mod index;
mod l2_normalize;
mod layernorm;
mod layout;
pub mod libs;
mod optimizer;
mod reduce;
mod softmax;

pub use device::{CudaDevice, PoolMemory};

use super::custom::{StoredInput, StoredOutput};
use super::{AdamWStep, AttentionSpec, BackendStorage, BinaryOp, CustomOp, GemmSpec, ParamUpdate, SgdStep, UnaryOp};
use crate::{DType, Shape};
use anyhow::{bail, Result};
use cudarc::driver::{CudaSlice, CudaView, DeviceRepr};
use half::{bf16, f16};
use std::fmt;
use std::sync::Arc;

/// A device buffer in one of the storage dtypes; bf16 and f16 are kept as
/// their 16-bit patterns.
#[derive(Clone)]
enum CudaBuffer {
    F32(Arc<CudaSlice<f32>>),
    BF16(Arc<CudaSlice<u16>>),
    F16(Arc<CudaSlice<u16>>),
    U32(Arc<CudaSlice<u32>>),
}

impl CudaBuffer {
    fn bytes(&self) -> Result<CudaView<'_, u8>> {
        match self {
            CudaBuffer::F32(b) => layout::bytes_of(b),
            CudaBuffer::BF16(b) | CudaBuffer::F16(b) => layout::bytes_of(b),
            CudaBuffer::U32(b) => layout::bytes_of(b),
        }
    }
}

/// A dtype-blind layout op (permute, narrow, concat): the same bytes moved
/// whatever the element type, which only sets the element size.
trait LayoutOp {
    fn apply<T: DeviceRepr>(&self, dev: &CudaDevice, x: &CudaSlice<T>) -> Result<CudaSlice<T>>;
}

#[derive(Clone)]
pub struct CudaStorage {
    device: CudaDevice,
    buffer: CudaBuffer,
}

impl fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CudaStorage({}, {} elements, GPU {})", self.dtype(), self.len(), self.device.ordinal())
    }
}

impl CudaStorage {
    /// Uploads f32 host values stored as `dtype` (rounded on the host exactly
    /// as `CpuStorage::from_f32` rounds).
    pub fn from_f32(device: &CudaDevice, values: &[f32], dtype: DType) -> Result<CudaStorage> {
        let buffer = match dtype {
            DType::F32 => CudaBuffer::F32(Arc::new(device.upload(values)?)),
            DType::BF16 => {
                let bits: Vec<u16> = values.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
                CudaBuffer::BF16(Arc::new(device.upload(&bits)?))
            }
            DType::F16 => {
                let bits: Vec<u16> = values.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
                CudaBuffer::F16(Arc::new(device.upload(&bits)?))
            }
            DType::U32 => {
                let ids: Vec<u32> = values.iter().map(|&x| x as u32).collect();
                CudaBuffer::U32(Arc::new(device.upload(&ids)?))
            }
        };
        Ok(CudaStorage { device: device.clone(), buffer })
    }

    pub fn from_u32(device: &CudaDevice, ids: &[u32]) -> Result<CudaStorage> {
        Ok(CudaStorage { device: device.clone(), buffer: CudaBuffer::U32(Arc::new(device.upload(ids)?)) })
    }

    pub fn device(&self) -> &CudaDevice {
        &self.device
    }

    fn f32_buffer(device: &CudaDevice, values: CudaSlice<f32>) -> CudaStorage {
        CudaStorage { device: device.clone(), buffer: CudaBuffer::F32(Arc::new(values)) }
    }

    /// A bf16 result (bit patterns) on this storage's device.
    fn bf16_buffer(&self, bits: CudaSlice<u16>) -> CudaStorage {
        CudaStorage { device: self.device.clone(), buffer: CudaBuffer::BF16(Arc::new(bits)) }
    }

    /// The bf16 bit patterns when this storage is bf16: what the `_bf16`
    /// kernel instances and cuBLASLt read as they are.
    fn bf16_bits(&self) -> Option<&CudaSlice<u16>> {
        match &self.buffer {
            CudaBuffer::BF16(bits) => Some(bits),
            _ => None,
        }
    }

    /// The values as an f32 device buffer: shared when already f32, else a
    /// widened copy.
    fn f32s(&self) -> Result<Arc<CudaSlice<f32>>> {
        let dev = &self.device;
        Ok(match &self.buffer {
            CudaBuffer::F32(b) => b.clone(),
            CudaBuffer::BF16(b) => Arc::new(cast::to_f32(dev, cast::Source::Bf16(b))?),
            CudaBuffer::F16(b) => Arc::new(cast::to_f32(dev, cast::Source::F16(b))?),
            CudaBuffer::U32(b) => Arc::new(cast::to_f32(dev, cast::Source::U32(b))?),
        })
    }

    fn ids(&self) -> Result<&CudaSlice<u32>> {
        match &self.buffer {
            CudaBuffer::U32(b) => Ok(b),
            _ => bail!("indices must be u32, got {}", self.dtype()),
        }
    }

    /// f32 values stored in `dtype` (kept as they are for f32).
    fn store(device: &CudaDevice, values: Arc<CudaSlice<f32>>, dtype: DType) -> Result<CudaStorage> {
        let buffer = match dtype {
            DType::F32 => CudaBuffer::F32(values),
            DType::BF16 => CudaBuffer::BF16(Arc::new(cast::from_f32(device, &values, cast::Target::Bf16)?)),
            DType::F16 => CudaBuffer::F16(Arc::new(cast::from_f32(device, &values, cast::Target::F16)?)),
            DType::U32 => CudaBuffer::U32(Arc::new(cast::f32_to_u32(device, &values)?)),
        };
        Ok(CudaStorage { device: device.clone(), buffer })
    }

    /// Wraps an f32 result in the dtype of `self`.
    fn like(&self, values: CudaSlice<f32>) -> Result<CudaStorage> {
        CudaStorage::store(&self.device, Arc::new(values), self.dtype())
    }

    /// Runs `update` on an f32 buffer of `self` that no other handle shares,
    /// then keeps the result in `self`'s dtype. An f32 buffer is updated in
    /// place (copied first only when shared); others go through f32 copies.
    fn with_f32_mut<R>(&mut self, update: impl FnOnce(&mut CudaSlice<f32>) -> Result<R>) -> Result<R> {
        let dev = self.device.clone();
        if self.dtype() == DType::F32 {
            return update(self.f32_mut("an f32 buffer")?);
        }
        // Not f32, so f32s() made a fresh buffer that nothing else holds.
        let mut values =
            Arc::try_unwrap(self.f32s()?).map_err(|_| anyhow::anyhow!("a widened CUDA buffer is shared"))?;
        let result = update(&mut values)?;
        *self = CudaStorage::store(&dev, Arc::new(values), self.dtype())?;
        Ok(result)
    }

    /// The f32 buffer, for an update in place: copied first when shared, so
    /// no other handle sees the write. `what` names the buffer in the error
    /// for another dtype.
    fn f32_mut(&mut self, what: &str) -> Result<&mut CudaSlice<f32>> {
        let dtype = self.dtype();
        let CudaBuffer::F32(shared) = &mut self.buffer else {
            bail!("{what} is {dtype}; the CUDA optimizers update f32 tensors (trainable parameters and their state are f32)")
        };
        if Arc::get_mut(shared).is_none() {
            *shared = Arc::new(self.device.copy(shared)?);
        }
        Arc::get_mut(shared).ok_or_else(|| anyhow::anyhow!("a freshly copied CUDA buffer is still shared"))
    }

    /// The f32 gradients of an optimizer update (a widened copy for another
    /// dtype), after checking that every buffer is on the first parameter's
    /// device.
    fn update_grads(updates: &[ParamUpdate<'_, CudaStorage>]) -> Result<Vec<Arc<CudaSlice<f32>>>> {
        if let Some(first) = updates.first() {
            for u in updates {
                for storage in [&*u.param, u.grad].into_iter().chain(u.state.iter().map(|s| &**s)) {
                    first.param.same_device(storage)?;
                }
            }
        }
        updates.iter().map(|u| u.grad.f32s()).collect()
    }

    /// The buffers one tensor's optimizer update writes in place, with its
    /// f32 gradient `grad`.
    fn update_buffers<'a, const N: usize>(
        update: &'a mut ParamUpdate<'_, CudaStorage>,
        grad: &'a CudaSlice<f32>,
        optimizer: &str,
    ) -> Result<optimizer::UpdateBuffers<'a>> {
        let (param, _, state, weight_decay) = update.parts::<N>(optimizer)?;
        let param = param.f32_mut("a parameter")?;
        let state = state.into_iter().map(|s| s.f32_mut("optimizer state")).collect::<Result<Vec<_>>>()?;
        Ok(optimizer::UpdateBuffers { param, grad, state, weight_decay })
    }

    /// The same layout op on whatever dtype the buffer holds (the layout
    /// kernels copy bytes), keeping the dtype.
    fn map_layout(&self, op: impl LayoutOp) -> Result<CudaStorage> {
        let dev = &self.device;
        let buffer = match &self.buffer {
            CudaBuffer::F32(b) => CudaBuffer::F32(Arc::new(op.apply(dev, b)?)),
            CudaBuffer::BF16(b) => CudaBuffer::BF16(Arc::new(op.apply(dev, b)?)),
            CudaBuffer::F16(b) => CudaBuffer::F16(Arc::new(op.apply(dev, b)?)),
            CudaBuffer::U32(b) => CudaBuffer::U32(Arc::new(op.apply(dev, b)?)),
        };
        Ok(CudaStorage { device: dev.clone(), buffer })
    }

    /// A model op of `src/ops/custom/` on f32 buffers of `inputs`, which
    /// must share one device.
    pub(crate) fn apply_custom(op: &dyn CustomOp, inputs: &[&CudaStorage]) -> Result<Vec<CudaStorage>> {
        let Some(first) = inputs.first() else { bail!("{} needs at least one input", op.name()) };
        for input in inputs {
            first.same_device(input)?;
        }
        let stored: Option<Vec<StoredInput>> = inputs
            .iter()
            .map(|s| match &s.buffer {
                CudaBuffer::F32(b) => Some(StoredInput::F32(b)),
                CudaBuffer::BF16(b) => Some(StoredInput::Bf16(b)),
                CudaBuffer::F16(_) | CudaBuffer::U32(_) => None,
            })
            .collect();
        if let Some(outputs) = stored.map(|s| op.cuda_stored(&first.device, &s)).transpose()?.flatten() {
            super::custom::check_outputs(op, inputs.len(), outputs.len())?;
            return outputs
                .into_iter()
                .zip(inputs)
                .map(|(out, input)| {
                    let (storage, dtype) = match out {
                        StoredOutput::F32(v) => (CudaStorage::f32_buffer(&first.device, v), DType::F32),
                        StoredOutput::Bf16(v) => (input.bf16_buffer(v), DType::BF16),
                    };
                    if dtype != input.dtype() {
                        bail!("{}: an output in {dtype} for an input in {}", op.name(), input.dtype());
                    }
                    Ok(storage)
                })
                .collect();
        }
        let values = inputs.iter().map(|s| s.f32s()).collect::<Result<Vec<_>>>()?;
        let views: Vec<&CudaSlice<f32>> = values.iter().map(|v| &**v).collect();
        let outputs = op.cuda(&first.device, &views)?;
        super::custom::check_outputs(op, inputs.len(), outputs.len())?;
        outputs.into_iter().zip(inputs).map(|(out, input)| input.like(out)).collect()
    }

    fn same_device(&self, other: &CudaStorage) -> Result<()> {
        if self.device != other.device {
            bail!(
                "operands live on different devices (GPU {} and GPU {})",
                self.device.ordinal(),
                other.device.ordinal()
            );
        }
        Ok(())
    }
}

impl BackendStorage for CudaStorage {
    fn dtype(&self) -> DType {
        match self.buffer {
            CudaBuffer::F32(_) => DType::F32,
            CudaBuffer::BF16(_) => DType::BF16,
            CudaBuffer::F16(_) => DType::F16,
            CudaBuffer::U32(_) => DType::U32,
        }
    }

    fn len(&self) -> usize {
        match &self.buffer {
            CudaBuffer::F32(b) => b.len(),
            CudaBuffer::BF16(b) | CudaBuffer::F16(b) => b.len(),
            CudaBuffer::U32(b) => b.len(),
        }
    }

    fn to_dtype(&self, dtype: DType) -> Result<Self> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        CudaStorage::store(&self.device, self.f32s()?, dtype)
    }

    fn to_host_f32(&self) -> Result<Vec<f32>> {
        let dev = &self.device;
        Ok(match &self.buffer {
            CudaBuffer::F32(b) => dev.download(b)?,
            CudaBuffer::BF16(b) => dev.download(b)?.into_iter().map(|x| bf16::from_bits(x).to_f32()).collect(),
            CudaBuffer::F16(b) => dev.download(b)?.into_iter().map(|x| f16::from_bits(x).to_f32()).collect(),
            CudaBuffer::U32(b) => dev.download(b)?.into_iter().map(|x| x as f32).collect(),
        })
    }

    fn to_host_u32(&self) -> Result<Vec<u32>> {
        self.device.download(self.ids()?)
    }

    fn gemm(&self, rhs: &Self, bias: Option<&Self>, spec: &GemmSpec) -> Result<Self> {
        self.same_device(rhs)?;
        if let Some(bias) = bias {
            self.same_device(bias)?;
        }
        let dev = &self.device;
        let lt = gemm::lt_supports(spec);
        // bf16 operands (and bias) stay bf16 where cuBLASLt takes them.
        let bf16_bias = bias.map_or(Some(None), |b| b.bf16_bits().map(Some));
        if let (true, Some(a), Some(b), Some(bias)) = (lt, self.bf16_bits(), rhs.bf16_bits(), bf16_bias) {
            if let Some(out) = gemm::gemm_lt(dev, a, b, bias, spec)? {
                return Ok(self.bf16_buffer(out));
            }
        }
        let (a, b) = (self.f32s()?, rhs.f32s()?);
        let bias = bias.map(CudaStorage::f32s).transpose()?;
        let from_lt = if lt { gemm::gemm_lt(dev, &*a, &*b, bias.as_deref(), spec)? } else { None };
        let out = match from_lt {
            Some(out) => out,
            None => gemm::gemm_sgemm(dev, &a, &b, bias.as_deref(), spec)?,
        };
        self.like(out)
    }

    fn unary(&self, op: UnaryOp) -> Result<Self> {
        if let Some(x) = self.bf16_bits() {
            return Ok(self.bf16_buffer(elementwise::unary(&self.device, x, op)?));
        }
        self.like(elementwise::unary(&self.device, &*self.f32s()?, op)?)
    }

    fn unary_backward(&self, out: &Self, grad: &Self, op: UnaryOp) -> Result<Self> {
        self.same_device(out)?;
        self.same_device(grad)?;
        if let (Some(x), Some(y), Some(g)) = (self.bf16_bits(), out.bf16_bits(), grad.bf16_bits()) {
            return Ok(self.bf16_buffer(elementwise::unary_backward(&self.device, x, y, g, op)?));
        }
        self.like(elementwise::unary_backward(&self.device, &*self.f32s()?, &*out.f32s()?, &*grad.f32s()?, op)?)
    }

    fn binary(
        &self,
        rhs: &Self,
        op: BinaryOp,
        lhs_shape: &Shape,
        rhs_shape: &Shape,
        out_shape: &Shape,
    ) -> Result<Self> {
        self.same_device(rhs)?;
        if let (Some(a), Some(b)) = (self.bf16_bits(), rhs.bf16_bits()) {
            return Ok(self.bf16_buffer(elementwise::binary(&self.device, a, b, op, lhs_shape, rhs_shape, out_shape)?));
        }
        let out =
            elementwise::binary(&self.device, &*self.f32s()?, &*rhs.f32s()?, op, lhs_shape, rhs_shape, out_shape)?;
        self.like(out)
    }

    fn broadcast_to(&self, shape: &Shape, out_shape: &Shape) -> Result<Self> {
        self.like(reduce::broadcast_to(&self.device, &*self.f32s()?, shape, out_shape)?)
    }

    fn sum_to(&self, shape: &Shape, out_shape: &Shape) -> Result<Self> {
        self.like(reduce::sum_to(&self.device, &*self.f32s()?, shape, out_shape)?)
    }

    fn permute(&self, shape: &Shape, perm: &[usize]) -> Result<Self> {
        struct Permute<'a>(&'a Shape, &'a [usize]);
        impl LayoutOp for Permute<'_> {
            fn apply<T: DeviceRepr>(&self, dev: &CudaDevice, x: &CudaSlice<T>) -> Result<CudaSlice<T>> {
                layout::permute(dev, x, self.0, self.1)
            }
        }
        self.map_layout(Permute(shape, perm))
    }

    fn narrow(&self, shape: &Shape, dim: usize, start: usize, len: usize) -> Result<Self> {
        struct Narrow<'a>(&'a Shape, usize, usize, usize);
        impl LayoutOp for Narrow<'_> {
            fn apply<T: DeviceRepr>(&self, dev: &CudaDevice, x: &CudaSlice<T>) -> Result<CudaSlice<T>> {
                layout::narrow(dev, x, self.0, self.1, self.2, self.3)
            }
        }
        self.map_layout(Narrow(shape, dim, start, len))
    }

    fn concat(parts: &[&Self], shapes: &[&Shape], dim: usize) -> Result<Self> {
        let first = parts.first().ok_or_else(|| anyhow::anyhow!("concat needs at least one tensor"))?;
        for part in parts {
            first.same_device(part)?;
            if part.dtype() != first.dtype() {
                bail!("concat: dtypes differ ({} and {})", first.dtype(), part.dtype());
            }
        }
        // The kernels copy bytes; the output takes the first part's dtype,
        // which all parts share.
        struct Concat<'a>(Vec<CudaView<'a, u8>>, &'a [&'a Shape], usize);
        impl LayoutOp for Concat<'_> {
            fn apply<T: DeviceRepr>(&self, dev: &CudaDevice, _first: &CudaSlice<T>) -> Result<CudaSlice<T>> {
                layout::concat(dev, &self.0, self.1, self.2)
            }
        }
        let bytes = parts.iter().map(|p| p.buffer.bytes()).collect::<Result<Vec<_>>>()?;
        first.map_layout(Concat(bytes, shapes, dim))
    }

    fn index_select(&self, ids: &Self, rows: usize, cols: usize) -> Result<Self> {
        self.same_device(ids)?;
        if let Some(table) = self.bf16_bits() {
            return Ok(self.bf16_buffer(index::index_select(&self.device, table, ids.ids()?, rows, cols)?));
        }
        self.like(index::index_select(&self.device, &*self.f32s()?, ids.ids()?, rows, cols)?)
    }

    fn index_add(&self, ids: &Self, rows: usize, cols: usize) -> Result<Self> {
        self.same_device(ids)?;
        self.like(index::index_add(&self.device, &*self.f32s()?, ids.ids()?, rows, cols)?)
    }

    fn layernorm(&self, gamma: &Self, beta: &Self, cols: usize, eps: f32) -> Result<(Self, Self, Self)> {
        self.same_device(gamma)?;
        self.same_device(beta)?;
        let dev = &self.device;
        if let (Some(x), Some(g), Some(b)) = (self.bf16_bits(), gamma.bf16_bits(), beta.bf16_bits()) {
            let (y, mean, rstd) = layernorm::forward(dev, x, g, b, cols, eps)?;
            return Ok((self.bf16_buffer(y), CudaStorage::f32_buffer(dev, mean), CudaStorage::f32_buffer(dev, rstd)));
        }
        let (y, mean, rstd) = layernorm::forward(dev, &*self.f32s()?, &*gamma.f32s()?, &*beta.f32s()?, cols, eps)?;
        Ok((self.like(y)?, CudaStorage::f32_buffer(dev, mean), CudaStorage::f32_buffer(dev, rstd)))
    }

    fn layernorm_backward(
        &self,
        gamma: &Self,
        mean: &Self,
        rstd: &Self,
        grad: &Self,
        cols: usize,
    ) -> Result<(Self, Self, Self)> {
        for other in [gamma, mean, rstd, grad] {
            self.same_device(other)?;
        }
        let dev = &self.device;
        let (mean, rstd) = (mean.f32s()?, rstd.f32s()?);
        if let (Some(x), Some(g), Some(dy)) = (self.bf16_bits(), gamma.bf16_bits(), grad.bf16_bits()) {
            let (dx, dgamma, dbeta) = layernorm::backward(dev, x, g, &mean, &rstd, dy, cols)?;
            return Ok((self.bf16_buffer(dx), self.bf16_buffer(dgamma), self.bf16_buffer(dbeta)));
        }
        let (dx, dgamma, dbeta) =
            layernorm::backward(dev, &*self.f32s()?, &*gamma.f32s()?, &mean, &rstd, &*grad.f32s()?, cols)?;
        Ok((self.like(dx)?, gamma.like(dgamma)?, gamma.like(dbeta)?))
    }

    fn softmax(&self, cols: usize) -> Result<Self> {
        self.like(softmax::forward(&self.device, &*self.f32s()?, cols)?)
    }

    fn softmax_backward(&self, grad: &Self, cols: usize) -> Result<Self> {
        self.same_device(grad)?;
        self.like(softmax::backward(&self.device, &*self.f32s()?, &*grad.f32s()?, cols)?)
    }

    fn l2_normalize(&self, cols: usize, eps: f32) -> Result<(Self, Self)> {
        let (y, norms) = l2_normalize::forward(&self.device, &*self.f32s()?, cols, eps)?;
        Ok((self.like(y)?, CudaStorage::f32_buffer(&self.device, norms)))
    }

    fn l2_normalize_backward(&self, norm: &Self, grad: &Self, cols: usize) -> Result<Self> {
        self.same_device(norm)?;
        self.same_device(grad)?;
        self.like(l2_normalize::backward(&self.device, &*self.f32s()?, &*norm.f32s()?, &*grad.f32s()?, cols)?)
    }

    fn attention(q: &Self, k: &Self, v: &Self, spec: &AttentionSpec) -> Result<(Self, Self)> {
        q.same_device(k)?;
        q.same_device(v)?;
        if let (Some(qb), Some(kb), Some(vb)) = (q.bf16_bits(), k.bf16_bits(), v.bf16_bits()) {
            let (out, lse) = if flash_attention::handles(spec) {
                flash_attention::forward(&q.device, qb, kb, vb, spec)?
            } else {
                attention::forward(&q.device, qb, kb, vb, spec)?
            };
            return Ok((q.bf16_buffer(out), CudaStorage::f32_buffer(&q.device, lse)));
        }
        let (out, lse) = attention::forward(&q.device, &*q.f32s()?, &*k.f32s()?, &*v.f32s()?, spec)?;
        Ok((q.like(out)?, CudaStorage::f32_buffer(&q.device, lse)))
    }

    fn attention_backward(
        q: &Self,
        k: &Self,
        v: &Self,
        out: &Self,
        lse: &Self,
        grad: &Self,
        spec: &AttentionSpec,
    ) -> Result<(Self, Self, Self)> {
        for other in [k, v, out, lse, grad] {
            q.same_device(other)?;
        }
        let dev = &q.device;
        let lse = lse.f32s()?;
        if let (Some(qb), Some(kb), Some(vb), Some(ob), Some(gb)) =
            (q.bf16_bits(), k.bf16_bits(), v.bf16_bits(), out.bf16_bits(), grad.bf16_bits())
        {
            let saved = attention::Saved { q: qb, k: kb, v: vb, out: ob, lse: &lse };
            let (dq, dk, dv) = if flash_attention::handles(spec) {
                flash_attention::backward(dev, &saved, gb, spec)?
            } else {
                attention::backward(dev, &saved, gb, spec)?
            };
            return Ok((q.bf16_buffer(dq), q.bf16_buffer(dk), q.bf16_buffer(dv)));
        }
        let saved = attention::Saved { q: &*q.f32s()?, k: &*k.f32s()?, v: &*v.f32s()?, out: &*out.f32s()?, lse: &lse };
        let (dq, dk, dv) = attention::backward(dev, &saved, &*grad.f32s()?, spec)?;
        Ok((q.like(dq)?, k.like(dk)?, v.like(dv)?))
    }

    fn add_assign(&mut self, other: &Self) -> Result<()> {
        self.same_device(other)?;
        let (dev, other) = (self.device.clone(), other.f32s()?);
        self.with_f32_mut(|acc| elementwise::add_in_place(&dev, acc, &other))
    }

    fn sgd_step(updates: &mut [ParamUpdate<'_, Self>], step: &SgdStep) -> Result<()> {
        let Some(dev) = updates.first().map(|u| u.param.device.clone()) else { return Ok(()) };
        let grads = CudaStorage::update_grads(updates)?;
        let mut buffers = updates
            .iter_mut()
            .zip(&grads)
            .map(|(u, g)| CudaStorage::update_buffers::<1>(u, g, "SGD"))
            .collect::<Result<Vec<_>>>()?;
        optimizer::sgd(&dev, &mut buffers, step)
    }

    fn adamw_step(updates: &mut [ParamUpdate<'_, Self>], step: &AdamWStep) -> Result<()> {
        let Some(dev) = updates.first().map(|u| u.param.device.clone()) else { return Ok(()) };
        let grads = CudaStorage::update_grads(updates)?;
        let mut buffers = updates
            .iter_mut()
            .zip(&grads)
            .map(|(u, g)| CudaStorage::update_buffers::<2>(u, g, "AdamW"))
            .collect::<Result<Vec<_>>>()?;
        optimizer::adamw(&dev, &mut buffers, step)
    }
}
