//! Tape-based reverse-mode autograd.
//!
//! Every op whose output requires grad appends one entry to a thread-local
//! tape: the output's id, the input tensors, and a closure that maps the
//! output's gradient to the inputs' gradients. [`backward`] walks the tape
//! once, newest entry first, and consumes it: a second `backward` over the
//! same graph is an error, as in PyTorch without `retain_graph`.
//!
//! Gradient rules:
//! * a **parameter's** gradient (`Tensor::grad`) is accumulated (`+=`), within
//!   one backward pass and across passes, until `zero_grad`: this is what
//!   gradient accumulation over micro-batches relies on;
//! * an **activation's** gradient lives only during one backward pass: it is
//!   written (`=`) by its first contribution and summed with later ones when
//!   the activation feeds several ops.
//!
//! Inside a [`no_grad`] scope nothing is recorded (the frozen CLIP towers run
//! there), and backward closures themselves run under `no_grad`.

use crate::tensor::{Tensor, TensorId};
use anyhow::{bail, Result};
use std::cell::{Cell, RefCell};
use std::collections::hash_map::Entry;
use std::collections::HashMap;

/// Maps the gradient of an op's output to the gradients of its inputs (in
/// input order; `None` where `needs[i]` is false or the input is not
/// differentiable).
pub type BackwardFn = Box<dyn FnOnce(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>>>;

struct TapeEntry {
    output: TensorId,
    inputs: Vec<Tensor>,
    backward: BackwardFn,
}

thread_local! {
    static TAPE: RefCell<Vec<TapeEntry>> = const { RefCell::new(Vec::new()) };
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Restores the previous grad mode when dropped.
#[must_use = "grad mode is restored when the guard is dropped"]
pub struct NoGradGuard {
    previous: bool,
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Turns recording off until the guard is dropped.
pub fn no_grad() -> NoGradGuard {
    let previous = GRAD_ENABLED.with(|g| g.replace(false));
    NoGradGuard { previous }
}

/// Appends `output`'s backward to the tape if `output` requires grad.
pub(crate) fn record(
    output: &Tensor,
    inputs: &[&Tensor],
    backward: impl FnOnce(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + 'static,
) {
    if !output.requires_grad() {
        return;
    }
    let entry = TapeEntry {
        output: output.id(),
        inputs: inputs.iter().map(|t| (*t).clone()).collect(),
        backward: Box::new(backward),
    };
    TAPE.with(|t| t.borrow_mut().push(entry));
}

/// Entries currently on this thread's tape.
pub fn tape_len() -> usize {
    TAPE.with(|t| t.borrow().len())
}

/// Drops everything recorded on this thread (e.g. after a forward pass whose
/// loss is not needed).
pub fn clear_tape() {
    TAPE.with(|t| t.borrow_mut().clear());
}

/// Backpropagates from a one-element `loss` into every parameter it depends
/// on, then clears the tape.
pub fn backward(loss: &Tensor) -> Result<()> {
    if loss.elem_count() != 1 {
        bail!("backward needs a one-element loss, got shape {}", loss.shape());
    }
    if !loss.requires_grad() {
        bail!("backward: the loss depends on no parameter that requires grad (was it computed under no_grad?)");
    }
    let tape = TAPE.with(|t| std::mem::take(&mut *t.borrow_mut()));
    let _no_grad = no_grad();
    let seed = loss.ones_like()?;
    if loss.is_parameter() {
        return loss.accumulate_grad(&seed);
    }
    let Some(last) = tape.iter().rposition(|e| e.output == loss.id()) else {
        bail!(
            "backward: the graph of this loss is no longer on the tape; backward was already called on it \
             (each backward consumes the tape) or the tape was cleared"
        );
    };
    let mut grads: HashMap<TensorId, Tensor> = HashMap::from([(loss.id(), seed)]);
    for entry in tape.into_iter().take(last + 1).rev() {
        let Some(grad) = grads.remove(&entry.output) else { continue };
        let needs: Vec<bool> = entry.inputs.iter().map(Tensor::requires_grad).collect();
        let input_grads = (entry.backward)(&grad, &needs)?;
        for ((input, input_grad), needed) in entry.inputs.iter().zip(input_grads).zip(needs) {
            let Some(input_grad) = input_grad.filter(|_| needed) else { continue };
            if input_grad.shape() != input.shape() {
                bail!(
                    "internal error: gradient of shape {} for an input of shape {}",
                    input_grad.shape(),
                    input.shape()
                );
            }
            if input.is_parameter() {
                input.accumulate_grad(&input_grad)?;
            } else {
                match grads.entry(input.id()) {
                    Entry::Vacant(slot) => {
                        slot.insert(input_grad);
                    }
                    Entry::Occupied(mut slot) => {
                        let sum = slot.get().add(&input_grad)?;
                        slot.insert(sum);
                    }
                }
            }
        }
    }
    Ok(())
}
