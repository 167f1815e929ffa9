//! Image-caption pairs in groups of shape siblings, for contrastive
//! pre-training (`pretrain --shape-siblings K`).
//!
//! Item `g * K + s` is sibling `s` of scene `g` of a [`SyntheticSet`]
//! ([`Scene::shape_sibling`]): the K items of a group share background,
//! colours, sizes, positions and caption template and differ only in the
//! shape of every object. A batch made of whole groups holds, for every
//! caption, K - 1 negatives that only the shape words tell apart, which
//! breaks the symmetric dead start of `docs/pretrain.md` (neither tower
//! learns shapes while the other does not know them, since colours, counts
//! and backgrounds already match most pairs). With K = 1 the items are the
//! set's own scenes, unchanged.

use std::sync::{Arc, OnceLock};

use anyhow::{ensure, Result};

use super::dataset::{MultiLabelDataset, NEGATIVE, POSITIVE};
use super::image::RgbImage;
use super::synthetic::{Scene, SyntheticSet, CATEGORIES};

pub struct ShapeSiblings {
    scenes: Arc<SyntheticSet>,
    siblings: usize,
    /// `len x C` labels, filled on the first [`MultiLabelDataset::labels`]
    /// call.
    label_cache: OnceLock<Vec<f32>>,
}

impl ShapeSiblings {
    /// Groups of `siblings` (1 ..= the number of categories) per scene of
    /// `scenes`.
    pub fn new(scenes: Arc<SyntheticSet>, siblings: usize) -> Result<ShapeSiblings> {
        ensure!(
            (1..=CATEGORIES.len()).contains(&siblings),
            "--shape-siblings must be between 1 and {} (the number of shape categories), got {siblings}",
            CATEGORIES.len()
        );
        Ok(ShapeSiblings { scenes, siblings, label_cache: OnceLock::new() })
    }

    /// Items per group.
    pub fn siblings(&self) -> usize {
        self.siblings
    }

    /// Number of groups (the scenes of the underlying set).
    pub fn groups(&self) -> usize {
        self.scenes.len()
    }

    /// The scene of item `index`.
    pub fn scene(&self, index: usize) -> Scene {
        self.scenes.scene(index / self.siblings).shape_sibling(index % self.siblings, self.siblings)
    }

    /// Caption number `variant` of item `index`; the siblings of a group
    /// share the template.
    pub fn caption(&self, index: usize, variant: u64) -> String {
        self.scene(index).caption(variant)
    }

    /// Item indices in the order of `group_order`, each group's siblings
    /// consecutive (so batches of a multiple of K hold whole groups).
    pub fn expand(&self, group_order: &[usize]) -> Vec<usize> {
        group_order.iter().flat_map(|&g| g * self.siblings..(g + 1) * self.siblings).collect()
    }
}

impl MultiLabelDataset for ShapeSiblings {
    fn describe(&self) -> String {
        format!("{}, {} shape siblings per scene", self.scenes.describe(), self.siblings)
    }
    fn class_names(&self) -> &[String] {
        self.scenes.class_names()
    }
    fn len(&self) -> usize {
        self.scenes.len() * self.siblings
    }
    fn labels(&self, index: usize) -> &[f32] {
        let c = CATEGORIES.len();
        let all = self.label_cache.get_or_init(|| {
            (0..self.len())
                .flat_map(|i| self.scene(i).labels().into_iter().map(|l| if l { POSITIVE } else { NEGATIVE }))
                .collect()
        });
        &all[index * c..(index + 1) * c]
    }
    fn image(&self, index: usize) -> Result<RgbImage> {
        ensure!(index < self.len(), "shape sibling index {index} out of range (len {})", self.len());
        Ok(self.scene(index).render(self.scenes.image_size()))
    }
    /// `<scene's name>/sibling<s>`.
    fn item_name(&self, index: usize) -> String {
        format!("{}/sibling{}", self.scenes.item_name(index / self.siblings), index % self.siblings)
    }
}
