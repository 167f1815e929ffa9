//! Pascal VOC 2007 as a multi-label data set (20 classes).
//!
//! Layout (the root given may be the folder holding `VOCdevkit`, the
//! `VOCdevkit` folder, or the `VOC2007` folder itself):
//! ```text
//! VOCdevkit/VOC2007/Annotations/000005.xml ...
//! VOCdevkit/VOC2007/ImageSets/Main/{train,val,trainval,test}.txt
//! VOCdevkit/VOC2007/JPEGImages/000005.jpg ...
//! ```
//!
//! Items: the ids of `ImageSets/Main/<split>.txt` in file order (one id per
//! line), image `JPEGImages/<id>.jpg`, labels from `Annotations/<id>.xml`.
//!
//! Label rules, per (image, class), from the XML `<object>`s (`<name>`,
//! `<difficult>`; a missing `<difficult>` counts as 0):
//! * positive if a non-difficult object of the class exists;
//! * negative if no object of the class exists;
//! * if only difficult objects of the class exist, [`DifficultPolicy`]
//!   decides. The default ([`DifficultPolicy::Unknown`], `include_difficult =
//!   false`) gives 0 (unknown: out of the loss and the metrics), which is
//!   what the devkit's own `ImageSets/Main/<class>_<split>.txt` files say (0
//!   for "only difficult objects") and what the VOC evaluation does (those
//!   images are ignored for that class). `include_difficult = true` gives
//!   positive (as ML-GCN trains: it maps the 0 of those files to 1).
//!   HCP-MLR-PL and DualCoOp skip difficult objects, so theirs is negative:
//!   [`DifficultPolicy::Negative`] via [`VocDataset::open_with_policy`].

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use rayon::prelude::*;

use super::dataset::{FileDataset, ImageFiles, NEGATIVE, POSITIVE, UNKNOWN};
use super::list::{check_images, read_text};
pub use super::list::{OpenOptions, SkippedImages};

/// The 20 VOC classes, in the standard (alphabetical) label order.
#[rustfmt::skip]
pub const VOC_CLASSES: [&str; 20] = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
];

/// The image sets of VOC 2007 (`ImageSets/Main/<name>.txt`).
pub const VOC_SPLITS: [&str; 4] = ["train", "val", "trainval", "test"];

/// The label of a class whose only objects in an image are `difficult`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DifficultPolicy {
    /// 0: unknown (the devkit's `<class>_<split>.txt` files; the default).
    #[default]
    Unknown,
    /// 1: positive (`include_difficult`; ML-GCN's training targets).
    Positive,
    /// -1: negative (difficult objects ignored, as HCP-MLR-PL and DualCoOp).
    Negative,
}

impl DifficultPolicy {
    fn value(self) -> f32 {
        match self {
            DifficultPolicy::Unknown => UNKNOWN,
            DifficultPolicy::Positive => POSITIVE,
            DifficultPolicy::Negative => NEGATIVE,
        }
    }
}

/// One image set of VOC 2007 (see the module docs for the label rules).
pub struct VocDataset {
    /// The `VOC2007` folder.
    dir: PathBuf,
    split: String,
    /// Named by each image's id, e.g. `000005`.
    files: ImageFiles,
    difficult_only: usize,
    skipped: SkippedImages,
}

/// The `VOC2007` folder under `root` (see the module docs).
fn find_voc2007(root: &Path) -> Result<PathBuf> {
    let candidates = [root.to_path_buf(), root.join("VOC2007"), root.join("VOCdevkit").join("VOC2007")];
    for c in &candidates {
        if c.join("Annotations").is_dir() && c.join("ImageSets").is_dir() {
            return Ok(c.clone());
        }
    }
    bail!(
        "no VOC 2007 data under {}: expected VOCdevkit/VOC2007/{{Annotations,ImageSets/Main,JPEGImages}} \
         (looked for Annotations/ and ImageSets/ in {})",
        root.display(),
        candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
    )
}

/// Reads one annotation: per class, (has a non-difficult object, has a
/// difficult object).
pub fn read_annotation(path: &Path) -> Result<Vec<(bool, bool)>> {
    let text = read_text(path, "VOC annotation file")?;
    let doc = roxmltree::Document::parse(&text)
        .map_err(|e| anyhow!("cannot parse VOC annotation file {}: {e}", path.display()))?;
    let fail = |msg: String| anyhow!("VOC annotation file {}: {msg}", path.display());
    let root = doc.root_element();
    if !root.has_tag_name("annotation") {
        return Err(fail(format!("root element is <{}>, expected <annotation>", root.tag_name().name())));
    }
    let mut found = vec![(false, false); VOC_CLASSES.len()];
    for (k, obj) in root.children().filter(|n| n.has_tag_name("object")).enumerate() {
        let child_text =
            |tag: &str| obj.children().find(|n| n.has_tag_name(tag)).map(|n| n.text().unwrap_or("").trim().to_string());
        let name = child_text("name").ok_or_else(|| fail(format!("<object> number {} has no <name>", k + 1)))?;
        if name.is_empty() {
            return Err(fail(format!("<object> number {} has an empty <name>", k + 1)));
        }
        let class = VOC_CLASSES.iter().position(|c| c.eq_ignore_ascii_case(&name)).ok_or_else(|| {
            fail(format!("<object> number {} has unknown class '{name}' (not one of VOC's 20)", k + 1))
        })?;
        let difficult = match child_text("difficult").as_deref() {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(fail(format!(
                    "<object> number {} has <difficult>{other}</difficult>, expected 0 or 1",
                    k + 1
                )))
            }
        };
        if difficult {
            found[class].1 = true;
        } else {
            found[class].0 = true;
        }
    }
    Ok(found)
}

impl VocDataset {
    /// Opens image set `split` (train, val, trainval or test; any other name
    /// with an `ImageSets/Main/<name>.txt` file works too). Difficult-only
    /// classes are unknown, or positive with `include_difficult`.
    pub fn open(root: &Path, split: &str, include_difficult: bool, options: &OpenOptions) -> Result<VocDataset> {
        let policy = if include_difficult { DifficultPolicy::Positive } else { DifficultPolicy::Unknown };
        VocDataset::open_with_policy(root, split, policy, options)
    }

    /// [`VocDataset::open`] with any [`DifficultPolicy`].
    pub fn open_with_policy(
        root: &Path,
        split: &str,
        difficult: DifficultPolicy,
        options: &OpenOptions,
    ) -> Result<VocDataset> {
        if split.is_empty() || !split.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            bail!("invalid VOC split name '{split}' (expected one of {})", VOC_SPLITS.join(", "));
        }
        let dir = find_voc2007(root)?;
        let list_path = dir.join("ImageSets").join("Main").join(format!("{split}.txt"));
        let text = read_text(&list_path, "VOC image set file").map_err(|e| {
            if list_path.exists() {
                e
            } else {
                anyhow!("{e} (the VOC 2007 image sets are {})", VOC_SPLITS.join(", "))
            }
        })?;
        let mut ids = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let mut tokens = line.split_whitespace();
            let Some(id) = tokens.next() else { continue };
            if tokens.next().is_some() || id.contains('/') || id.contains('\\') {
                bail!(
                    "VOC image set file {} line {}: expected one image id, found '{}'",
                    list_path.display(),
                    i + 1,
                    line.trim()
                );
            }
            ids.push(id.to_string());
        }
        if ids.is_empty() {
            bail!("VOC image set file {} lists no image", list_path.display());
        }

        let image_dir = dir.join("JPEGImages");
        if !image_dir.is_dir() {
            bail!("VOC image folder {} does not exist", image_dir.display());
        }
        let paths: Vec<PathBuf> = ids.iter().map(|id| image_dir.join(format!("{id}.jpg"))).collect();
        let (keep, skipped) = check_images(&paths, &list_path, options)?;

        // Annotations of the kept images, in parallel (the first failure in
        // list order is reported).
        let ann_dir = dir.join("Annotations");
        let found: Vec<Option<Vec<(bool, bool)>>> = ids
            .par_iter()
            .zip(&keep)
            .map(|(id, &k)| k.then(|| read_annotation(&ann_dir.join(format!("{id}.xml")))).transpose())
            .collect::<Result<_>>()?;

        let c = VOC_CLASSES.len();
        let mut ds = VocDataset {
            dir,
            split: split.to_string(),
            files: ImageFiles::new(VOC_CLASSES.iter().map(|s| s.to_string()).collect()),
            difficult_only: 0,
            skipped,
        };
        for ((id, p), f) in ids.into_iter().zip(paths).zip(found) {
            let Some(f) = f else { continue };
            let mut row = Vec::with_capacity(c);
            for &(plain, diff) in &f {
                let v = if plain {
                    POSITIVE
                } else if diff {
                    ds.difficult_only += 1;
                    difficult.value()
                } else {
                    NEGATIVE
                };
                row.push(v);
            }
            ds.files.push(id, p, &row);
        }
        Ok(ds)
    }

    /// The `VOC2007` folder read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The image set read (`trainval`, `test`, ...).
    pub fn split(&self) -> &str {
        &self.split
    }

    /// The full path of item `index`'s image.
    pub fn image_path(&self, index: usize) -> &Path {
        &self.files.paths[index]
    }

    /// How many (image, class) pairs have only difficult objects (their
    /// label is set by the [`DifficultPolicy`]).
    pub fn difficult_only_count(&self) -> usize {
        self.difficult_only
    }

    /// Images listed but missing on disk and dropped (with
    /// `skip_missing_images`; otherwise they are an error).
    pub fn skipped_missing_images(&self) -> &SkippedImages {
        &self.skipped
    }
}

impl FileDataset for VocDataset {
    fn describe(&self) -> String {
        format!("VOC 2007 {} ({})", self.split, self.dir.display())
    }

    fn files(&self) -> &ImageFiles {
        &self.files
    }
}
