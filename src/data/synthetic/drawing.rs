//! Pixels: the shapes, tested at 2 x 2 sub-samples and blended by coverage
//! in integer arithmetic, over procedural backgrounds made of integer hashes
//! and value noise; only IEEE f32 `+ - * /`, so every platform draws the same
//! bytes.

use super::scene::ObjectInfo;
use super::{BACKGROUNDS, COLOUR_RGB};

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

pub(super) fn draw_object(data: &mut [u8], size: usize, o: &ObjectInfo) {
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

pub(super) fn draw_background(data: &mut [u8], size: usize, bg: usize, shift: i32, key: u32) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::CATEGORIES;

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
