//! Dataset and CLIP selection shared by `train`, `eval` and `predict`.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use mlrpl_engine::clip::init::init_weights;
use mlrpl_engine::clip::{Clip, ClipConfig, TextConfig, VisionConfig};
use mlrpl_engine::data::coco::{CocoDataset, CocoSplit};
use mlrpl_engine::data::dataset::MultiLabelDataset;
use mlrpl_engine::data::list::{ListDataset, OpenOptions, SkippedImages};
use mlrpl_engine::data::synthetic::{Split, SyntheticSet};
use mlrpl_engine::data::voc::VocDataset;
use mlrpl_engine::Device;
use std::path::PathBuf;
use std::sync::Arc;

/// Side of the embedded set's images, which the random small CLIP takes
/// at its native resolution (patch 8, an 8 x 8 grid).
const EMBEDDED_IMAGE_SIZE: usize = 64;
const RANDOM_CLIP_PATCH: usize = 8;

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

impl DataArgs {
    /// The training or the test split of the chosen dataset.
    pub fn open(&self, part: Part) -> Result<Arc<dyn MultiLabelDataset>> {
        let options = OpenOptions { skip_missing_images: self.skip_bad_images };
        let root = || self.data_root.clone().with_context(|| format!("--dataset {:?} needs --data-root", self.dataset));
        let classes = || -> Result<Option<Vec<String>>> {
            match &self.classes {
                None => Ok(None),
                Some(path) => {
                    let text =
                        std::fs::read_to_string(path).with_context(|| format!("cannot read class list {}", path.display()))?;
                    Ok(Some(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()))
                }
            }
        };
        Ok(match (self.dataset, part) {
            (DatasetKind::Embedded, Part::Train) => Arc::new(SyntheticSet::new(Split::Train, 0, EMBEDDED_IMAGE_SIZE)?),
            (DatasetKind::Embedded, Part::Test) => Arc::new(SyntheticSet::new(Split::Test, 0, EMBEDDED_IMAGE_SIZE)?),
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

/// The CLIP a run uses: the given weights, or, until the engine bundles a
/// pretrained one, a randomly initialised small CLIP sized for the embedded
/// set (so the pipeline runs end to end; its features are not pretrained).
pub fn load_clip(path: Option<&PathBuf>, seed: u64, device: &Device) -> Result<(Clip, String)> {
    match path {
        Some(path) => Ok((Clip::load(path, device)?, path.display().to_string())),
        None => {
            eprintln!(
                "no --clip given and no pretrained CLIP is bundled yet: using a randomly initialised small CLIP \
                 (seed {seed}); give --clip for real results"
            );
            let config = ClipConfig {
                vision: VisionConfig {
                    width: 128,
                    layers: 2,
                    heads: 2,
                    patch: RANDOM_CLIP_PATCH,
                    grid: EMBEDDED_IMAGE_SIZE / RANDOM_CLIP_PATCH,
                    embed_dim: 128,
                },
                text: TextConfig { width: 128, layers: 2, heads: 2, context_length: 77, vocab_size: 49408, embed_dim: 128 },
            };
            Ok((Clip::from_weights(init_weights(&config, seed, device)?)?, format!("random:{seed}")))
        }
    }
}

/// Reloads the CLIP a checkpoint names.
pub fn clip_of_checkpoint(name: &str, device: &Device) -> Result<Clip> {
    match name.strip_prefix("random:") {
        Some(seed) => Ok(load_clip(None, seed.parse().context("checkpoint names a malformed random CLIP seed")?, device)?.0),
        None if name.is_empty() => bail!("the checkpoint names no CLIP; give --clip"),
        None => Clip::load(&PathBuf::from(name), device),
    }
}
