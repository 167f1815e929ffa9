//! Model ops with kernels of their own ([`crate::backend::CustomOp`]), one
//! file each, named as its kernel file: the CPU implementation (the
//! reference), the CUDA launcher of `kernels/<file>.cu`, and the op on
//! [`crate::Tensor`] that validates shapes and records the backward, side by
//! side.

pub mod bicubic;
pub mod contrastive_loss;
pub mod decoupling;
pub mod decoupling_attention;
pub mod masked_bce;
pub mod prompt_embed;
