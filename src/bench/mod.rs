//! `mlrpl-engine bench`: kernel microbenchmarks and end-to-end figures
//! (`docs/benchmarks/kernels.md`).
//!
//! Like llm.c's `dev/cuda`, every kernel benchmark first checks the
//! device's results against the CPU backend on the same seeded inputs
//! (relative error <= 1e-4 per output tensor, in-place updates compared
//! after one call) and fails naming the op and shape before anything is
//! timed; then it times warm-up calls and the median of N samples. On the
//! CPU the backend is the reference itself, so nothing is checked.
//!
//! * [`kernels`]: the cases (primitive, shapes of two models, inputs, work);
//! * [`end_to_end`]: a training step and the image encoder, images/s;
//! * [`text_tower`]: the prompt text pass (text tower forward and backward,
//!   80 categories, ViT-B/16), an end-to-end figure;
//! * [`train_step`]: `--e2e`, the MLR-PL training and inference steps of a
//!   configuration given by flags, phase by phase;
//! * [`check`], [`timing`], [`report`]: the comparison, the clock, the output.

pub mod case;
pub mod check;
pub mod end_to_end;
pub mod kernels;
pub mod report;
pub mod text_tower;
pub mod timing;
pub mod train_step;

use crate::backend::Storage;
use crate::clip::Clip;
use crate::device::Device;
use crate::precision::Precision;
use anyhow::{bail, Context, Result};
use case::Case;
use check::{compare, tolerance_for};
use report::Figure;
use timing::{measure, Plan};

/// The benchmarks `--filter` selected.
pub struct Selection {
    pub cases: Vec<Case>,
    pub end_to_end: Vec<&'static str>,
}

/// The benchmarks whose id (`op/setup`) contains `filter` (all when None);
/// an error naming the filter when it selects nothing.
pub fn select(filter: Option<&str>) -> Result<Selection> {
    let selection = Selection { cases: kernels::cases(filter)?, end_to_end: end_to_end::selected(filter) };
    if selection.cases.is_empty() && selection.end_to_end.is_empty() {
        bail!(
            "--filter {:?} matches no benchmark (ids are op/setup, e.g. layernorm_bwd/vit-b32 or train_step/mini-clip)",
            filter.unwrap_or_default()
        );
    }
    Ok(selection)
}

/// Runs the selected benchmarks on `device`, calling `progress` with each
/// figure as it is taken; stops at the first failed check.
/// `load_clip` gives the CLIP on a device with its towers stored as
/// `precision` says.
pub fn run(
    selection: &Selection,
    plan: &Plan,
    device: &Device,
    precision: Precision,
    load_clip: &dyn Fn(&Device) -> Result<Clip>,
    mut progress: impl FnMut(&Figure),
) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for case in &selection.cases {
        let figure =
            run_case(case, device, plan).with_context(|| format!("benchmark {} ({})", case.id(), case.shape()))?;
        progress(&figure);
        figures.push(figure);
    }
    figures.extend(end_to_end::run(&selection.end_to_end, device, precision, plan, load_clip, progress)?);
    Ok(figures)
}

fn upload(case: &Case, device: &Device) -> Result<Vec<Storage>> {
    case.inputs.iter().map(|i| i.upload(device)).collect()
}

/// The outputs of one call followed by the inputs after it (in-place
/// updates change them), on the host.
fn results(case: &Case, device: &Device) -> Result<Vec<Vec<f32>>> {
    let mut inputs = upload(case, device)?;
    let outputs = (case.run)(&mut inputs)?;
    outputs.iter().chain(&inputs).map(Storage::to_host_f32).collect()
}

/// Relative error of `device` against the CPU backend on the case's inputs.
/// New GPU buffers are NaN while checking, so an element no kernel writes
/// fails.
pub fn check_case(case: &Case, device: &Device) -> Result<f64> {
    let got = match device {
        Device::Cpu => bail!("the CPU backend is the reference; there is nothing to check it against"),
        Device::Cuda(gpu) => {
            gpu.set_poison_new_buffers(true);
            let got = results(case, device);
            gpu.set_poison_new_buffers(false);
            got?
        }
    };
    let want = results(case, &Device::Cpu)?;
    compare(&format!("{} ({})", case.id(), case.shape()), &got, &want, tolerance_for(case.compute_dtype()))
}

/// Storage dtype of the case, `in->out` when the first output's differs
/// from the first float input's.
fn dtype_label(case: &Case, device: &Device) -> Result<String> {
    let input = case.compute_dtype();
    let mut inputs = upload(case, device)?;
    let output = (case.run)(&mut inputs)?.first().map(Storage::dtype);
    Ok(match output {
        Some(out) if out != input => format!("{input}->{out}"),
        _ => input.to_string(),
    })
}

fn run_case(case: &Case, device: &Device, plan: &Plan) -> Result<Figure> {
    let check_error = if device.is_cuda() { Some(check_case(case, device)?) } else { None };
    let dtype = dtype_label(case, device)?;
    let mut inputs = upload(case, device)?;
    let timing = measure(device, plan, &mut || {
        std::hint::black_box((case.run)(&mut inputs)?);
        Ok(())
    })?;
    Ok(Figure::new(case.op, case.setup, "kernel", &case.params, dtype, case.work, &timing, check_error))
}
