//! OpenAI's CLIP: both ViT towers, weight loading in OpenAI's and Hugging
//! Face's namings with sizes inferred from the shapes, and the BPE tokenizer.

pub mod config;
pub mod init;
pub mod model;
pub mod tokenizer;
pub mod weights;

pub use config::{ClipConfig, TextConfig, VisionConfig};
pub use model::{Clip, TextTower, VisionTower};
pub use weights::Naming;
