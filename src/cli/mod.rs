//! Subcommand implementations of the `mlrpl-engine` binary.

pub mod bench;
pub mod checks;
pub mod data;
pub mod encode;
pub mod evaluate;
pub mod explain;
pub mod pretrain;
pub mod report;
pub mod run_folder;
pub mod train;
pub mod zero_shot;

use anyhow::{bail, Result};
use mlrpl_engine::data::image::{images_to_tensor, Preprocess};
use mlrpl_engine::{Device, Tensor};
use std::path::PathBuf;

/// Images per forward pass: bounds memory for long image lists.
const IMAGE_BATCH: usize = 16;

/// Runs `f` on consecutive batches of the images (on `device`) and stacks
/// the results along dim 0, in input order.
fn over_image_batches(
    paths: &[PathBuf],
    mode: Preprocess,
    device: &Device,
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    if paths.is_empty() {
        bail!("no images given");
    }
    let parts = paths
        .chunks(IMAGE_BATCH)
        .map(|chunk| f(&images_to_tensor(chunk, mode)?.to_device(device)?))
        .collect::<Result<Vec<_>>>()?;
    Tensor::concat(&parts.iter().collect::<Vec<_>>(), 0)
}

/// After a run on a GPU: the most memory the engine's buffers used at once,
/// and what the memory pool holds.
fn report_gpu_memory(device: &Device) -> Result<()> {
    if let Device::Cuda(gpu) = device {
        if let Some(pool) = gpu.pool_memory()? {
            let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
            eprintln!(
                "GPU memory: peak {:.1} MiB in use, pool holds {:.1} MiB",
                mib(pool.peak_used),
                mib(pool.reserved)
            );
        }
    }
    Ok(())
}

/// The commit of the working directory's git checkout, marked when it has
/// uncommitted changes; "unknown" outside a checkout.
pub fn engine_commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match (git(&["rev-parse", "HEAD"]), git(&["status", "--porcelain", "--untracked-files=no"])) {
        (Some(commit), Some(changes)) if changes.is_empty() => commit,
        (Some(commit), Some(_)) => format!("{commit} (with uncommitted changes)"),
        _ => "unknown".to_string(),
    }
}

/// The CPU model and thread count, or the GPU's name and compute capability.
pub fn device_description(device: &Device) -> String {
    match device {
        Device::Cpu => {
            let cpu = std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|info| {
                    info.lines()
                        .find(|l| l.starts_with("model name"))
                        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
                })
                .unwrap_or_else(|| "unknown CPU".to_string());
            format!("{device}: {cpu}, {} threads", rayon::current_num_threads())
        }
        Device::Cuda(gpu) => {
            let (major, minor) = gpu.compute_capability();
            format!("{device}: {} (sm_{major}{minor})", gpu.name())
        }
    }
}
