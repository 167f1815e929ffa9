//! Timing: warm-up calls, then the median of N samples. A sample is
//! `inner` back-to-back calls divided by `inner`, with `inner` chosen so a
//! sample lasts at least `min_sample_ms`: a GPU kernel of a few
//! microseconds is then timed with the stream kept busy instead of one
//! launch at a time. On the CPU a sample is wall-clock time; on CUDA it is
//! the stream's time between two events (the device waits for earlier work
//! first and for the sample at its end).

use crate::device::Device;
use anyhow::Result;
use std::time::Instant;

/// Calls per sample are capped, so a primitive that is much faster than the
/// first sample suggested cannot make a run take long.
const MAX_INNER: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    pub warmup: usize,
    pub runs: usize,
    pub min_sample_ms: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// Median milliseconds per call over the samples.
    pub median_ms: f64,
    pub min_ms: f64,
    pub runs: usize,
    /// Calls per sample.
    pub inner: usize,
}

/// Milliseconds `calls` back-to-back calls of `op` take on `device`.
fn sample(device: &Device, calls: usize, op: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
    let mut repeat = || (0..calls).try_for_each(|_| op());
    match device {
        Device::Cpu => {
            let t = Instant::now();
            repeat()?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        }
        Device::Cuda(gpu) => gpu.time_ms(repeat),
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let h = v.len() / 2;
    if v.is_empty() {
        f64::NAN
    } else if v.len() % 2 == 1 {
        v[h]
    } else {
        0.5 * (v[h - 1] + v[h])
    }
}

/// Times `op` on `device` following `plan`.
pub fn measure(device: &Device, plan: &Plan, op: &mut dyn FnMut() -> Result<()>) -> Result<Timing> {
    for _ in 0..plan.warmup {
        op()?;
    }
    let first = sample(device, 1, op)?;
    let inner =
        if first > 0.0 { ((plan.min_sample_ms / first).ceil() as usize).clamp(1, MAX_INNER) } else { MAX_INNER };
    let runs = plan.runs.max(1);
    let per_call = (0..runs).map(|_| Ok(sample(device, inner, op)? / inner as f64)).collect::<Result<Vec<f64>>>()?;
    let min_ms = per_call.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(Timing { median_ms: median(&per_call), min_ms, runs, inner })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn cpu_timing_calls_the_op_warmup_plus_runs_times_inner() {
        let mut calls = 0usize;
        let plan = Plan { warmup: 2, runs: 3, min_sample_ms: 0.0 };
        let t = measure(&Device::Cpu, &plan, &mut || {
            calls += 1;
            std::thread::sleep(std::time::Duration::from_micros(200));
            Ok(())
        })
        .unwrap();
        assert_eq!(t.inner, 1);
        assert_eq!(t.runs, 3);
        assert_eq!(calls, 2 + 1 + 3);
        assert!(t.median_ms >= 0.2 && t.min_ms <= t.median_ms, "{t:?}");
    }
}
