//! CLIP sizes, inferred from the weight shapes alone (no config file), for
//! any ViT CLIP: B/32, B/16, L/14 or a small random test model.

use crate::nn::WeightMap;
use anyhow::{bail, Context, Result};

/// Head width of every OpenAI CLIP transformer: heads = width / 64.
pub const HEAD_WIDTH: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VisionConfig {
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub patch: usize,
    /// Patches per side at the checkpoint's native resolution.
    pub grid: usize,
    pub embed_dim: usize,
}

impl VisionConfig {
    pub fn resolution(&self) -> usize {
        self.patch * self.grid
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextConfig {
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub context_length: usize,
    pub vocab_size: usize,
    pub embed_dim: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClipConfig {
    pub vision: VisionConfig,
    pub text: TextConfig,
}

/// The block numbers i of every tensor named `{prefix}{i}.…`, ascending.
pub(crate) fn block_numbers<'a>(names: impl Iterator<Item = &'a str>, prefix: &str) -> Vec<usize> {
    let mut found: Vec<usize> = names
        .filter_map(|n| n.strip_prefix(prefix))
        .filter_map(|rest| rest.split_once('.').and_then(|(i, _)| i.parse().ok()))
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// The number of `{prefix}{i}.` blocks: one more than the highest i present.
/// A number below it with no `{prefix}{i}.{key}` tensor (a hole, e.g. a
/// layer's tensors removed) is an error naming the missing layer.
pub(crate) fn count_blocks_checked(w: &WeightMap, prefix: &str, key: &str) -> Result<usize> {
    let found = block_numbers(w.names(), prefix);
    let Some(&last) = found.last() else { return Ok(0) };
    if let Some(missing) = (0..=last).find(|i| !w.contains(&format!("{prefix}{i}.{key}"))) {
        bail!(
            "{}: layer {missing} is missing (no `{prefix}{missing}.{key}`), but layers up to {last} are present",
            w.source().display()
        );
    }
    Ok(last + 1)
}

fn count_blocks(w: &WeightMap, prefix: &str) -> Result<usize> {
    count_blocks_checked(w, prefix, "attn.in_proj_weight")
}

fn heads(w: &WeightMap, key: &str, width: usize) -> Result<usize> {
    match w.metadata().get(key) {
        Some(v) => {
            v.parse().with_context(|| format!("{}: metadata `{key}` = {v:?} is not a count", w.source().display()))
        }
        None if width.is_multiple_of(HEAD_WIDTH) => Ok(width / HEAD_WIDTH),
        None => bail!(
            "{}: width {width} is not a multiple of {HEAD_WIDTH}; give `{key}` in the metadata",
            w.source().display()
        ),
    }
}

impl ClipConfig {
    /// Infers sizes from a map in OpenAI's naming. Head counts are width/64
    /// as in OpenAI's models unless the file's metadata has `vision_heads` /
    /// `text_heads`.
    pub fn infer(w: &WeightMap) -> Result<ClipConfig> {
        let src = w.source().display();
        let conv = w.dims_of("visual.conv1.weight")?;
        let &[width, 3, patch, patch_w] = conv.as_slice() else {
            bail!("{src}: `visual.conv1.weight` has shape {conv:?}; expected [width, 3, patch, patch]");
        };
        if patch != patch_w {
            bail!("{src}: non-square patches {patch} x {patch_w} are not supported");
        }
        let positions = w.dims_of("visual.positional_embedding")?[0];
        let grid = ((positions.saturating_sub(1)) as f64).sqrt().round() as usize;
        if grid * grid + 1 != positions {
            bail!("{src}: `visual.positional_embedding` has {positions} rows, not 1 + a square number of patches");
        }
        let vision = VisionConfig {
            width,
            layers: count_blocks(w, "visual.transformer.resblocks.")?,
            heads: heads(w, "vision_heads", width)?,
            patch,
            grid,
            embed_dim: w.dims_of("visual.proj")?[1],
        };
        let text_width = w.dims_of("ln_final.weight")?[0];
        let text = TextConfig {
            width: text_width,
            layers: count_blocks(w, "transformer.resblocks.")?,
            heads: heads(w, "text_heads", text_width)?,
            context_length: w.dims_of("positional_embedding")?[0],
            vocab_size: w.dims_of("token_embedding.weight")?[0],
            embed_dim: w.dims_of("text_projection")?[1],
        };
        if vision.layers == 0 || text.layers == 0 {
            bail!("{src}: no transformer blocks found (vision {}, text {})", vision.layers, text.layers);
        }
        if vision.embed_dim != text.embed_dim {
            bail!(
                "{src}: image embedding width {} differs from text embedding width {}",
                vision.embed_dim,
                text.embed_dim
            );
        }
        Ok(ClipConfig { vision, text })
    }
}

/// The random-weight CLIP sizes `bench --e2e --model` names: OpenAI's
/// released ViT checkpoints' shapes.
pub const NAMED_SIZES: [&str; 3] = ["vit-b32", "vit-b16", "vit-l14"];

impl ClipConfig {
    /// The shapes of OpenAI's checkpoint called `name` (one of [`NAMED_SIZES`]).
    pub fn named(name: &str) -> Result<ClipConfig> {
        // (vision width, vision layers, patch, grid at 224, embed, text width)
        let (width, layers, patch, grid, embed_dim, text_width) = match name {
            "vit-b32" => (768, 12, 32, 7, 512, 512),
            "vit-b16" => (768, 12, 16, 14, 512, 512),
            "vit-l14" => (1024, 24, 14, 16, 768, 768),
            other => bail!("unknown CLIP size {other:?}; known: {}", NAMED_SIZES.join(", ")),
        };
        Ok(ClipConfig {
            vision: VisionConfig { width, layers, heads: width / HEAD_WIDTH, patch, grid, embed_dim },
            text: TextConfig {
                width: text_width,
                layers: 12,
                heads: text_width / HEAD_WIDTH,
                context_length: 77,
                vocab_size: 49408,
                embed_dim,
            },
        })
    }
}
