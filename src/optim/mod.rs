//! Optimizers over parameter groups, and learning-rate schedules. A step is
//! one backend primitive over every parameter that has a gradient (on CUDA
//! one fused kernel launch for up to 48 tensors), in place on the
//! parameters and their state; optimizer state is f32.

mod adamw;
mod schedule;
mod sgd;

pub use adamw::AdamW;
pub use schedule::{epoch_steps, CosineSchedule, Warmup};
pub use sgd::Sgd;

use crate::backend::{ParamUpdate, Storage};
use crate::tensor::{Tensor, TensorId};
use crate::DType;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;

/// Parameters sharing optimizer settings; `weight_decay` overrides the
/// optimizer's default (e.g. 0 for the logit scale and biases).
#[derive(Clone, Debug)]
pub struct ParamGroup {
    pub params: Vec<Tensor>,
    pub weight_decay: Option<f32>,
}

impl ParamGroup {
    pub fn new(params: Vec<Tensor>) -> Self {
        ParamGroup { params, weight_decay: None }
    }

    pub fn no_decay(params: Vec<Tensor>) -> Self {
        ParamGroup { params, weight_decay: Some(0.0) }
    }
}

pub trait Optimizer {
    /// Applies one update to every parameter that has a gradient.
    fn step(&mut self) -> Result<()>;
    fn lr(&self) -> f32;
    fn set_lr(&mut self, lr: f32);
    fn groups(&self) -> &[ParamGroup];

    /// The optimizer state, named `p{i}.{kind}` with i the parameter's index
    /// in group order, for checkpoints.
    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>>;
    /// Restores what [`Optimizer::state_tensors`] returned; a missing or
    /// misshapen tensor is an error naming it.
    fn load_state_tensors(&mut self, state: &HashMap<String, Tensor>) -> Result<()>;

    fn zero_grad(&self) {
        self.groups().iter().flat_map(|g| &g.params).for_each(Tensor::zero_grad);
    }
}

fn check_groups(groups: &[ParamGroup]) -> Result<()> {
    let mut seen: Vec<&Tensor> = Vec::new();
    for p in groups.iter().flat_map(|g| &g.params) {
        if !p.is_parameter() {
            bail!("optimizer: {p:?} is not a parameter (use Tensor::into_parameter)");
        }
        // A step locks every parameter's buffer at once, so one buffer must
        // not be reached twice: listed twice, or shared (tied weights).
        if seen.iter().any(|q| q.shares_storage(p)) {
            bail!("optimizer: {p:?} is listed twice or shares its buffer with another parameter (each buffer is updated once per step)");
        }
        seen.push(p);
    }
    Ok(())
}

/// Hands every parameter that has a gradient to `update` as one list: its
/// storage, its gradient's, its buffer of each of `state` (made on first
/// use) and its group's weight decay (else `default_weight_decay`), all
/// locked for the call.
fn update_all(
    groups: &[ParamGroup],
    default_weight_decay: f32,
    state: &mut [&mut StateBuffers],
    update: impl FnOnce(&mut [ParamUpdate<'_, Storage>]) -> Result<()>,
) -> Result<()> {
    struct Entry {
        param: Tensor,
        grad: Tensor,
        state: Vec<Tensor>,
        weight_decay: f32,
    }
    let mut entries = Vec::new();
    for group in groups {
        let weight_decay = group.weight_decay.unwrap_or(default_weight_decay);
        for param in &group.params {
            let Some(grad) = param.grad() else { continue };
            let state = state.iter_mut().map(|buffers| buffers.get(param)).collect::<Result<Vec<_>>>()?;
            entries.push(Entry { param: param.clone(), grad, state, weight_decay });
        }
    }
    // Distinct buffers (check_groups), so no lock is taken twice.
    let mut params: Vec<_> = entries.iter().map(|e| e.param.storage_mut()).collect();
    let grads: Vec<_> = entries.iter().map(|e| e.grad.storage()).collect();
    let mut states: Vec<Vec<_>> = entries.iter().map(|e| e.state.iter().map(Tensor::storage_mut).collect()).collect();
    let mut updates: Vec<ParamUpdate<'_, Storage>> = params
        .iter_mut()
        .zip(&grads)
        .zip(&mut states)
        .zip(&entries)
        .map(|(((param, grad), state), e)| ParamUpdate {
            param: &mut **param,
            grad: &**grad,
            state: state.iter_mut().map(|s| &mut **s).collect(),
            weight_decay: e.weight_decay,
        })
        .collect();
    update(&mut updates)
}

/// Zero-initialised f32 state tensors, one per parameter, made on first use.
#[derive(Default, Debug)]
struct StateBuffers(HashMap<TensorId, Tensor>);

impl StateBuffers {
    /// The buffers that exist, named `p{i}.{kind}` in parameter order.
    fn export(&self, groups: &[ParamGroup], kind: &str) -> Vec<(String, Tensor)> {
        let params = groups.iter().flat_map(|g| &g.params);
        params
            .enumerate()
            .filter_map(|(i, p)| self.0.get(&p.id()).map(|t| (format!("p{i}.{kind}"), t.clone())))
            .collect()
    }

    /// Replaces the buffers with `p{i}.{kind}` entries of `state`; parameters
    /// without an entry start from zero again.
    fn import(&mut self, groups: &[ParamGroup], kind: &str, state: &HashMap<String, Tensor>) -> Result<()> {
        self.0.clear();
        for (i, p) in groups.iter().flat_map(|g| &g.params).enumerate() {
            let name = format!("p{i}.{kind}");
            let Some(saved) = state.get(&name) else { continue };
            let buffer = self.get(p)?;
            buffer.copy_from(saved).with_context(|| format!("optimizer state `{name}`"))?;
        }
        Ok(())
    }

    fn get(&mut self, param: &Tensor) -> Result<Tensor> {
        if let Some(t) = self.0.get(&param.id()) {
            return Ok(t.clone());
        }
        let t = Tensor::zeros(param.shape().clone(), DType::F32, param.device())?;
        self.0.insert(param.id(), t.clone());
        Ok(t)
    }
}
