//! RandAugment (Cubuk et al., 2020) as torchvision's `RandAugment(num_ops=N,
//! magnitude=M, num_magnitude_bins=31)` applies it to a PIL RGB image with
//! its defaults (nearest-neighbour sampling, fill 0). Written from the
//! documented behaviour of torchvision's transform and of the Pillow
//! functions it calls; `tests/rand_augment.rs` holds every op to outputs of
//! torchvision 0.27 + Pillow 13 (`tools/make_randaugment_fixture.py`).
//!
//! # The transform
//!
//! For each of the `N` steps: draw one of the 14 ops of [`Op::ALL`]
//! uniformly (`rng.below(14)`, torchvision's op order), take its magnitude
//! at bin `M` of 31 ([`Op::magnitude`]), and for a signed op draw the sign
//! (`rng.below(2) == 1` negates it; unsigned ops draw nothing). Ops may
//! repeat. So with `N` ops an image takes between `N` and `2N` draws, all
//! from the item's [`Rng`].
//!
//! # Magnitudes at bin `b` (torchvision's table, float32)
//!
//! | op | magnitude | applied as |
//! | --- | --- | --- |
//! | Identity | - | unchanged |
//! | ShearX, ShearY | `linspace(0, 0.3)`, signed | shear `s = degrees(atan(m))` along x (y), centre (0, 0) |
//! | TranslateX, TranslateY | `linspace(0, 150/331 * W (H))`, signed | shift by `int(m)` pixels (toward zero) |
//! | Rotate | `linspace(0, 30)` degrees, signed | counter-clockwise about `(W/2, H/2)` |
//! | Brightness, Color, Contrast, Sharpness | `linspace(0, 0.9)`, signed | Pillow's `ImageEnhance` with factor `1 + m` |
//! | Posterize | `8 - round(b / 7.5)` bits | keep the high bits |
//! | Solarize | `linspace(255, 0)` | invert the levels `>= m` |
//! | AutoContrast, Equalize | - | Pillow's `ImageOps` functions, per channel |
//!
//! `linspace` over 31 bins is computed as torch's CPU kernel does in
//! float32: `start + step * b` for `b < 15`, `end - step * (30 - b)` with one
//! rounding (a fused multiply-add) above.
//!
//! # Pixel arithmetic (Pillow's, so that the outputs match bit for bit)
//!
//! * Geometric ops map each output pixel centre `(x + 0.5, y + 0.5)` through
//!   the inverse affine map torchvision computes (rotation: Pillow's
//!   `Image.rotate` matrix, entries rounded to 15 decimals) and copy the
//!   input pixel it falls in, or black outside the image. The walk uses
//!   Pillow's 16.16 fixed-point coordinates (its nearest-neighbour affine
//!   path), here in 64-bit integers.
//! * Enhance ops blend a degenerate image `d` with the image `i`:
//!   `d + f * (i - d)` in float32, clipped to 0..=255 and truncated; `d` is
//!   black (Brightness), the grey of `L = (19595 R + 38470 G + 7471 B +
//!   2^15) >> 16` (Color), the mean grey level rounded half up (Contrast),
//!   or the image smoothed by the 3x3 kernel `[1 1 1; 1 5 1; 1 1 1] / 13`
//!   in float32, rounded, with the one-pixel border left as it is
//!   (Sharpness).
//! * AutoContrast stretches each channel's `[lowest, highest]` level to
//!   `[0, 255]` (`int(v * scale + offset)`); Equalize maps each channel
//!   through its cumulative histogram with Pillow's integer steps.

use super::image::RgbImage;
use crate::rng::Rng;
use anyhow::{anyhow, ensure, Context, Result};
use serde::Serialize;

/// Magnitude bins of the table (torchvision's `num_magnitude_bins` default).
pub const NUM_MAGNITUDE_BINS: usize = 31;
/// The largest magnitude bin.
pub const MAX_MAGNITUDE: usize = NUM_MAGNITUDE_BINS - 1;

/// RandAugment with `ops` ops per image at magnitude bin `magnitude`
/// (torchvision's default is 2 ops at 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RandAugment {
    pub ops: usize,
    pub magnitude: usize,
}

impl RandAugment {
    /// Errors: no op (leave RandAugment out instead), a magnitude above
    /// [`MAX_MAGNITUDE`].
    pub fn new(ops: usize, magnitude: usize) -> Result<RandAugment> {
        ensure!(ops >= 1, "N (ops per image) must be at least 1; leave RandAugment out for none");
        ensure!(magnitude <= MAX_MAGNITUDE, "M (magnitude) must be in 0..={MAX_MAGNITUDE}, got {magnitude}");
        Ok(RandAugment { ops, magnitude })
    }

    /// `img` after `ops` random ops; see the module documentation for the
    /// draws taken from `rng`.
    pub fn apply(&self, mut img: RgbImage, rng: &mut Rng) -> RgbImage {
        for _ in 0..self.ops {
            let op = Op::ALL[rng.below(Op::ALL.len())];
            let mut magnitude = op.magnitude(self.magnitude, img.width, img.height);
            if op.signed() && rng.below(2) == 1 {
                magnitude = -magnitude;
            }
            img = op.apply(&img, magnitude);
        }
        img
    }
}

impl std::str::FromStr for RandAugment {
    type Err = anyhow::Error;

    /// `N,M`, e.g. `2,9`.
    fn from_str(text: &str) -> Result<RandAugment> {
        let (ops, magnitude) =
            text.split_once(',').ok_or_else(|| anyhow!("expected N,M (ops per image, magnitude), e.g. 2,9"))?;
        let number = |part: &str, what: &str| {
            part.trim().parse::<usize>().with_context(|| format!("{what} is not a whole number: '{}'", part.trim()))
        };
        RandAugment::new(number(ops, "N")?, number(magnitude, "M")?)
    }
}

/// One RandAugment op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Identity,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
    Rotate,
    Brightness,
    Color,
    Contrast,
    Sharpness,
    Posterize,
    Solarize,
    AutoContrast,
    Equalize,
}

impl Op {
    /// torchvision's order, which the drawn op index selects from.
    pub const ALL: [Op; 14] = [
        Op::Identity,
        Op::ShearX,
        Op::ShearY,
        Op::TranslateX,
        Op::TranslateY,
        Op::Rotate,
        Op::Brightness,
        Op::Color,
        Op::Contrast,
        Op::Sharpness,
        Op::Posterize,
        Op::Solarize,
        Op::AutoContrast,
        Op::Equalize,
    ];

    /// torchvision's name of the op.
    pub fn name(self) -> &'static str {
        match self {
            Op::Identity => "Identity",
            Op::ShearX => "ShearX",
            Op::ShearY => "ShearY",
            Op::TranslateX => "TranslateX",
            Op::TranslateY => "TranslateY",
            Op::Rotate => "Rotate",
            Op::Brightness => "Brightness",
            Op::Color => "Color",
            Op::Contrast => "Contrast",
            Op::Sharpness => "Sharpness",
            Op::Posterize => "Posterize",
            Op::Solarize => "Solarize",
            Op::AutoContrast => "AutoContrast",
            Op::Equalize => "Equalize",
        }
    }

    /// Whether the magnitude gets a random sign.
    pub fn signed(self) -> bool {
        matches!(
            self,
            Op::ShearX
                | Op::ShearY
                | Op::TranslateX
                | Op::TranslateY
                | Op::Rotate
                | Op::Brightness
                | Op::Color
                | Op::Contrast
                | Op::Sharpness
        )
    }

    /// The (unsigned) magnitude at `bin` on a `width x height` image, as
    /// torchvision's table holds it; 0 for the ops without one.
    pub fn magnitude(self, bin: usize, width: usize, height: usize) -> f32 {
        assert!(bin <= MAX_MAGNITUDE, "magnitude bin {bin} > {MAX_MAGNITUDE}");
        // torchvision: 150 / 331 of the side, computed in double.
        let translate_end = |side: usize| (150.0 / 331.0 * side as f64) as f32;
        match self {
            Op::Identity | Op::AutoContrast | Op::Equalize => 0.0,
            Op::ShearX | Op::ShearY => linspace_bin(0.0, 0.3, bin),
            Op::TranslateX => linspace_bin(0.0, translate_end(width), bin),
            Op::TranslateY => linspace_bin(0.0, translate_end(height), bin),
            Op::Rotate => linspace_bin(0.0, 30.0, bin),
            Op::Brightness | Op::Color | Op::Contrast | Op::Sharpness => linspace_bin(0.0, 0.9, bin),
            // 8 - round(b / ((bins - 1) / 4)) in float32, half to even.
            Op::Posterize => 8.0 - (bin as f32 / (MAX_MAGNITUDE as f32 / 4.0)).round_ties_even(),
            Op::Solarize => linspace_bin(255.0, 0.0, bin),
        }
    }

    /// `img` under this op with the signed `magnitude` (as torchvision's
    /// `_apply_op` receives it).
    pub fn apply(self, img: &RgbImage, magnitude: f32) -> RgbImage {
        let m = magnitude as f64;
        // Python's `1.0 + magnitude` in double, handed to Pillow's float32 blend.
        let factor = (1.0 + m) as f32;
        match self {
            Op::Identity => img.clone(),
            Op::ShearX => affine_nearest(img, &inverse_affine((0.0, 0.0), 0.0, (0.0, 0.0), (degrees(m.atan()), 0.0))),
            Op::ShearY => affine_nearest(img, &inverse_affine((0.0, 0.0), 0.0, (0.0, 0.0), (0.0, degrees(m.atan())))),
            Op::TranslateX => affine_nearest(img, &translation(img, (m.trunc(), 0.0))),
            Op::TranslateY => affine_nearest(img, &translation(img, (0.0, m.trunc()))),
            Op::Rotate => affine_nearest(img, &rotation(img, m)),
            Op::Brightness => blend(&with_data(img, vec![0; img.data.len()]), img, factor),
            Op::Color => blend(&grey(img), img, factor),
            Op::Contrast => blend(&mean_grey(img), img, factor),
            Op::Sharpness => blend(&smooth(img), img, factor),
            Op::Posterize => posterize(img, magnitude as u32),
            Op::Solarize => solarize(img, m),
            Op::AutoContrast => per_channel_lut(img, autocontrast_lut),
            Op::Equalize => per_channel_lut(img, equalize_lut),
        }
    }
}

/// Bin `bin` of torch's float32 `linspace(start, end, 31)` (CPU kernel:
/// the upper half counts back from `end`, with one rounding).
fn linspace_bin(start: f32, end: f32, bin: usize) -> f32 {
    let step = (end - start) / MAX_MAGNITUDE as f32;
    if bin < NUM_MAGNITUDE_BINS / 2 {
        start + step * bin as f32
    } else {
        (-step).mul_add((MAX_MAGNITUDE - bin) as f32, end)
    }
}

// Python's math.degrees / math.radians: one multiplication by these
// constants (Rust's to_degrees may use a differently rounded one).
fn degrees(radians: f64) -> f64 {
    radians * (180.0 / std::f64::consts::PI)
}

fn radians(degrees: f64) -> f64 {
    degrees * (std::f64::consts::PI / 180.0)
}

/// torchvision's inverse affine matrix (output -> input coordinates, Pillow
/// row order `[a, b, c, d, e, f]`: `x_in = a x + b y + c`, `y_in = d x + e
/// y + f`) of a rotation by `angle` degrees about `center`, shears
/// `(sx, sy)` in degrees and a translation, scale 1.
fn inverse_affine(center: (f64, f64), angle: f64, translate: (f64, f64), shear: (f64, f64)) -> [f64; 6] {
    let (rot, sx, sy) = (radians(angle), radians(shear.0), radians(shear.1));
    let (cx, cy) = center;
    let (tx, ty) = translate;
    // The forward map: rotation, then shear (RSS), as torchvision writes it.
    let a = (rot - sy).cos() / sy.cos();
    let b = -(rot - sy).cos() * sx.tan() / sy.cos() - rot.sin();
    let c = (rot - sy).sin() / sy.cos();
    let d = -(rot - sy).sin() * sx.tan() / sy.cos() + rot.cos();
    // Its inverse (determinant 1), then the inverse translations.
    let mut m = [d, -b, 0.0, -c, a, 0.0];
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty);
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty);
    m[2] += cx;
    m[5] += cy;
    m
}

/// torchvision's `F.affine` translation (about the image centre, which
/// cancels out).
fn translation(img: &RgbImage, shift: (f64, f64)) -> [f64; 6] {
    inverse_affine((img.width as f64 * 0.5, img.height as f64 * 0.5), 0.0, shift, (0.0, 0.0))
}

/// Pillow's `Image.rotate(angle)` matrix (no expand, centre `(W/2, H/2)`):
/// the angle reduced modulo 360 as Python's `%` does, entries rounded to 15
/// decimals.
fn rotation(img: &RgbImage, angle: f64) -> [f64; 6] {
    let angle = -radians(angle.rem_euclid(360.0));
    // Python's round(x, 15): the correctly rounded decimal, read back.
    let round15 = |x: f64| format!("{x:.15}").parse::<f64>().expect("a formatted float parses");
    let (cos, sin) = (round15(angle.cos()), round15(angle.sin()));
    let mut m = [cos, sin, 0.0, round15(-angle.sin()), cos, 0.0];
    let (cx, cy) = (img.width as f64 / 2.0, img.height as f64 / 2.0);
    m[2] = m[0] * -cx + m[1] * -cy + m[2] + cx;
    m[5] = m[3] * -cx + m[4] * -cy + m[5] + cy;
    m
}

/// Nearest-neighbour resampling through the inverse map `m`, black outside:
/// Pillow's fixed-point walk (16 fraction bits, entries rounded half up, the
/// first sample at the pixel centre).
fn affine_nearest(img: &RgbImage, m: &[f64; 6]) -> RgbImage {
    let fixed = |v: f64| (v * 65536.0 + 0.5).floor() as i64;
    let (step_x, step_y) = ((fixed(m[0]), fixed(m[3])), (fixed(m[1]), fixed(m[4])));
    let mut row_start = (fixed(m[2] + m[0] * 0.5 + m[1] * 0.5), fixed(m[5] + m[3] * 0.5 + m[4] * 0.5));
    let (w, h) = (img.width as i64, img.height as i64);
    let mut out = vec![0u8; img.data.len()];
    for out_row in out.chunks_exact_mut(img.width * 3) {
        let (mut sx, mut sy) = row_start;
        for out_px in out_row.chunks_exact_mut(3) {
            // Arithmetic shift: floor, so points left of or above the image stay outside.
            let (xi, yi) = (sx >> 16, sy >> 16);
            if (0..w).contains(&xi) && (0..h).contains(&yi) {
                let i = ((yi * w + xi) * 3) as usize;
                out_px.copy_from_slice(&img.data[i..i + 3]);
            }
            sx += step_x.0;
            sy += step_x.1;
        }
        row_start.0 += step_y.0;
        row_start.1 += step_y.1;
    }
    with_data(img, out)
}

/// An image of `img`'s size holding `data`.
fn with_data(img: &RgbImage, data: Vec<u8>) -> RgbImage {
    RgbImage { width: img.width, height: img.height, data }
}

/// Pillow's `Image.blend(degenerate, img, factor)`: interpolation for a
/// factor in [0, 1], extrapolation (clipped) outside it.
fn blend(degenerate: &RgbImage, img: &RgbImage, factor: f32) -> RgbImage {
    let data = degenerate
        .data
        .iter()
        .zip(&img.data)
        .map(|(&d, &i)| {
            // `as u8` truncates and saturates: Pillow's clip then (UINT8) cast.
            (d as f32 + factor * (i as i32 - d as i32) as f32) as u8
        })
        .collect();
    with_data(img, data)
}

/// Pillow's RGB -> L conversion (ITU-R 601-2 luma in 16-bit fixed point).
fn luma(px: &[u8]) -> u8 {
    ((px[0] as u32 * 19595 + px[1] as u32 * 38470 + px[2] as u32 * 7471 + 0x8000) >> 16) as u8
}

/// `convert("L").convert("RGB")`.
fn grey(img: &RgbImage) -> RgbImage {
    with_data(img, img.data.chunks_exact(3).flat_map(|px| [luma(px); 3]).collect())
}

/// Contrast's degenerate image: every pixel the mean luma, rounded half up.
fn mean_grey(img: &RgbImage) -> RgbImage {
    let sum: u64 = img.data.chunks_exact(3).map(|px| luma(px) as u64).sum();
    let pixels = (img.width * img.height) as f64;
    let mean = (sum as f64 / pixels + 0.5) as u8;
    with_data(img, vec![mean; img.data.len()])
}

/// Pillow's `ImageFilter.SMOOTH`: the 3x3 kernel `[1 1 1; 1 5 1; 1 1 1] /
/// 13` in float32 (rows summed bottom to top, as Pillow does), rounded; the
/// border pixels and images under 3 x 3 are left as they are.
fn smooth(img: &RgbImage) -> RgbImage {
    let mut out = img.clone();
    let (w, h) = (img.width, img.height);
    if w < 3 || h < 3 {
        return out;
    }
    let (edge, centre) = (1.0f32 / 13.0, 5.0f32 / 13.0);
    let at = |x: usize, y: usize, c: usize| img.data[(y * w + x) * 3 + c] as f32;
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            for c in 0..3 {
                let row =
                    |yy: usize, middle: f32| at(x - 1, yy, c) * edge + at(x, yy, c) * middle + at(x + 1, yy, c) * edge;
                let mut sum = 0.5f32;
                sum += row(y + 1, edge);
                sum += row(y, centre);
                sum += row(y - 1, edge);
                out.data[(y * w + x) * 3 + c] = sum as u8;
            }
        }
    }
    out
}

/// Keeps the `bits` high bits of every level.
fn posterize(img: &RgbImage, bits: u32) -> RgbImage {
    let mask = !(0xffu8.checked_shr(bits).unwrap_or(0));
    with_data(img, img.data.iter().map(|&v| v & mask).collect())
}

/// Inverts every level at or above `threshold`.
fn solarize(img: &RgbImage, threshold: f64) -> RgbImage {
    with_data(img, img.data.iter().map(|&v| if (v as f64) < threshold { v } else { 255 - v }).collect())
}

/// Maps each channel through the table `lut_of(its histogram)`.
fn per_channel_lut(img: &RgbImage, lut_of: fn(&[u64; 256]) -> [u8; 256]) -> RgbImage {
    let mut histograms = [[0u64; 256]; 3];
    for px in img.data.chunks_exact(3) {
        for (histogram, &v) in histograms.iter_mut().zip(px) {
            histogram[v as usize] += 1;
        }
    }
    let luts = histograms.map(|h| lut_of(&h));
    with_data(img, img.data.iter().enumerate().map(|(i, &v)| luts[i % 3][v as usize]).collect())
}

/// Pillow's `ImageOps.autocontrast` table (no cutoff): the lowest and the
/// highest level present become 0 and 255.
fn autocontrast_lut(histogram: &[u64; 256]) -> [u8; 256] {
    let mut lut = std::array::from_fn(|i| i as u8);
    let lo = histogram.iter().position(|&n| n > 0);
    let hi = histogram.iter().rposition(|&n| n > 0);
    if let (Some(lo), Some(hi)) = (lo, hi) {
        if hi > lo {
            let scale = 255.0 / (hi - lo) as f64;
            let offset = -(lo as f64) * scale;
            for (i, v) in lut.iter_mut().enumerate() {
                // Python's int() truncates toward zero, then the clamp.
                *v = ((i as f64 * scale + offset) as i64).clamp(0, 255) as u8;
            }
        }
    }
    lut
}

/// Pillow's `ImageOps.equalize` table: levels spread by the cumulative
/// histogram in steps of `(pixels - count of the highest level) / 255`.
fn equalize_lut(histogram: &[u64; 256]) -> [u8; 256] {
    let mut lut = std::array::from_fn(|i| i as u8);
    let present: Vec<u64> = histogram.iter().copied().filter(|&n| n > 0).collect();
    if present.len() <= 1 {
        return lut;
    }
    let step = (present.iter().sum::<u64>() - present[present.len() - 1]) / 255;
    if step == 0 {
        return lut;
    }
    let mut n = step / 2;
    for (v, &count) in lut.iter_mut().zip(histogram) {
        // Pillow clips the table's values to 0..=255.
        *v = (n / step).min(255) as u8;
        n += count;
    }
    lut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_n_comma_m_and_rejects_the_rest() {
        assert_eq!("2,9".parse::<RandAugment>().unwrap(), RandAugment { ops: 2, magnitude: 9 });
        assert_eq!(" 1 , 30 ".parse::<RandAugment>().unwrap(), RandAugment { ops: 1, magnitude: 30 });
        for (text, needle) in [
            ("2", "expected N,M"),
            ("", "expected N,M"),
            ("2,", "M is not a whole number"),
            ("a,9", "N is not a whole number: 'a'"),
            ("2,9,1", "M is not a whole number"),
            ("2,-1", "M is not a whole number"),
            ("0,9", "at least 1"),
            ("2,31", "0..=30, got 31"),
        ] {
            let err = format!("{:#}", text.parse::<RandAugment>().unwrap_err());
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn posterize_bits_follow_torchvision_rounding() {
        let bits: Vec<f32> = (0..NUM_MAGNITUDE_BINS).map(|b| Op::Posterize.magnitude(b, 1, 1)).collect();
        assert_eq!(&bits[..5], &[8.0, 8.0, 8.0, 8.0, 7.0]);
        assert_eq!(bits[9], 7.0);
        assert_eq!(bits[30], 4.0);
    }

    #[test]
    fn equalize_of_a_flat_or_two_level_channel() {
        let mut h = [0u64; 256];
        h[7] = 10;
        assert_eq!(equalize_lut(&h)[7], 7, "one level: unchanged");
        h[200] = 300;
        // step = (310 - 300) / 255 = 0: unchanged.
        assert_eq!(equalize_lut(&h)[200], 200);
    }
}
