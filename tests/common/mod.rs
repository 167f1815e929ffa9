//! Helpers shared by the op checks (`tests/ops_forward.rs`,
//! `tests/ops_gradcheck.rs`): tensor constructors, the relative-error
//! comparison of docs/model.md §9, and the finite-difference gradient checker.
//!
//! Gradient check, in short: the inputs become parameters, the op under test
//! builds `out`, and the scalar `L = sum(out * R)` is backpropagated, where R
//! is a fixed seeded N(0, 1) tensor (so every output element gets its own
//! weight and a wrong index in a backward shows up). Each checked input
//! element is then perturbed by +-eps and `L` is re-evaluated under `no_grad`
//! with the dot product `out . R` accumulated in f64 on the host; the central
//! difference `(L+ - L-) / (x+ - x-)` is compared with the analytic gradient.
//!
//! Choice of eps = 1e-2 and of the tolerances (atol 1e-3, rtol 1e-2):
//! * the ops compute in f32. Only the outputs that depend on the perturbed
//!   element change between L+ and L- (the others are bit-identical and
//!   cancel exactly), so the rounding noise of L+ - L- is about
//!   sqrt(#affected outputs) * |out| * 2^-24, i.e. ~1e-6 for the O(1) values
//!   and small shapes used here. Divided by 2 eps = 2e-2 it is ~5e-5, well
//!   under atol = 1e-3; with eps = 1e-3 it would be ~5e-4, too close to atol.
//! * the truncation error of a central difference is eps^2 / 6 * |f'''|,
//!   ~2e-5 |f'''| for eps = 1e-2: inside rtol = 1e-2 for the smooth ops under
//!   test with inputs of order 1 (inputs of log/sqrt/div are kept >= 0.5
//!   away from their singularities).
//! * the perturbed values are rounded to f32 before use, and the
//!   denominator is the difference of those rounded values (in f64), so the
//!   step itself carries no rounding error.
//!
//! Per input, besides the per-element test |analytic - fd| <= atol + rtol |fd|:
//! * the analytic gradient must not be all zeros where the FD one is not;
//! * norm-wise, ||analytic - fd|| <= rtol ||fd|| + 0.1 atol sqrt(#checked),
//!   which catches a small gradient that is wrong everywhere (inside atol
//!   element by element);
//! * the FD gradient must reach 0.1 atol somewhere (unless `allow_zero`):
//!   below that the check cannot tell a right gradient from a wrong one.
//!   R comes from its own stream (the seed is mixed), never the stream the
//!   inputs came from: R proportional to x makes d(R . x/|x|)/dx vanish.
//!
//! Any NaN or inf (output, analytic gradient, FD) fails.
//!
//! A wrong gradient is not hidden by these tolerances: a sign flip, a factor
//! of 2, a transposed index or a dropped term shows as an error of the order
//! of the gradient itself (see `gradcheck_catches_wrong_gradients`).

#![allow(dead_code)]

pub mod sim;
pub mod training_step;

use anyhow::{bail, Result};
use mlrpl_engine::autograd::no_grad;
use mlrpl_engine::rng::Rng;
use mlrpl_engine::{DType, Device, Shape, Tensor};

/// Relative tolerance of f32 computations against an f64 reference.
pub const F32_TOL: f64 = 1e-5;
/// Relative tolerance of bf16-stored computations against the f32 reference.
pub const BF16_TOL: f64 = 2e-2;

pub fn dev() -> Device {
    Device::Cpu
}

pub fn tensor(values: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(values, shape.to_vec(), &dev()).expect("tensor")
}

pub fn tensor_dtype(values: Vec<f32>, shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_vec_dtype(values, shape.to_vec(), dtype, &dev()).expect("tensor")
}

pub fn ids(values: Vec<u32>, shape: &[usize]) -> Tensor {
    Tensor::from_ids(values, shape.to_vec(), &dev()).expect("ids")
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// `||got - want|| / ||want||` (the absolute norm when `want` is all zeros).
/// Any non-finite value gives NaN, so `err <= tol` is false and NaN never
/// passes.
pub fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "rel_err: lengths differ ({} vs {})", got.len(), want.len());
    if got.iter().chain(want).any(|v| !v.is_finite()) {
        return f64::NAN;
    }
    let num = got.iter().zip(want).map(|(g, w)| (g - w) * (g - w)).sum::<f64>().sqrt();
    let den = want.iter().map(|w| w * w).sum::<f64>().sqrt();
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

/// Fails unless `rel_err(got, want) <= tol`; NaN or inf in `got` fails.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: {} values, expected {}", got.len(), want.len());
    let err = rel_err(&to_f64(got), want);
    let head = |v: &[f64]| v.iter().take(6).map(|x| format!("{x:.6}")).collect::<Vec<_>>().join(", ");
    assert!(
        err <= tol,
        "{what}: relative error {err:e} > {tol:e}\n  got  [{}, ...]\n  want [{}, ...]",
        head(&to_f64(got)),
        head(want)
    );
}

/// Checks the engine's output shape and values against a reference.
pub fn assert_tensor(what: &str, got: &Tensor, want: &[f64], want_shape: &[usize], tol: f64) {
    assert_eq!(got.dims(), want_shape, "{what}: shape");
    assert_close(what, &got.to_vec().expect("to_vec"), want, tol);
}

/// A gradient-check input: f32 values and a shape.
#[derive(Clone, Debug)]
pub struct Input {
    pub values: Vec<f32>,
    pub shape: Vec<usize>,
}

impl Input {
    pub fn new(values: Vec<f32>, shape: &[usize]) -> Input {
        assert_eq!(values.len(), numel(shape), "Input: {} values for shape {shape:?}", values.len());
        Input { values, shape: shape.to_vec() }
    }

    pub fn randn(rng: &mut Rng, shape: &[usize], std: f32) -> Input {
        Input::new(rng.normal_vec(numel(shape), std), shape)
    }

    pub fn uniform(rng: &mut Rng, shape: &[usize], lo: f32, hi: f32) -> Input {
        Input::new(rng.uniform_vec(numel(shape), lo, hi), shape)
    }
}

/// Step and tolerances of a gradient check (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub eps: f64,
    pub atol: f64,
    pub rtol: f64,
    /// Inputs with more elements than this are checked on this many
    /// seeded-sampled elements; smaller ones on every element.
    pub max_samples: usize,
    /// Accept an input whose finite differences are all ~0. Off by default:
    /// a check whose true gradient is below what the tolerances can tell
    /// from zero proves nothing, so it fails instead of passing vacuously.
    pub allow_zero: bool,
}

pub const GRAD_TOL: Tol = Tol { eps: 1e-2, atol: 1e-3, rtol: 1e-2, max_samples: 64, allow_zero: false };

/// What a gradient check computed, for extra assertions by the caller.
#[derive(Debug)]
pub struct GradReport {
    /// The engine's loss `sum(out * R)`.
    pub loss: f64,
    /// Full analytic gradient per input (zeros where the engine gave none).
    pub analytic: Vec<Vec<f32>>,
    /// Per input: (element index, finite difference) for every checked element.
    pub fd: Vec<Vec<(usize, f64)>>,
    pub checked: usize,
    pub max_abs_err: f64,
}

/// `value <= bound`, false for NaN (so a NaN error never passes).
fn within(value: f64, bound: f64) -> bool {
    value <= bound
}

fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// Element indices to check: all of them, or `max` distinct seeded samples.
fn sample_indices(n: usize, max: usize, rng: &mut Rng) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    let mut pool: Vec<usize> = (0..n).collect();
    for i in 0..max {
        let j = i + rng.below(n - i);
        pool.swap(i, j);
    }
    let mut picked = pool[..max].to_vec();
    picked.sort_unstable();
    picked
}

/// Runs the gradient check of `f` at `inputs` and returns `Err` with every
/// violated condition (up to a few element mismatches per input) instead of
/// panicking. `f` receives one tensor per input: parameters for the analytic
/// pass, plain tensors (under `no_grad`) for the finite differences.
pub fn try_gradcheck<F>(seed: u64, inputs: &[Input], tol: Tol, f: F) -> Result<GradReport>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let device = dev();
    // Mixed so that R is never the stream a test drew its inputs from with
    // the same seed (R proportional to the input would make, e.g., the
    // gradient of l2_normalize vanish and the check vacuous).
    let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03);
    let mut problems: Vec<String> = Vec::new();

    // Analytic pass.
    let params = inputs
        .iter()
        .map(|i| Tensor::from_vec(i.values.clone(), i.shape.clone(), &device)?.into_parameter())
        .collect::<Result<Vec<_>>>()?;
    let out = f(&params)?;
    let out_shape: Shape = out.shape().clone();
    let r = rng.normal_vec(out.elem_count(), 1.0);
    let r_tensor = Tensor::from_vec(r.clone(), out_shape.clone(), &device)?;
    let loss = out.mul(&r_tensor)?.sum_all()?;
    let out_values = out.to_vec()?;
    if out_values.iter().any(|v| !v.is_finite()) {
        bail!("the output of shape {out_shape} holds non-finite values");
    }
    let host_loss = dot_f64(&out_values, &r);
    let engine_loss = loss.scalar()? as f64;
    let scale: f64 = out_values.iter().zip(&r).map(|(&o, &r)| (o as f64 * r as f64).abs()).sum();
    if !within((engine_loss - host_loss).abs(), 1e-5 * (1.0 + scale)) {
        problems.push(format!("engine loss {engine_loss} differs from the host dot product {host_loss}"));
    }
    loss.backward()?;
    let mut analytic = Vec::with_capacity(params.len());
    for (i, p) in params.iter().enumerate() {
        match p.grad() {
            Some(g) => {
                if g.dims() != inputs[i].shape.as_slice() {
                    problems.push(format!(
                        "input {i}: gradient shape {} for input shape {:?}",
                        g.shape(),
                        inputs[i].shape
                    ));
                }
                let values = g.to_vec()?;
                if values.iter().any(|v| !v.is_finite()) {
                    problems.push(format!("input {i}: the analytic gradient holds non-finite values"));
                }
                analytic.push(values);
            }
            None => analytic.push(vec![0.0; inputs[i].values.len()]),
        }
    }

    // Finite differences, the loss accumulated in f64 on the host.
    let loss_at = |values: &[Vec<f32>]| -> Result<f64> {
        let _guard = no_grad();
        let tensors = inputs
            .iter()
            .zip(values)
            .map(|(i, v)| Tensor::from_vec(v.clone(), i.shape.clone(), &device))
            .collect::<Result<Vec<_>>>()?;
        let out = f(&tensors)?;
        if out.shape() != &out_shape {
            bail!("the output shape changed from {out_shape} to {} under no_grad", out.shape());
        }
        Ok(dot_f64(&out.to_vec()?, &r))
    };
    let mut values: Vec<Vec<f32>> = inputs.iter().map(|i| i.values.clone()).collect();
    let (mut checked, mut max_abs_err) = (0, 0.0f64);
    let mut fd_all = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        let picked = sample_indices(input.values.len(), tol.max_samples, &mut rng);
        let mut fd_here = Vec::with_capacity(picked.len());
        let mut mismatches = 0;
        for &e in &picked {
            let x = input.values[e];
            let (plus, minus) = ((x as f64 + tol.eps) as f32, (x as f64 - tol.eps) as f32);
            values[i][e] = plus;
            let l_plus = loss_at(&values)?;
            values[i][e] = minus;
            let l_minus = loss_at(&values)?;
            values[i][e] = x;
            let fd = (l_plus - l_minus) / (plus as f64 - minus as f64);
            let a = analytic[i][e] as f64;
            let err = (a - fd).abs();
            checked += 1;
            max_abs_err = max_abs_err.max(if err.is_nan() { f64::INFINITY } else { err });
            if !within(err, tol.atol + tol.rtol * fd.abs()) {
                mismatches += 1;
                if mismatches <= 4 {
                    problems.push(format!(
                        "input {i} {:?} element {e}: analytic {a:.6e} vs finite difference {fd:.6e} (|diff| {err:.2e} > {:.2e})",
                        input.shape,
                        tol.atol + tol.rtol * fd.abs()
                    ));
                }
            }
            fd_here.push((e, fd));
        }
        if mismatches > 4 {
            problems.push(format!("input {i}: {} more mismatching elements", mismatches - 4));
        }
        let fd_max = fd_here.iter().map(|(_, v)| v.abs()).fold(0.0, f64::max);
        let analytic_max = analytic[i].iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        if fd_max > 10.0 * tol.atol && analytic_max == 0.0 {
            problems.push(format!(
                "input {i} {:?}: the analytic gradient is all zeros while finite differences reach {fd_max:.3e}",
                input.shape
            ));
        }
        // Norm-wise over the checked elements: catches a gradient that is
        // wrong everywhere by a little (a wrong scale on small gradients
        // that atol alone would let through).
        let diff_norm = fd_here.iter().map(|&(e, fd)| (analytic[i][e] as f64 - fd).powi(2)).sum::<f64>().sqrt();
        let fd_norm = fd_here.iter().map(|(_, fd)| fd * fd).sum::<f64>().sqrt();
        let norm_bound = tol.rtol * fd_norm + 0.1 * tol.atol * (fd_here.len() as f64).sqrt();
        if !within(diff_norm, norm_bound) {
            problems.push(format!(
                "input {i} {:?}: ||analytic - fd|| = {diff_norm:.3e} > {norm_bound:.3e} (||fd|| = {fd_norm:.3e})",
                input.shape
            ));
        }
        if !tol.allow_zero && !within(0.1 * tol.atol, fd_max) {
            problems.push(format!(
                "input {i} {:?}: finite differences are all below {:.1e} (max {fd_max:.3e}): the check is vacuous; \
                 scale the inputs or set allow_zero",
                input.shape,
                0.1 * tol.atol
            ));
        }
        fd_all.push(fd_here);
    }
    if problems.is_empty() {
        Ok(GradReport { loss: engine_loss, analytic, fd: fd_all, checked, max_abs_err })
    } else {
        bail!("{}", problems.join("\n  "))
    }
}

/// Panics (naming the check) unless the gradients of `f` at `inputs` match
/// central finite differences with [`GRAD_TOL`].
pub fn gradcheck<F>(name: &str, seed: u64, inputs: &[Input], f: F) -> GradReport
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    gradcheck_with(name, seed, inputs, GRAD_TOL, f)
}

pub fn gradcheck_with<F>(name: &str, seed: u64, inputs: &[Input], tol: Tol, f: F) -> GradReport
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    match try_gradcheck(seed, inputs, tol, f) {
        Ok(report) => {
            // `MLRPL_GRADCHECK_VERBOSE=1 cargo test -- --nocapture` shows the margins.
            if std::env::var_os("MLRPL_GRADCHECK_VERBOSE").is_some_and(|v| v != "0") {
                let fd_max = report.fd.iter().flatten().map(|(_, v)| v.abs()).fold(0.0, f64::max);
                eprintln!(
                    "gradcheck {name}: {} elements, max |analytic - fd| {:.2e}, max |fd| {fd_max:.2e}",
                    report.checked, report.max_abs_err
                );
            }
            report
        }
        Err(e) => panic!("gradcheck {name} failed:\n  {e:#}"),
    }
}

/// The GPU for a CUDA-vs-CPU test, with output poisoning on (every buffer a
/// primitive allocates starts as NaN, so an element no kernel writes fails
/// the comparison). Without a CUDA driver (or with `MLRPL_SIM=1`) that GPU
/// is the simulated one of `kernels/sim/` ([`sim`]); with `MLRPL_SIM=0` and
/// no usable GPU it prints `<test>: SKIPPED (no CUDA GPU): <reason>` to
/// stderr and returns None; with `MLRPL_REQUIRE_GPU=1` (set by
/// tools/gpu-check.sh) it fails instead, so a GPU run can never pass by
/// skipping. Tests of one binary may hold it side by side.
pub fn cuda_or_skip(test: &str) -> Option<GpuTest> {
    let shared = DEVICE_USE.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    cuda_device(test).map(|device| GpuTest { device, _shared: Some(shared), _alone: None })
}

/// [`cuda_or_skip`] for a test that measures what the device shares between
/// the tests of a binary (the memory pool's bytes, the cuBLASLt plan count,
/// the deferred index-fault flag): it runs with no other CUDA test beside it.
pub fn cuda_alone_or_skip(test: &str) -> Option<GpuTest> {
    let alone = DEVICE_USE.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    cuda_device(test).map(|device| GpuTest { device, _shared: None, _alone: Some(alone) })
}

/// The test binary's CUDA tests take it shared, or alone to measure.
static DEVICE_USE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// A CUDA device held by one test, shared or alone, until it is dropped.
pub struct GpuTest {
    device: Device,
    _shared: Option<std::sync::RwLockReadGuard<'static, ()>>,
    _alone: Option<std::sync::RwLockWriteGuard<'static, ()>>,
}

impl std::ops::Deref for GpuTest {
    type Target = Device;
    fn deref(&self) -> &Device {
        &self.device
    }
}

fn cuda_device(test: &str) -> Option<Device> {
    if sim::wanted() {
        if let Err(e) = sim::install() {
            panic!("{test}: the simulated GPU could not be built or loaded: {e:#}");
        }
        static ANNOUNCED: std::sync::Once = std::sync::Once::new();
        ANNOUNCED.call_once(|| {
            let line = format!("CUDA tests run on the simulated GPU ({})\n", sim::schedule());
            std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes()).expect("stderr");
        });
    }
    match Device::cuda() {
        Ok(device) => {
            if let Device::Cuda(gpu) = &device {
                gpu.set_poison_new_buffers(true);
            }
            Some(device)
        }
        Err(e) => {
            let required = std::env::var_os("MLRPL_REQUIRE_GPU").is_some_and(|v| !v.is_empty() && v != "0");
            assert!(!required, "{test}: MLRPL_REQUIRE_GPU is set but no CUDA GPU is usable: {e:#}");
            // Straight to stderr, past the test harness's capture, so the skip
            // shows in every `cargo test` run.
            let line = format!("{test}: SKIPPED (no CUDA GPU): {e:#}\n");
            std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes()).expect("stderr");
            None
        }
    }
}

/// Fails unless `||got - want|| / ||want|| <= tol` (NaN never passes).
pub fn assert_rel(what: &str, got: &[f32], want: &[f32], tol: f64) {
    assert_close(what, got, &to_f64(want), tol);
}

/// The fixture folder `tests/fixtures/<name>` (written by a `tools/` script).
pub fn fixture_folder(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The `manifest.json` of fixture folder `name`.
pub fn fixture_manifest(name: &str) -> serde_json::Value {
    let path = fixture_folder(name).join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The bytes of `file` in fixture folder `name`.
pub fn fixture_bytes(name: &str, file: &str) -> Vec<u8> {
    let path = fixture_folder(name).join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs the `mlrpl-engine` binary of this build with `args`.
pub fn engine(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mlrpl-engine")).args(args).output().expect("run mlrpl-engine")
}

pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts that a run failed with exit code 1 and exactly one line on
/// stderr, and returns that line.
pub fn one_line_failure(out: &std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}
