//! Storage-level compute. A backend owns device buffers and implements every
//! primitive the differentiable ops in [`crate::ops`] are built from; model
//! code never sees a backend, only [`crate::Tensor`]s.
//!
//! Contract for every implementation (CPU and CUDA):
//! * buffers live on the backend's device; a primitive reads and writes
//!   device buffers only (no host round trip inside an op) and, on CUDA,
//!   enqueues its work on the backend's explicit stream;
//! * all buffers are dense row-major: layout ops (permute, narrow, concat)
//!   produce new buffers instead of strided views;
//! * float primitives accumulate in f32 whatever the storage dtype, and their
//!   outputs take the dtype of their first float input.

pub mod cpu;
pub mod cuda;
pub mod custom;

use crate::{DType, Shape};
use anyhow::{bail, Result};

pub use cpu::CpuStorage;
pub use cuda::CudaStorage;
pub use custom::CustomOp;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Tanh,
    Sigmoid,
    /// `x * sigmoid(1.702 x)`, CLIP's activation.
    QuickGelu,
    /// `scale * x + shift`.
    Affine {
        scale: f32,
        shift: f32,
    },
    /// `min(max(x, min), max)`; the gradient passes where `min <= x <= max`.
    Clamp {
        min: f32,
        max: f32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// `out[b] = op(A[b]) @ op(B[b]) (+ bias)` with `op(A)` of shape [m, k] and
/// `op(B)` of shape [k, n]. A is stored [m, k] (or [k, m] when `trans_a`), B
/// [k, n] (or [n, k] when `trans_b`); a batch stride of 0 reuses one matrix
/// for the whole batch. The optional bias [n] is added to every output row
/// (a fused epilogue where the backend has one). The output is a fresh dense
/// [batch, m, n].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmSpec {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub a_batch_stride: usize,
    pub b_batch_stride: usize,
}

/// Scaled dot-product attention over `batch_heads` independent heads:
/// q [bh, q_len, head_dim], k and v [bh, kv_len, head_dim].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionSpec {
    pub batch_heads: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub head_dim: usize,
    /// Query i attends to keys j <= i only (needs q_len == kv_len).
    pub causal: bool,
    pub scale: f32,
}

/// SGD hyper-parameters shared by every tensor of one fused update (the
/// weight decay is per tensor, see [`ParamUpdate`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdStep {
    pub lr: f32,
    pub momentum: f32,
}

/// AdamW hyper-parameters shared by every tensor of one fused update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// 1-based step count, for the bias corrections.
    pub step: u64,
}

/// One tensor's part of a fused optimizer update: the parameter, its
/// gradient, its state buffers (SGD: the momentum; AdamW: the first and
/// second moments), all updated in place, and its group's weight decay.
pub struct ParamUpdate<'a, S> {
    pub param: &'a mut S,
    pub grad: &'a S,
    pub state: Vec<&'a mut S>,
    pub weight_decay: f32,
}

impl<S> ParamUpdate<'_, S> {
    /// Parameter, gradient, the `N` state buffers `optimizer` keeps per
    /// tensor, and weight decay; an error if the state has another count.
    pub fn parts<const N: usize>(&mut self, optimizer: &str) -> Result<(&mut S, &S, [&mut S; N], f32)> {
        let count = self.state.len();
        let state: Vec<&mut S> = self.state.iter_mut().map(|s| &mut **s).collect();
        let state = state
            .try_into()
            .map_err(|_| anyhow::anyhow!("{optimizer} keeps {N} state buffers per tensor, got {count}"))?;
        Ok((&mut *self.param, self.grad, state, self.weight_decay))
    }
}

impl ParamUpdate<'_, Storage> {
    /// This update on one backend (`pick` unwraps its variant), or None if
    /// some buffer lives on another.
    fn on<S>(
        &mut self,
        pick: fn(&mut Storage) -> Option<&mut S>,
        pick_ref: fn(&Storage) -> Option<&S>,
    ) -> Option<ParamUpdate<'_, S>> {
        Some(ParamUpdate {
            param: pick(self.param)?,
            grad: pick_ref(self.grad)?,
            state: self.state.iter_mut().map(|s| pick(s)).collect::<Option<_>>()?,
            weight_decay: self.weight_decay,
        })
    }
}

/// Every primitive a backend provides. Shapes are validated by the caller
/// (`crate::ops`); implementations may assume consistent arguments.
pub trait BackendStorage: Sized {
    fn dtype(&self) -> DType;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn to_dtype(&self, dtype: DType) -> Result<Self>;
    /// Copies to the host as f32 (indices as their exact values).
    fn to_host_f32(&self) -> Result<Vec<f32>>;
    fn to_host_u32(&self) -> Result<Vec<u32>>;

    fn gemm(&self, rhs: &Self, bias: Option<&Self>, spec: &GemmSpec) -> Result<Self>;
    fn unary(&self, op: UnaryOp) -> Result<Self>;
    /// Gradient of `op` at input `self` with output `out`, given `grad`.
    fn unary_backward(&self, out: &Self, grad: &Self, op: UnaryOp) -> Result<Self>;
    /// Elementwise op of two tensors broadcast to `out_shape`.
    fn binary(&self, rhs: &Self, op: BinaryOp, lhs_shape: &Shape, rhs_shape: &Shape, out_shape: &Shape)
        -> Result<Self>;
    /// Repeats `self` (of `shape`) along broadcast dimensions to `out_shape`.
    fn broadcast_to(&self, shape: &Shape, out_shape: &Shape) -> Result<Self>;
    /// Sums `self` (of `shape`) down to `out_shape`, which broadcasts to `shape`.
    fn sum_to(&self, shape: &Shape, out_shape: &Shape) -> Result<Self>;

    fn permute(&self, shape: &Shape, perm: &[usize]) -> Result<Self>;
    fn narrow(&self, shape: &Shape, dim: usize, start: usize, len: usize) -> Result<Self>;
    fn concat(parts: &[&Self], shapes: &[&Shape], dim: usize) -> Result<Self>;
    /// `out[i] = self[ids[i]]` for a table `self` of `rows` rows of `cols`.
    fn index_select(&self, ids: &Self, rows: usize, cols: usize) -> Result<Self>;
    /// `out[ids[i]] += self[i]` into a zeroed table of `rows` rows of `cols`.
    fn index_add(&self, ids: &Self, rows: usize, cols: usize) -> Result<Self>;

    /// Returns (y, mean, rstd) over rows of `cols`.
    fn layernorm(&self, gamma: &Self, beta: &Self, cols: usize, eps: f32) -> Result<(Self, Self, Self)>;
    /// Returns (dx, dgamma, dbeta).
    fn layernorm_backward(
        &self,
        gamma: &Self,
        mean: &Self,
        rstd: &Self,
        grad: &Self,
        cols: usize,
    ) -> Result<(Self, Self, Self)>;
    fn softmax(&self, cols: usize) -> Result<Self>;
    fn softmax_backward(&self, grad: &Self, cols: usize) -> Result<Self>;
    /// Returns (x / max(||x||, eps), max(||x||, eps)) over rows of `cols`.
    fn l2_normalize(&self, cols: usize, eps: f32) -> Result<(Self, Self)>;
    /// Gradient of `l2_normalize` from its outputs `self` (y) and `norm`.
    fn l2_normalize_backward(&self, norm: &Self, grad: &Self, cols: usize) -> Result<Self>;
    /// Returns (out, lse), lse being each query row's log-sum-exp of scores.
    fn attention(q: &Self, k: &Self, v: &Self, spec: &AttentionSpec) -> Result<(Self, Self)>;
    /// Returns (dq, dk, dv), recomputing probabilities from `lse`.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        q: &Self,
        k: &Self,
        v: &Self,
        out: &Self,
        lse: &Self,
        grad: &Self,
        spec: &AttentionSpec,
    ) -> Result<(Self, Self, Self)>;
    /// `self += other`, in place (parameter-gradient accumulation).
    fn add_assign(&mut self, other: &Self) -> Result<()>;
    /// One SGD-with-momentum update of every tensor in `updates` (state:
    /// the momentum), in place, fused into as few launches as the backend
    /// allows.
    fn sgd_step(updates: &mut [ParamUpdate<'_, Self>], step: &SgdStep) -> Result<()>;
    /// One AdamW update of every tensor in `updates` (state: both moments),
    /// in place, fused likewise.
    fn adamw_step(updates: &mut [ParamUpdate<'_, Self>], step: &AdamWStep) -> Result<()>;
}

/// A buffer on some backend. Each variant holds one backend's storage; the
/// dispatch below is the only place that matches on the device.
#[derive(Clone, Debug)]
pub enum Storage {
    Cpu(CpuStorage),
    Cuda(CudaStorage),
}

/// Several storages unwrapped from one backend.
enum OneBackend<'a> {
    Cpu(Vec<&'a CpuStorage>),
    Cuda(Vec<&'a CudaStorage>),
}

impl<'a> OneBackend<'a> {
    /// The buffers of `parts`, all on the first one's backend, or an error
    /// naming `what` when they are not (or there are none).
    fn of(parts: &[&'a Storage], what: &str) -> Result<OneBackend<'a>> {
        let mixed = || anyhow::anyhow!("{what}: operands live on different devices");
        Ok(match parts.first() {
            Some(Storage::Cpu(_)) => {
                OneBackend::Cpu(parts.iter().map(|p| p.as_cpu().ok_or_else(mixed)).collect::<Result<_>>()?)
            }
            Some(Storage::Cuda(_)) => {
                OneBackend::Cuda(parts.iter().map(|p| p.as_cuda().ok_or_else(mixed)).collect::<Result<_>>()?)
            }
            None => bail!("{what} needs at least one tensor"),
        })
    }
}

/// Runs `$body` on the storage inside `$self` and wraps its result in the
/// same variant.
macro_rules! unary_dispatch {
    ($self:expr, $s:ident => $body:expr) => {
        match $self {
            Storage::Cpu($s) => Storage::Cpu($body?),
            Storage::Cuda($s) => Storage::Cuda($body?),
        }
    };
}

/// Unwraps several storages of one backend, binding `$wrap` to that
/// backend's `Storage` constructor, or fails naming the mismatch. The body is
/// expanded once per backend.
macro_rules! same_backend {
    (($($arg:ident),+), $wrap:ident => $body:block) => {
        #[allow(unreachable_patterns)]
        match ($($arg,)+) {
            ($(Storage::Cpu($arg),)+) => {
                #[allow(unused_variables)]
                let $wrap = Storage::Cpu;
                $body
            }
            ($(Storage::Cuda($arg),)+) => {
                #[allow(unused_variables)]
                let $wrap = Storage::Cuda;
                $body
            }
            _ => bail!("operands live on different devices"),
        }
    };
}

impl Storage {
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            Storage::Cuda(s) => s.dtype(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.len(),
            Storage::Cuda(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn to_dtype(&self, dtype: DType) -> Result<Storage> {
        Ok(unary_dispatch!(self, s => s.to_dtype(dtype)))
    }

    pub fn to_host_f32(&self) -> Result<Vec<f32>> {
        match self {
            Storage::Cpu(s) => s.to_host_f32(),
            Storage::Cuda(s) => s.to_host_f32(),
        }
    }

    pub fn to_host_u32(&self) -> Result<Vec<u32>> {
        match self {
            Storage::Cpu(s) => s.to_host_u32(),
            Storage::Cuda(s) => s.to_host_u32(),
        }
    }

    pub fn gemm(&self, rhs: &Storage, bias: Option<&Storage>, spec: &GemmSpec) -> Result<Storage> {
        let this = self;
        match bias {
            None => {
                same_backend!((this, rhs), wrap => { Ok(wrap(this.gemm(rhs, None, spec)?)) })
            }
            Some(bias) => {
                same_backend!((this, rhs, bias), wrap => { Ok(wrap(this.gemm(rhs, Some(bias), spec)?)) })
            }
        }
    }

    pub fn unary(&self, op: UnaryOp) -> Result<Storage> {
        Ok(unary_dispatch!(self, s => s.unary(op)))
    }

    pub fn unary_backward(&self, out: &Storage, grad: &Storage, op: UnaryOp) -> Result<Storage> {
        let this = self;
        same_backend!((this, out, grad), wrap => { Ok(wrap(this.unary_backward(out, grad, op)?)) })
    }

    pub fn binary(
        &self,
        rhs: &Storage,
        op: BinaryOp,
        lhs_shape: &Shape,
        rhs_shape: &Shape,
        out_shape: &Shape,
    ) -> Result<Storage> {
        let this = self;
        same_backend!((this, rhs), wrap => { Ok(wrap(this.binary(rhs, op, lhs_shape, rhs_shape, out_shape)?)) })
    }

    pub fn broadcast_to(&self, shape: &Shape, out_shape: &Shape) -> Result<Storage> {
        Ok(unary_dispatch!(self, s => s.broadcast_to(shape, out_shape)))
    }

    pub fn sum_to(&self, shape: &Shape, out_shape: &Shape) -> Result<Storage> {
        Ok(unary_dispatch!(self, s => s.sum_to(shape, out_shape)))
    }

    pub fn permute(&self, shape: &Shape, perm: &[usize]) -> Result<Storage> {
        Ok(unary_dispatch!(self, s => s.permute(shape, perm)))
    }

    pub fn narrow(&self, shape: &Shape, dim: usize, start: usize, len: usize) -> Result<Storage> {
        Ok(unary_dispatch!(self, s => s.narrow(shape, dim, start, len)))
    }

    pub fn concat(parts: &[&Storage], shapes: &[&Shape], dim: usize) -> Result<Storage> {
        Ok(match OneBackend::of(parts, "concat")? {
            OneBackend::Cpu(cpu) => Storage::Cpu(CpuStorage::concat(&cpu, shapes, dim)?),
            OneBackend::Cuda(cuda) => Storage::Cuda(CudaStorage::concat(&cuda, shapes, dim)?),
        })
    }

    /// Runs a model op of `src/ops/custom/` on the backend that holds every
    /// input; output `i` takes input `i`'s dtype.
    pub fn apply_custom(op: &dyn CustomOp, inputs: &[&Storage]) -> Result<Vec<Storage>> {
        Ok(match OneBackend::of(inputs, op.name())? {
            OneBackend::Cpu(cpu) => CpuStorage::apply_custom(op, &cpu)?.into_iter().map(Storage::Cpu).collect(),
            OneBackend::Cuda(cuda) => CudaStorage::apply_custom(op, &cuda)?.into_iter().map(Storage::Cuda).collect(),
        })
    }

    pub fn index_select(&self, ids: &Storage, rows: usize, cols: usize) -> Result<Storage> {
        let this = self;
        same_backend!((this, ids), wrap => { Ok(wrap(this.index_select(ids, rows, cols)?)) })
    }

    pub fn index_add(&self, ids: &Storage, rows: usize, cols: usize) -> Result<Storage> {
        let this = self;
        same_backend!((this, ids), wrap => { Ok(wrap(this.index_add(ids, rows, cols)?)) })
    }

    pub fn layernorm(
        &self,
        gamma: &Storage,
        beta: &Storage,
        cols: usize,
        eps: f32,
    ) -> Result<(Storage, Storage, Storage)> {
        let this = self;
        same_backend!((this, gamma, beta), wrap => {
            let (y, mean, rstd) = this.layernorm(gamma, beta, cols, eps)?;
            Ok((wrap(y), wrap(mean), wrap(rstd)))
        })
    }

    pub fn layernorm_backward(
        &self,
        gamma: &Storage,
        mean: &Storage,
        rstd: &Storage,
        grad: &Storage,
        cols: usize,
    ) -> Result<(Storage, Storage, Storage)> {
        let this = self;
        same_backend!((this, gamma, mean, rstd, grad), wrap => {
            let (dx, dg, db) = this.layernorm_backward(gamma, mean, rstd, grad, cols)?;
            Ok((wrap(dx), wrap(dg), wrap(db)))
        })
    }

    pub fn softmax(&self, cols: usize) -> Result<Storage> {
        Ok(unary_dispatch!(self, s => s.softmax(cols)))
    }

    pub fn softmax_backward(&self, grad: &Storage, cols: usize) -> Result<Storage> {
        let this = self;
        same_backend!((this, grad), wrap => { Ok(wrap(this.softmax_backward(grad, cols)?)) })
    }

    pub fn l2_normalize(&self, cols: usize, eps: f32) -> Result<(Storage, Storage)> {
        let this = self;
        same_backend!((this), wrap => {
            let (y, norm) = this.l2_normalize(cols, eps)?;
            Ok((wrap(y), wrap(norm)))
        })
    }

    pub fn l2_normalize_backward(&self, norm: &Storage, grad: &Storage, cols: usize) -> Result<Storage> {
        let this = self;
        same_backend!((this, norm, grad), wrap => { Ok(wrap(this.l2_normalize_backward(norm, grad, cols)?)) })
    }

    pub fn attention(q: &Storage, k: &Storage, v: &Storage, spec: &AttentionSpec) -> Result<(Storage, Storage)> {
        same_backend!((q, k, v), wrap => {
            let (out, lse) = BackendStorage::attention(q, k, v, spec)?;
            Ok((wrap(out), wrap(lse)))
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn attention_backward(
        q: &Storage,
        k: &Storage,
        v: &Storage,
        out: &Storage,
        lse: &Storage,
        grad: &Storage,
        spec: &AttentionSpec,
    ) -> Result<(Storage, Storage, Storage)> {
        same_backend!((q, k, v, out, lse, grad), wrap => {
            let (dq, dk, dv) = BackendStorage::attention_backward(q, k, v, out, lse, grad, spec)?;
            Ok((wrap(dq), wrap(dk), wrap(dv)))
        })
    }

    pub fn add_assign(&mut self, other: &Storage) -> Result<()> {
        let this = self;
        same_backend!((this, other), wrap => { this.add_assign(other) })
    }

    pub fn sgd_step(updates: &mut [ParamUpdate<'_, Storage>], step: &SgdStep) -> Result<()> {
        Storage::fused_update(updates, |u| CpuStorage::sgd_step(u, step), |u| CudaStorage::sgd_step(u, step))
    }

    pub fn adamw_step(updates: &mut [ParamUpdate<'_, Storage>], step: &AdamWStep) -> Result<()> {
        Storage::fused_update(updates, |u| CpuStorage::adamw_step(u, step), |u| CudaStorage::adamw_step(u, step))
    }

    /// Runs an optimizer update on the backend that holds every buffer of
    /// `updates`, or fails naming the mismatch.
    fn fused_update(
        updates: &mut [ParamUpdate<'_, Storage>],
        cpu: impl FnOnce(&mut [ParamUpdate<'_, CpuStorage>]) -> Result<()>,
        cuda: impl FnOnce(&mut [ParamUpdate<'_, CudaStorage>]) -> Result<()>,
    ) -> Result<()> {
        if let Some(mut on_cpu) =
            updates.iter_mut().map(|u| u.on(Storage::as_cpu_mut, Storage::as_cpu)).collect::<Option<Vec<_>>>()
        {
            return cpu(&mut on_cpu);
        }
        if let Some(mut on_cuda) =
            updates.iter_mut().map(|u| u.on(Storage::as_cuda_mut, Storage::as_cuda)).collect::<Option<Vec<_>>>()
        {
            return cuda(&mut on_cuda);
        }
        bail!("optimizer step: parameters, gradients and optimizer state live on different devices")
    }

    fn as_cpu(&self) -> Option<&CpuStorage> {
        if let Storage::Cpu(s) = self {
            Some(s)
        } else {
            None
        }
    }

    fn as_cpu_mut(&mut self) -> Option<&mut CpuStorage> {
        if let Storage::Cpu(s) = self {
            Some(s)
        } else {
            None
        }
    }

    fn as_cuda(&self) -> Option<&CudaStorage> {
        if let Storage::Cuda(s) = self {
            Some(s)
        } else {
            None
        }
    }

    fn as_cuda_mut(&mut self) -> Option<&mut CudaStorage> {
        if let Storage::Cuda(s) = self {
            Some(s)
        } else {
            None
        }
    }
}
