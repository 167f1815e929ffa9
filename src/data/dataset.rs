//! The one interface every multi-label data source implements (COCO, VOC,
//! a CSV/JSON list, the embedded procedural set), so training, evaluation
//! and the loader never depend on a format.

use super::image::RgbImage;
use anyhow::Result;

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
