//! Training checkpoints: the trainable tensors and the optimizer state in a
//! safetensors file, and a JSON state (epoch, step, seed, configuration, the
//! CLIP it runs on, the class names) that names that file.
//!
//! Writes are crash-safe: the tensors go to a new file named after the step,
//! then the JSON is written to a temporary file and renamed over the old
//! one, and only then is the previous tensors file removed. At every moment
//! `checkpoint-<tag>.json` names a complete tensors file. Names and shapes
//! are documented in docs/checkpoints.md.

use crate::nn::WeightMap;
use crate::tensor::Tensor;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const FORMAT_VERSION: u32 = 1;
/// Prefix of optimizer-state tensors in the checkpoint file.
pub const OPTIMIZER_PREFIX: &str = "optim.";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    pub format_version: u32,
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: usize,
    pub best_val_map: Option<f64>,
    pub best_epoch: Option<usize>,
    /// The run's seed. Every random draw of training (shuffling,
    /// augmentation) derives from (seed, epoch, item), so seed and epoch
    /// are the whole RNG state and a resumed run draws what an
    /// uninterrupted one would.
    pub seed: u64,
    /// The CLIP weights the model runs on (a path, or "random:<seed>").
    pub clip: String,
    pub class_names: Vec<String>,
    /// The training configuration, as given on the command line.
    pub config: serde_json::Value,
    /// The safetensors file holding this checkpoint's tensors, relative to the JSON.
    pub tensors: String,
    /// Steps already taken in epoch `epoch` (0-based), for a checkpoint
    /// saved inside an epoch (Ctrl-C); 0 at an epoch boundary.
    #[serde(default)]
    pub epoch_step: usize,
    /// The sum and count of the losses read in that partial epoch, so that
    /// the resumed epoch reports the mean an uninterrupted one would.
    #[serde(default)]
    pub epoch_loss_sum: f64,
    #[serde(default)]
    pub epoch_loss_steps: usize,
    /// The probability threshold that maximised CF1 on the validation part
    /// at the best epoch (`metrics::f1_threshold`); `predict` and `eval`
    /// use it. None in checkpoints older than it, and in pre-training.
    #[serde(default)]
    pub best_threshold: Option<f32>,
}

impl TrainState {
    /// The state of a run that has not taken a step yet.
    pub fn new(seed: u64, clip: String, class_names: Vec<String>, config: serde_json::Value) -> TrainState {
        TrainState {
            format_version: FORMAT_VERSION,
            epoch: 0,
            step: 0,
            best_val_map: None,
            best_epoch: None,
            seed,
            clip,
            class_names,
            config,
            tensors: String::new(),
            epoch_step: 0,
            epoch_loss_sum: 0.0,
            epoch_loss_steps: 0,
            best_threshold: None,
        }
    }
}

impl TrainState {
    /// Records that epoch `epoch` (0-based) ended with validation mAP `map`;
    /// returns whether that is the best so far.
    pub fn finish_epoch(&mut self, epoch: usize, map: f64) -> bool {
        self.epoch = epoch + 1;
        let improved = self.best_val_map.is_none_or(|best| map > best);
        if improved {
            self.best_val_map = Some(map);
            self.best_epoch = Some(self.epoch);
        }
        improved
    }
}

/// The end-of-epoch checkpoints: "last" always, "best" too when `improved`.
pub fn save_epoch(
    dir: &Path,
    params: &[(String, Tensor)],
    optimizer_state: &[(String, Tensor)],
    state: &TrainState,
    improved: bool,
) -> Result<()> {
    if improved {
        save(dir, "best", params, optimizer_state, state)?;
    }
    save(dir, "last", params, optimizer_state, state)
}

/// `checkpoint-<tag>.json` in `dir`.
pub fn state_path(dir: &Path, tag: &str) -> PathBuf {
    dir.join(format!("checkpoint-{tag}.json"))
}

/// Writes `contents` to `path` through a temporary file (flushed to disk)
/// and a rename.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut file, contents)?;
        file.sync_all()
    };
    write().with_context(|| format!("cannot write {}", tmp.display()))?;
    if tmp.file_name().is_some_and(|n| n.to_string_lossy().starts_with("checkpoint-")) {
        super::fault::point("json-tmp");
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
}

/// What [`clean_leftovers`] removed.
#[derive(Debug, Default)]
pub struct Cleaned {
    pub files: Vec<PathBuf>,
}

/// Removes what an interrupted run can leave in its folder: temporary
/// files of a write that never finished (`*.tmp`, `.tmp*`), and tensors
/// files (`checkpoint-<tag>-step<N>.safetensors`) that no
/// `checkpoint-<tag>.json` names. With `fresh` (a new run in the folder)
/// a `checkpoint-best.json` without a `checkpoint-last.json` is an
/// interrupted first epoch's, and goes too. Never touches other files.
pub fn clean_leftovers(dir: &Path, fresh: bool) -> Result<Cleaned> {
    let mut cleaned = Cleaned::default();
    if !dir.is_dir() {
        return Ok(cleaned);
    }
    if fresh && !state_path(dir, "last").exists() && state_path(dir, "best").exists() {
        let best = state_path(dir, "best");
        std::fs::remove_file(&best).with_context(|| format!("cannot remove stale {}", best.display()))?;
        cleaned.files.push(best);
    }
    let named: Vec<String> =
        ["last", "best"].iter().filter_map(|tag| read_state(&state_path(dir, tag)).ok()).map(|s| s.tensors).collect();
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot read run folder {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read run folder {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let temporary = name.ends_with(".tmp") || name.starts_with(".tmp");
        let stale_tensors = name.starts_with("checkpoint-") && name.ends_with(".safetensors") && !named.contains(&name);
        if (temporary || stale_tensors) && entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove leftover {}", entry.path().display()))?;
            cleaned.files.push(entry.path());
        }
    }
    cleaned.files.sort();
    Ok(cleaned)
}

/// Saves `params` and `optimizer_state` under `tag` ("last", "best").
pub fn save(
    dir: &Path,
    tag: &str,
    params: &[(String, Tensor)],
    optimizer_state: &[(String, Tensor)],
    state: &TrainState,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create run folder {}", dir.display()))?;
    let json_path = state_path(dir, tag);
    let previous = read_state(&json_path).ok().map(|s| dir.join(s.tensors));
    let tensors_name = format!("checkpoint-{tag}-step{}.safetensors", state.step);
    let mut tensors: Vec<(String, Tensor)> = params.to_vec();
    tensors.extend(optimizer_state.iter().map(|(n, t)| (format!("{OPTIMIZER_PREFIX}{n}"), t.clone())));
    let metadata = HashMap::from([("format_version".to_string(), FORMAT_VERSION.to_string())]);
    WeightMap::save(&dir.join(&tensors_name), &tensors, metadata)?;
    let state = TrainState { tensors: tensors_name.clone(), ..state.clone() };
    super::fault::point("tensors-renamed");
    write_atomically(&json_path, serde_json::to_string_pretty(&state)?.as_bytes())?;
    super::fault::point("json-renamed");
    if let Some(old) = previous.filter(|p| p.file_name().is_some_and(|n| n != tensors_name.as_str())) {
        // The JSON no longer names it; a failure here only leaves a stale file.
        let _ = std::fs::remove_file(old);
    }
    Ok(())
}

fn read_state(json_path: &Path) -> Result<TrainState> {
    let text = std::fs::read_to_string(json_path)
        .with_context(|| format!("cannot read checkpoint {}", json_path.display()))?;
    let state: TrainState = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a checkpoint state file", json_path.display()))?;
    if state.format_version != FORMAT_VERSION {
        bail!(
            "{}: checkpoint format {} is not supported (expected {FORMAT_VERSION})",
            json_path.display(),
            state.format_version
        );
    }
    Ok(state)
}

/// A loaded checkpoint: its state, the model tensors and the optimizer state.
pub struct Loaded {
    pub state: TrainState,
    pub params: HashMap<String, Tensor>,
    pub optimizer_state: HashMap<String, Tensor>,
}

/// Loads a checkpoint from its JSON state file (or a run folder, meaning its
/// `checkpoint-last.json`).
pub fn load(path: &Path, device: &crate::device::Device) -> Result<Loaded> {
    let json_path = if path.is_dir() { state_path(path, "last") } else { path.to_path_buf() };
    let state = read_state(&json_path)?;
    let dir = json_path.parent().unwrap_or(Path::new("."));
    let weights = WeightMap::load(&dir.join(&state.tensors), device)?;
    let mut params = HashMap::new();
    let mut optimizer_state = HashMap::new();
    for name in weights.names() {
        let tensor = weights.get(name)?;
        match name.strip_prefix(OPTIMIZER_PREFIX) {
            Some(stripped) => optimizer_state.insert(stripped.to_string(), tensor),
            None => params.insert(name.to_string(), tensor),
        };
    }
    Ok(Loaded { state, params, optimizer_state })
}

/// Checks, without copying, that every parameter of `named` is in `saved`
/// with its shape: an error naming `source`, the tensor and both shapes
/// (e.g. a model flag that differs from the run's).
pub fn check_params(named: &[(String, Tensor)], saved: &HashMap<String, Tensor>, source: &str) -> Result<()> {
    for (name, param) in named {
        let value = saved.get(name).with_context(|| format!("{source}: missing tensor `{name}`"))?;
        if value.shape() != param.shape() {
            bail!("{source}: tensor `{name}` has shape {}, the model's is {}", value.shape(), param.shape());
        }
    }
    Ok(())
}

/// Copies checkpoint tensors into the model's parameters; every parameter
/// must be present with its shape.
pub fn restore_params(named: &[(String, Tensor)], saved: &HashMap<String, Tensor>, source: &str) -> Result<()> {
    check_params(named, saved, source)?;
    for (name, param) in named {
        let value = saved.get(name).with_context(|| format!("{source}: missing tensor `{name}`"))?;
        param.copy_from(value).with_context(|| format!("{source}: tensor `{name}`"))?;
    }
    Ok(())
}
