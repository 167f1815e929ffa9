//! SGD with momentum and weight decay, as `torch.optim.SGD` (dampening 0,
//! no Nesterov): g += wd p; m = mu m + g; p -= lr m.

use super::{check_groups, update_all, Optimizer, ParamGroup, StateBuffers};
use crate::backend::{SgdStep, Storage};
use crate::tensor::Tensor;
use anyhow::Result;
use std::collections::HashMap;

#[derive(Debug)]
pub struct Sgd {
    groups: Vec<ParamGroup>,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    momentum_buffers: StateBuffers,
}

impl Sgd {
    pub fn new(groups: Vec<ParamGroup>, lr: f32, momentum: f32, weight_decay: f32) -> Result<Self> {
        check_groups(&groups)?;
        Ok(Sgd { groups, lr, momentum, weight_decay, momentum_buffers: StateBuffers::default() })
    }
}

impl Optimizer for Sgd {
    fn step(&mut self) -> Result<()> {
        let step = SgdStep { lr: self.lr, momentum: self.momentum };
        update_all(&self.groups, self.weight_decay, &mut [&mut self.momentum_buffers], |updates| {
            Storage::sgd_step(updates, &step)
        })
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
        Ok(self.momentum_buffers.export(&self.groups, "momentum"))
    }

    fn load_state_tensors(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        self.momentum_buffers.import(&self.groups, "momentum", state)
    }
}
