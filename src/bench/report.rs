//! What `bench` writes: `bench.json` (every figure with its op, shape,
//! dtype, time, throughput and check error, plus the device, date, commit
//! and command; `tools/bench_torch_kernels.py` reads its case list from it)
//! and the same figures as a Markdown table.

use super::case::Work;
use super::timing::Timing;
use serde::Serialize;
use std::collections::BTreeMap;

/// Bumped when a field's meaning changes, so the PyTorch script can refuse
/// a file it does not understand.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// `op/setup`.
    pub id: String,
    pub op: String,
    pub setup: String,
    /// `kernel` (one primitive) or `end_to_end`.
    pub kind: &'static str,
    pub shape: String,
    pub params: BTreeMap<String, usize>,
    /// Storage dtype, `in->out` when a cast changes it.
    pub dtype: String,
    /// Median milliseconds per call.
    pub ms: f64,
    pub min_ms: f64,
    pub runs: usize,
    /// Calls per timed sample.
    pub inner: usize,
    pub throughput: f64,
    pub unit: &'static str,
    pub bytes: Option<f64>,
    pub flops: Option<f64>,
    pub images: Option<usize>,
    /// Relative error against the CPU backend; None on the CPU (the
    /// reference itself).
    pub check_error: Option<f64>,
}

impl Figure {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        op: &str,
        setup: &str,
        kind: &'static str,
        params: &[(&str, usize)],
        dtype: String,
        work: Work,
        timing: &Timing,
        check_error: Option<f64>,
    ) -> Figure {
        let (throughput, unit) = work.throughput(timing.median_ms);
        Figure {
            id: super::case::case_id(op, setup),
            op: op.to_string(),
            setup: setup.to_string(),
            kind,
            shape: params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
            params: params.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            dtype,
            ms: timing.median_ms,
            min_ms: timing.min_ms,
            runs: timing.runs,
            inner: timing.inner,
            throughput,
            unit,
            bytes: match work {
                Work::Bytes(b) => Some(b),
                _ => None,
            },
            flops: match work {
                Work::Flops(f) => Some(f),
                _ => None,
            },
            images: match work {
                Work::Images(n) => Some(n),
                _ => None,
            },
            check_error,
        }
    }
}

/// Where and how the figures were taken.
#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    pub engine_version: &'static str,
    /// `cpu` or `cuda`.
    pub device_kind: &'static str,
    /// The CPU model and thread count, or the GPU's name and compute capability.
    pub device: String,
    pub date: String,
    pub commit: String,
    pub command: String,
    /// How the figures were checked (or why they were not).
    pub reference: String,
    pub warmup: usize,
    pub runs: usize,
    pub min_sample_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub format_version: u32,
    #[serde(flatten)]
    pub info: RunInfo,
    pub figures: Vec<Figure>,
}

fn format_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.1}")
    } else if ms >= 1.0 {
        format!("{ms:.3}")
    } else {
        format!("{ms:.4}")
    }
}

fn format_throughput(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

impl BenchReport {
    /// The figures as Markdown: the run's details, then one row per figure.
    pub fn markdown(&self) -> String {
        let i = &self.info;
        let mut md = format!(
            "# mlrpl-engine bench\n\n\
             | | |\n| --- | --- |\n\
             | device | {} |\n| date | {} |\n| commit | {} |\n| command | `{}` |\n\
             | method | {} warm-up calls, then the median of {} samples; a sample is enough back-to-back calls to last {} ms, divided by their number{} |\n\
             | check | {} |\n\n\
             | benchmark | shape | dtype | ms (median) | throughput | check error |\n\
             | --- | --- | --- | ---: | ---: | ---: |\n",
            i.device,
            i.date,
            i.commit,
            i.command,
            i.warmup,
            i.runs,
            i.min_sample_ms,
            if i.device_kind == "cuda" { " (stream time between CUDA events)" } else { " (wall clock)" },
            i.reference
        );
        for f in &self.figures {
            let check = f.check_error.map_or_else(|| "reference".to_string(), |e| format!("{e:.1e}"));
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} {} | {} |\n",
                f.id,
                f.shape,
                f.dtype,
                format_ms(f.ms),
                format_throughput(f.throughput),
                f.unit,
                check
            ));
        }
        md
    }
}

/// Now, in UTC, as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    utc_timestamp(secs)
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic
/// Gregorian calendar, days counted from 0000-03-01 so leap days fall at
/// the end of each year).
fn utc_timestamp(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let shifted = days as i64 + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_of_known_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn a_figure_carries_its_throughput_and_the_table_its_row() {
        let timing = Timing { median_ms: 2.0, min_ms: 1.5, runs: 5, inner: 3 };
        let f = Figure::new(
            "gemm_linear",
            "mini-clip",
            "kernel",
            &[("m", 2), ("n", 3)],
            "f32".into(),
            Work::Flops(4e6),
            &timing,
            Some(1e-7),
        );
        assert_eq!(f.id, "gemm_linear/mini-clip");
        assert_eq!(f.shape, "m=2 n=3");
        assert!((f.throughput - 2.0).abs() < 1e-12 && f.unit == "GFLOP/s");
        let info = RunInfo {
            engine_version: "0",
            device_kind: "cpu",
            device: "test cpu".into(),
            date: utc_timestamp(0),
            commit: "abc".into(),
            command: "mlrpl-engine bench".into(),
            reference: "none".into(),
            warmup: 1,
            runs: 5,
            min_sample_ms: 1.0,
        };
        let md = BenchReport { format_version: FORMAT_VERSION, info, figures: vec![f] }.markdown();
        assert!(md.contains("| gemm_linear/mini-clip | m=2 n=3 | f32 | 2.000 | 2.00 GFLOP/s | 1.0e-7 |"), "{md}");
    }
}
