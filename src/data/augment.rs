//! Training and evaluation image transforms (docs/model.md §6).
//!
//! * Eval: bicubic resize to `R x R` ([`Preprocess::Resize`]), then CLIP
//!   normalisation.
//! * Train: the same resize, then a horizontal flip with probability 0.5,
//!   then (with `cutout: true`) DualCoOp's Cutout with factor 0.5, then
//!   (with `rand_augment: Some(..)`, off by default) RandAugment, then CLIP
//!   normalisation.
//!
//! # Cutout
//!
//! As `CutoutPIL(cutout_factor=0.5)` in `dataloaders/helper.py` of
//! sunxm2357/DualCoOp (the ASL code base's class), applied to **every**
//! training image (DualCoOp's `train_transform` composes it unconditionally,
//! there is no probability): on a `W x H` image, with `cw = int(0.5 * W +
//! 0.5)` and `ch = int(0.5 * H + 0.5)`, a centre `(xc, yc)` uniform over the
//! pixels, and the rectangle of columns `xc - cw/2 ..= xc + cw/2` and rows
//! `yc - ch/2 ..= yc + ch/2` (integer halves; both ends inclusive, as
//! `ImageDraw.rectangle` fills; clipped to the image) filled with one colour
//! whose R, G, B are uniform in `0..=255`. The hole is therefore at most
//! `2 * (cw / 2) + 1` pixels wide (225 at R = 448) and smaller where it meets
//! a border. DualCoOp's code takes `h, w = x.size[0], x.size[1]`, i.e. it
//! swaps width and height; it only ever runs on the square resized image,
//! where the two agree, and so does this module (it uses the natural axes).
//!
//! # Flip
//!
//! Horizontal flip with probability 0.5 as torchvision's
//! `RandomHorizontalFlip()` (used by HCP-MLR-PL's training transform and
//! named by docs/model.md §6; DualCoOp's own transform has no flip).
//!
//! # RandAugment
//!
//! torchvision's `RandAugment(num_ops=N, magnitude=M)` with its defaults
//! (31 magnitude bins, nearest-neighbour sampling, fill 0), on the 8-bit
//! resized image: [`super::rand_augment`] defines the ops and their
//! magnitudes. (DualCoOp imports its `RandAugment` from the `randaugment`
//! package, another PIL implementation; torchvision's is the one implemented
//! here, held pixel for pixel to torchvision + Pillow.) It runs
//! **last**, after flip and Cutout, where DualCoOp's `train_transform` puts
//! it (`Resize`, `CutoutPIL`, `RandAugment`, `ToTensor`, `Normalize`; the
//! flip, which DualCoOp lacks, stays first, as torchvision's presets put
//! `RandomHorizontalFlip` before `RandAugment`). So the Cutout hole is
//! rotated, sheared and recoloured with the image, as in DualCoOp's
//! training, and RandAugment's draws come after the flip's and Cutout's:
//! turning it on leaves every item's flip and hole where they were.
//!
//! # Randomness
//!
//! Every draw comes from the [`Rng`] passed in; the loader derives it from
//! `(seed, epoch, item index)` with [`item_rng`], so an epoch's augmentation
//! is the same whatever the number of threads and their scheduling. Draw
//! order: the flip coin (`uniform() < 0.5`), then, with Cutout, `yc =
//! below(H)`, `xc = below(W)` and the colour (`below(256)` for R, G, B),
//! then, with RandAugment, for each of its N ops the op (`below(14)`) and,
//! for a signed op, its sign (`below(2)`).

use super::image::{normalize_chw, preprocess_rgb, Preprocess, RgbImage};
use super::rand_augment::RandAugment;
use crate::rng::Rng;

/// Cutout's `cutout_factor` (DualCoOp: 0.5).
pub const CUTOUT_FACTOR: f64 = 0.5;
/// Probability of a horizontal flip in training.
pub const FLIP_PROBABILITY: f64 = 0.5;

/// Which transform an image gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Augment {
    /// Resize, random horizontal flip, Cutout when `cutout` is true, then
    /// RandAugment when given.
    Train { cutout: bool, rand_augment: Option<RandAugment> },
    /// Resize only.
    Eval,
}

/// Domain tags so that streams derived from one user seed never coincide.
pub(crate) const TAG_AUGMENT: u64 = 0x6175_676d_656e_7401; // "augment"
pub(crate) const TAG_SHUFFLE: u64 = 0x7368_7566_666c_6502; // "shuffle"
pub(crate) const TAG_SPLIT: u64 = 0x7370_6c69_7476_6103; // "splitva"

/// The SplitMix64 finaliser: a bijective 64-bit mixer.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed derived from several integers (order matters): a chain of
/// SplitMix64 mixes. Used for the per-item augmentation streams, the epoch
/// shuffle and the validation split.
pub fn derive_seed(parts: &[u64]) -> u64 {
    let mut h = 0x243F_6A88_85A3_08D3u64; // pi
    for &p in parts {
        h = mix64(h.wrapping_add(0x9E37_79B9_7F4A_7C15) ^ mix64(p));
    }
    h
}

/// The augmentation generator of dataset item `index` in `epoch` under
/// `seed`: independent of the thread that runs it and of the batch order.
pub fn item_rng(seed: u64, epoch: u64, index: usize) -> Rng {
    Rng::new(derive_seed(&[TAG_AUGMENT, seed, epoch, index as u64]))
}

/// Mirrors an image left-right in place.
pub fn flip_horizontal(img: &mut RgbImage) {
    let w = img.width;
    for row in img.data.chunks_exact_mut(w * 3) {
        for x in 0..w / 2 {
            let (a, b) = (x * 3, (w - 1 - x) * 3);
            for c in 0..3 {
                row.swap(a + c, b + c);
            }
        }
    }
}

/// The rectangle DualCoOp's `CutoutPIL(factor)` fills: `(left, top, right,
/// bottom)`, both ends inclusive, and its colour. Draws `yc`, `xc`, then
/// R, G, B from `rng`.
pub fn cutout_rect(width: usize, height: usize, factor: f64, rng: &mut Rng) -> ((usize, usize, usize, usize), [u8; 3]) {
    assert!(width > 0 && height > 0, "cutout on an empty image");
    // Python's int(factor * size + 0.5): truncation of a non-negative value.
    let cut_w = (factor * width as f64 + 0.5) as usize;
    let cut_h = (factor * height as f64 + 0.5) as usize;
    let yc = rng.below(height);
    let xc = rng.below(width);
    let top = yc.saturating_sub(cut_h / 2);
    let bottom = (yc + cut_h / 2).min(height - 1);
    let left = xc.saturating_sub(cut_w / 2);
    let right = (xc + cut_w / 2).min(width - 1);
    let colour = [rng.below(256) as u8, rng.below(256) as u8, rng.below(256) as u8];
    ((left, top, right, bottom), colour)
}

/// DualCoOp's Cutout on `img` in place (see the module documentation).
pub fn cutout(img: &mut RgbImage, factor: f64, rng: &mut Rng) {
    let ((left, top, right, bottom), colour) = cutout_rect(img.width, img.height, factor, rng);
    let w = img.width;
    for y in top..=bottom {
        for x in left..=right {
            let i = (y * w + x) * 3;
            img.data[i..i + 3].copy_from_slice(&colour);
        }
    }
}

/// The transformed `size x size` 8-bit image, before normalisation.
pub fn augmented_rgb(img: &RgbImage, size: usize, aug: Augment, rng: &mut Rng) -> RgbImage {
    let mut out = preprocess_rgb(img, Preprocess::Resize { size });
    if let Augment::Train { cutout: with_cutout, rand_augment } = aug {
        if rng.uniform() < FLIP_PROBABILITY {
            flip_horizontal(&mut out);
        }
        if with_cutout {
            cutout(&mut out, CUTOUT_FACTOR, rng);
        }
        if let Some(rand_augment) = rand_augment {
            out = rand_augment.apply(out, rng);
        }
    }
    out
}

/// The model input `[3, size, size]` (CHW, CLIP-normalised) of `img` under
/// `aug`; `rng` is not used for [`Augment::Eval`].
pub fn augmented_chw(img: &RgbImage, size: usize, aug: Augment, rng: &mut Rng) -> Vec<f32> {
    normalize_chw(&augmented_rgb(img, size, aug, rng))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_twice_is_identity() {
        let data: Vec<u8> = (0..5 * 3 * 3).map(|i| i as u8).collect();
        let img = RgbImage::new(5, 3, data).unwrap();
        let mut f = img.clone();
        flip_horizontal(&mut f);
        assert_eq!(f.pixel(0, 1), img.pixel(4, 1));
        assert_eq!(f.pixel(2, 2), img.pixel(2, 2));
        flip_horizontal(&mut f);
        assert_eq!(f, img);
    }

    #[test]
    fn cutout_rect_matches_dualcoop_bounds() {
        // 448: cut = int(224.5) = 224, half 112; hole at most 225 wide.
        let mut rng = Rng::new(5);
        for _ in 0..1000 {
            let ((l, t, r, b), _) = cutout_rect(448, 448, 0.5, &mut rng);
            assert!(l <= r && t <= b && r < 448 && b < 448);
            assert!(r - l < 225 && b - t < 225);
        }
        // 7: cut = int(4.0) = 4, half 2.
        let mut rng = Rng::new(6);
        let mut widths = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            let ((l, _, r, _), _) = cutout_rect(7, 7, 0.5, &mut rng);
            widths.insert(r - l + 1);
        }
        assert_eq!(widths.into_iter().collect::<Vec<_>>(), vec![3, 4, 5]);
    }

    #[test]
    fn derived_seeds_differ() {
        assert_ne!(derive_seed(&[1, 2]), derive_seed(&[2, 1]));
        assert_ne!(derive_seed(&[0]), derive_seed(&[0, 0]));
        assert_eq!(derive_seed(&[3, 4, 5]), derive_seed(&[3, 4, 5]));
    }
}
