//! The tensor handle. A [`Tensor`] is a cheap, clonable reference to a dense
//! row-major buffer on one device, with its shape, dtype and autograd state.
//! Ops (in [`crate::ops`]) never mutate their inputs; only the optimizer
//! updates parameters in place.

use crate::autograd;
use crate::backend::{CpuStorage, CudaStorage, Storage};
use crate::device::Device;
use crate::rng::Rng;
use crate::{DType, Shape};
use anyhow::{bail, Context, Result};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Unique per tensor handle; the tape refers to tensors by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn next() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(1);
        TensorId(COUNTER.fetch_add(1, Ordering::Relaxed))
    }
}

#[derive(Clone)]
pub struct Tensor(Arc<Inner>);

struct Inner {
    id: TensorId,
    /// Shared by reshapes of the same data.
    storage: Arc<RwLock<Storage>>,
    shape: Shape,
    dtype: DType,
    device: Device,
    requires_grad: bool,
    /// Present on parameters only: the gradient accumulated by `backward`.
    grad: Option<Mutex<Option<Tensor>>>,
}

impl Tensor {
    fn build(
        storage: Arc<RwLock<Storage>>,
        shape: Shape,
        device: Device,
        requires_grad: bool,
        parameter: bool,
    ) -> Tensor {
        let dtype = storage.read().expect("storage lock poisoned").dtype();
        Tensor(Arc::new(Inner {
            id: TensorId::next(),
            storage,
            shape,
            dtype,
            device,
            requires_grad,
            grad: parameter.then(|| Mutex::new(None)),
        }))
    }

    /// A tensor that records nothing, over an existing buffer.
    pub fn from_storage(storage: Storage, shape: impl Into<Shape>, device: Device) -> Result<Tensor> {
        let shape = shape.into();
        if storage.len() != shape.elem_count() {
            bail!("a buffer of {} elements cannot have shape {shape}", storage.len());
        }
        Ok(Tensor::build(Arc::new(RwLock::new(storage)), shape, device, false, false))
    }

    /// An op's output: it requires grad when grad mode is on and any input
    /// does. Record its backward with [`autograd::record`].
    pub(crate) fn op_output(storage: Storage, shape: Shape, inputs: &[&Tensor]) -> Tensor {
        debug_assert_eq!(storage.len(), shape.elem_count(), "op produced a buffer that does not fit {shape}");
        let requires_grad = autograd::is_grad_enabled() && inputs.iter().any(|t| t.requires_grad());
        let device = inputs.first().map(|t| t.device().clone()).unwrap_or(Device::Cpu);
        Tensor::build(Arc::new(RwLock::new(storage)), shape, device, requires_grad, false)
    }

    /// Same data, another shape (shares the buffer).
    pub(crate) fn with_shape(&self, shape: Shape, requires_grad: bool) -> Tensor {
        Tensor::build(self.0.storage.clone(), shape, self.device().clone(), requires_grad, false)
    }

    pub fn from_vec(values: Vec<f32>, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        Tensor::from_vec_dtype(values, shape, DType::F32, device)
    }

    /// f32 host values stored as `dtype`.
    pub fn from_vec_dtype(values: Vec<f32>, shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let storage = match device {
            Device::Cpu => Storage::Cpu(CpuStorage::from_f32(values, dtype)),
            Device::Cuda(gpu) => Storage::Cuda(CudaStorage::from_f32(gpu, &values, dtype)?),
        };
        Tensor::from_storage(storage, shape, device.clone())
    }

    /// Integer indices (token ids, gather positions).
    pub fn from_ids(ids: Vec<u32>, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        let storage = match device {
            Device::Cpu => Storage::Cpu(CpuStorage::U32(ids)),
            Device::Cuda(gpu) => Storage::Cuda(CudaStorage::from_u32(gpu, &ids)?),
        };
        Tensor::from_storage(storage, shape, device.clone())
    }

    pub fn full(value: f32, shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        Tensor::from_vec_dtype(vec![value; shape.elem_count()], shape, dtype, device)
    }

    pub fn zeros(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::full(0.0, shape, dtype, device)
    }

    pub fn ones(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::full(1.0, shape, dtype, device)
    }

    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(self.shape().clone(), self.dtype(), self.device())
    }

    pub fn ones_like(&self) -> Result<Tensor> {
        Tensor::ones(self.shape().clone(), self.dtype(), self.device())
    }

    /// Values drawn from N(0, std^2).
    pub fn randn(shape: impl Into<Shape>, std: f32, rng: &mut Rng, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        Tensor::from_vec(rng.normal_vec(shape.elem_count(), std), shape, device)
    }

    /// Values drawn uniformly from [low, high).
    pub fn rand_uniform(
        shape: impl Into<Shape>,
        low: f32,
        high: f32,
        rng: &mut Rng,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        Tensor::from_vec(rng.uniform_vec(shape.elem_count(), low, high), shape, device)
    }

    /// A trainable leaf over the same data: it requires grad and keeps the
    /// gradient that `backward` accumulates into it.
    pub fn into_parameter(self) -> Result<Tensor> {
        if !self.dtype().is_float() {
            bail!("a parameter must be a float tensor, got {}", self.dtype());
        }
        Ok(Tensor::build(self.0.storage.clone(), self.shape().clone(), self.device().clone(), true, true))
    }

    /// Overwrites this tensor's values in place with `src`'s (same shape;
    /// converted to this dtype, copied to this device). For loading
    /// parameters and optimizer state;
    /// records nothing on the tape.
    pub fn copy_from(&self, src: &Tensor) -> Result<()> {
        if src.shape() != self.shape() {
            bail!("copy_from: source shape {} differs from destination shape {}", src.shape(), self.shape());
        }
        let src = if src.device() == self.device() { src.clone() } else { src.to_device(self.device())? };
        let values = src.storage().to_dtype(self.dtype())?;
        *self.storage_mut() = values;
        Ok(())
    }

    /// A copy on `device` (through the host), same shape and dtype, with no
    /// autograd history; the tensor itself when it already lives there.
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if self.device() == device {
            return Ok(self.detach());
        }
        match self.dtype() {
            DType::U32 => Tensor::from_ids(self.to_ids()?, self.shape().clone(), device),
            dtype => Tensor::from_vec_dtype(self.to_vec()?, self.shape().clone(), dtype, device),
        }
    }

    /// The same data with no autograd history.
    pub fn detach(&self) -> Tensor {
        self.with_shape(self.shape().clone(), false)
    }

    pub fn id(&self) -> TensorId {
        self.0.id
    }

    pub fn shape(&self) -> &Shape {
        &self.0.shape
    }

    pub fn dims(&self) -> &[usize] {
        self.0.shape.dims()
    }

    pub fn rank(&self) -> usize {
        self.0.shape.rank()
    }

    pub fn elem_count(&self) -> usize {
        self.0.shape.elem_count()
    }

    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    pub fn device(&self) -> &Device {
        &self.0.device
    }

    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }

    pub fn is_parameter(&self) -> bool {
        self.0.grad.is_some()
    }

    /// Whether both tensors view one buffer (reshapes, or a parameter and
    /// the tensor it was made from).
    pub(crate) fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    pub(crate) fn storage(&self) -> RwLockReadGuard<'_, Storage> {
        self.0.storage.read().expect("storage lock poisoned")
    }

    pub(crate) fn storage_mut(&self) -> RwLockWriteGuard<'_, Storage> {
        self.0.storage.write().expect("storage lock poisoned")
    }

    /// Copies the values to the host as f32.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        self.storage().to_host_f32()
    }

    pub fn to_ids(&self) -> Result<Vec<u32>> {
        self.storage().to_host_u32()
    }

    /// The value of a one-element tensor.
    pub fn scalar(&self) -> Result<f32> {
        if self.elem_count() != 1 {
            bail!("scalar() needs a one-element tensor, got shape {}", self.shape());
        }
        Ok(self.to_vec()?[0])
    }

    /// The gradient accumulated so far (parameters only).
    pub fn grad(&self) -> Option<Tensor> {
        self.0.grad.as_ref().and_then(|g| g.lock().expect("grad lock poisoned").clone())
    }

    pub fn zero_grad(&self) {
        if let Some(g) = &self.0.grad {
            *g.lock().expect("grad lock poisoned") = None;
        }
    }

    /// Parameter gradients accumulate (`+=`) across backward passes until
    /// [`Tensor::zero_grad`].
    pub(crate) fn accumulate_grad(&self, grad: &Tensor) -> Result<()> {
        let slot = self.0.grad.as_ref().context("only parameters keep gradients")?;
        let mut slot = slot.lock().expect("grad lock poisoned");
        match slot.as_mut() {
            Some(existing) => existing.storage_mut().add_assign(&grad.storage())?,
            None => {
                // A private copy: the incoming gradient may share its buffer.
                let owned = grad.storage().clone();
                *slot = Some(Tensor::from_storage(owned, self.shape().clone(), self.device().clone())?);
            }
        }
        Ok(())
    }

    /// Runs reverse-mode autograd from this one-element loss (see
    /// [`autograd::backward`]).
    pub fn backward(&self) -> Result<()> {
        autograd::backward(self)
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({}, {}, {}", self.shape(), self.dtype(), self.device())?;
        if self.requires_grad() {
            f.write_str(", requires_grad")?;
        }
        f.write_str(")")
    }
}
