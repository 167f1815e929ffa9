//! Attention heat maps over images (`mlrpl-engine explain`): a grid x grid
//! map of weights over the image's patches is upsampled bilinearly to the
//! picture, coloured with an inferno-like colour map scaled to the map's
//! peak, and blended over the image; pictures are rows of titled panels
//! with a colour bar under them.

use super::{drawing, Canvas, FONT};
use crate::data::image::{resize_bicubic, RgbImage};
use anyhow::{ensure, Result};
use plotters::prelude::*;

/// Side of the square a panel's image is fitted into (the 64 px images of
/// the embedded set would be too small to read otherwise).
pub const PANEL: usize = 256;
/// Space around and between panels.
const MARGIN: usize = 10;
/// Band above a panel for its title and subtitle.
const TITLE_BAND: usize = 50;
/// Band under the panels for the colour bar and its labels.
const LEGEND_BAND: usize = 46;
/// Opacity of the colour map over the image.
const ALPHA: f32 = 0.6;
/// Anchors of the colour map at 0, 1/8, ..., 1 (dark purple to pale yellow,
/// sampled from matplotlib's perceptually uniform "inferno").
const COLOUR_MAP: [[u8; 3]; 9] = [
    [0, 0, 4],
    [31, 12, 72],
    [85, 15, 109],
    [136, 34, 106],
    [186, 54, 85],
    [227, 89, 51],
    [249, 140, 10],
    [249, 201, 50],
    [252, 255, 164],
];

/// The colour of `value` in 0..=1 (clamped), linear between the anchors.
pub fn colour(value: f32) -> [u8; 3] {
    let scaled = value.clamp(0.0, 1.0) * (COLOUR_MAP.len() - 1) as f32;
    let low = (scaled.floor() as usize).min(COLOUR_MAP.len() - 2);
    let t = scaled - low as f32;
    let (a, b) = (COLOUR_MAP[low], COLOUR_MAP[low + 1]);
    std::array::from_fn(|k| (a[k] as f32 + t * (b[k] as f32 - a[k] as f32)).round() as u8)
}

/// Bilinear upsampling of a `grid x grid` map (row-major, patch rows top to
/// bottom) to `width x height`, sampling at pixel centres with the patch
/// values at patch centres (`align_corners = false`); beyond the outermost
/// patch centres the edge value holds.
pub fn upsample_bilinear(map: &[f32], grid: usize, width: usize, height: usize) -> Vec<f32> {
    assert_eq!(map.len(), grid * grid, "a {grid}x{grid} map needs {} values", grid * grid);
    // Per output coordinate: the two patch indices it lies between and the
    // weight of the second.
    let taps = |len: usize| -> Vec<(usize, usize, f32)> {
        (0..len)
            .map(|i| {
                let at = ((i as f32 + 0.5) * grid as f32 / len as f32 - 0.5).clamp(0.0, (grid - 1) as f32);
                let low = at.floor() as usize;
                (low, (low + 1).min(grid - 1), at - low as f32)
            })
            .collect()
    };
    let (columns, rows) = (taps(width), taps(height));
    let mut out = Vec::with_capacity(width * height);
    for &(r0, r1, ty) in &rows {
        for &(c0, c1, tx) in &columns {
            let top = map[r0 * grid + c0] * (1.0 - tx) + map[r0 * grid + c1] * tx;
            let bottom = map[r1 * grid + c0] * (1.0 - tx) + map[r1 * grid + c1] * tx;
            out.push(top * (1.0 - ty) + bottom * ty);
        }
    }
    out
}

/// `image` scaled (bicubic, aspect ratio kept) so that its longer side is
/// [`PANEL`] pixels.
pub fn fit_to_panel(image: &RgbImage) -> RgbImage {
    let longer = image.width.max(image.height);
    let scale = |side: usize| (side * PANEL).div_ceil(longer).clamp(1, PANEL);
    resize_bicubic(image, scale(image.width), scale(image.height))
}

/// `image` in grey (so that colour means attention only) with the
/// attention `map` (`grid x grid` weights over its patches) upsampled onto
/// it, coloured relative to the map's peak and blended in at [`ALPHA`].
pub fn overlay(image: &RgbImage, map: &[f32], grid: usize) -> RgbImage {
    let values = upsample_bilinear(map, grid, image.width, image.height);
    let peak = map.iter().copied().fold(f32::MIN_POSITIVE, f32::max);
    let mut out = image.clone();
    for (pixel, value) in out.data.chunks_mut(3).zip(values) {
        let grey = 0.299 * pixel[0] as f32 + 0.587 * pixel[1] as f32 + 0.114 * pixel[2] as f32;
        for (channel, tint) in pixel.iter_mut().zip(colour(value / peak)) {
            *channel = ((1.0 - ALPHA) * grey + ALPHA * tint as f32).round() as u8;
        }
    }
    out
}

/// One picture of a row: an image at most [`PANEL`] pixels a side, a title
/// over it and a smaller subtitle.
pub struct Panel {
    pub image: RgbImage,
    pub title: String,
    pub subtitle: String,
}

impl Panel {
    /// The panel of a category: `image` (already [`fit_to_panel`]) under the
    /// category's attention `map`, titled with its name and probability;
    /// the subtitle gives the peak patch's share of the attention and the
    /// share of each patch under uniform attention, to compare.
    pub fn attention(image: &RgbImage, map: &[f32], grid: usize, class: &str, probability: f32) -> Panel {
        let peak = map.iter().copied().fold(0.0, f32::max);
        Panel {
            image: overlay(image, map, grid),
            title: format!("{class}  p = {probability:.2}"),
            subtitle: format!("peak patch {:.1}% (uniform {:.1}%)", 100.0 * peak, 100.0 / map.len() as f32),
        }
    }
}

/// Width and height of a row of `panels` panels, in pixels.
pub fn row_size(panels: usize) -> (usize, usize) {
    (MARGIN + panels * (PANEL + MARGIN), MARGIN + TITLE_BAND + PANEL + LEGEND_BAND)
}

/// Copies `image` into the canvas with its top-left corner at (x, y).
fn blit(canvas: &mut Canvas, image: &RgbImage, x: usize, y: usize) {
    let stride = canvas.width as usize * 3;
    for row in 0..image.height {
        let from = row * image.width * 3;
        let to = (y + row) * stride + x * 3;
        canvas.rgb[to..to + image.width * 3].copy_from_slice(&image.data[from..from + image.width * 3]);
    }
}

/// The panels side by side, each image centred in its [`PANEL`] square
/// under its title, and the colour bar of [`overlay`] under the first.
pub fn draw_row(panels: &[Panel]) -> Result<Canvas> {
    ensure!(!panels.is_empty(), "a picture needs at least one panel");
    let (width, height) = row_size(panels.len());
    let mut canvas = Canvas::new(width as u32, height as u32);
    let top = MARGIN + TITLE_BAND;
    for (k, panel) in panels.iter().enumerate() {
        ensure!(panel.image.width <= PANEL && panel.image.height <= PANEL, "a panel's image exceeds {PANEL} px");
        let left = MARGIN + k * (PANEL + MARGIN);
        blit(&mut canvas, &panel.image, left + (PANEL - panel.image.width) / 2, top + (PANEL - panel.image.height) / 2);
    }
    let bar_width = PANEL - 2 * MARGIN;
    let bar_data = (0..12).flat_map(|_| (0..bar_width).flat_map(move |x| colour(x as f32 / (bar_width - 1) as f32)));
    let bar = RgbImage::new(bar_width, 12, bar_data.collect())?;
    let bar_top = top + PANEL + 8;
    blit(&mut canvas, &bar, 2 * MARGIN, bar_top);

    let area = canvas.area();
    let title = (FONT, 20).into_font().color(&BLACK);
    let small = (FONT, 14).into_font().color(&RGBColor(60, 60, 60));
    for (k, panel) in panels.iter().enumerate() {
        let left = (MARGIN + k * (PANEL + MARGIN)) as i32;
        drawing(area.draw_text(&panel.title, &title, (left, (MARGIN + 2) as i32)))?;
        drawing(area.draw_text(&panel.subtitle, &small, (left, (MARGIN + 28) as i32)))?;
    }
    let legend_y = (bar_top + 15) as i32;
    drawing(area.draw_text("0", &small, (2 * MARGIN as i32, legend_y)))?;
    drawing(area.draw_text("attention", &small, ((MARGIN + PANEL / 2 - 30) as i32, legend_y)))?;
    drawing(area.draw_text("peak", &small, ((MARGIN + PANEL - MARGIN - 30) as i32, legend_y)))?;
    drawing(area.present())?;
    drop(area);
    Ok(canvas)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The upsampled value at the centre of every pixel of a `cell x cell`
    /// block is read back per block.
    fn block(values: &[f32], width: usize, cell: usize, (row, col): (usize, usize)) -> Vec<f32> {
        (row * cell..(row + 1) * cell)
            .flat_map(|y| (col * cell..(col + 1) * cell).map(move |x| values[y * width + x]))
            .collect()
    }

    #[test]
    fn a_one_hot_map_lights_its_own_patch_and_fades_by_the_next() {
        let (grid, cell) = (4, 16);
        let hot = (1, 2);
        let mut map = vec![0.0; grid * grid];
        map[hot.0 * grid + hot.1] = 1.0;
        let side = grid * cell;
        let values = upsample_bilinear(&map, grid, side, side);
        let (argmax, peak) =
            values.iter().enumerate().fold((0, f32::MIN), |m, (i, &v)| if v > m.1 { (i, v) } else { m });
        let (x, y) = (argmax % side, argmax / side);
        assert_eq!((y / cell, x / cell), hot, "the brightest pixel ({x}, {y}) is outside the hot patch");
        assert!(peak > 0.9, "peak {peak}");
        assert!(block(&values, side, cell, hot).iter().all(|&v| v >= 0.25), "the hot patch has dim pixels");
        for row in 0..grid {
            for col in 0..grid {
                let far = row.abs_diff(hot.0) > 1 || col.abs_diff(hot.1) > 1;
                if far {
                    assert!(
                        block(&values, side, cell, (row, col)).iter().all(|&v| v == 0.0),
                        "patch ({row}, {col}) lit"
                    );
                }
            }
        }
    }

    #[test]
    fn upsampling_follows_the_map_on_a_non_square_picture() {
        // A left-to-right ramp over 3 patch columns stays a ramp on 93 x 31
        // pixels: constant down the columns, increasing across, exact at the
        // patch centres (the centres of pixels 15, 46 and 77) and flat beyond
        // the outer ones.
        let map = [0.0, 0.5, 1.0].repeat(3);
        let values = upsample_bilinear(&map, 3, 93, 31);
        let row = &values[..93];
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        assert!(values.chunks(93).all(|r| close(r, row)), "rows differ");
        assert!(row.windows(2).all(|w| w[1] >= w[0]), "not increasing: {row:?}");
        assert!(close(&[row[15], row[46], row[77]], &[0.0, 0.5, 1.0]), "{row:?}");
        assert!(row[14] == 0.0 && row[16] > 0.0 && row[76] < 1.0 && row[92] == 1.0, "{row:?}");
    }

    #[test]
    fn the_overlay_is_the_colour_map_over_the_image_in_grey() {
        // Red, whose grey level is 0.299 * 200 + 0.587 * 60 + 0.114 * 60.
        let red: Vec<u8> = [200, 60, 60].repeat(32 * 32);
        let overlaid = overlay(&RgbImage::new(32, 32, red).unwrap(), &[0.0, 0.0, 0.0, 1.0], 2);
        let grey = 0.299 * 200.0 + 0.701 * 60.0;
        let want = |value: f32| colour(value).map(|c| (1.0 - ALPHA) * grey + ALPHA * c as f32);
        for ((x, y), value) in [((28, 28), 1.0), ((3, 3), 0.0)] {
            let got = overlaid.pixel(x, y);
            assert!(got.iter().zip(want(value)).all(|(&g, w)| (g as f32 - w).abs() <= 1.0), "({x}, {y}): {got:?}");
        }
    }

    #[test]
    fn a_row_has_its_size_its_images_and_its_text() {
        let image = fit_to_panel(&RgbImage::new(64, 32, vec![0; 64 * 32 * 3]).unwrap());
        assert_eq!((image.width, image.height), (PANEL, PANEL / 2));
        let panels: Vec<Panel> =
            (0..2).map(|k| Panel::attention(&image, &[0.1, 0.2, 0.3, 0.4], 2, &format!("class {k}"), 0.5)).collect();
        assert_eq!(panels[0].subtitle, "peak patch 40.0% (uniform 25.0%)");
        let canvas = draw_row(&panels).unwrap();
        assert_eq!((canvas.width as usize, canvas.height as usize), row_size(2));
        let pixel = |x: usize, y: usize| {
            let i = (y * canvas.width as usize + x) * 3;
            [canvas.rgb[i], canvas.rgb[i + 1], canvas.rgb[i + 2]]
        };
        // The second panel's image, centred vertically in its square.
        let (left, top) = (MARGIN + PANEL + MARGIN, MARGIN + TITLE_BAND + PANEL / 4);
        assert_eq!(pixel(left + 5, top + 5), panels[1].image.pixel(5, 5));
        assert_eq!(pixel(left + 5, top - 5), [255; 3], "above the image is background");
        let title_band = canvas.rgb[..canvas.width as usize * 3 * (MARGIN + TITLE_BAND)].chunks(3);
        assert!(title_band.filter(|p| p.iter().all(|&v| v < 100)).count() > 100, "no title text");
    }
}
