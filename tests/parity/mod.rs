//! The parity comparison of docs/model.md §9 for the fixture tests: relative
//! error ||got - want|| / ||want|| <= 1e-4 in f32; NaN never passes.

use mlrpl_engine::Tensor;

pub const F32_TOLERANCE: f64 = 1e-4;

#[track_caller]
pub fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let (g, w) = (got.to_vec().unwrap(), want.to_vec().unwrap());
    let diff: f64 = g.iter().zip(&w).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = w.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
    let rel = diff / norm;
    assert!(rel <= F32_TOLERANCE, "{what}: relative error {rel:e} (NaN fails too)");
}
