//! Scenes: the layout of one image (objects with category, colour, size,
//! position and rotation over a background), drawn from the scene's
//! generator key, without its pixels.

use super::captions::caption_of;
use super::drawing::{draw_background, draw_object};
use super::{BACKGROUNDS, CATEGORIES, CATEGORY_PLURALS, COLOURS, EXCLUDED_COLOURS, SIZE_WORDS};
use crate::data::image::RgbImage;
use crate::rng::Rng;

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

/// SplitMix64's finaliser: a bijection on u64 with good avalanche.
pub(super) fn mix64(mut z: u64) -> u64 {
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

pub(super) fn draw_scene(key: u64) -> Scene {
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
