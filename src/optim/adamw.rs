//! AdamW with decoupled weight decay, as `torch.optim.AdamW`.

use super::{check_groups, update_all, Optimizer, ParamGroup, StateBuffers};
use crate::backend::{AdamWStep, Storage};
use crate::tensor::Tensor;
use crate::DType;
use anyhow::{Context, Result};
use std::collections::HashMap;

#[derive(Debug)]
pub struct AdamW {
    groups: Vec<ParamGroup>,
    lr: f32,
    betas: (f32, f32),
    eps: f32,
    weight_decay: f32,
    step_count: u64,
    first_moments: StateBuffers,
    second_moments: StateBuffers,
}

impl AdamW {
    pub fn new(groups: Vec<ParamGroup>, lr: f32, betas: (f32, f32), eps: f32, weight_decay: f32) -> Result<Self> {
        check_groups(&groups)?;
        Ok(AdamW {
            groups,
            lr,
            betas,
            eps,
            weight_decay,
            step_count: 0,
            first_moments: StateBuffers::default(),
            second_moments: StateBuffers::default(),
        })
    }
}

impl Optimizer for AdamW {
    fn step(&mut self) -> Result<()> {
        self.step_count += 1;
        let step =
            AdamWStep { lr: self.lr, beta1: self.betas.0, beta2: self.betas.1, eps: self.eps, step: self.step_count };
        let state = &mut [&mut self.first_moments, &mut self.second_moments];
        update_all(&self.groups, self.weight_decay, state, |updates| Storage::adamw_step(updates, &step))
    }

    fn lr(&self) -> f32 {
        self.lr
    }

    fn set_lr(&mut self, lr: f32) {
        self.lr = lr;
    }

    fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut state = self.first_moments.export(&self.groups, "m");
        state.extend(self.second_moments.export(&self.groups, "v"));
        let device = self.groups.iter().flat_map(|g| &g.params).next().map(|p| p.device().clone());
        if let Some(device) = device {
            // f32 holds step counts exactly up to 2^24.
            state.push(("step".to_string(), Tensor::full(self.step_count as f32, [1], DType::F32, &device)?));
        }
        Ok(state)
    }

    fn load_state_tensors(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        self.first_moments.import(&self.groups, "m", state)?;
        self.second_moments.import(&self.groups, "v", state)?;
        self.step_count = match state.get("step") {
            Some(step) => step.scalar().context("optimizer state `step`")? as u64,
            None => 0,
        };
        Ok(())
    }
}
