//! Partial labels: the HCP-MLR-PL protocol (docs/model.md §7).
//!
//! For a training set of `N` items and `C` classes, every (item, class) label
//! is kept with probability `p` (the known-label proportion, `--known-ratio`)
//! and dropped to UNKNOWN (0) otherwise, positives and negatives alike, from
//! a seeded generator (default seed 0). The resulting [`LabelMask`] can be
//! saved and reloaded (`--label-mask FILE`) so that runs are comparable.
//!
//! # The draw
//!
//! One [`Rng::new(seed)`](crate::rng::Rng) stream (xoshiro256** seeded by
//! SplitMix64); one `uniform()` in `[0, 1)` per label, in item-major order
//! (item 0 classes 0..C, then item 1, ...); the label is kept iff
//! `u < known_ratio`. With `known_ratio == 1` every label is kept.
//!
//! # Relation to HCP-MLR-PL
//!
//! HCP-MLR-PL (`changeLabelProportion` in `datasets/coco2014.py` and
//! `datasets/voc2007.py` of HCPLab-SYSU/HCP-MLR-PL) does
//! `np.random.seed(0); mask = np.random.random(labels.shape)` and keeps a
//! label iff its draw is `< label_proportion`, then multiplies the ±1 label
//! matrix by the 0/1 mask: the same per-label Bernoulli(p), item-major over
//! the whole training matrix, positives and negatives alike, seed 0, and no
//! masking at all when the proportion is 1. DualCoOp (`dataloaders/*.py` of
//! sunxm2357/DualCoOp) does the same with `torch.rand(N, C) < partial` and
//! saves the mask with `torch.save` for reuse. Differences here:
//! * the generator is this crate's xoshiro256**, not NumPy's MT19937, so the
//!   exact mask differs from HCP-MLR-PL's for the same seed (same
//!   distribution; masks are not interchangeable between the two code bases);
//! * the mask is tied to the dataset's item order (the same as the reference
//!   code, which ties it to `coco.imgs.keys()` / the image-list order); only
//!   the shape is checked on reload.
//!
//! # File format
//!
//! A small JSON object (written atomically: temporary file, then rename):
//!
//! ```json
//! {
//!   "format": "mlrpl-label-mask", "version": 1,
//!   "num_items": 82081, "num_classes": 80,
//!   "known_ratio": 0.5, "seed": 0, "num_kept": 3283019,
//!   "generator": "xoshiro256** seeded by SplitMix64(seed); ...",
//!   "bits": "bit (item * num_classes + class), least significant bit first in each byte, standard base64 with padding",
//!   "mask_base64": "..."
//! }
//! ```
//!
//! The mask is bit-packed: bit `k = item * num_classes + class` is bit
//! `k % 8` (least significant first) of byte `k / 8`; 1 = kept, 0 = dropped;
//! unused bits of the last byte are 0. The bytes are stored as standard
//! base64 (RFC 4648, `+/`, `=` padding). COCO 2014 train (82081 x 80) takes
//! about 1.1 MB.

use crate::rng::Rng;
use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::dataset::UNKNOWN;

/// The `format` value of a saved mask.
pub const MASK_FORMAT: &str = "mlrpl-label-mask";
/// The `version` value of a saved mask.
pub const MASK_VERSION: u32 = 1;
/// The default seed of the protocol (HCP-MLR-PL seeds NumPy with 0).
pub const DEFAULT_MASK_SEED: u64 = 0;

const GENERATOR_DOC: &str = "xoshiro256** seeded by SplitMix64(seed); one uniform f64 in [0,1) per label in item-major order; kept iff u < known_ratio";
const BITS_DOC: &str =
    "bit (item * num_classes + class), least significant bit first in each byte, standard base64 with padding";

/// Checks a known-label proportion: it must lie in (0, 1].
pub fn check_known_ratio(known_ratio: f64) -> Result<()> {
    if !(known_ratio > 0.0 && known_ratio <= 1.0) {
        bail!("--known-ratio must be in (0, 1] (the proportion of training labels kept), got {known_ratio}");
    }
    Ok(())
}

/// Which (item, class) labels of a training set are kept.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelMask {
    num_items: usize,
    num_classes: usize,
    known_ratio: f64,
    seed: u64,
    /// Bit-packed, item-major, LSB first.
    bits: Vec<u8>,
    num_kept: usize,
    /// The file it was loaded from, for messages.
    source: Option<PathBuf>,
}

impl LabelMask {
    /// Draws the mask of the protocol: each label kept with probability
    /// `known_ratio`, from `Rng::new(seed)`, in item-major order.
    pub fn sample(num_items: usize, num_classes: usize, known_ratio: f64, seed: u64) -> Result<LabelMask> {
        check_known_ratio(known_ratio)?;
        let total = num_items
            .checked_mul(num_classes)
            .ok_or_else(|| anyhow!("label mask {num_items} x {num_classes} is too large"))?;
        let mut bits = vec![0u8; total.div_ceil(8)];
        let mut rng = Rng::new(seed);
        let mut num_kept = 0;
        for k in 0..total {
            if rng.uniform() < known_ratio {
                bits[k / 8] |= 1 << (k % 8);
                num_kept += 1;
            }
        }
        Ok(LabelMask { num_items, num_classes, known_ratio, seed, bits, num_kept, source: None })
    }

    pub fn num_items(&self) -> usize {
        self.num_items
    }

    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The requested proportion `p`.
    pub fn known_ratio(&self) -> f64 {
        self.known_ratio
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// How many labels are kept.
    pub fn num_kept(&self) -> usize {
        self.num_kept
    }

    /// The realised proportion of kept labels.
    pub fn kept_fraction(&self) -> f64 {
        let total = self.num_items * self.num_classes;
        if total == 0 {
            1.0
        } else {
            self.num_kept as f64 / total as f64
        }
    }

    /// The file this mask was loaded from.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// Whether the label of (`item`, `class`) is kept.
    pub fn is_kept(&self, item: usize, class: usize) -> bool {
        assert!(
            item < self.num_items && class < self.num_classes,
            "label ({item}, {class}) outside a {} x {} label mask",
            self.num_items,
            self.num_classes
        );
        let k = item * self.num_classes + class;
        self.bits[k / 8] >> (k % 8) & 1 == 1
    }

    /// The labels of `item` after masking: kept labels unchanged, dropped
    /// ones UNKNOWN (0).
    pub fn apply(&self, labels: &[f32], item: usize) -> Vec<f32> {
        let mut out = labels.to_vec();
        self.apply_in_place(&mut out, item);
        out
    }

    /// [`apply`](Self::apply) in place.
    pub fn apply_in_place(&self, labels: &mut [f32], item: usize) {
        assert_eq!(
            labels.len(),
            self.num_classes,
            "item {item} has {} labels, the label mask has {} classes",
            labels.len(),
            self.num_classes
        );
        for (c, v) in labels.iter_mut().enumerate() {
            if !self.is_kept(item, c) {
                *v = UNKNOWN;
            }
        }
    }

    /// An error unless the mask is for `items x classes` labels.
    pub fn check_shape(&self, items: usize, classes: usize) -> Result<()> {
        if self.num_items != items || self.num_classes != classes {
            let what = match &self.source {
                Some(p) => format!("label mask {}", p.display()),
                None => "the label mask".to_string(),
            };
            bail!(
                "{what} is for {} x {} labels, the dataset has {items} x {classes}",
                self.num_items,
                self.num_classes
            );
        }
        Ok(())
    }

    /// Writes the mask as JSON (see the module documentation), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let file = MaskFile {
            format: MASK_FORMAT.to_string(),
            version: MASK_VERSION,
            num_items: self.num_items,
            num_classes: self.num_classes,
            known_ratio: self.known_ratio,
            seed: self.seed,
            num_kept: self.num_kept,
            generator: GENERATOR_DOC.to_string(),
            bits: BITS_DOC.to_string(),
            mask_base64: base64_encode(&self.bits),
        };
        let text = serde_json::to_string_pretty(&file).context("cannot serialise the label mask")?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "mask".into());
        let tmp = path.with_file_name(format!(".{name}.tmp"));
        std::fs::write(&tmp, text + "\n").with_context(|| format!("cannot write label mask {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
    }

    /// Reads a mask written by [`save`](Self::save) and checks that it is
    /// for `expected_items x expected_classes` labels. Every error names the
    /// file.
    pub fn load(path: &Path, expected_items: usize, expected_classes: usize) -> Result<LabelMask> {
        let text =
            std::fs::read_to_string(path).map_err(|e| anyhow!("cannot read label mask {}: {e}", path.display()))?;
        let file: MaskFile = serde_json::from_str(&text).map_err(|e| {
            anyhow!("label mask {} is not a valid mask file (JSON written by this engine): {e}", path.display())
        })?;
        let bad = |what: String| anyhow!("label mask {} is damaged: {what}", path.display());
        if file.format != MASK_FORMAT {
            bail!("{} is not a label mask (format {:?}, expected {MASK_FORMAT:?})", path.display(), file.format);
        }
        if file.version != MASK_VERSION {
            bail!(
                "label mask {} has version {}, this engine reads version {MASK_VERSION}",
                path.display(),
                file.version
            );
        }
        check_known_ratio(file.known_ratio).map_err(|e| bad(format!("{e}")))?;
        let mut mask = LabelMask {
            num_items: file.num_items,
            num_classes: file.num_classes,
            known_ratio: file.known_ratio,
            seed: file.seed,
            bits: Vec::new(),
            num_kept: 0,
            source: Some(path.to_path_buf()),
        };
        mask.check_shape(expected_items, expected_classes)?;
        let total = file.num_items.checked_mul(file.num_classes).ok_or_else(|| bad("its shape overflows".into()))?;
        let bits = base64_decode(&file.mask_base64).map_err(|e| bad(format!("mask_base64: {e}")))?;
        ensure!(
            bits.len() == total.div_ceil(8),
            bad(format!("{} mask bytes for {} labels (expected {})", bits.len(), total, total.div_ceil(8)))
        );
        if total % 8 != 0 && bits[bits.len() - 1] >> (total % 8) != 0 {
            return Err(bad("bits set past the last label".into()));
        }
        let num_kept: usize = bits.iter().map(|b| b.count_ones() as usize).sum();
        ensure!(num_kept == file.num_kept, bad(format!("{num_kept} labels kept, the header says {}", file.num_kept)));
        mask.bits = bits;
        mask.num_kept = num_kept;
        Ok(mask)
    }
}

#[derive(Serialize, Deserialize)]
struct MaskFile {
    format: String,
    version: u32,
    num_items: usize,
    num_classes: usize,
    known_ratio: f64,
    seed: u64,
    num_kept: usize,
    #[serde(default)]
    generator: String,
    #[serde(default)]
    bits: String,
    mask_base64: String,
}

// ---------------------------------------------------------------------------
// Base64 (RFC 4648, standard alphabet, padded)
// ---------------------------------------------------------------------------

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let mut lut = [255u8; 256];
    for (i, &c) in B64.iter().enumerate() {
        lut[c as usize] = i as u8;
    }
    let s: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    if !s.len().is_multiple_of(4) {
        bail!("length {} is not a multiple of 4", s.len());
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let quads = s.len() / 4;
    for (q, quad) in s.chunks(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && q + 1 != quads) {
            bail!("misplaced '=' padding");
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            let v = lut[c as usize];
            if v == 255 {
                bail!("invalid character {:?}", c as char);
            }
            n = n << 6 | v as u32;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_and_known_vectors() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        for n in 0..40usize {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&data)).unwrap(), data);
        }
        assert!(base64_decode("Zm9").is_err());
        assert!(base64_decode("Zm=v").is_err());
        assert!(base64_decode("Z!9v").is_err());
    }
}
