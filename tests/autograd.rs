//! Autograd semantics: accumulation rules, no_grad, and the errors a user
//! gets for misuse.

use mlrpl_engine::autograd::{self, no_grad};
use mlrpl_engine::{Device, Tensor};

fn param(values: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(values, shape.to_vec(), &Device::Cpu).unwrap().into_parameter().unwrap()
}

#[test]
fn parameter_gradients_accumulate_across_backward_passes_until_zero_grad() {
    let w = param(vec![1.0, 2.0, 3.0], &[3]);
    let x = Tensor::from_vec(vec![0.5, -1.0, 2.0], [3], &Device::Cpu).unwrap();
    for _ in 0..2 {
        w.mul(&x).unwrap().sum_all().unwrap().backward().unwrap();
    }
    assert_eq!(w.grad().unwrap().to_vec().unwrap(), vec![1.0, -2.0, 4.0]);
    w.zero_grad();
    assert!(w.grad().is_none());
    w.mul(&x).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec().unwrap(), vec![0.5, -1.0, 2.0]);
}

#[test]
fn an_activation_used_twice_sums_its_gradient_contributions() {
    // y = h * h + h with h = 3 w: dy/dw = 3 (2h + 1).
    let w = param(vec![1.0, -2.0], &[2]);
    let h = w.scale(3.0).unwrap();
    h.mul(&h).unwrap().add(&h).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec().unwrap(), vec![3.0 * 7.0, 3.0 * -11.0]);
}

#[test]
fn a_parameter_used_twice_accumulates_within_one_pass() {
    let w = param(vec![2.0], &[1]);
    w.mul(&w).unwrap().add(&w).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec().unwrap(), vec![5.0]);
}

#[test]
fn no_grad_records_nothing_and_frozen_inputs_get_no_gradient() {
    autograd::clear_tape();
    let w = param(vec![1.0, 2.0], &[2]);
    {
        let _guard = no_grad();
        let y = w.exp().unwrap().sum_all().unwrap();
        assert!(!y.requires_grad());
        assert_eq!(autograd::tape_len(), 0);
    }
    assert!(autograd::is_grad_enabled());
    let frozen = Tensor::from_vec(vec![3.0, 4.0], [2], &Device::Cpu).unwrap();
    let loss = w.mul(&frozen).unwrap().sum_all().unwrap();
    assert!(loss.requires_grad() && !frozen.requires_grad());
    loss.backward().unwrap();
    assert!(frozen.grad().is_none());
    assert_eq!(autograd::tape_len(), 0, "backward consumes the tape");
}

#[test]
fn backward_twice_and_on_a_non_scalar_are_clear_errors() {
    let w = param(vec![1.0, 2.0], &[2]);
    let loss = w.tanh().unwrap().sum_all().unwrap();
    loss.backward().unwrap();
    let again = loss.backward().unwrap_err().to_string();
    assert!(again.contains("already called"), "{again}");

    let not_scalar = w.tanh().unwrap().backward().unwrap_err().to_string();
    assert!(not_scalar.contains("one-element") && not_scalar.contains("[2]"), "{not_scalar}");
    autograd::clear_tape();

    let constant = Tensor::from_vec(vec![1.0], [1], &Device::Cpu).unwrap();
    let no_params = constant.exp().unwrap().backward().unwrap_err().to_string();
    assert!(no_params.contains("no parameter"), "{no_params}");
}

#[test]
fn shape_mismatches_name_both_shapes() {
    let dev = Device::Cpu;
    let a = Tensor::zeros([2, 3], mlrpl_engine::DType::F32, &dev).unwrap();
    let b = Tensor::zeros([4, 5], mlrpl_engine::DType::F32, &dev).unwrap();
    for err in [a.add(&b).unwrap_err(), a.matmul(&b).unwrap_err()] {
        let msg = format!("{err:#}");
        assert!(msg.contains("[2, 3]") && msg.contains("[4, 5]"), "{msg}");
    }
    let msg = format!("{:#}", a.reshape([7]).unwrap_err());
    assert!(msg.contains("[2, 3]") && msg.contains("[7]"), "{msg}");
}

#[test]
fn detach_cuts_the_graph() {
    let w = param(vec![1.5], &[1]);
    let y = w.mul(&w.detach()).unwrap().sum_all().unwrap();
    y.backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec().unwrap(), vec![1.5]);
}
