//! MS-COCO 2014 as a multi-label data set (80 classes).
//!
//! Layout under the root:
//! ```text
//! <root>/annotations/instances_train2014.json
//! <root>/annotations/instances_val2014.json
//! <root>/train2014/COCO_train2014_000000000009.jpg ...
//! <root>/val2014/COCO_val2014_000000000042.jpg ...
//! ```
//!
//! Label rules (as HCP-MLR-PL's `datasets/coco2014.py`, the protocol of
//! docs/model.md §7):
//! * Classes: the file's `categories` sorted by id, which must be COCO's 80
//!   categories with the names of [`COCO_CATEGORIES`] in that order (the
//!   ids 1..90 with gaps map to labels 0..79).
//! * Items: every entry of the file's `images`, in file order (the order of
//!   pycocotools' `coco.imgs`, so partial-label masks drawn in that order line
//!   up). Images with no annotation (702 of train2014, 367 of val2014) are
//!   kept with all-negative labels, as HCP-MLR-PL does; DualCoOp iterates
//!   `coco.imgToAnns` and so drops them: [`CocoDataset::without_unannotated`]
//!   gives that set.
//! * A class is positive if the image has at least one annotation of it
//!   (crowd annotations included, as `getAnnIds` returns them), negative
//!   otherwise. Nothing is unknown in the full labels.
//!
//! The JSON is deserialised into typed structs holding only the fields used
//! (ids, file names, category ids and names); segmentations, boxes and the
//! rest are skipped while parsing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use super::dataset::{FileDataset, ImageFiles, NEGATIVE, POSITIVE};
use super::list::{check_images, read_file};
pub use super::list::{OpenOptions, SkippedImages};

/// COCO's 80 object categories, in the order of their category ids
/// (1 person, 2 bicycle, ..., 90 toothbrush), as `instances_*2014.json`
/// spells them.
#[rustfmt::skip]
pub const COCO_CATEGORIES: [&str; 80] = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
];

/// Which COCO 2014 split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CocoSplit {
    Train2014,
    Val2014,
}

impl CocoSplit {
    /// `train2014` or `val2014`: the image folder and the annotation file's
    /// suffix.
    pub fn name(self) -> &'static str {
        match self {
            CocoSplit::Train2014 => "train2014",
            CocoSplit::Val2014 => "val2014",
        }
    }
}

impl std::str::FromStr for CocoSplit {
    type Err = anyhow::Error;

    /// `train2014`/`train` or `val2014`/`val`.
    fn from_str(s: &str) -> Result<CocoSplit> {
        match s {
            "train2014" | "train" => Ok(CocoSplit::Train2014),
            "val2014" | "val" => Ok(CocoSplit::Val2014),
            _ => bail!("unknown COCO split '{s}' (expected train2014 or val2014)"),
        }
    }
}

#[derive(Deserialize)]
struct CocoFile {
    images: Vec<CocoImage>,
    annotations: Vec<CocoAnnotation>,
    categories: Vec<CocoCategory>,
}

#[derive(Deserialize)]
struct CocoImage {
    id: u64,
    file_name: String,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    #[serde(default)]
    id: Option<u64>,
    image_id: u64,
    category_id: u64,
}

#[derive(Deserialize)]
struct CocoCategory {
    id: u64,
    name: String,
}

/// One split of COCO 2014 (see the module docs for the label rules).
pub struct CocoDataset {
    root: PathBuf,
    split: CocoSplit,
    /// Named by each image's `file_name`.
    files: ImageFiles,
    /// Whether each image has at least one annotation.
    annotated: Vec<bool>,
    skipped: SkippedImages,
}

impl CocoDataset {
    /// Reads `<root>/annotations/instances_<split>.json` and checks that each
    /// listed image exists under `<root>/<split>/`.
    pub fn open(root: &Path, split: CocoSplit, options: &OpenOptions) -> Result<CocoDataset> {
        let ann_path = root.join("annotations").join(format!("instances_{}.json", split.name()));
        let image_dir = root.join(split.name());
        let bytes = read_file(&ann_path, "COCO annotation file").map_err(|e| {
            if ann_path.exists() {
                e
            } else {
                anyhow!(
                    "{e} (expected <root>/annotations/instances_{0}.json and <root>/{0}/ under the COCO root {1})",
                    split.name(),
                    root.display()
                )
            }
        })?;
        let file: CocoFile = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow!("cannot parse COCO annotation file {}: {e}", ann_path.display()))?;
        drop(bytes);
        let fail = |msg: String| anyhow!("COCO annotation file {}: {msg}", ann_path.display());

        // Categories: sorted by id, must be the standard 80.
        let mut cats = file.categories;
        cats.sort_by_key(|c| c.id);
        if let Some(w) = cats.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(fail(format!("category id {} is listed twice", w[0].id)));
        }
        if cats.len() != COCO_CATEGORIES.len() {
            return Err(fail(format!(
                "lists {} categories, expected COCO's {} (an instances_*2014.json file)",
                cats.len(),
                COCO_CATEGORIES.len()
            )));
        }
        for (k, (c, &want)) in cats.iter().zip(&COCO_CATEGORIES).enumerate() {
            if c.name != want {
                return Err(fail(format!(
                    "category id {} (number {} by id) is named '{}', expected '{want}'",
                    c.id,
                    k + 1,
                    c.name
                )));
            }
        }
        let class_of: HashMap<u64, usize> = cats.iter().enumerate().map(|(k, c)| (c.id, k)).collect();

        // Images, in file order.
        let mut row_of: HashMap<u64, usize> = HashMap::with_capacity(file.images.len());
        for (i, im) in file.images.iter().enumerate() {
            if row_of.insert(im.id, i).is_some() {
                return Err(fail(format!("image id {} is listed twice", im.id)));
            }
            if im.file_name.trim().is_empty() {
                return Err(fail(format!("image id {} has an empty file_name", im.id)));
            }
        }
        if file.images.is_empty() {
            return Err(fail("lists no image".into()));
        }

        let c = COCO_CATEGORIES.len();
        let n = file.images.len();
        let mut labels = vec![NEGATIVE; n * c];
        let mut annotated = vec![false; n];
        for (a, ann) in file.annotations.iter().enumerate() {
            let which = match ann.id {
                Some(id) => format!("annotation id {id}"),
                None => format!("annotation number {a}"),
            };
            let &k = class_of.get(&ann.category_id).ok_or_else(|| {
                fail(format!("{which} has category id {}, which is not in the file's categories", ann.category_id))
            })?;
            let &row = row_of
                .get(&ann.image_id)
                .ok_or_else(|| fail(format!("{which} refers to image id {}, which is not in images", ann.image_id)))?;
            labels[row * c + k] = POSITIVE;
            annotated[row] = true;
        }
        drop(file.annotations);

        if !image_dir.is_dir() {
            bail!(
                "COCO image folder {} does not exist (expected <root>/{} beside <root>/annotations)",
                image_dir.display(),
                split.name()
            );
        }
        let paths: Vec<PathBuf> = file.images.iter().map(|im| image_dir.join(&im.file_name)).collect();
        let (keep, skipped) = check_images(&paths, &ann_path, options)?;

        let mut ds = CocoDataset {
            root: root.to_path_buf(),
            split,
            files: ImageFiles::new(COCO_CATEGORIES.iter().map(|s| s.to_string()).collect()),
            annotated: Vec::with_capacity(n),
            skipped,
        };
        for (i, (im, p)) in file.images.into_iter().zip(paths).enumerate() {
            if keep[i] {
                ds.files.push(im.file_name, p, &labels[i * c..(i + 1) * c]);
                ds.annotated.push(annotated[i]);
            }
        }
        Ok(ds)
    }

    /// The split read.
    pub fn split(&self) -> CocoSplit {
        self.split
    }

    /// The full path of item `index`'s image.
    pub fn image_path(&self, index: usize) -> &Path {
        &self.files.paths[index]
    }

    /// How many items have no annotation (all-negative labels).
    pub fn unannotated_count(&self) -> usize {
        self.annotated.iter().filter(|&&a| !a).count()
    }

    /// The same set without the images that have no annotation (DualCoOp's
    /// COCO loader, which iterates `coco.imgToAnns`).
    pub fn without_unannotated(mut self) -> CocoDataset {
        let annotated = std::mem::take(&mut self.annotated);
        let ImageFiles { class_names, names, paths, labels } = std::mem::take(&mut self.files);
        self.files = ImageFiles::new(class_names);
        let rows = labels.chunks_exact(self.files.class_names.len());
        for (((name, path), row), keep) in names.into_iter().zip(paths).zip(rows).zip(annotated) {
            if keep {
                self.files.push(name, path, row);
                self.annotated.push(true);
            }
        }
        self
    }

    /// Images listed but missing on disk and dropped (with
    /// `skip_missing_images`; otherwise they are an error).
    pub fn skipped_missing_images(&self) -> &SkippedImages {
        &self.skipped
    }
}

impl FileDataset for CocoDataset {
    fn describe(&self) -> String {
        let which = match self.split {
            CocoSplit::Train2014 => "train",
            CocoSplit::Val2014 => "val",
        };
        format!("COCO 2014 {which} ({})", self.root.display())
    }

    fn files(&self) -> &ImageFiles {
        &self.files
    }
}
