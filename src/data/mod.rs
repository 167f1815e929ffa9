//! Data: the dataset interface and its sources, image decoding and
//! preprocessing.

pub mod dataset;
pub mod image;
