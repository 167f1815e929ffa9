//! Pictures: PNG plots of runs and labelled images. Everything is drawn by
//! `plotters` into an RGB buffer of our own and written by the `image`
//! crate; text uses the embedded DejaVu Sans (`assets/fonts/`), so a
//! picture looks the same on every machine and needs no system fonts.

pub mod heatmap;
pub mod plots;

use anyhow::{Context, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// The font family name every picture asks for.
pub const FONT: &str = "sans-serif";

static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Registers the embedded font with plotters (once per process); call it
/// before drawing any text.
pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType file committed with the source, so
        // a failure here is a broken build, not a user error.
        if plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS).is_err() {
            panic!("the embedded DejaVu Sans font does not parse");
        }
    });
}

/// An RGB canvas of `width` x `height` pixels, white, that plotters draws
/// into and [`Canvas::save_png`] writes.
pub struct Canvas {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl Canvas {
    pub fn new(width: u32, height: u32) -> Self {
        register_font();
        Canvas { width, height, rgb: vec![255; width as usize * height as usize * 3] }
    }

    /// A plotters drawing area over the whole canvas.
    pub fn area(&mut self) -> DrawingArea<BitMapBackend<'_>, plotters::coord::Shift> {
        BitMapBackend::with_buffer(&mut self.rgb, (self.width, self.height)).into_drawing_area()
    }

    /// Writes the canvas as a PNG file at `path`.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        image::save_buffer(path, &self.rgb, self.width, self.height, image::ExtendedColorType::Rgb8)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Maps a plotters drawing error (which borrows the backend) to one line.
pub fn drawing<T, E: std::fmt::Display>(result: std::result::Result<T, E>) -> Result<T> {
    result.map_err(|e| anyhow::anyhow!("drawing failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_drawn_with_the_embedded_font() {
        let mut canvas = Canvas::new(120, 40);
        {
            let area = canvas.area();
            drawing(area.draw_text("mAP 42", &(FONT, 20).into_font().color(&BLACK), (4, 8))).unwrap();
            drawing(area.present()).unwrap();
        }
        let dark = canvas.rgb.chunks(3).filter(|p| p.iter().all(|&v| v < 128)).count();
        assert!(dark > 50, "only {dark} dark pixels: no text was drawn");
        let path = std::env::temp_dir().join(format!("mlrpl-viz-{}.png", std::process::id()));
        canvas.save_png(&path).unwrap();
        let back = image::open(&path).unwrap();
        assert_eq!((back.width(), back.height()), (120, 40));
        std::fs::remove_file(path).unwrap();
    }
}
