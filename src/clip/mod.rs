//! OpenAI's CLIP: both ViT towers, weight loading in OpenAI's and Hugging
//! Face's namings with sizes inferred from the shapes, the BPE tokenizer and
//! the zero-shot classifier.

pub mod config;
pub mod init;
pub mod model;
pub mod tokenizer;
pub mod weights;
pub mod zero_shot;

pub use config::{ClipConfig, TextConfig, VisionConfig};
pub use model::{Clip, TextTower, VisionTower};
pub use weights::Naming;
