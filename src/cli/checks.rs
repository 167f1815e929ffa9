//! Checks of command-line values before any work starts: every refusal is
//! one line naming the flag (or the file) and what was wrong with it.

use anyhow::{bail, Result};
use mlrpl_engine::clip::tokenizer::Tokenizer;
use mlrpl_engine::clip::{Clip, VisionConfig};

/// `value` must be finite and > 0.
pub fn positive(flag: &str, value: f32) -> Result<()> {
    if !(value.is_finite() && value > 0.0) {
        bail!("{flag} must be a finite number > 0, got {value}");
    }
    Ok(())
}

/// `value` must be finite and >= 0.
pub fn non_negative(flag: &str, value: f32) -> Result<()> {
    if !(value.is_finite() && value >= 0.0) {
        bail!("{flag} must be a finite number >= 0, got {value}");
    }
    Ok(())
}

/// `value` must lie in `[lo, hi]` (and so be finite).
pub fn in_range(flag: &str, value: f32, lo: f32, hi: f32) -> Result<()> {
    if !(value >= lo && value <= hi) {
        bail!("{flag} must be in [{lo}, {hi}], got {value}");
    }
    Ok(())
}

/// A count that must be at least 1.
pub fn at_least_one(flag: &str, value: usize) -> Result<()> {
    if value == 0 {
        bail!("{flag} must be at least 1, got 0");
    }
    Ok(())
}

/// Bytes the system can still hand out (MemAvailable + SwapFree of
/// /proc/meminfo); None where that cannot be read.
fn available_host_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = info.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some(field("MemAvailable:")? + field("SwapFree:").unwrap_or(0))
}

/// A lower bound of the bytes one forward pass of `batch` images of side
/// `size` needs on the host: the decoded batch (twice: the loader's and the
/// tensor), and the residual stream and MLP hidden layer of the vision
/// tower's tokens. None on overflow (which is itself too much).
pub fn image_batch_bytes(size: usize, batch: usize, vision: &VisionConfig) -> Option<u64> {
    let (size, batch) = (size as u64, batch as u64);
    let pixels = size.checked_mul(size)?.checked_mul(3)?;
    let grid = size / vision.patch.max(1) as u64;
    let tokens = grid.checked_mul(grid)?.checked_add(1)?;
    // The residual stream plus the 4x-wide MLP hidden layer, plus one copy.
    let token_floats = tokens.checked_mul(vision.width as u64)?.checked_mul(6)?;
    let per_image = pixels.checked_mul(2)?.checked_add(token_floats)?;
    per_image.checked_mul(batch)?.checked_mul(4)
}

/// The input resolution `size` (given by `flag`) must be a positive
/// multiple of the CLIP's patch size, and a batch of `batch` images of
/// that side must fit in memory.
pub fn image_size(flag: &str, size: usize, batch: usize, vision: &VisionConfig) -> Result<()> {
    if size < vision.patch || !size.is_multiple_of(vision.patch) {
        bail!("{flag} {size} must be a positive multiple of the CLIP's patch size {}", vision.patch);
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    match (image_batch_bytes(size, batch, vision), available_host_bytes()) {
        (None, _) => bail!(
            "{flag} {size}: a batch of {batch} images of that size does not fit in memory; lower the batch size or the image size"
        ),
        (Some(need), Some(have)) if need > have => bail!(
            "{flag} {size}: a batch of {batch} images of that size needs at least {:.1} GiB, more than the {:.1} GiB of memory available; \
             lower the batch size or the image size",
            gib(need),
            gib(have)
        ),
        _ => Ok(()),
    }
}

/// Text through the BPE tokenizer needs a token embedding with a row for
/// every id it produces; `name` is the CLIP's file.
pub fn text_vocabulary(clip: &Clip, name: &str) -> Result<()> {
    let needed = Tokenizer::shared()?.vocab_size();
    let rows = clip.config.text.vocab_size;
    if rows < needed {
        bail!(
            "{name}: tensor `token_embedding.weight` has {rows} rows, but the BPE tokenizer's ids need {needed} \
             (token ids up to {}); this CLIP cannot read text",
            needed - 1
        );
    }
    Ok(())
}
