//! Prompt assembly of the text pass (docs/model.md §3) in one op: the
//! transformer's input `x[c, l] = pos[l] + (SOT of c when l = 0; the
//! learned context ctx[c or 0, l - 1] when 1 <= l <= M; the frozen
//! name/"."/EOT/padding embedding of c after)`, for the L = longest EOT + 1
//! positions run, in the tower's dtype; the context stays f32. It replaces
//! `to_dtype(ctx)`, the broadcast of a shared context, the concat of
//! prefix, context and suffix and the positional add (four ops and their
//! four backwards) by one kernel each way: the backward writes d ctx, the
//! x-gradient at positions 1..=M, summed over the categories in category
//! order when the context is shared (no float atomics, so it is
//! deterministic). CUDA: `kernels/prompt_embed.cu`, whose `_bf16` instances
//! read and write a bf16 tower's buffers as stored.
//!
//! The CPU implementation is the reference: the same sum in f32, rounded
//! once to the tower's dtype. With a bf16 tower the context is rounded to
//! bf16 before the add, as the unfused `to_dtype(ctx)` did, so the op is
//! bit-identical to the four ops it replaces in either dtype.

use crate::autograd;
use crate::backend::cuda::common::{grid_for, int, launch, KernelElem, BLOCK};
use crate::backend::cuda::CudaDevice;
use crate::backend::custom::{exact_inputs, CustomOp, StoredInput, StoredOutput};
use crate::backend::Storage;
use crate::ops::single;
use crate::{DType, Shape, Tensor};
use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;

/// Sizes of a prompt assembly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromptDims {
    pub classes: usize,
    /// L: positions run (the longest EOT + 1).
    pub len: usize,
    pub width: usize,
    /// M: context vectors per prompt.
    pub n_ctx: usize,
    /// One context for every category (CoOp) instead of one per category.
    pub shared: bool,
    /// Round the context to bf16 before the positional add (a bf16
    /// tower): the value the unfused `to_dtype(ctx)` fed the add, so the
    /// op is bit-identical to the unfused ops (the forward only).
    pub ctx_bf16: bool,
}

impl PromptDims {
    fn sets(&self) -> usize {
        if self.shared {
            1
        } else {
            self.classes
        }
    }

    fn x_len(&self) -> usize {
        self.classes * self.len * self.width
    }

    fn frozen_len(&self) -> usize {
        self.classes * (self.len - self.n_ctx) * self.width
    }

    fn ctx_len(&self) -> usize {
        self.sets() * self.n_ctx * self.width
    }

    /// The kernels' int arguments: classes, len, width, n_ctx, shared.
    fn ints(&self) -> Result<[i32; 5]> {
        int(self.x_len(), "prompt embeddings")?;
        Ok([
            int(self.classes, "classes")?,
            int(self.len, "positions")?,
            int(self.width, "width")?,
            int(self.n_ctx, "context length")?,
            i32::from(self.shared),
        ])
    }

    /// A context value as the add sees it.
    fn ctx_value(&self, v: f32) -> f32 {
        if self.ctx_bf16 {
            half::bf16::from_f32(v).to_f32()
        } else {
            v
        }
    }
}

/// The forward: inputs frozen [C, L - M, W], pos [P >= L, W] (both in the
/// tower's dtype) and ctx [S, M, W] (f32); output x [C, L, W] in the
/// frozen table's dtype.
pub struct PromptEmbed(pub PromptDims);

/// The backward: inputs ctx (only its dtype is used: the gradient's) and
/// dx [C, L, W]; output dctx [S, M, W], f32.
pub struct PromptEmbedBackward(pub PromptDims);

impl Tensor {
    /// The text tower's input for learned prompts: `self` = the frozen
    /// token embeddings of the prompts without their M context rows
    /// `[C, L - M, W]` (SOT, then what follows the context), `pos` the
    /// positional embeddings `[P >= L, W]` (the first L rows are added),
    /// `ctx` the f32 context `[C or 1, M, W]`. Returns `[C, L, W]` in
    /// `self`'s dtype; only `ctx` receives a gradient (the rest is frozen).
    pub fn prompt_embed(&self, pos: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let shapes = || format!("frozen {}, pos {}, ctx {}", self.shape(), pos.shape(), ctx.shape());
        let (&[classes, frozen_len, width], &[positions, pos_width], &[sets, n_ctx, ctx_width]) =
            (self.dims(), pos.dims(), ctx.dims())
        else {
            bail!("prompt_embed: expected frozen [C, L - M, W], pos [P, W], ctx [S, M, W]; got {}", shapes());
        };
        let len = frozen_len + n_ctx;
        if !matches!(self.dtype(), DType::F32 | DType::BF16) || pos.dtype() != self.dtype() || ctx.dtype() != DType::F32
        {
            bail!(
                "prompt_embed: expected frozen and pos in one dtype (f32 or bf16) and an f32 ctx; got {}, {}, {}",
                self.dtype(),
                pos.dtype(),
                ctx.dtype()
            );
        }
        if frozen_len == 0 || n_ctx == 0 || classes == 0 || width == 0 {
            bail!("prompt_embed: no SOT row, no context, no category or no width: {}", shapes());
        }
        if pos_width != width || ctx_width != width || positions < len || (sets != classes && sets != 1) {
            bail!("prompt_embed: sizes disagree (L = {len}, ctx sets must be C or 1): {}", shapes());
        }
        if self.requires_grad() || pos.requires_grad() {
            bail!("prompt_embed: the frozen embeddings and positional table must not require grad");
        }
        let dims =
            PromptDims { classes, len, width, n_ctx, shared: sets != classes, ctx_bf16: self.dtype() == DType::BF16 };
        let x = single(Storage::apply_custom(&PromptEmbed(dims), &[&self.storage(), &pos.storage(), &ctx.storage()])?)?;
        let out = Tensor::op_output(x, Shape::new(vec![classes, len, width]), &[ctx]);
        let ctx_in = ctx.clone();
        autograd::record(&out, &[ctx], move |g, _| {
            let dctx = single(Storage::apply_custom(&PromptEmbedBackward(dims), &[&ctx_in.storage(), &g.storage()])?)?;
            Ok(vec![Some(Tensor::from_storage(dctx, ctx_in.shape().clone(), ctx_in.device().clone())?)])
        });
        Ok(out)
    }
}

fn check_len(op: &dyn CustomOp, what: &str, got: usize, want: usize) -> Result<()> {
    if got < want {
        bail!("{}: {what} holds {got} elements, fewer than the {want} its sizes need", op.name());
    }
    Ok(())
}

impl PromptEmbed {
    fn check(&self, frozen: usize, pos: usize, ctx: usize) -> Result<()> {
        let d = &self.0;
        check_len(self, "frozen", frozen, d.frozen_len())?;
        check_len(self, "pos", pos, d.len * d.width)?;
        check_len(self, "ctx", ctx, d.ctx_len())
    }
}

impl CustomOp for PromptEmbed {
    fn name(&self) -> &'static str {
        "prompt_embed"
    }

    fn cpu(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        let [frozen, pos, ctx] = exact_inputs(self, inputs)?;
        self.check(frozen.len(), pos.len(), ctx.len())?;
        let d = self.0;
        let w = d.width;
        let mut x = Vec::with_capacity(d.x_len());
        for c in 0..d.classes {
            let set = if d.shared { 0 } else { c };
            for l in 0..d.len {
                let pos = &pos[l * w..][..w];
                if (1..=d.n_ctx).contains(&l) {
                    let ctx = &ctx[(set * d.n_ctx + l - 1) * w..][..w];
                    x.extend(ctx.iter().zip(pos).map(|(&v, p)| d.ctx_value(v) + p));
                } else {
                    let f = if l == 0 { 0 } else { l - d.n_ctx };
                    x.extend(frozen[(c * (d.len - d.n_ctx) + f) * w..][..w].iter().zip(pos).map(|(v, p)| v + p));
                }
            }
        }
        Ok(vec![x])
    }

    fn cuda(&self, dev: &CudaDevice, inputs: &[&CudaSlice<f32>]) -> Result<Vec<CudaSlice<f32>>> {
        let [frozen, pos, ctx] = exact_inputs(self, inputs)?;
        Ok(vec![cuda_forward(dev, &self.0, frozen, pos, ctx)?])
    }

    /// A bf16 tower's frozen table and positions read as stored, x written
    /// in bf16 (f32 ones take [`CustomOp::cuda`], which widens nothing).
    fn cuda_stored(&self, dev: &CudaDevice, inputs: &[StoredInput<'_>]) -> Result<Option<Vec<StoredOutput>>> {
        Ok(match inputs {
            [StoredInput::Bf16(frozen), StoredInput::Bf16(pos), StoredInput::F32(ctx)] => {
                Some(vec![StoredOutput::Bf16(cuda_forward(dev, &self.0, frozen, pos, ctx)?)])
            }
            _ => None,
        })
    }
}

impl CustomOp for PromptEmbedBackward {
    fn name(&self) -> &'static str {
        "prompt_embed backward"
    }

    fn cpu(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        let [_, dx] = exact_inputs(self, inputs)?;
        let d = self.0;
        check_len(self, "dx", dx.len(), d.x_len())?;
        let (w, row) = (d.width, d.len * d.width);
        let context_rows = |c: usize| &dx[c * row + w..][..d.n_ctx * w];
        if !d.shared {
            return Ok(vec![(0..d.classes).flat_map(context_rows).copied().collect()]);
        }
        let mut dctx = vec![0.0f32; d.n_ctx * w];
        for c in 0..d.classes {
            dctx.iter_mut().zip(context_rows(c)).for_each(|(acc, g)| *acc += g);
        }
        Ok(vec![dctx])
    }

    fn cuda(&self, dev: &CudaDevice, inputs: &[&CudaSlice<f32>]) -> Result<Vec<CudaSlice<f32>>> {
        let [_, dx] = exact_inputs(self, inputs)?;
        Ok(vec![cuda_backward(dev, &self.0, dx)?])
    }

    /// A bf16 x-gradient read as stored.
    fn cuda_stored(&self, dev: &CudaDevice, inputs: &[StoredInput<'_>]) -> Result<Option<Vec<StoredOutput>>> {
        Ok(match inputs {
            [StoredInput::F32(_), StoredInput::Bf16(dx)] => {
                Some(vec![StoredOutput::F32(cuda_backward(dev, &self.0, dx)?)])
            }
            _ => None,
        })
    }
}

/// x [C, L, W] in T from frozen and pos in T and the f32 ctx.
fn cuda_forward<T: KernelElem>(
    dev: &CudaDevice,
    d: &PromptDims,
    frozen: &CudaSlice<T>,
    pos: &CudaSlice<T>,
    ctx: &CudaSlice<f32>,
) -> Result<CudaSlice<T>> {
    PromptEmbed(*d).check(frozen.len(), pos.len(), ctx.len())?;
    let [classes, len, width, n_ctx, shared] = d.ints()?;
    let ctx_bf16 = i32::from(d.ctx_bf16);
    let mut x = dev.alloc::<T>(d.x_len())?;
    let forward = dev.kernel("prompt_embed", T::pick("prompt_embed_forward", "prompt_embed_forward_bf16"))?;
    // SAFETY: frozen holds C (L - M) W elements of T, pos at least L W of T,
    // ctx S M W f32 (all checked above) and x C L W of T; the kernel writes
    // each x element once (grid-stride) and reads only within those sizes.
    unsafe {
        launch!(forward, grid_for(d.x_len(), BLOCK); frozen, pos, ctx, &mut x, &classes, &len, &width, &n_ctx, &shared, &ctx_bf16)
    }?;
    Ok(x)
}

/// dctx [S, M, W], f32, from dx [C, L, W] in T.
fn cuda_backward<T: KernelElem>(dev: &CudaDevice, d: &PromptDims, dx: &CudaSlice<T>) -> Result<CudaSlice<f32>> {
    check_len(&PromptEmbedBackward(*d), "dx", dx.len(), d.x_len())?;
    let [classes, len, width, n_ctx, shared] = d.ints()?;
    let mut dctx = dev.alloc::<f32>(d.ctx_len())?;
    let backward = dev.kernel("prompt_embed", T::pick("prompt_embed_backward", "prompt_embed_backward_bf16"))?;
    // SAFETY: dx holds C L W elements of T (checked above), dctx S M W f32;
    // each thread writes its own dctx elements (grid-stride) and reads dx
    // rows 1..=M of its categories only.
    unsafe { launch!(backward, grid_for(d.ctx_len(), BLOCK); dx, &mut dctx, &classes, &len, &width, &n_ctx, &shared) }?;
    Ok(dctx)
}
