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
use crate::rng::Rng;
use crate::{Device, Tensor};

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

/// One object of a scene. Coordinates are fractions of the image side, so a
/// scene looks the same at every resolution.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectInfo {
    /// Index into [`CATEGORIES`].
    pub category: usize,
    /// Index into [`COLOURS`].
    pub colour: usize,
    /// Size word: `large` when true, `small` otherwise.
    pub large: bool,
    /// Centre, fractions of the width and height (0 = left / top).
    pub x: f32,
    pub y: f32,
    /// Radius of the circle that holds the shape, fraction of the side.
    pub radius: f32,
    /// Rotation in degrees, clockwise on screen.
    pub rotation_deg: i32,
}

impl ObjectInfo {
    pub fn category_name(&self) -> &'static str {
        CATEGORIES[self.category]
    }
    pub fn plural_name(&self) -> &'static str {
        CATEGORY_PLURALS[self.category]
    }
    pub fn colour_name(&self) -> &'static str {
        COLOURS[self.colour]
    }
    pub fn size_word(&self) -> &'static str {
        SIZE_WORDS[self.large as usize]
    }
    /// Cell of a 3 x 3 grid: "top left", "top", ..., "center", ...,
    /// "bottom right".
    pub fn position_word(&self) -> &'static str {
        const WORDS: [[&str; 3]; 3] =
            [["top left", "top", "top right"], ["left", "center", "right"], ["bottom left", "bottom", "bottom right"]];
        WORDS[third(self.y)][third(self.x)]
    }
    /// The position as a phrase: "at the top left", "on the left", "in the
    /// center", ...
    pub fn position_phrase(&self) -> String {
        let w = self.position_word();
        match w {
            "center" => "in the center".to_string(),
            "left" | "right" => format!("on the {w}"),
            _ => format!("at the {w}"),
        }
    }
}

fn third(f: f32) -> usize {
    if f < 1.0 / 3.0 {
        0
    } else if f < 2.0 / 3.0 {
        1
    } else {
        2
    }
}

/// The layout of one image, without its pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Scene {
    /// Objects in drawing order (later ones on top).
    pub objects: Vec<ObjectInfo>,
    /// Index into [`BACKGROUNDS`].
    pub background: usize,
    /// Per-scene variation of the background (brightness, noise seed).
    bg_shift: i32,
    noise_key: u32,
    /// Generator key of the scene, for captions.
    key: u64,
}

impl Scene {
    /// One flag per category: whether any object has it.
    pub fn labels(&self) -> Vec<bool> {
        let mut l = vec![false; CATEGORIES.len()];
        for o in &self.objects {
            l[o.category] = true;
        }
        l
    }

    /// Caption number `variant` of this scene: deterministic in the scene's
    /// generator key and `variant`, so the shape siblings of one scene
    /// ([`Scene::shape_sibling`]) draw their wording from the same stream.
    pub fn caption(&self, variant: u64) -> String {
        let mut rng = Rng::new(mix64(self.key ^ mix64(variant.wrapping_add(0xCA9_7105))));
        caption_of(&self.objects, self.background, None, &mut rng)
    }

    /// Sibling `sibling` of `siblings` (at most [`CATEGORIES`]`.len()`): the
    /// same scene (background, colours, sizes, positions) with every object
    /// changed into another category, so that any two siblings differ in
    /// the shape of every object and in nothing else. Sibling 0 is the scene
    /// itself; rotations are drawn again for the new categories.
    pub fn shape_sibling(&self, sibling: usize, siblings: usize) -> Scene {
        let c = CATEGORIES.len();
        assert!(sibling < siblings && siblings <= c, "shape sibling {sibling} of {siblings} (at most {c})");
        let mut scene = self.clone();
        if sibling == 0 {
            return scene;
        }
        // Every sibling's draws are made, whichever one is asked for, so
        // that sibling s is the same scene in every call.
        let mut rng = Rng::new(mix64(self.key ^ 0x51B1_1265_0000_0000));
        for object in &mut scene.objects {
            // Distinct non-zero offsets: a partial Fisher-Yates over 1..c.
            let mut offsets: Vec<usize> = (1..c).collect();
            for k in 0..siblings - 1 {
                let j = k + rng.below(offsets.len() - k);
                offsets.swap(k, j);
            }
            let rotations: Vec<i32> = offsets[..siblings - 1]
                .iter()
                .map(|offset| draw_rotation((object.category + offset) % c, &mut rng))
                .collect();
            object.category = (object.category + offsets[sibling - 1]) % c;
            object.rotation_deg = rotations[sibling - 1];
        }
        scene
    }

    /// Draws the scene at `size x size` pixels.
    pub fn render(&self, size: usize) -> RgbImage {
        let mut data = vec![0u8; size * size * 3];
        draw_background(&mut data, size, self.background, self.bg_shift, self.noise_key);
        for o in &self.objects {
            draw_object(&mut data, size, o);
        }
        RgbImage { width: size, height: size, data }
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
// Scene drawing (layout)
// ---------------------------------------------------------------------------

/// SplitMix64's finaliser: a bijection on u64 with good avalanche.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Radius ranges in thousandths of the side: small 110..=150, large 190..=260.
const SMALL_RADIUS: (usize, usize) = (110, 150);
const LARGE_RADIUS: (usize, usize) = (190, 260);
/// Minimum distance between two centres, as a fraction of their radii's sum.
const MIN_SEPARATION: f32 = 0.75;
const PLACEMENT_TRIES: usize = 32;

fn draw_scene(key: u64) -> Scene {
    let mut rng = Rng::new(key);
    let background = rng.below(BACKGROUNDS.len());
    let bg_shift = rng.below(25) as i32 - 12;
    let noise_key = rng.next_u64() as u32;
    let count = match rng.below(20) {
        0..=4 => 1,
        5..=11 => 2,
        12..=16 => 3,
        _ => 4,
    };
    let allowed: Vec<usize> = (0..COLOURS.len()).filter(|c| !EXCLUDED_COLOURS[background].contains(c)).collect();
    let mut objects: Vec<ObjectInfo> = Vec::with_capacity(count);
    for _ in 0..count {
        let category = rng.below(CATEGORIES.len());
        let colour = allowed[rng.below(allowed.len())];
        let drawn_large = rng.below(2) == 1;
        let rotation_deg = draw_rotation(category, &mut rng);
        // A large object that finds no room is tried again as a small one;
        // one that still finds none is dropped.
        let sizes: &[bool] = if drawn_large { &[true, false] } else { &[false] };
        'sizes: for &large in sizes {
            let (lo, hi) = if large { LARGE_RADIUS } else { SMALL_RADIUS };
            let radius_milli = lo + rng.below(hi - lo + 1);
            let radius = radius_milli as f32 / 1000.0;
            // Centre in thousandths, keeping the whole shape inside.
            let span = 1000 - 2 * radius_milli;
            for _ in 0..PLACEMENT_TRIES {
                let x = (radius_milli + rng.below(span + 1)) as f32 / 1000.0;
                let y = (radius_milli + rng.below(span + 1)) as f32 / 1000.0;
                let free = objects.iter().all(|o| {
                    let (dx, dy) = (o.x - x, o.y - y);
                    let min = MIN_SEPARATION * (o.radius + radius);
                    dx * dx + dy * dy >= min * min
                });
                if free {
                    objects.push(ObjectInfo { category, colour, large, x, y, radius, rotation_deg });
                    break 'sizes;
                }
            }
        }
    }
    Scene { objects, background, bg_shift, noise_key, key }
}

/// A slight rotation in degrees, in the range that suits `category`'s
/// symmetry (none for circles and rings, any quarter turn for arrows).
fn draw_rotation(category: usize, rng: &mut Rng) -> i32 {
    match CATEGORIES[category] {
        "circle" | "ring" => 0,
        "square" => rng.below(25) as i32 - 12,
        "diamond" => rng.below(21) as i32 - 10,
        "moon" => rng.below(24) as i32 * 15,
        "arrow" => rng.below(4) as i32 * 90 + rng.below(31) as i32 - 15,
        _ => rng.below(41) as i32 - 20,
    }
}

// ---------------------------------------------------------------------------
// Pixels
// ---------------------------------------------------------------------------

/// Deterministic sine and cosine of an integer number of degrees (f64 Taylor
/// series on [-pi, pi], basic operations only).
fn sin_cos_deg(deg: i32) -> (f32, f32) {
    let d = deg.rem_euclid(360);
    let d = if d > 180 { d - 360 } else { d };
    let x = d as f64 * (std::f64::consts::PI / 180.0);
    let (mut s, mut c) = (0.0f64, 0.0f64);
    let mut term = 1.0f64; // x^n / n!
    for n in 0..30 {
        match n % 4 {
            0 => c += term,
            1 => s += term,
            2 => c -= term,
            _ => s -= term,
        }
        term = term * x / (n + 1) as f64;
    }
    (s as f32, c as f32)
}

/// Inside test of category `cat` at unit coordinates (u right, v down), the
/// shape lying in the unit disc.
#[inline]
fn inside(cat: usize, u: f32, v: f32, star: &[(f32, f32); 10]) -> bool {
    match cat {
        // circle
        0 => u * u + v * v <= 0.80,
        // square
        1 => u.abs() <= 0.68 && v.abs() <= 0.68,
        // triangle, pointing up, circumradius 0.98
        2 => v <= 0.49 && u.abs() <= (v + 0.98) * 0.577_35,
        // star: five points, outer radius 0.98, inner 0.42
        3 => {
            if u * u + v * v > 0.9604 {
                return false;
            }
            let mut inside = false;
            let mut j = 9;
            for i in 0..10 {
                let (xi, yi) = star[i];
                let (xj, yj) = star[j];
                if (yi > v) != (yj > v) && u < (xj - xi) * (v - yi) / (yj - yi) + xi {
                    inside = !inside;
                }
                j = i;
            }
            inside
        }
        // cross (plus sign)
        4 => {
            let (a, b) = (u.abs(), v.abs());
            (a <= 0.28 && b <= 0.92) || (b <= 0.28 && a <= 0.92)
        }
        // ring
        5 => {
            let d = u * u + v * v;
            (0.30..=0.88).contains(&d)
        }
        // heart: (X^2 + Y^2 - 1)^3 <= X^2 Y^3, Y up
        6 => {
            let x = u * 1.34;
            let y = 0.12 - v * 1.34;
            let q = x * x + y * y - 1.0;
            q * q * q <= x * x * y * y * y
        }
        // diamond: a rhombus taller than wide
        7 => u.abs() * (1.0 / 0.58) + v.abs() * (1.0 / 0.97) <= 1.0,
        // moon: a disc minus a shifted disc, opening to the right
        8 => {
            let (du, dv) = (u - 0.45, v + 0.10);
            u * u + v * v <= 0.81 && du * du + dv * dv > 0.5184
        }
        // arrow pointing right: shaft and head
        9 => {
            (v.abs() <= 0.17 && (-0.95..=0.15).contains(&u))
                || ((0.05..=0.95).contains(&u) && v.abs() <= (0.95 - u) * (0.62 / 0.9))
        }
        _ => false,
    }
}

/// The ten vertices of the star polygon (outer radius 0.98, inner 0.42,
/// first point up).
fn star_vertices() -> [(f32, f32); 10] {
    let mut out = [(0.0f32, 0.0f32); 10];
    for (k, p) in out.iter_mut().enumerate() {
        let (s, c) = sin_cos_deg(36 * k as i32);
        let r = if k % 2 == 0 { 0.98f32 } else { 0.42 };
        *p = (r * s, -r * c);
    }
    out
}

fn draw_object(data: &mut [u8], size: usize, o: &ObjectInfo) {
    let star = star_vertices();
    let s = size as f32;
    let (cx, cy, r) = (o.x * s, o.y * s, o.radius * s);
    let inv_r = 1.0 / r;
    // Rotating the shape clockwise by theta maps a screen offset back to
    // shape coordinates by the inverse rotation.
    let (sin, cos) = sin_cos_deg(o.rotation_deg);
    let x0 = (cx - r - 1.0).max(0.0) as usize;
    let y0 = (cy - r - 1.0).max(0.0) as usize;
    let x1 = ((cx + r + 1.0) as usize).min(size - 1);
    let y1 = ((cy + r + 1.0) as usize).min(size - 1);
    let col = COLOUR_RGB[o.colour];
    const SUB: [f32; 2] = [0.25, 0.75];
    for py in y0..=y1 {
        for px in x0..=x1 {
            let mut k = 0u32;
            for sy in SUB {
                let dy = (py as f32 + sy - cy) * inv_r;
                for sx in SUB {
                    let dx = (px as f32 + sx - cx) * inv_r;
                    let u = dx * cos + dy * sin;
                    let v = dy * cos - dx * sin;
                    k += inside(o.category, u, v, &star) as u32;
                }
            }
            if k > 0 {
                let i = (py * size + px) * 3;
                for c in 0..3 {
                    let bg = data[i + c] as u32;
                    data[i + c] = ((bg * (4 - k) + col[c] as u32 * k + 2) / 4) as u8;
                }
            }
        }
    }
}

/// lowbias32 integer hash.
#[inline]
fn hash32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

#[inline]
fn hash2(x: u32, y: u32, key: u32) -> u32 {
    hash32(x ^ hash32(y.wrapping_add(hash32(key))))
}

/// Smooth value noise in 0..=255 on a `cells x cells` lattice spanning the
/// image (integer bilinear interpolation with a smoothstep).
struct ValueNoise {
    cells: u64,
    size: u64,
    /// Lattice values, `(cells + 1)^2`, row-major.
    lattice: Vec<i64>,
}

impl ValueNoise {
    fn new(cells: u64, size: usize, key: u32) -> ValueNoise {
        let n = cells as u32 + 1;
        let lattice = (0..n * n).map(|k| (hash2(k % n, k / n, key) & 255) as i64).collect();
        ValueNoise { cells, size: size as u64, lattice }
    }

    fn at(&self, x: usize, y: usize) -> i32 {
        let gx = (x as u64 * self.cells * 256) / self.size;
        let gy = (y as u64 * self.cells * 256) / self.size;
        let (ix, iy) = ((gx >> 8) as usize, (gy >> 8) as usize);
        let smooth = |f: u64| -> i64 {
            let f = f as i64; // 0..256
            f * f * (768 - 2 * f) / 65536 // smoothstep, 0..256
        };
        let (fx, fy) = (smooth(gx & 255), smooth(gy & 255));
        let n = self.cells as usize + 1;
        let h = |a: usize, b: usize| self.lattice[b * n + a];
        let top = h(ix, iy) * (256 - fx) + h(ix + 1, iy) * fx;
        let bot = h(ix, iy + 1) * (256 - fx) + h(ix + 1, iy + 1) * fx;
        ((top * (256 - fy) + bot * fy) >> 16) as i32
    }
}

#[inline]
fn put(data: &mut [u8], i: usize, rgb: [i32; 3]) {
    for c in 0..3 {
        data[i + c] = rgb[c].clamp(0, 255) as u8;
    }
}

fn draw_background(data: &mut [u8], size: usize, bg: usize, shift: i32, key: u32) {
    let coarse = ValueNoise::new(4, size, key ^ 0x1111);
    let medium = ValueNoise::new(9, size, key ^ 0x2222);
    let fine = |x: usize, y: usize| (hash2(x as u32, y as u32, key) & 255) as i32 - 128; // -128..127
    match BACKGROUNDS[bg] {
        "grass" => {
            for y in 0..size {
                for x in 0..size {
                    let n = coarse.at(x, y) - 128;
                    // Short vertical blades: the fine noise shared by pairs of rows.
                    let blade = (hash2(x as u32, (y / 2) as u32 ^ 0x8000_0000, key) & 255) as i32 - 128;
                    let g = 140 + shift + n * 30 / 128 + blade * 28 / 128;
                    let r = 70 + shift + n * 20 / 128 + blade * 12 / 128;
                    let b = 50 + shift / 2 + n * 10 / 128;
                    put(data, (y * size + x) * 3, [r, g, b]);
                }
            }
        }
        "sand" => {
            for y in 0..size {
                for x in 0..size {
                    let n = coarse.at(x, y) - 128;
                    let m = medium.at(x, y) - 128;
                    let f = fine(x, y);
                    let v = shift + n * 14 / 128 + m * 8 / 128 + f * 10 / 128;
                    put(data, (y * size + x) * 3, [215 + v, 192 + v, 140 + v * 3 / 4]);
                }
            }
        }
        "sky" => {
            let den = (size - 1).max(1) as i32;
            for y in 0..size {
                let t = y as i32 * 256 / den; // 0 top .. 256 bottom
                let base = [55 + 110 * t / 256 + shift, 115 + 95 * t / 256 + shift, 215 + 32 * t / 256];
                for x in 0..size {
                    // Soft clouds where two noise octaves add up high.
                    let n = (coarse.at(x, y) * 2 + medium.at(x, y)) / 3; // 0..255
                    let w = ((n - 150) * 2).clamp(0, 140); // cloud whiteness, 0..140 of 256
                    let mut px = [0i32; 3];
                    for c in 0..3 {
                        px[c] = (base[c] * (256 - w) + 250 * w) / 256;
                    }
                    put(data, (y * size + x) * 3, px);
                }
            }
        }
        "snow" => {
            for y in 0..size {
                for x in 0..size {
                    let n = coarse.at(x, y) - 128;
                    let f = fine(x, y);
                    let v = shift / 2 + n * 12 / 128 + f * 5 / 128;
                    put(data, (y * size + x) * 3, [230 + v, 235 + v, 245 + v / 3]);
                }
            }
        }
        "brick" => {
            let bh = (size / 8).max(2);
            let bw = (size / 4).max(4);
            let mortar = (size / 64).max(1);
            for y in 0..size {
                let row = y / bh;
                let offset = if row % 2 == 1 { bw / 2 } else { 0 };
                for x in 0..size {
                    let xs = x + offset;
                    let col = xs / bw;
                    let f = fine(x, y);
                    let px = if y % bh < mortar || xs % bw < mortar {
                        let v = f * 6 / 128;
                        [190 + v + shift / 2, 184 + v + shift / 2, 172 + v + shift / 2]
                    } else {
                        let b = (hash2(col as u32, row as u32, key ^ 0xB71C) & 63) as i32 - 32;
                        let v = shift + b * 22 / 32 + f * 10 / 128;
                        [165 + v, 72 + v / 2, 52 + v / 2]
                    };
                    put(data, (y * size + x) * 3, px);
                }
            }
        }
        _ => {
            // dark: nearly plain, a faint vignette-free noise.
            for y in 0..size {
                for x in 0..size {
                    let n = coarse.at(x, y) - 128;
                    let f = fine(x, y);
                    let v = shift / 2 + n * 6 / 128 + f * 3 / 128;
                    put(data, (y * size + x) * 3, [30 + v, 30 + v, 40 + v]);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Captions
// ---------------------------------------------------------------------------

const COUNT_WORDS: [&str; 5] = ["zero", "one", "two", "three", "four"];

fn article(next: &str) -> &'static str {
    match next.as_bytes().first() {
        Some(b'a' | b'e' | b'i' | b'o' | b'u') => "an",
        _ => "a",
    }
}

fn with_article(phrase: String) -> String {
    format!("{} {}", article(&phrase), phrase)
}

/// "a", "a and b", "a, b and c".
fn join_list(items: &[String]) -> String {
    match items.len() {
        0 => String::new(),
        1 => items[0].clone(),
        n => format!("{} and {}", items[..n - 1].join(", "), items[n - 1]),
    }
}

/// Where each background's objects are: two wordings per background.
fn background_phrase(bg: usize, rng: &mut Rng) -> &'static str {
    const PHRASES: [[&str; 2]; 6] = [
        ["on grass", "on the grass"],
        ["on sand", "on the sand"],
        ["in the sky", "against a blue sky"],
        ["on snow", "in the snow"],
        ["on a brick wall", "in front of a brick wall"],
        ["on a dark background", "on a black background"],
    ];
    PHRASES[bg][rng.below(2)]
}

/// The phrase of one object: "a red circle", "a small blue star".
fn object_phrase(o: &ObjectInfo, rng: &mut Rng) -> String {
    let size = if rng.below(2) == 0 { format!("{} ", o.size_word()) } else { String::new() };
    with_article(format!("{size}{} {}", o.colour_name(), o.category_name()))
}

/// Phrases of the objects grouped by category in a random order: a group
/// of one is [`object_phrase`]; a larger group is "two red circles" when
/// its colours agree and "two circles in red and blue" otherwise. Returns
/// the phrases and whether each is plural.
fn group_phrases(objects: &[ObjectInfo], rng: &mut Rng) -> Vec<(String, bool)> {
    grouped(objects, rng)
        .into_iter()
        .map(|members| {
            if members.len() == 1 {
                return (object_phrase(members[0], rng), false);
            }
            let n = COUNT_WORDS[members.len().min(4)];
            let mut colours: Vec<&str> = Vec::new();
            for m in &members {
                if !colours.contains(&m.colour_name()) {
                    colours.push(m.colour_name());
                }
            }
            let same_size = members.iter().all(|m| m.large == members[0].large);
            let size =
                if same_size && rng.below(2) == 0 { format!("{} ", members[0].size_word()) } else { String::new() };
            let plural = members[0].plural_name();
            if colours.len() == 1 {
                (format!("{n} {size}{} {plural}", colours[0]), true)
            } else {
                let cs: Vec<String> = colours.iter().map(|c| c.to_string()).collect();
                (format!("{n} {size}{plural} in {}", join_list(&cs)), true)
            }
        })
        .collect()
}

/// [`group_phrases`] with the shape names only: "a circle", "two stars".
fn shape_phrases(objects: &[ObjectInfo], rng: &mut Rng) -> Vec<String> {
    grouped(objects, rng)
        .into_iter()
        .map(|members| match members.len() {
            1 => with_article(members[0].category_name().to_string()),
            n => format!("{} {}", COUNT_WORDS[n.min(4)], members[0].plural_name()),
        })
        .collect()
}

/// The objects grouped by category, the groups in a random order.
fn grouped<'a>(objects: &'a [ObjectInfo], rng: &mut Rng) -> Vec<Vec<&'a ObjectInfo>> {
    let mut order: Vec<usize> = Vec::new();
    for o in objects {
        if !order.contains(&o.category) {
            order.push(o.category);
        }
    }
    // Fisher-Yates with the caption generator.
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    order.into_iter().map(|cat| objects.iter().filter(|o| o.category == cat).collect()).collect()
}

/// A caption of `objects` on background `bg`, with template `template`
/// (a random one when `None`).
fn caption_of(objects: &[ObjectInfo], bg: usize, template: Option<usize>, rng: &mut Rng) -> String {
    // Three random captions in four name the shapes alone: with colour and
    // background in every caption (or in half of them), contrastive
    // training matches pairs by those easy cues and never learns what a
    // shape word means (docs/pretrain.md).
    let random_template = |rng: &mut Rng| match rng.below(4) {
        0 => rng.below(FIRST_SHAPES_ONLY_TEMPLATE),
        _ => FIRST_SHAPES_ONLY_TEMPLATE + rng.below(NUM_TEMPLATES - FIRST_SHAPES_ONLY_TEMPLATE),
    };
    let t = template.unwrap_or_else(|| random_template(rng)) % NUM_TEMPLATES;
    if t >= FIRST_SHAPES_ONLY_TEMPLATE {
        if objects.is_empty() {
            return "an empty picture.".to_string();
        }
        let list = join_list(&shape_phrases(objects, rng));
        return if t == FIRST_SHAPES_ONLY_TEMPLATE { format!("a photo of {list}.") } else { format!("{list}.") };
    }
    let on = background_phrase(bg, rng);
    if objects.is_empty() {
        return format!("an empty scene {on}.");
    }
    let groups = group_phrases(objects, rng);
    let phrases: Vec<String> = groups.iter().map(|g| g.0.clone()).collect();
    let list = join_list(&phrases);
    let n = objects.len();
    let bg_word = BACKGROUNDS[bg];
    match t {
        0 => format!("a photo of {list} {on}."),
        1 => format!("{list} {on}."),
        2 => format!("there {} {list} {on}.", if groups[0].1 { "are" } else { "is" }),
        3 => format!("{} {} {on}: {list}.", COUNT_WORDS[n.min(4)], if n == 1 { "shape" } else { "shapes" }),
        4 => format!("an image with {list} {on}."),
        5 => format!("a picture of {list} with {} {bg_word} background.", article(bg_word)),
        6 => {
            // Every object on its own, with where it is.
            let items: Vec<String> =
                objects.iter().map(|o| format!("{} {}", object_phrase(o, rng), o.position_phrase())).collect();
            format!("{}, {on}.", join_list(&items))
        }
        7 => {
            if phrases.len() == 1 {
                format!("{list} alone {on}.")
            } else {
                format!("{} next to {}, {on}.", phrases[0], join_list(&phrases[1..]))
            }
        }
        8 => format!("{} {bg_word} background with {list} on it.", article(bg_word)),
        9 => format!("a drawing of {list} {on}."),
        10 => format!("a close-up photo of {list} {on}."),
        _ => format!("a simple illustration of {list} {on}."),
    }
}

impl Sample {
    /// A caption with a random template and wording from `rng`.
    pub fn caption(&self, rng: &mut Rng) -> String {
        caption_of(&self.objects, self.background_index, None, rng)
    }

    /// A caption with template `template` (0..[`NUM_TEMPLATES`]); the
    /// optional words (size, article forms) come from `rng`.
    pub fn caption_with_template(&self, template: usize, rng: &mut Rng) -> String {
        caption_of(&self.objects, self.background_index, Some(template), rng)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sin_cos_matches_libm_closely() {
        for d in -400..400 {
            let (s, c) = sin_cos_deg(d);
            let x = (d as f64).to_radians();
            assert!((s as f64 - x.sin()).abs() < 1e-6 && (c as f64 - x.cos()).abs() < 1e-6, "{d}");
        }
    }

    #[test]
    fn shapes_stay_in_the_unit_disc() {
        let star = star_vertices();
        for (cat, name) in CATEGORIES.iter().enumerate() {
            let mut any = false;
            for i in 0..200 {
                for j in 0..200 {
                    let (u, v) = (i as f32 / 100.0 - 1.0, j as f32 / 100.0 - 1.0);
                    if inside(cat, u, v, &star) {
                        any = true;
                        assert!(u * u + v * v <= 1.0001, "{name} at ({u}, {v})");
                    }
                }
            }
            assert!(any, "{name} is empty");
        }
    }
}
