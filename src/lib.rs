//! mlrpl-engine: a CLIP-based multi-label recogniser with partial labels,
//! trained by its own reverse-mode autograd on a CPU or CUDA backend.
//!
//! Layout (see `docs/design.md`):
//! * [`Shape`], [`DType`]: what every layer below the tensor shares (the
//!   backends take them, so they sit at the root, under both).
//! * [`tensor`]: the [`Tensor`] handle.
//! * [`backend`]: the storage-level [`backend::BackendStorage`] trait of
//!   general primitives, its CPU (the reference) and CUDA implementations
//!   (`docs/gpu/README.md`), and [`backend::CustomOp`] for model ops.
//! * [`autograd`]: the tape, no-grad scopes and `backward`.
//! * [`ops`]: differentiable ops, each with its backward; [`ops::custom`]:
//!   the model ops with kernels of their own, CPU and CUDA side by side.
//! * [`optim`]: SGD, AdamW and learning-rate schedules.
//! * [`clip`], [`mlrpl`]: the CLIP towers and the MLR-PL model on them;
//!   [`data`], [`train`], [`metrics`]: datasets, the training loops (MLR-PL,
//!   and CLIP's contrastive pre-training in [`train::pretrain`]) and
//!   evaluation.
//! * [`kernels`]: the CUDA kernels embedded by `build.rs`.
//! * [`precision`]: `--precision`, the dtype of the frozen towers.
//! * [`viz`]: pictures (PNG plots and labelled images) and their font.

pub mod autograd;
pub mod backend;
pub mod bench;
pub mod clip;
pub mod data;
pub mod device;
mod dtype;
pub mod kernels;
pub mod metrics;
pub mod mlrpl;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod precision;
pub mod rng;
mod shape;
pub mod tensor;
pub mod train;
pub mod viz;

pub use device::Device;
pub use dtype::DType;
pub use precision::Precision;
pub use shape::Shape;
pub use tensor::Tensor;
