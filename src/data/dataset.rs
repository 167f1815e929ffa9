//! The one interface every multi-label data source implements (COCO, VOC,
//! a CSV/JSON list, the embedded procedural set), so training, evaluation
//! and the loader never depend on a format.

use super::image::{load_rgb, RgbImage};
use anyhow::Result;
use std::path::PathBuf;

/// Label values: a known positive, a known negative, and unknown (partial
/// labels; excluded from the loss and the metrics).
pub const POSITIVE: f32 = 1.0;
pub const NEGATIVE: f32 = -1.0;
pub const UNKNOWN: f32 = 0.0;

/// One split of a multi-label image dataset.
pub trait MultiLabelDataset: Send + Sync {
    /// What to call this split in messages, e.g. "COCO 2014 val (/data/coco)".
    fn describe(&self) -> String;
    fn class_names(&self) -> &[String];
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The labels of item `index`, one per class: POSITIVE, NEGATIVE or UNKNOWN.
    fn labels(&self, index: usize) -> &[f32];
    /// The decoded image of item `index`; an error names the file.
    fn image(&self, index: usize) -> Result<RgbImage>;
    /// A stable name for item `index` (its path, or a synthetic id).
    fn item_name(&self, index: usize) -> String;
}

/// Image files on disk with their labels: what the file-based readers
/// (COCO, VOC, lists) fill, each from its own format.
#[derive(Clone, Debug, Default)]
pub struct ImageFiles {
    pub class_names: Vec<String>,
    /// What each item is called in messages and predictions.
    pub names: Vec<String>,
    pub paths: Vec<PathBuf>,
    /// `len * class_names.len()` values, row-major.
    pub labels: Vec<f32>,
}

impl ImageFiles {
    pub fn new(class_names: Vec<String>) -> Self {
        ImageFiles { class_names, ..Default::default() }
    }

    pub fn push(&mut self, name: String, path: PathBuf, labels: &[f32]) {
        debug_assert_eq!(labels.len(), self.class_names.len());
        self.names.push(name);
        self.paths.push(path);
        self.labels.extend_from_slice(labels);
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    pub fn labels(&self, index: usize) -> &[f32] {
        let c = self.class_names.len();
        &self.labels[index * c..(index + 1) * c]
    }
}

/// A dataset backed by [`ImageFiles`]; implementing it gives the whole
/// [`MultiLabelDataset`] interface.
pub trait FileDataset: Send + Sync {
    fn describe(&self) -> String;
    fn files(&self) -> &ImageFiles;
}

impl<T: FileDataset> MultiLabelDataset for T {
    fn describe(&self) -> String {
        FileDataset::describe(self)
    }

    fn class_names(&self) -> &[String] {
        &self.files().class_names
    }

    fn len(&self) -> usize {
        self.files().len()
    }

    fn labels(&self, index: usize) -> &[f32] {
        self.files().labels(index)
    }

    fn image(&self, index: usize) -> Result<RgbImage> {
        load_rgb(&self.files().paths[index])
    }

    fn item_name(&self, index: usize) -> String {
        self.files().names[index].clone()
    }
}
