//! Dataset and CLIP selection shared by `train`, `eval` and `predict`.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use mlrpl_engine::clip::Clip;
use mlrpl_engine::data::coco::{CocoDataset, CocoSplit};
use mlrpl_engine::data::dataset::MultiLabelDataset;
use mlrpl_engine::data::list::{ListDataset, OpenOptions, SkippedImages};
use mlrpl_engine::data::synthetic::{Split, SyntheticSet};
use mlrpl_engine::data::voc::VocDataset;
use mlrpl_engine::nn::WeightMap;
use mlrpl_engine::{Device, Precision};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Side of the embedded set's images: the bundled CLIP's native resolution.
const EMBEDDED_IMAGE_SIZE: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DatasetKind {
    /// The procedurally generated shapes set built into the engine.
    Embedded,
    /// COCO 2014 (train2014 for training, val2014 as the test split).
    Coco,
    /// Pascal VOC 2007 (trainval for training, test as the test split).
    Voc,
    /// Your own images: a CSV (`path,label1;label2`) or JSON list.
    List,
}

#[derive(Args, Clone, Debug)]
pub struct DataArgs {
    #[arg(long, value_enum, default_value_t = DatasetKind::Embedded)]
    pub dataset: DatasetKind,
    /// COCO: the folder with annotations/ and train2014/ val2014/; VOC: the
    /// folder holding VOCdevkit/.
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// List datasets: the training list (CSV or JSON).
    #[arg(long)]
    pub train_list: Option<PathBuf>,
    /// List datasets: the test list (CSV or JSON).
    #[arg(long)]
    pub test_list: Option<PathBuf>,
    /// List datasets: class names, one per line (default: the labels seen).
    #[arg(long)]
    pub classes: Option<PathBuf>,
    /// VOC: count difficult-only objects as positives (default: unknown).
    #[arg(long)]
    pub voc_difficult: bool,
    /// Leave out images that are missing or unreadable (counted, with a warning) instead of failing.
    #[arg(long)]
    pub skip_bad_images: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Train,
    Test,
}

fn report_skipped(skipped: &SkippedImages, what: &str) {
    if let Some(warning) = skipped.warning() {
        eprintln!("warning: {what}: {warning}");
    }
}

/// The embedded set's training or test split.
pub fn embedded_set(part: Part) -> Result<Arc<dyn MultiLabelDataset>> {
    let split = if part == Part::Train { Split::Train } else { Split::Test };
    Ok(Arc::new(SyntheticSet::new(split, 0, EMBEDDED_IMAGE_SIZE)?))
}

impl DataArgs {
    /// The training or the test split of the chosen dataset.
    pub fn open(&self, part: Part) -> Result<Arc<dyn MultiLabelDataset>> {
        let options = OpenOptions { skip_missing_images: self.skip_bad_images };
        let root = || self.data_root.clone().with_context(|| format!("--dataset {:?} needs --data-root", self.dataset));
        let classes = || -> Result<Option<Vec<String>>> {
            match &self.classes {
                None => Ok(None),
                Some(path) => Ok(Some(mlrpl_engine::data::list::read_class_names(path).context("--classes")?)),
            }
        };
        Ok(match (self.dataset, part) {
            (DatasetKind::Embedded, part) => embedded_set(part)?,
            (DatasetKind::Coco, part) => {
                let split = if part == Part::Train { CocoSplit::Train2014 } else { CocoSplit::Val2014 };
                let set = CocoDataset::open(&root()?, split, &options)?;
                report_skipped(set.skipped_missing_images(), &set.describe());
                Arc::new(set)
            }
            (DatasetKind::Voc, part) => {
                let split = if part == Part::Train { "trainval" } else { "test" };
                let set = VocDataset::open(&root()?, split, self.voc_difficult, &options)?;
                report_skipped(set.skipped_missing_images(), &set.describe());
                Arc::new(set)
            }
            (DatasetKind::List, part) => {
                let list = if part == Part::Train { &self.train_list } else { &self.test_list };
                let flag = if part == Part::Train { "--train-list" } else { "--test-list" };
                let path = list.clone().with_context(|| format!("--dataset list needs {flag}"))?;
                let set = ListDataset::open(&path, classes()?, &options)?;
                report_skipped(set.skipped_missing_images(), &set.describe());
                Arc::new(set)
            }
        })
    }
}

/// The training and the test split must have the same classes, in the same
/// order; otherwise an error naming both and the classes that differ.
pub fn same_classes(train: &dyn MultiLabelDataset, test: &dyn MultiLabelDataset) -> Result<()> {
    let (a, b) = (train.class_names(), test.class_names());
    if a == b {
        return Ok(());
    }
    let only = |x: &[String], y: &[String]| -> String {
        let names: Vec<&str> = x.iter().filter(|n| !y.contains(n)).map(String::as_str).collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    let (only_train, only_test) = (only(a, b), only(b, a));
    let detail = if only_train == "none" && only_test == "none" {
        "the same classes in another order (give --classes to fix one order)".to_string()
    } else {
        format!("only in the training split: {only_train}; only in the test split: {only_test} (give --classes to use one list for both)")
    };
    bail!(
        "the training split ({}, {} classes) and the test split ({}, {} classes) have different classes: {detail}",
        train.describe(),
        a.len(),
        test.describe(),
        b.len()
    )
}

/// The bundled CLIP: one run of `mlrpl-engine pretrain` on the embedded
/// set, stored f16 in OpenAI's naming; its card (command, seed, commit,
/// zero-shot mAP) is assets/clip/mini-clip.json.
#[cfg(mlrpl_bundled_clip)]
const BUNDLED_CLIP: Option<&[u8]> = Some(include_bytes!(env!("MLRPL_BUNDLED_CLIP")));
#[cfg(not(mlrpl_bundled_clip))]
const BUNDLED_CLIP: Option<&[u8]> = None;
/// How checkpoints name the bundled CLIP.
pub const BUNDLED_CLIP_NAME: &str = "bundled:mini-clip";

/// The CLIP a run uses, its towers stored as `precision` asks, and the name
/// its checkpoints record: the given weights, or the bundled one.
pub fn load_clip(path: Option<&PathBuf>, device: &Device, precision: Precision) -> Result<(Clip, String)> {
    let dtype = precision.frozen_dtype();
    match path {
        Some(path) => Ok((Clip::load_as(path, device, dtype)?, path.display().to_string())),
        None => {
            let bytes = BUNDLED_CLIP.context(
                "this build has no bundled CLIP (assets/clip/mini-clip.safetensors was missing when it was built); give --clip",
            )?;
            let source = Path::new("bundled CLIP (assets/clip/mini-clip.safetensors)");
            let clip = Clip::from_weights(WeightMap::from_bytes(bytes, source, device, dtype)?)?;
            Ok((clip, BUNDLED_CLIP_NAME.to_string()))
        }
    }
}

/// Reloads the CLIP a checkpoint names.
pub fn clip_of_checkpoint(name: &str, device: &Device, precision: Precision) -> Result<Clip> {
    match name {
        BUNDLED_CLIP_NAME => Ok(load_clip(None, device, precision)?.0),
        "" => bail!("the checkpoint names no CLIP; give --clip"),
        path => Ok(load_clip(Some(&PathBuf::from(path)), device, precision)?.0),
    }
}
