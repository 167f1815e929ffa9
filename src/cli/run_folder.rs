//! The run folder of `train` and `pretrain`: where checkpoints and metrics
//! go, and whether to continue the run already there.

use anyhow::{bail, Result};
use clap::Args;
use mlrpl_engine::train::checkpoint;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Args, Debug, Serialize)]
pub struct RunFolderArgs {
    /// Run folder: checkpoints, metrics.jsonl and the run's other outputs
    /// (default: a new runs/<command>-<unix time> folder).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue the run in --run-dir from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
}

impl RunFolderArgs {
    /// The folder to use (recorded back into the arguments, so that the
    /// checkpoints' configuration names it), after checking that a fresh run
    /// does not overwrite one and that a resumed one names its folder.
    pub fn resolve(&mut self, command: &str) -> Result<PathBuf> {
        let dir = match (&self.run_dir, self.resume) {
            (Some(dir), _) => dir.clone(),
            (None, false) => {
                let secs =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                PathBuf::from(format!("runs/{command}-{secs}"))
            }
            (None, true) => bail!("--resume needs the --run-dir of the run to continue"),
        };
        // The folder, or a folder above it, must not be a file.
        if let Some(file) = dir.ancestors().find(|a| !a.as_os_str().is_empty() && a.exists() && !a.is_dir()) {
            if file == dir {
                bail!("--run-dir {} is a file, not a folder", dir.display());
            }
            bail!("--run-dir {}: {} is a file, not a folder", dir.display(), file.display());
        }
        if !self.resume && checkpoint::state_path(&dir, "last").exists() {
            bail!(
                "run folder {} already holds a run; continue it with --resume or choose another --run-dir",
                dir.display()
            );
        }
        self.run_dir = Some(dir.clone());
        Ok(dir)
    }
}
