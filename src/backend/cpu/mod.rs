//! The CPU backend: the reference every other backend is tested against.
//! Buffers keep their storage dtype; every primitive widens to f32, computes
//! in f32 (rayon across rows, the `gemm` crate for matrix products) and
//! narrows the result back to the dtype of its first float input.

mod attention;
mod elementwise;
pub mod gemm;
pub mod heap;
mod layout;
mod norm;
mod optim;
pub mod vmath;

use super::{AdamWStep, AttentionSpec, BackendStorage, BinaryOp, CustomOp, GemmSpec, ParamUpdate, SgdStep, UnaryOp};
use crate::{DType, Shape};
use anyhow::{bail, Result};
use half::{bf16, f16};
use std::borrow::Cow;

#[derive(Clone, Debug)]
pub enum CpuStorage {
    F32(Vec<f32>),
    BF16(Vec<bf16>),
    F16(Vec<f16>),
    U32(Vec<u32>),
}

impl CpuStorage {
    /// Stores f32 values as `dtype` (rounding to nearest for bf16/f16).
    pub fn from_f32(values: Vec<f32>, dtype: DType) -> CpuStorage {
        match dtype {
            DType::F32 => CpuStorage::F32(values),
            DType::BF16 => CpuStorage::BF16(values.iter().map(|&x| bf16::from_f32(x)).collect()),
            DType::F16 => CpuStorage::F16(values.iter().map(|&x| f16::from_f32(x)).collect()),
            DType::U32 => CpuStorage::U32(values.iter().map(|&x| x as u32).collect()),
        }
    }

    /// The values widened to f32, borrowed when already f32.
    pub fn f32s(&self) -> Cow<'_, [f32]> {
        match self {
            CpuStorage::F32(v) => Cow::Borrowed(v),
            CpuStorage::BF16(v) => Cow::Owned(v.iter().map(|x| x.to_f32()).collect()),
            CpuStorage::F16(v) => Cow::Owned(v.iter().map(|x| x.to_f32()).collect()),
            CpuStorage::U32(v) => Cow::Owned(v.iter().map(|&x| x as f32).collect()),
        }
    }

    fn ids(&self) -> Result<&[u32]> {
        match self {
            CpuStorage::U32(v) => Ok(v),
            other => bail!("indices must be u32, got {}", other.dtype()),
        }
    }

    /// Wraps an f32 result in the dtype of `self`.
    fn like(&self, values: Vec<f32>) -> CpuStorage {
        CpuStorage::from_f32(values, self.dtype())
    }

    /// A model op of `src/ops/custom/` on f32 views of `inputs`.
    pub(crate) fn apply_custom(op: &dyn CustomOp, inputs: &[&CpuStorage]) -> Result<Vec<CpuStorage>> {
        let values: Vec<Cow<[f32]>> = inputs.iter().map(|s| s.f32s()).collect();
        let views: Vec<&[f32]> = values.iter().map(|v| v.as_ref()).collect();
        let outputs = op.cpu(&views)?;
        super::custom::check_outputs(op, inputs.len(), outputs.len())?;
        Ok(outputs.into_iter().zip(inputs).map(|(out, input)| input.like(out)).collect())
    }

    /// Runs `update` on f32 views of `self` and the extra state buffers and
    /// writes the results back in each buffer's own dtype.
    fn update_in_place(&mut self, states: &mut [&mut CpuStorage], update: impl FnOnce(&mut [f32], &mut [Vec<f32>])) {
        let mut values = self.f32s().into_owned();
        let mut state_values: Vec<Vec<f32>> = states.iter().map(|s| s.f32s().into_owned()).collect();
        update(&mut values, &mut state_values);
        *self = self.like(values);
        for (state, v) in states.iter_mut().zip(state_values) {
            **state = state.like(v);
        }
    }
}

impl BackendStorage for CpuStorage {
    fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::U32(_) => DType::U32,
        }
    }

    fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::F16(v) => v.len(),
            CpuStorage::U32(v) => v.len(),
        }
    }

    fn to_dtype(&self, dtype: DType) -> Result<Self> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        Ok(CpuStorage::from_f32(self.f32s().into_owned(), dtype))
    }

    fn to_host_f32(&self) -> Result<Vec<f32>> {
        Ok(self.f32s().into_owned())
    }

    fn to_host_u32(&self) -> Result<Vec<u32>> {
        Ok(self.ids()?.to_vec())
    }

    fn gemm(&self, rhs: &Self, bias: Option<&Self>, spec: &GemmSpec) -> Result<Self> {
        let bias = bias.map(|b| b.f32s());
        Ok(self.like(gemm::gemm_f32(&self.f32s(), &rhs.f32s(), bias.as_deref(), spec)))
    }

    fn unary(&self, op: UnaryOp) -> Result<Self> {
        Ok(self.like(elementwise::unary(&self.f32s(), op)))
    }

    fn unary_backward(&self, out: &Self, grad: &Self, op: UnaryOp) -> Result<Self> {
        Ok(self.like(elementwise::unary_backward(&self.f32s(), &out.f32s(), &grad.f32s(), op)))
    }

    fn binary(
        &self,
        rhs: &Self,
        op: BinaryOp,
        lhs_shape: &Shape,
        rhs_shape: &Shape,
        out_shape: &Shape,
    ) -> Result<Self> {
        Ok(self.like(elementwise::binary(&self.f32s(), &rhs.f32s(), op, lhs_shape, rhs_shape, out_shape)))
    }

    fn broadcast_to(&self, shape: &Shape, out_shape: &Shape) -> Result<Self> {
        Ok(self.like(elementwise::broadcast_to(&self.f32s(), shape, out_shape)))
    }

    fn sum_to(&self, shape: &Shape, out_shape: &Shape) -> Result<Self> {
        Ok(self.like(elementwise::sum_to(&self.f32s(), shape, out_shape)))
    }

    fn permute(&self, shape: &Shape, perm: &[usize]) -> Result<Self> {
        Ok(match self {
            CpuStorage::U32(v) => CpuStorage::U32(layout::permute(v, shape, perm)),
            _ => self.like(layout::permute(&self.f32s(), shape, perm)),
        })
    }

    fn narrow(&self, shape: &Shape, dim: usize, start: usize, len: usize) -> Result<Self> {
        Ok(match self {
            CpuStorage::U32(v) => CpuStorage::U32(layout::narrow(v, shape, dim, start, len)),
            _ => self.like(layout::narrow(&self.f32s(), shape, dim, start, len)),
        })
    }

    fn concat(parts: &[&Self], shapes: &[&Shape], dim: usize) -> Result<Self> {
        let first = parts.first().ok_or_else(|| anyhow::anyhow!("concat needs at least one tensor"))?;
        if let CpuStorage::U32(_) = first {
            let ids = parts.iter().map(|p| p.ids()).collect::<Result<Vec<_>>>()?;
            return Ok(CpuStorage::U32(layout::concat(&ids, shapes, dim)));
        }
        let values: Vec<Cow<[f32]>> = parts.iter().map(|p| p.f32s()).collect();
        let slices: Vec<&[f32]> = values.iter().map(|v| v.as_ref()).collect();
        Ok(first.like(layout::concat(&slices, shapes, dim)))
    }

    fn index_select(&self, ids: &Self, rows: usize, cols: usize) -> Result<Self> {
        Ok(self.like(layout::index_select(&self.f32s(), ids.ids()?, rows, cols)?))
    }

    fn index_add(&self, ids: &Self, rows: usize, cols: usize) -> Result<Self> {
        Ok(self.like(layout::index_add(&self.f32s(), ids.ids()?, rows, cols)?))
    }

    fn layernorm(&self, gamma: &Self, beta: &Self, cols: usize, eps: f32) -> Result<(Self, Self, Self)> {
        let (y, mean, rstd) = norm::layernorm(&self.f32s(), &gamma.f32s(), &beta.f32s(), cols, eps);
        Ok((self.like(y), CpuStorage::F32(mean), CpuStorage::F32(rstd)))
    }

    fn layernorm_backward(
        &self,
        gamma: &Self,
        mean: &Self,
        rstd: &Self,
        grad: &Self,
        cols: usize,
    ) -> Result<(Self, Self, Self)> {
        let (dx, dgamma, dbeta) =
            norm::layernorm_backward(&self.f32s(), &gamma.f32s(), &mean.f32s(), &rstd.f32s(), &grad.f32s(), cols);
        Ok((self.like(dx), gamma.like(dgamma), gamma.like(dbeta)))
    }

    fn softmax(&self, cols: usize) -> Result<Self> {
        Ok(self.like(norm::softmax(&self.f32s(), cols)))
    }

    fn softmax_backward(&self, grad: &Self, cols: usize) -> Result<Self> {
        Ok(self.like(norm::softmax_backward(&self.f32s(), &grad.f32s(), cols)))
    }

    fn l2_normalize(&self, cols: usize, eps: f32) -> Result<(Self, Self)> {
        let (y, norms) = norm::l2_normalize(&self.f32s(), cols, eps);
        Ok((self.like(y), CpuStorage::F32(norms)))
    }

    fn l2_normalize_backward(&self, norm: &Self, grad: &Self, cols: usize) -> Result<Self> {
        Ok(self.like(norm::l2_normalize_backward(&self.f32s(), &norm.f32s(), &grad.f32s(), cols)))
    }

    fn attention(q: &Self, k: &Self, v: &Self, spec: &AttentionSpec) -> Result<(Self, Self)> {
        let (out, lse) = attention::forward(&q.f32s(), &k.f32s(), &v.f32s(), spec);
        Ok((q.like(out), CpuStorage::F32(lse)))
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
        let (dq, dk, dv) =
            attention::backward(&q.f32s(), &k.f32s(), &v.f32s(), &out.f32s(), &lse.f32s(), &grad.f32s(), spec);
        Ok((q.like(dq), k.like(dk), v.like(dv)))
    }

    fn add_assign(&mut self, other: &Self) -> Result<()> {
        if let (CpuStorage::F32(a), CpuStorage::F32(b)) = (&mut *self, other) {
            a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
            return Ok(());
        }
        let other = other.f32s();
        self.update_in_place(&mut [], |a, _| a.iter_mut().zip(other.iter()).for_each(|(a, b)| *a += b));
        Ok(())
    }

    fn sgd_step(updates: &mut [ParamUpdate<'_, Self>], step: &SgdStep) -> Result<()> {
        for update in updates {
            let (param, grad, [momentum], weight_decay) = update.parts("SGD")?;
            let grad = grad.f32s();
            param.update_in_place(&mut [momentum], |p, state| optim::sgd(p, &grad, &mut state[0], step, weight_decay));
        }
        Ok(())
    }

    fn adamw_step(updates: &mut [ParamUpdate<'_, Self>], step: &AdamWStep) -> Result<()> {
        for update in updates {
            let (param, grad, [m, v], weight_decay) = update.parts("AdamW")?;
            let grad = grad.f32s();
            param.update_in_place(&mut [m, v], |p, state| {
                let (m, v) = state.split_at_mut(1);
                optim::adamw(p, &grad, &mut m[0], &mut v[0], step, weight_decay)
            });
        }
        Ok(())
    }
}
