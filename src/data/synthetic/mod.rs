//! The embedded default data set: procedurally generated multi-label images
//! of simple shapes, with English captions, that need no download.
//!
//! * Ten object categories ([`CATEGORIES`]: circle, square, triangle, star,
//!   cross, ring, heart, diamond, moon, arrow), nine named colours
//!   ([`COLOURS`]) and six procedural backgrounds ([`BACKGROUNDS`]: grass,
//!   sand, sky, snow, brick, dark). Every name is an ordinary word of CLIP's
//!   vocabulary.
//! * Each image holds 1 to 4 objects (drawn with probabilities 25 / 35 /
//!   25 / 15 %), each with a uniformly drawn category (repeats allowed: "two
//!   red circles"), a size word (small: radius 11-15 % of the side, large:
//!   19-26 %), a colour that stands out from the background, a slight
//!   rotation, and a position that keeps it inside the image and limits
//!   overlaps (centres at least 0.75 x the sum of the radii apart; 32 tries,
//!   then a large object is retried as a small one, then dropped, which
//!   happens to well under 1 % of the images).
//! * Four splits ([`Split`]) read disjoint parts of one stream of scenes:
//!   scene `index` of split `s` under `seed` is drawn from a generator keyed
//!   by `mix(seed)` xor `s.id() * 2^40 + index`, so no two (split, index)
//!   pairs of one seed share a scene. `Pretrain` (image-caption pairs for
//!   CLIP pre-training) is never read by the MLR-PL splits.
//! * Determinism: a scene is drawn with [`Rng`] (integer draws only), the
//!   background with integer hashes and integer arithmetic, and the shapes
//!   with IEEE f32 `+ - * /` only (Rust never contracts them into FMAs; the
//!   rotation's sine and cosine come from an f64 Taylor series, not from the
//!   platform's libm). The same (split, seed, index, image size) gives the
//!   same bytes on every platform, whatever the thread count.
//! * Drawing: each pixel of an object's bounding box is tested at 2 x 2
//!   sub-samples and blended by coverage in integer arithmetic (k/4).
//!
//! See `docs/embedded-dataset.md`.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, ensure, Context, Result};
use rayon::prelude::*;

use crate::data::dataset::{MultiLabelDataset, NEGATIVE, POSITIVE};
use crate::data::image::{normalize_chw_into, preprocess_rgb, Preprocess, RgbImage};
use crate::{Device, Tensor};

mod captions;
mod drawing;
mod scene;

use scene::{draw_scene, mix64};
pub use scene::{ObjectInfo, Scene};

// ---------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------

/// The object categories, in label order.
pub const CATEGORIES: &[&str] =
    &["circle", "square", "triangle", "star", "cross", "ring", "heart", "diamond", "moon", "arrow"];

/// Plural of each category name, in [`CATEGORIES`] order.
pub const CATEGORY_PLURALS: &[&str] =
    &["circles", "squares", "triangles", "stars", "crosses", "rings", "hearts", "diamonds", "moons", "arrows"];

/// Named object colours.
pub const COLOURS: &[&str] = &["red", "orange", "yellow", "green", "blue", "purple", "pink", "white", "black"];

/// sRGB value of each of [`COLOURS`].
pub const COLOUR_RGB: [[u8; 3]; 9] = [
    [220, 38, 38],   // red
    [250, 140, 25],  // orange
    [250, 220, 45],  // yellow
    [40, 175, 60],   // green
    [40, 85, 230],   // blue
    [145, 55, 200],  // purple
    [250, 135, 200], // pink
    [250, 250, 250], // white
    [22, 22, 22],    // black
];

/// Background names (the word captions use).
pub const BACKGROUNDS: &[&str] = &["grass", "sand", "sky", "snow", "brick", "dark"];

/// Colours never used on each background (too close to it to stand out),
/// indexed like [`BACKGROUNDS`], holding indices into [`COLOURS`].
const EXCLUDED_COLOURS: [&[usize]; 6] = [
    &[3],    // grass: green
    &[2],    // sand: yellow
    &[4],    // sky: blue
    &[7],    // snow: white
    &[0, 1], // brick: red, orange
    &[8],    // dark: black
];

/// Rough mean colour of each background (for the visibility check in tests).
pub const BACKGROUND_MEAN_RGB: [[u8; 3]; 6] =
    [[70, 140, 55], [215, 192, 140], [110, 165, 230], [232, 236, 244], [165, 78, 58], [30, 30, 40]];

/// The two size words.
pub const SIZE_WORDS: [&str; 2] = ["small", "large"];

/// Number of caption templates of [`Sample::caption_with_template`].
pub const NUM_TEMPLATES: usize = 14;
/// Templates from this index on name only the shapes ("a photo of a circle
/// and two stars."), with no colour, size or background: captions as terse
/// as CLIP's zero-shot prompt, so that pre-training teaches the text tower
/// what a shape word alone means.
pub const FIRST_SHAPES_ONLY_TEMPLATE: usize = 12;

/// Index of `name` in [`CATEGORIES`].
pub fn category_index(name: &str) -> Option<usize> {
    CATEGORIES.iter().position(|c| *c == name)
}

// ---------------------------------------------------------------------------
// Splits and the set
// ---------------------------------------------------------------------------

/// A part of the stream of scenes. The four parts never share a scene.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// MLR-PL training images (default 2000).
    Train,
    /// MLR-PL validation images, for checkpoint choice (default 400).
    Val,
    /// MLR-PL test images (default 400).
    Test,
    /// Image-caption pairs for CLIP pre-training (default 20000); never
    /// used by the three MLR-PL splits.
    Pretrain,
}

impl Split {
    pub const ALL: [Split; 4] = [Split::Train, Split::Val, Split::Test, Split::Pretrain];
    /// Number of scenes each split may address (its part of the stream).
    pub const MAX_LEN: usize = 1 << 40;

    /// The number of the split in the stream (0..=3).
    pub fn id(self) -> u64 {
        match self {
            Split::Train => 0,
            Split::Val => 1,
            Split::Test => 2,
            Split::Pretrain => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
            Split::Pretrain => "pretrain",
        }
    }

    /// Default number of images.
    pub fn default_len(self) -> usize {
        match self {
            Split::Train => 2000,
            Split::Val => 400,
            Split::Test => 400,
            Split::Pretrain => 20000,
        }
    }

    /// First stream position of the split: `id * 2^40`.
    pub fn stream_base(self) -> u64 {
        self.id() << 40
    }
}

impl std::str::FromStr for Split {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Split> {
        Split::ALL
            .into_iter()
            .find(|sp| sp.name() == s)
            .ok_or_else(|| anyhow!("unknown split `{s}` (expected train, val, test or pretrain)"))
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One generated image with its labels and description.
#[derive(Clone, Debug)]
pub struct Sample {
    pub image: RgbImage,
    /// One flag per category of [`CATEGORIES`].
    pub labels: Vec<bool>,
    pub objects: Vec<ObjectInfo>,
    /// The background's word ([`BACKGROUNDS`]).
    pub background: &'static str,
    /// Index of the background in [`BACKGROUNDS`].
    pub background_index: usize,
}

/// A split of the procedural set at one seed and resolution.
#[derive(Clone)]
pub struct SyntheticSet {
    split: Split,
    seed: u64,
    image_size: usize,
    len: usize,
    class_names: Vec<String>,
    /// `len x C` labels (1 / -1), filled on the first
    /// [`MultiLabelDataset::labels`] call.
    label_cache: OnceLock<Vec<f32>>,
}

impl SyntheticSet {
    /// The split at its default length ([`Split::default_len`]), drawn at
    /// `image_size x image_size` pixels (16 ..= 4096).
    pub fn new(split: Split, seed: u64, image_size: usize) -> Result<SyntheticSet> {
        ensure!((16..=4096).contains(&image_size), "synthetic image size {image_size} is outside 16..=4096");
        Ok(SyntheticSet {
            split,
            seed,
            image_size,
            len: split.default_len(),
            class_names: CATEGORIES.iter().map(|c| c.to_string()).collect(),
            label_cache: OnceLock::new(),
        })
    }

    /// The same split with `len` images (the first `len` of its stream; a
    /// longer set extends a shorter one).
    pub fn with_len(mut self, len: usize) -> Result<SyntheticSet> {
        ensure!(len <= Split::MAX_LEN, "synthetic split length {len} exceeds {}", Split::MAX_LEN);
        self.len = len;
        self.label_cache = OnceLock::new();
        Ok(self)
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn split(&self) -> Split {
        self.split
    }
    pub fn seed(&self) -> u64 {
        self.seed
    }
    pub fn image_size(&self) -> usize {
        self.image_size
    }
    pub fn num_classes(&self) -> usize {
        CATEGORIES.len()
    }

    /// The generator key of scene `index`.
    fn key(&self, index: usize) -> u64 {
        assert!(index < self.len, "synthetic {} index {index} out of range (len {})", self.split, self.len);
        mix64(mix64(self.seed ^ 0x5EED_C11B_0000_0001) ^ (self.split.stream_base() + index as u64))
    }

    /// The layout of image `index` (cheap: no pixels).
    pub fn scene(&self, index: usize) -> Scene {
        draw_scene(self.key(index))
    }

    /// Label flags of image `index` (the [`MultiLabelDataset`] view gives
    /// them as 1.0 / -1.0).
    pub fn label_flags(&self, index: usize) -> Vec<bool> {
        self.scene(index).labels()
    }

    /// The pixels of image `index` (infallible; the [`MultiLabelDataset`]
    /// view's `image` wraps it in `Ok`).
    pub fn render(&self, index: usize) -> RgbImage {
        self.scene(index).render(self.image_size)
    }

    /// Image `index` with its labels and objects.
    pub fn sample(&self, index: usize) -> Sample {
        let scene = self.scene(index);
        let image = scene.render(self.image_size);
        Sample {
            image,
            labels: scene.labels(),
            background: BACKGROUNDS[scene.background],
            background_index: scene.background,
            objects: scene.objects,
        }
    }

    /// Caption number `variant` of image `index`: deterministic in (split,
    /// seed, index, variant); different variants pick templates and wording
    /// independently.
    pub fn caption(&self, index: usize, variant: u64) -> String {
        self.scene(index).caption(variant)
    }

    /// An image-caption pair (for CLIP pre-training on [`Split::Pretrain`]).
    pub fn pair(&self, index: usize, variant: u64) -> (RgbImage, String) {
        (self.render(index), self.caption(index, variant))
    }

    /// Images `indices` as a `[B, 3, R, R]` CPU tensor through the CLIP
    /// preprocessing `mode` (R = `mode.size()`; with `Resize` at R equal to
    /// the image size the pixels pass unresampled). Images are drawn in
    /// parallel; the result does not depend on the thread count.
    pub fn images_tensor(&self, indices: &[usize], mode: Preprocess) -> Result<Tensor> {
        let r = mode.size();
        ensure!(r > 0, "preprocess size 0");
        for &i in indices {
            ensure!(i < self.len, "synthetic {} index {i} out of range (len {})", self.split, self.len);
        }
        let per = 3 * r * r;
        let mut values = vec![0f32; indices.len() * per];
        values.par_chunks_mut(per).zip(indices.par_iter()).for_each(|(dst, &i)| {
            let img = self.render(i);
            if r == self.image_size {
                normalize_chw_into(&img, dst);
            } else {
                normalize_chw_into(&preprocess_rgb(&img, mode), dst);
            }
        });
        Tensor::from_vec(values, vec![indices.len(), 3, r, r], &Device::Cpu)
    }

    /// Labels of `indices` as a `[B, C]` CPU tensor: 1.0 present, -1.0
    /// absent (every label known; partial-label masks are applied later).
    pub fn labels_tensor(&self, indices: &[usize]) -> Result<Tensor> {
        let c = CATEGORIES.len();
        let mut values = Vec::with_capacity(indices.len() * c);
        for &i in indices {
            ensure!(i < self.len, "synthetic {} index {i} out of range (len {})", self.split, self.len);
            values.extend(self.label_flags(i).into_iter().map(|b| if b { POSITIVE } else { NEGATIVE }));
        }
        Tensor::from_vec(values, vec![indices.len(), c], &Device::Cpu)
    }
}

impl std::fmt::Debug for SyntheticSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticSet")
            .field("split", &self.split)
            .field("seed", &self.seed)
            .field("image_size", &self.image_size)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl MultiLabelDataset for SyntheticSet {
    fn describe(&self) -> String {
        format!(
            "embedded procedural set, {} split ({} images of {}x{}, seed {})",
            self.split, self.len, self.image_size, self.image_size, self.seed
        )
    }
    fn class_names(&self) -> &[String] {
        &self.class_names
    }
    fn len(&self) -> usize {
        self.len
    }
    /// Every label is known (1.0 or -1.0). The first call draws the layout
    /// of every image of the set (about a microsecond each).
    fn labels(&self, index: usize) -> &[f32] {
        let c = CATEGORIES.len();
        let all = self.label_cache.get_or_init(|| {
            let mut v = vec![NEGATIVE; self.len * c];
            v.par_chunks_mut(c).enumerate().for_each(|(i, row)| {
                for o in &self.scene(i).objects {
                    row[o.category] = POSITIVE;
                }
            });
            v
        });
        &all[index * c..(index + 1) * c]
    }
    fn image(&self, index: usize) -> Result<RgbImage> {
        ensure!(index < self.len, "synthetic {} index {index} out of range (len {})", self.split, self.len);
        Ok(self.render(index))
    }
    /// `synthetic/<split>/seed<seed>/<index>`.
    fn item_name(&self, index: usize) -> String {
        format!("synthetic/{}/seed{}/{index}", self.split, self.seed)
    }
}

// ---------------------------------------------------------------------------
// Viewing
// ---------------------------------------------------------------------------

/// Tiles `images` (all the same size) into a grid of `cols` columns, each
/// scaled up `scale` times (nearest neighbour), with 2-pixel grey gutters.
pub fn contact_sheet(images: &[RgbImage], cols: usize, scale: usize) -> Result<RgbImage> {
    ensure!(!images.is_empty() && cols > 0 && scale > 0, "contact sheet needs images, columns and a scale");
    let (w, h) = (images[0].width, images[0].height);
    if images.iter().any(|im| im.width != w || im.height != h) {
        bail!("contact sheet images differ in size");
    }
    let gap = 2;
    let rows = images.len().div_ceil(cols);
    let (tw, th) = (w * scale, h * scale);
    let (sw, sh) = (cols * tw + (cols + 1) * gap, rows * th + (rows + 1) * gap);
    let mut data = vec![128u8; sw * sh * 3];
    for (k, im) in images.iter().enumerate() {
        let (ox, oy) = (gap + (k % cols) * (tw + gap), gap + (k / cols) * (th + gap));
        for y in 0..th {
            for x in 0..tw {
                let p = im.pixel(x / scale, y / scale);
                let i = ((oy + y) * sw + ox + x) * 3;
                data[i..i + 3].copy_from_slice(&p);
            }
        }
    }
    RgbImage::new(sw, sh, data)
}

/// Writes `img` as an 8-bit RGB PNG.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    ::image::save_buffer_with_format(
        path,
        &img.data,
        img.width as u32,
        img.height as u32,
        ::image::ExtendedColorType::Rgb8,
        ::image::ImageFormat::Png,
    )
    .with_context(|| format!("cannot write {}", path.display()))
}
