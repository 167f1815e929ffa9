//! Data: the dataset interface and its sources, image decoding and
//! preprocessing.

pub mod augment;
pub mod coco;
pub mod dataset;
pub mod image;
pub mod list;
pub mod loader;
pub mod partial;
pub mod rand_augment;
pub mod shape_siblings;
pub mod synthetic;
pub mod voc;
