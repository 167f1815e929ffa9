//! Image decoding and CLIP preprocessing.
//!
//! * Decoding: JPEG and PNG through the `image` crate, any colour type
//!   reduced to 8-bit RGB the way PIL's `Image.open(p).convert("RGB")` does it
//!   (grey replicated, alpha dropped, 16-bit samples keep their high byte).
//! * Resampling: [`resize_bicubic`] reproduces `PIL.Image.resize(size,
//!   Image.BICUBIC)` (Pillow's `libImaging/Resample.c` algorithm, written
//!   here from its description): separable convolution, one horizontal and
//!   one vertical pass, bicubic kernel with a = -0.5 whose support is widened
//!   by the scale factor when shrinking (antialiasing), weights normalised to
//!   sum 1 and quantised to 22-bit fixed point, 8-bit intermediate image,
//!   rounding and clipping to 0..=255 after each pass. Pass order follows
//!   Pillow 13 by default ([`PassOrder`]; Pillow <= 12 always ran the
//!   horizontal pass first). A pass whose size does not change is skipped,
//!   so an image already at the target size comes out bit for bit unchanged.
//! * A JPEG must reach its end-of-image marker: the `image` crate's decoder
//!   fills a truncated scan with grey, where PIL refuses the file ("image file
//!   is truncated"), so truncation is detected here by walking the markers.
//! * Preprocessing ([`Preprocess`]): CLIP's `Resize(R, BICUBIC)` +
//!   `CenterCrop(R)` with torchvision's size and offset rounding, or a plain
//!   resize to R x R (MLR-PL); then `ToTensor` + `Normalize(CLIP_MEAN,
//!   CLIP_STD)` in f32, in torch's order, giving CHW planes.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Result};
use rayon::prelude::*;

use crate::{Device, Tensor};

/// Per-channel mean of OpenAI CLIP's `Normalize` (digits as OpenAI writes
/// them; they round to the same f32 as Python's float -> float32).
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
/// Per-channel standard deviation of OpenAI CLIP's `Normalize`.
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// An 8-bit RGB image, rows top to bottom, pixels interleaved `R G B`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    /// `height * width * 3` bytes.
    pub data: Vec<u8>,
}

impl RgbImage {
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<RgbImage> {
        ensure!(width > 0 && height > 0, "image size {width}x{height} has a zero side");
        ensure!(
            data.len() == width * height * 3,
            "RGB image {width}x{height} needs {} bytes, got {}",
            width * height * 3,
            data.len()
        );
        Ok(RgbImage { width, height, data })
    }

    /// `[r, g, b]` at column `x`, row `y`.
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// The `w x h` region whose top-left corner is `(left, top)`.
    pub fn crop(&self, left: usize, top: usize, w: usize, h: usize) -> RgbImage {
        assert!(left + w <= self.width && top + h <= self.height, "crop outside the image");
        let mut data = Vec::with_capacity(w * h * 3);
        for y in top..top + h {
            let row = (y * self.width + left) * 3;
            data.extend_from_slice(&self.data[row..row + w * 3]);
        }
        RgbImage { width: w, height: h, data }
    }
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// Decodes a JPEG or PNG file to 8-bit RGB (see [`decode_rgb`]). Every error
/// is one line that names the file and the problem:
/// `cannot read image <path>: <problem>`.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| {
        let problem = match e.kind() {
            std::io::ErrorKind::NotFound => "file not found".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ if path.is_dir() => "is a directory".to_string(),
            _ => e.to_string(),
        };
        anyhow!("cannot read image {}: {}", path.display(), problem)
    })?;
    decode_rgb(&bytes).map_err(|e| anyhow!("cannot read image {}: {:#}", path.display(), e))
}

/// Decodes JPEG or PNG bytes (recognised by their content, not by a file
/// name) to 8-bit RGB, as PIL's `convert("RGB")`: grey is replicated, alpha is
/// dropped (not composited), palettes are expanded, 16-bit samples keep their
/// most significant byte. (For 16-bit *grey* PNGs PIL's `I;16 -> RGB`
/// conversion clips at 255 instead, which whitens nearly every pixel; the high
/// byte is used here.) EXIF orientation is not applied, as PIL and
/// torchvision do not apply it either.
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage> {
    use ::image::{DynamicImage, ImageFormat};

    if bytes.is_empty() {
        bail!("file is empty (0 bytes)");
    }
    let format = ::image::guess_format(bytes).map_err(|_| anyhow!("not a JPEG or PNG image (unrecognised content)"))?;
    let name = match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        other => bail!("unsupported image format {other:?} (only JPEG and PNG are supported)"),
    };
    if format == ImageFormat::Jpeg {
        check_jpeg_complete(bytes).map_err(|p| anyhow!("corrupt or truncated JPEG data ({p})"))?;
    }
    let decoded = ::image::load_from_memory_with_format(bytes, format)
        .map_err(|e| anyhow!("corrupt or truncated {name} data ({e})"))?;
    let (width, height) = (decoded.width() as usize, decoded.height() as usize);
    ensure!(width > 0 && height > 0, "{name} image has size {width}x{height}");

    let n = width * height;
    let mut data = Vec::with_capacity(n * 3);
    match decoded {
        DynamicImage::ImageRgb8(im) => data = im.into_raw(),
        DynamicImage::ImageRgba8(im) => {
            for p in im.into_raw().chunks_exact(4) {
                data.extend_from_slice(&p[..3]);
            }
        }
        DynamicImage::ImageLuma8(im) => {
            for &v in im.as_raw() {
                data.extend_from_slice(&[v, v, v]);
            }
        }
        DynamicImage::ImageLumaA8(im) => {
            for p in im.as_raw().chunks_exact(2) {
                data.extend_from_slice(&[p[0], p[0], p[0]]);
            }
        }
        DynamicImage::ImageRgb16(im) => data.extend(im.as_raw().iter().map(|&v| (v >> 8) as u8)),
        DynamicImage::ImageRgba16(im) => {
            for p in im.as_raw().chunks_exact(4) {
                data.extend(p[..3].iter().map(|&v| (v >> 8) as u8));
            }
        }
        DynamicImage::ImageLuma16(im) => {
            for &v in im.as_raw() {
                let v = (v >> 8) as u8;
                data.extend_from_slice(&[v, v, v]);
            }
        }
        DynamicImage::ImageLumaA16(im) => {
            for p in im.as_raw().chunks_exact(2) {
                let v = (p[0] >> 8) as u8;
                data.extend_from_slice(&[v, v, v]);
            }
        }
        // Float images never come out of the JPEG/PNG decoders; anything the
        // crate adds later goes through its own conversion.
        other => data = other.to_rgb8().into_raw(),
    }
    RgbImage::new(width, height, data)
}

/// Walks the JPEG marker structure (segments by their lengths, entropy-coded
/// data up to the next marker) and fails unless the end-of-image marker is
/// reached. Bytes after it are ignored, as decoders do.
fn check_jpeg_complete(b: &[u8]) -> std::result::Result<(), String> {
    if b.len() < 2 || b[0] != 0xFF || b[1] != 0xD8 {
        return Err("no start-of-image marker".into());
    }
    let truncated = |what: &str| Err(format!("file ends {what}, before the end-of-image marker"));
    let mut i = 2;
    loop {
        // Next marker: skip stray bytes, then any 0xFF fill bytes.
        while i < b.len() && b[i] != 0xFF {
            i += 1;
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = b.get(i) else {
            return truncated("between segments");
        };
        i += 1;
        match marker {
            0xD9 => return Ok(()),
            // Markers without a length: stuffed zero, TEM, RSTn.
            0x00 | 0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        if i + 2 > b.len() {
            return truncated(&format!("inside the header of segment 0xFF{marker:02X}"));
        }
        let len = u16::from_be_bytes([b[i], b[i + 1]]) as usize;
        if len < 2 {
            return Err(format!("segment 0xFF{marker:02X} at byte {} has length {len}", i - 2));
        }
        if i + len > b.len() {
            return truncated(&format!("inside segment 0xFF{marker:02X}"));
        }
        i += len;
        if marker == 0xDA {
            // Entropy-coded data: runs until a 0xFF not followed by a
            // stuffed 0x00 or a restart marker.
            loop {
                while i < b.len() && b[i] != 0xFF {
                    i += 1;
                }
                match b.get(i + 1) {
                    None => return truncated("inside the compressed image data"),
                    Some(0x00) | Some(0xD0..=0xD7) => i += 2,
                    Some(0xFF) => i += 1,
                    Some(_) => break,
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// PIL-compatible bicubic resampling
// ---------------------------------------------------------------------------

/// Fixed-point fraction bits of the quantised weights: 32 bits minus 8 for
/// the pixel value minus 2 of headroom for the kernel's overshoot.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Keys' cubic convolution kernel with a = -0.5, support 2.
fn bicubic_kernel(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point weights of a run of outputs of one 1-D resampling.
struct Taps {
    /// Per output: first input index and number of inputs.
    spans: Vec<(usize, usize)>,
    /// Per output: `stride` weights (the first `count` are used).
    weights: Vec<i32>,
    stride: usize,
}

/// Weights for outputs `first..first + count` of a 1-D resize from `in_size`
/// to `out_size` samples. Every output's weights depend only on its own
/// index, so computing a sub-range gives what the full resize would give
/// there (this lets resize + crop skip the cropped-away outputs).
fn taps(in_size: usize, out_size: usize, first: usize, count: usize) -> Taps {
    // Pillow computes the scale from a float box (0, in_size) in double.
    let scale = in_size as f32 as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let stride = support.ceil() as usize * 2 + 1;
    let inv = 1.0 / filterscale;
    let one = (1i64 << PRECISION_BITS) as f64;

    let mut spans = Vec::with_capacity(count);
    let mut weights = vec![0i32; count * stride];
    let mut w = vec![0f64; stride];
    for (o, out) in (first..first + count).enumerate() {
        let center = (out as f64 + 0.5) * scale;
        // `as i64` truncates toward zero like C's (int) cast.
        let lo = ((center - support + 0.5) as i64).max(0) as usize;
        let hi = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = hi.saturating_sub(lo);
        let mut sum = 0.0;
        for (i, wi) in w[..n].iter_mut().enumerate() {
            *wi = bicubic_kernel((((i + lo) as f64) - center + 0.5) * inv);
            sum += *wi;
        }
        let dst = &mut weights[o * stride..o * stride + n];
        for (q, &wi) in dst.iter_mut().zip(&w[..n]) {
            let wi = if sum != 0.0 { wi / sum } else { wi };
            // Round half away from zero, then truncate, as Pillow does.
            *q = if wi < 0.0 { (-0.5 + wi * one) as i32 } else { (0.5 + wi * one) as i32 };
        }
        spans.push((lo, n));
    }
    Taps { spans, weights, stride }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Which of the two 1-D passes Pillow runs first. The passes round to 8 bits
/// in between, so the order changes some outputs by a level or two (more
/// next to saturated edges).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PassOrder {
    /// Pillow >= 13: vertical first when the height shrinks by more than
    /// twice as many pixels as the width (`in_h - out_h > 0` and
    /// `in_h - out_h > 2 * (in_w - out_w)`), horizontal first otherwise.
    #[default]
    Pillow13,
    /// Pillow <= 12: always horizontal first.
    HorizontalFirst,
}

impl PassOrder {
    fn horizontal_first(self, in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> bool {
        match self {
            PassOrder::HorizontalFirst => true,
            PassOrder::Pillow13 => {
                let dh = in_h as i64 - out_h as i64;
                let dw = in_w as i64 - out_w as i64;
                !(dh > 0 && dh > dw * 2)
            }
        }
    }
}

/// Horizontal pass: output column `x` reads source columns
/// `spans[x].0 - col0 ..` of every row of `src`.
fn horizontal_pass(src: &RgbImage, t: &Taps, col0: usize) -> RgbImage {
    let w = t.spans.len();
    let mut data = vec![0u8; src.height * w * 3];
    let half = 1i32 << (PRECISION_BITS - 1);
    data.par_chunks_mut(w * 3).enumerate().for_each(|(y, out_row)| {
        let row = &src.data[y * src.width * 3..(y + 1) * src.width * 3];
        for (x, out_px) in out_row.chunks_exact_mut(3).enumerate() {
            let (lo, n) = t.spans[x];
            let k = &t.weights[x * t.stride..x * t.stride + n];
            let px = &row[(lo - col0) * 3..(lo - col0 + n) * 3];
            let (mut r, mut g, mut b) = (half, half, half);
            for (&kw, p) in k.iter().zip(px.chunks_exact(3)) {
                r += p[0] as i32 * kw;
                g += p[1] as i32 * kw;
                b += p[2] as i32 * kw;
            }
            out_px[0] = clip8(r);
            out_px[1] = clip8(g);
            out_px[2] = clip8(b);
        }
    });
    RgbImage { width: w, height: src.height, data }
}

/// Vertical pass: output row `y` reads source rows `spans[y].0 - row0 ..`.
fn vertical_pass(src: &RgbImage, t: &Taps, row0: usize) -> RgbImage {
    let h = t.spans.len();
    let stride = src.width * 3;
    let mut data = vec![0u8; h * stride];
    data.par_chunks_mut(stride).enumerate().for_each(|(y, out_row)| {
        let (lo, n) = t.spans[y];
        let k = &t.weights[y * t.stride..y * t.stride + n];
        let mut acc = vec![1i32 << (PRECISION_BITS - 1); stride];
        for (i, &kw) in k.iter().enumerate() {
            let r = lo - row0 + i;
            for (a, &p) in acc.iter_mut().zip(&src.data[r * stride..(r + 1) * stride]) {
                *a += p as i32 * kw;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    });
    RgbImage { width: src.width, height: h, data }
}

/// The part `(left, top, w, h)` of `img` resized to `out_w x out_h` with PIL's
/// bicubic filter: equal to `img.resize((out_w, out_h), BICUBIC).crop((left,
/// top, left + w, top + h))`, but only the kept pixels (and the source rows
/// and columns they read) are computed. A side whose size does not change is
/// not resampled.
pub fn resize_bicubic_window(
    img: &RgbImage,
    out_w: usize,
    out_h: usize,
    (left, top, w, h): (usize, usize, usize, usize),
    order: PassOrder,
) -> RgbImage {
    assert!(out_w > 0 && out_h > 0, "resize to an empty image");
    assert!(left + w <= out_w && top + h <= out_h, "window outside the resized image");
    let need_h = out_w != img.width;
    let need_v = out_h != img.height;
    let ht = need_h.then(|| taps(img.width, out_w, left, w));
    let vt = need_v.then(|| taps(img.height, out_h, top, h));
    // The source region the kept outputs read.
    let range = |t: &Option<Taps>, start: usize, len: usize| match t {
        Some(t) => {
            (t.spans.iter().map(|s| s.0).min().unwrap_or(0), t.spans.iter().map(|s| s.0 + s.1).max().unwrap_or(0))
        }
        None => (start, start + len),
    };
    let (col0, col1) = range(&ht, left, w);
    let (row0, row1) = range(&vt, top, h);
    let src = if (col0, row0, col1, row1) == (0, 0, img.width, img.height) {
        std::borrow::Cow::Borrowed(img)
    } else {
        std::borrow::Cow::Owned(img.crop(col0, row0, col1 - col0, row1 - row0))
    };
    let h_pass = |im: &RgbImage| match &ht {
        Some(t) => horizontal_pass(im, t, col0),
        None => im.clone(),
    };
    let v_pass = |im: &RgbImage| match &vt {
        Some(t) => vertical_pass(im, t, row0),
        None => im.clone(),
    };
    match (need_h, need_v) {
        (false, false) => src.into_owned(),
        (true, false) => h_pass(&src),
        (false, true) => v_pass(&src),
        (true, true) => {
            if order.horizontal_first(img.width, img.height, out_w, out_h) {
                v_pass(&h_pass(&src))
            } else {
                h_pass(&v_pass(&src))
            }
        }
    }
}

/// `PIL.Image.resize((out_w, out_h), Image.BICUBIC)` on an RGB image
/// (Pillow >= 13 pass order).
pub fn resize_bicubic(img: &RgbImage, out_w: usize, out_h: usize) -> RgbImage {
    resize_bicubic_window(img, out_w, out_h, (0, 0, out_w, out_h), PassOrder::default())
}

// ---------------------------------------------------------------------------
// CLIP preprocessing
// ---------------------------------------------------------------------------

/// How an image becomes an `R x R` model input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preprocess {
    /// OpenAI CLIP's transform: shortest side resized to `size` (bicubic,
    /// aspect ratio kept), then the centre `size x size` crop.
    ClipCenterCrop { size: usize },
    /// Plain bicubic resize to `size x size` (MLR-PL evaluation).
    Resize { size: usize },
}

impl Preprocess {
    /// The side R of the output.
    pub fn size(self) -> usize {
        match self {
            Preprocess::ClipCenterCrop { size } | Preprocess::Resize { size } => size,
        }
    }
}

/// torchvision's `Resize(size)` output `(width, height)` for an int size:
/// the short side becomes `size`, the long one `int(size * long / short)`.
pub fn shortest_side_size(width: usize, height: usize, size: usize) -> (usize, usize) {
    let (short, long) = if width <= height { (width, height) } else { (height, width) };
    // Python: int(size * long / short), true division in double, truncated.
    let new_long = ((size * long) as f64 / short as f64) as usize;
    if width <= height {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// torchvision's `CenterCrop` offset, `int(round((len - size) / 2.0))` with
/// Python's round-half-to-even.
pub fn center_crop_offset(len: usize, size: usize) -> usize {
    assert!(len >= size, "centre crop of {size} from {len}");
    let d = len - size;
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// The `R x R` 8-bit image after resizing/cropping, before normalisation,
/// resampled as Pillow >= 13 does.
pub fn preprocess_rgb(img: &RgbImage, mode: Preprocess) -> RgbImage {
    preprocess_rgb_with(img, mode, PassOrder::default())
}

/// [`preprocess_rgb`] with the pass order of a chosen Pillow generation.
pub fn preprocess_rgb_with(img: &RgbImage, mode: Preprocess, order: PassOrder) -> RgbImage {
    let r = mode.size();
    assert!(r > 0, "preprocess to size 0");
    match mode {
        Preprocess::ClipCenterCrop { .. } => {
            let (w, h) = shortest_side_size(img.width, img.height, r);
            let left = center_crop_offset(w, r);
            let top = center_crop_offset(h, r);
            resize_bicubic_window(img, w, h, (left, top, r, r), order)
        }
        Preprocess::Resize { .. } => resize_bicubic_window(img, r, r, (0, 0, r, r), order),
    }
}

/// `ToTensor()` + `Normalize(CLIP_MEAN, CLIP_STD)`: CHW f32 planes, each value
/// `(v / 255 - mean[c]) / std[c]` computed in f32 in that order.
pub fn normalize_chw(img: &RgbImage) -> Vec<f32> {
    let mut out = vec![0f32; 3 * img.width * img.height];
    normalize_chw_into(img, &mut out);
    out
}

/// [`normalize_chw`] into `out` (`3 * width * height` values).
pub fn normalize_chw_into(img: &RgbImage, out: &mut [f32]) {
    let plane = img.width * img.height;
    assert_eq!(out.len(), 3 * plane, "output buffer size");
    for c in 0..3 {
        let (mean, std) = (CLIP_MEAN[c], CLIP_STD[c]);
        let lut: Vec<f32> = (0..256).map(|v| (v as f32 / 255.0 - mean) / std).collect();
        for (o, px) in out[c * plane..(c + 1) * plane].iter_mut().zip(img.data.chunks_exact(3)) {
            *o = lut[px[c] as usize];
        }
    }
}

/// The model input `[3, R, R]` (CHW, normalised) of an RGB image.
pub fn preprocess(img: &RgbImage, mode: Preprocess) -> Vec<f32> {
    normalize_chw(&preprocess_rgb(img, mode))
}

/// [`load_rgb`] then [`preprocess`].
pub fn load_and_preprocess(path: &Path, mode: Preprocess) -> Result<Vec<f32>> {
    Ok(preprocess(&load_rgb(path)?, mode))
}

/// Decodes and preprocesses `paths` in parallel (rayon) into a `[N, 3, R, R]`
/// CPU tensor, in input order. If files fail, the error is the first failing
/// one in input order.
pub fn images_to_tensor(paths: &[PathBuf], mode: Preprocess) -> Result<Tensor> {
    let r = mode.size();
    let per = 3 * r * r;
    let mut values = vec![0f32; paths.len() * per];
    let status: Vec<Result<()>> = values
        .par_chunks_mut(per.max(1))
        .zip(paths.par_iter())
        .map(|(dst, p)| {
            let img = load_rgb(p)?;
            normalize_chw_into(&preprocess_rgb(&img, mode), dst);
            Ok(())
        })
        .collect();
    status.into_iter().collect::<Result<Vec<()>>>()?;
    Tensor::from_vec(values, vec![paths.len(), 3, r, r], &Device::Cpu)
}
