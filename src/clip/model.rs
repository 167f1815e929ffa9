//! OpenAI's CLIP ViT towers (docs/model.md §2, §3). For MLR-PL they are
//! frozen: their weights are plain tensors, so nothing is recorded on the
//! tape unless a trainable input (prompt context) flows through them.
//! `pretrain` builds them from parameters instead, and every op of the
//! forward pass then records its backward.

use super::config::{ClipConfig, TextConfig, VisionConfig};
use super::weights::{canonicalize, Naming};
use crate::autograd;
use crate::device::Device;
use crate::nn::{LayerNorm, Linear, Mlp, MultiHeadAttention, ResidualBlock, Transformer, WeightMap};
use crate::tensor::Tensor;
use crate::DType;
use anyhow::{bail, Result};
use std::path::Path;

fn layer_norm(w: &WeightMap, prefix: &str, width: usize) -> Result<LayerNorm> {
    Ok(LayerNorm::new(
        w.get_shaped(&format!("{prefix}.weight"), &[width])?,
        w.get_shaped(&format!("{prefix}.bias"), &[width])?,
    ))
}

fn linear(w: &WeightMap, prefix: &str, out: usize, inp: usize) -> Result<Linear> {
    Linear::new(
        w.get_shaped(&format!("{prefix}.weight"), &[out, inp])?,
        Some(w.get_shaped(&format!("{prefix}.bias"), &[out])?),
    )
}

fn transformer(w: &WeightMap, prefix: &str, width: usize, layers: usize, heads: usize) -> Result<Transformer> {
    let blocks = (0..layers)
        .map(|i| {
            let p = format!("{prefix}.resblocks.{i}");
            Ok(ResidualBlock {
                ln_1: layer_norm(w, &format!("{p}.ln_1"), width)?,
                attn: MultiHeadAttention {
                    in_proj: Linear::new(
                        w.get_shaped(&format!("{p}.attn.in_proj_weight"), &[3 * width, width])?,
                        Some(w.get_shaped(&format!("{p}.attn.in_proj_bias"), &[3 * width])?),
                    )?,
                    out_proj: linear(w, &format!("{p}.attn.out_proj"), width, width)?,
                    heads,
                },
                ln_2: layer_norm(w, &format!("{p}.ln_2"), width)?,
                mlp: Mlp {
                    c_fc: linear(w, &format!("{p}.mlp.c_fc"), 4 * width, width)?,
                    c_proj: linear(w, &format!("{p}.mlp.c_proj"), width, 4 * width)?,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Transformer { blocks })
}

#[derive(Clone, Debug)]
pub struct VisionTower {
    pub config: VisionConfig,
    /// The patch convolution, [width, 3, patch, patch] (used as a matrix).
    conv1: Tensor,
    class_embedding: Tensor,
    positional_embedding: Tensor,
    ln_pre: LayerNorm,
    pub transformer: Transformer,
    ln_post: LayerNorm,
    /// [width, embed_dim]
    proj: Tensor,
}

impl VisionTower {
    fn from_weights(w: &WeightMap, c: &VisionConfig) -> Result<Self> {
        Ok(VisionTower {
            conv1: w.get_shaped("visual.conv1.weight", &[c.width, 3, c.patch, c.patch])?,
            class_embedding: w.get_shaped("visual.class_embedding", &[c.width])?,
            positional_embedding: w.get_shaped("visual.positional_embedding", &[c.grid * c.grid + 1, c.width])?,
            ln_pre: layer_norm(w, "visual.ln_pre", c.width)?,
            transformer: transformer(w, "visual.transformer", c.width, c.layers, c.heads)?,
            ln_post: layer_norm(w, "visual.ln_post", c.width)?,
            proj: w.get_shaped("visual.proj", &[c.width, c.embed_dim])?,
            config: c.clone(),
        })
    }

    /// Positional embeddings for a `grid` x `grid` patch layout: the
    /// checkpoint's own, or its patch part resized bicubically (as
    /// `F.interpolate(mode="bicubic", align_corners=False)`), the class
    /// position kept as is.
    pub fn positional_embedding_for(&self, grid: usize) -> Result<Tensor> {
        let (native, width) = (self.config.grid, self.config.width);
        if grid == native {
            return Ok(self.positional_embedding.clone());
        }
        let _no_grad = autograd::no_grad();
        let class_pos = self.positional_embedding.narrow(0, 0, 1)?;
        let patch_grid = self.positional_embedding.narrow(0, 1, native * native)?.reshape([native, native, width])?;
        let resized = patch_grid.permute(&[2, 0, 1])?.bicubic_resize(grid, grid)?.permute(&[1, 2, 0])?;
        Tensor::concat(&[&class_pos, &resized.reshape([grid * grid, width])?], 0)
    }

    /// Images [B, 3, R, R] (normalised) -> transformer output [B, 1 + N, width]
    /// before `ln_post`, in the weights' dtype (the images are converted to
    /// it first); `on_block` sees each block's output.
    pub fn forward_tokens(&self, images: &Tensor, on_block: impl FnMut(usize, &Tensor)) -> Result<Tensor> {
        let c = &self.config;
        let &[b, 3, h, w] = images.dims() else {
            bail!("images must be [B, 3, R, R], got shape {}", images.shape());
        };
        if h != w || h % c.patch != 0 {
            bail!("image size {h} x {w} must be square and a multiple of the patch size {}", c.patch);
        }
        let (grid, p) = (h / c.patch, c.patch);
        let n = grid * grid;
        let images = images.to_dtype(self.conv1.dtype())?;
        // Non-overlapping patches as rows, in the conv weight's (c, y, x) order.
        let patches = images
            .reshape([b, 3, grid, p, grid, p])?
            .permute(&[0, 2, 4, 1, 3, 5])?
            .reshape([b * n, 3 * p * p])?
            .linear(&self.conv1.reshape([c.width, 3 * p * p])?, None)?
            .reshape([b, n, c.width])?;
        let class = self.class_embedding.reshape([1, 1, c.width])?.broadcast_to(&[b, 1, c.width].into())?;
        let x = Tensor::concat(&[&class, &patches], 1)?.add(&self.positional_embedding_for(grid)?)?;
        let x = self.ln_pre.forward(&x)?;
        self.transformer.forward_with(&x, false, on_block)
    }

    /// `ln_post` and `proj` on every token: [B, 1 + N, embed_dim], f32;
    /// token 0 is the class token, the rest the patch features of the
    /// MLR-PL model.
    pub fn encode_dense(&self, images: &Tensor) -> Result<Tensor> {
        let x = self.forward_tokens(images, |_, _| {})?;
        self.ln_post.forward(&x)?.matmul(&self.proj)?.to_dtype(DType::F32)
    }

    /// CLIP's `encode_image`: the projected class token, [B, embed_dim], f32.
    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        let x = self.forward_tokens(images, |_, _| {})?;
        let b = x.dims()[0];
        let class = x.narrow(1, 0, 1)?.reshape([b, self.config.width])?;
        self.ln_post.forward(&class)?.matmul(&self.proj)?.to_dtype(DType::F32)
    }
}

#[derive(Clone, Debug)]
pub struct TextTower {
    pub config: TextConfig,
    token_embedding: Tensor,
    positional_embedding: Tensor,
    pub transformer: Transformer,
    ln_final: LayerNorm,
    /// [width, embed_dim]
    text_projection: Tensor,
}

impl TextTower {
    fn from_weights(w: &WeightMap, c: &TextConfig) -> Result<Self> {
        Ok(TextTower {
            token_embedding: w.get_shaped("token_embedding.weight", &[c.vocab_size, c.width])?,
            positional_embedding: w.get_shaped("positional_embedding", &[c.context_length, c.width])?,
            transformer: transformer(w, "transformer", c.width, c.layers, c.heads)?,
            ln_final: layer_norm(w, "ln_final", c.width)?,
            text_projection: w.get_shaped("text_projection", &[c.width, c.embed_dim])?,
            config: c.clone(),
        })
    }

    /// The frozen token-embedding table [vocab, width] (prompt learners
    /// embed class names and initial contexts with it).
    pub fn token_embedding(&self) -> &Tensor {
        &self.token_embedding
    }

    /// The EOT position of each tokenized sequence: its largest id, as in
    /// OpenAI's `encode_text` (EOT is the last id of the vocabulary).
    pub fn eot_positions(tokens: &[Vec<u32>]) -> Vec<usize> {
        tokens
            .iter()
            .map(|t| t.iter().enumerate().max_by_key(|&(i, &id)| (id, std::cmp::Reverse(i))).map_or(0, |(i, _)| i))
            .collect()
    }

    /// Token embeddings of the first `len` positions: [T, len, width].
    pub fn embed(&self, tokens: &[Vec<u32>], len: usize) -> Result<Tensor> {
        let mut ids = Vec::with_capacity(tokens.len() * len);
        for (i, t) in tokens.iter().enumerate() {
            if t.len() < len {
                bail!("token sequence {i} has {} ids, fewer than the {len} needed", t.len());
            }
            if let Some(&bad) = t[..len].iter().find(|&&id| id as usize >= self.config.vocab_size) {
                bail!("token id {bad} in sequence {i} is outside the vocabulary of {}", self.config.vocab_size);
            }
            ids.extend_from_slice(&t[..len]);
        }
        let ids = Tensor::from_ids(ids, [tokens.len(), len], self.token_embedding.device())?;
        self.token_embedding.index_select(&ids)
    }

    /// CLIP's `encode_text` on tokenized sequences (SOT ... EOT, padded):
    /// [T, embed_dim]. Runs only the first max(EOT) + 1 positions: the
    /// causal mask makes the rest irrelevant to the EOT feature; the last
    /// block runs on the EOT rows only, as in [`TextTower::encode_prompts`].
    pub fn encode(&self, tokens: &[Vec<u32>]) -> Result<Tensor> {
        let eot = Self::eot_positions(tokens);
        let len = eot.iter().max().map_or(0, |m| m + 1);
        let (x, rows) = self.positioned(&self.embed(tokens, len)?, &eot)?;
        self.project(&self.transformer.forward_rows(&x, true, &rows)?)
    }

    /// The text transformer on token embeddings x [T, L, width], pooled at
    /// `eot`: [T, embed_dim], f32, with `on_block` seeing every block's
    /// whole output. It runs in the weights' dtype (x is converted to it;
    /// the gradient comes back in x's own dtype).
    pub fn encode_embeddings(&self, x: &Tensor, eot: &[usize], on_block: impl FnMut(usize, &Tensor)) -> Result<Tensor> {
        let (x, rows) = self.positioned(x, eot)?;
        let x = self.transformer.forward_with(&x, true, on_block)?;
        let &[t, len, width] = x.dims() else { unreachable!("positioned checked the rank") };
        self.project(&x.reshape([t * len, width])?.index_select(&rows)?)
    }

    /// The text features of learned prompts, [C, embed_dim], f32: the
    /// transformer's input assembled by one op ([`Tensor::prompt_embed`]:
    /// SOT, the f32 context `ctx` [C or 1, M, W], the `frozen` embeddings
    /// [C, L - M, W] after it, plus the positional embeddings, in the
    /// weights' dtype), then the blocks with the last one computing its
    /// attention output projection and MLP for the EOT rows only, the only
    /// ones pooled (the other rows of its output feed nothing), so the text
    /// pass does about 1/L_t less work forward and backward. The gradient
    /// reaches `ctx` only.
    pub fn encode_prompts(&self, frozen: &Tensor, ctx: &Tensor, eot: &[usize]) -> Result<Tensor> {
        let x = frozen.prompt_embed(&self.positional_embedding, ctx)?;
        let rows = self.eot_rows(&x, eot)?;
        self.project(&self.transformer.forward_rows(&x, true, &rows)?)
    }

    /// x [T, L, width] checked against the tower and `eot`, in the weights'
    /// dtype with the positional embeddings added, and its EOT rows.
    fn positioned(&self, x: &Tensor, eot: &[usize]) -> Result<(Tensor, Tensor)> {
        let rows = self.eot_rows(x, eot)?;
        let len = x.dims()[1];
        let x = x.to_dtype(self.token_embedding.dtype())?.add(&self.positional_embedding.narrow(0, 0, len)?)?;
        Ok((x, rows))
    }

    /// The flat row index (t L + eot_t) of each sequence's EOT in x
    /// [T, L, width], checked against the tower.
    fn eot_rows(&self, x: &Tensor, eot: &[usize]) -> Result<Tensor> {
        let &[t, len, width] = x.dims() else { bail!("text embeddings must be [T, L, W], got shape {}", x.shape()) };
        if width != self.config.width || len > self.config.context_length || eot.len() != t {
            bail!(
                "text embeddings of shape {} with {} EOT positions do not fit a text tower of width {} and context {}",
                x.shape(),
                eot.len(),
                self.config.width,
                self.config.context_length
            );
        }
        if let Some(&bad) = eot.iter().find(|&&e| e >= len) {
            bail!("EOT position {bad} is outside the {len} positions given");
        }
        let rows: Vec<u32> = eot.iter().enumerate().map(|(i, &e)| (i * len + e) as u32).collect();
        Tensor::from_ids(rows, [t], x.device())
    }

    /// `ln_final` and `text_projection` of pooled rows [T, width]: [T, embed_dim], f32.
    fn project(&self, pooled: &Tensor) -> Result<Tensor> {
        self.ln_final.forward(pooled)?.matmul(&self.text_projection)?.to_dtype(DType::F32)
    }
}

#[derive(Clone, Debug)]
pub struct Clip {
    pub config: ClipConfig,
    pub naming: Naming,
    pub vision: VisionTower,
    pub text: TextTower,
    /// log of the logit scale (CLIP's `logit_scale` parameter), if stored.
    pub logit_scale: Option<Tensor>,
}

impl Clip {
    /// Loads a CLIP checkpoint in either naming; sizes come from the shapes.
    pub fn load(path: &Path, device: &Device) -> Result<Clip> {
        Clip::load_as(path, device, DType::F32)
    }

    /// [`Clip::load`] with every weight stored as `dtype` (the frozen towers
    /// of `--precision bf16`).
    pub fn load_as(path: &Path, device: &Device, dtype: DType) -> Result<Clip> {
        let weights = WeightMap::load_as(path, device, dtype)?;
        Clip::from_weights(weights).map_err(|e| {
            // Most errors already name the file; the others get it here.
            let file = path.display().to_string();
            if format!("{e:#}").contains(&file) {
                e
            } else {
                e.context(format!("cannot build CLIP from {file}"))
            }
        })
    }

    pub fn from_weights(weights: WeightMap) -> Result<Clip> {
        let (w, naming) = canonicalize(weights)?;
        let config = ClipConfig::infer(&w)?;
        Ok(Clip {
            vision: VisionTower::from_weights(&w, &config.vision)?,
            text: TextTower::from_weights(&w, &config.text)?,
            logit_scale: w.get("logit_scale").ok(),
            naming,
            config,
        })
    }
}
