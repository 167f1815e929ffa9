//! Image decoding and CLIP preprocessing against PIL.
//!
//! The fixtures in tests/fixtures/images/ come from tools/make_image_fixture.py
//! (PIL's `convert("RGB")`, `resize(..., BICUBIC)` and torchvision's crop
//! rounding). Run with `--nocapture` to see the per-case difference counts.

mod common;

use common::{fixture_bytes, fixture_folder, fixture_manifest};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use mlrpl_engine::data::image::{
    center_crop_offset, decode_rgb, images_to_tensor, load_and_preprocess, load_rgb, normalize_chw, preprocess,
    preprocess_rgb, preprocess_rgb_with, resize_bicubic, resize_bicubic_window, shortest_side_size, PassOrder,
    Preprocess, RgbImage, CLIP_MEAN, CLIP_STD,
};
use serde_json::Value;

/// This file's fixture folder in tests/fixtures.
const IMAGES: &str = "images";

/// Largest difference in uint8 levels allowed between our JPEG decoding and
/// PIL's (see `matches_pil_on_fixtures`).
const JPEG_TOLERANCE: u8 = 12;

fn mode_of(case: &Value) -> Preprocess {
    let size = case["size"].as_u64().unwrap() as usize;
    match case["mode"].as_str().unwrap() {
        "clip_center_crop" => Preprocess::ClipCenterCrop { size },
        "resize" => Preprocess::Resize { size },
        m => panic!("unknown mode {m}"),
    }
}

/// (max abs difference, number of differing values)
fn diff(a: &[u8], b: &[u8]) -> (u8, usize) {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold((0, 0), |(m, n), (&x, &y)| {
        let d = x.abs_diff(y);
        (m.max(d), n + (d > 0) as usize)
    })
}

/// A unique scratch directory under the system temp dir.
fn scratch_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mlrpl-image-test-{}-{}-{}",
        std::process::id(),
        tag,
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Deterministic pseudo-random image.
fn noise_image(width: usize, height: usize, seed: u64) -> RgbImage {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let data = (0..width * height * 3)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect();
    RgbImage::new(width, height, data).unwrap()
}

#[test]
fn matches_pil_on_fixtures() {
    let m = fixture_manifest(IMAGES);
    let runs = m["expected"].as_array().unwrap();
    assert!(!runs.is_empty());
    let mut worst_resample = 0u8;
    let mut cases_checked = 0;
    for run in runs {
        let version = run["pillow_version"].as_str().unwrap();
        let order = match run["pass_order"].as_str().unwrap() {
            "pillow13" => PassOrder::Pillow13,
            "horizontal_first" => PassOrder::HorizontalFirst,
            o => panic!("unknown pass order {o}"),
        };
        let other = match order {
            PassOrder::Pillow13 => PassOrder::HorizontalFirst,
            PassOrder::HorizontalFirst => PassOrder::Pillow13,
        };
        println!("== Pillow {version} ({order:?})");
        for image in m["images"].as_array().unwrap() {
            let file = image["file"].as_str().unwrap();
            let entry = &run["images"][file];
            let is_jpeg = file.ends_with(".jpg");
            let (w, h) = (image["width"].as_u64().unwrap() as usize, image["height"].as_u64().unwrap() as usize);

            // Decoding against PIL's convert("RGB").
            let pil_decoded = RgbImage::new(w, h, fixture_bytes(IMAGES, entry["decoded"].as_str().unwrap())).unwrap();
            let ours = load_rgb(&fixture_folder(IMAGES).join(file)).unwrap();
            assert_eq!((ours.width, ours.height), (w, h), "{file}: size");
            let (dmax, dn) = diff(&ours.data, &pil_decoded.data);
            println!(
                "{file} ({}): decode vs PIL: max {dmax}, {dn} of {} values differ",
                entry["pil_mode"].as_str().unwrap(),
                ours.data.len()
            );
            if !is_jpeg {
                assert_eq!(dn, 0, "{file}: PNG decoding must equal PIL's exactly");
            } else {
                // Different JPEG decoders (zune-jpeg in the `image` crate vs
                // libjpeg-turbo in PIL): 4:2:0 chroma upsampling and the IDCT
                // round differently (measured: max 4 and 7 levels on the two
                // fixtures; a 4:4:4 JPEG differs by at most 3). A gross error
                // (channel order, stride, colour conversion) is far above this.
                assert!(dmax <= JPEG_TOLERANCE, "{file}: JPEG decode differs from PIL by {dmax}");
            }

            for case in entry["cases"].as_array().unwrap() {
                let mode = mode_of(case);
                let expected = fixture_bytes(IMAGES, case["pixels"].as_str().unwrap());
                let r = mode.size();
                let resized = case["resized"].as_array().unwrap();
                let (rw, rh) = (resized[0].as_u64().unwrap() as usize, resized[1].as_u64().unwrap() as usize);
                let crop = case["crop"].as_array().unwrap();
                let (cl, ct) = (crop[0].as_u64().unwrap() as usize, crop[1].as_u64().unwrap() as usize);
                if let Preprocess::ClipCenterCrop { .. } = mode {
                    assert_eq!(shortest_side_size(w, h, r), (rw, rh), "{file}: resized size");
                    assert_eq!((center_crop_offset(rw, r), center_crop_offset(rh, r)), (cl, ct), "{file}: crop");
                }

                // Resampler alone, from PIL's own decoded pixels.
                let got = preprocess_rgb_with(&pil_decoded, mode, order);
                assert_eq!((got.width, got.height), (r, r));
                let (rmax, rn) = diff(&got.data, &expected);
                worst_resample = worst_resample.max(rmax);
                // The other Pillow generation's pass order, for the record.
                let (omax, on) = diff(&preprocess_rgb_with(&pil_decoded, mode, other).data, &expected);
                // End to end from the file.
                let got_file = preprocess_rgb_with(&ours, mode, order);
                let (emax, en) = diff(&got_file.data, &expected);
                println!(
                    "  {mode:?} (resize to {rw}x{rh}, crop at {cl},{ct}): resampler vs PIL max {rmax}, \
                     {rn} of {} differ; from file max {emax}, {en} differ; with {other:?} order max {omax}, {on} differ",
                    expected.len()
                );
                assert!(rmax <= 1, "{file} {mode:?}: resampler differs from Pillow {version} by {rmax}");
                if !is_jpeg {
                    assert!(emax <= 1, "{file} {mode:?}: differs from Pillow {version} by {emax}");
                } else {
                    assert!(emax <= JPEG_TOLERANCE, "{file} {mode:?}: differs from Pillow {version} by {emax}");
                }
                if order == PassOrder::Pillow13 {
                    // The defaults follow Pillow 13.
                    assert_eq!(preprocess_rgb(&ours, mode), got_file);
                    let norm = load_and_preprocess(&fixture_folder(IMAGES).join(file), mode).unwrap();
                    assert_eq!(norm, normalize_chw(&got_file));
                }
                cases_checked += 1;
            }
        }
    }
    println!("{cases_checked} cases; worst resampler difference from PIL: {worst_resample}");
}

#[test]
#[allow(clippy::excessive_precision)]
fn normalisation_matches_torch_f32() {
    let m = fixture_manifest(IMAGES);
    for c in 0..3 {
        assert_eq!(m["clip_mean"][c].as_f64().unwrap() as f32, CLIP_MEAN[c]);
        assert_eq!(m["clip_std"][c].as_f64().unwrap() as f32, CLIP_STD[c]);
    }
    // Every level of every channel, bit for bit against numpy float32
    // (v / 255 - mean) / std.
    let table = m["normalize_table_f32_bits"].as_array().unwrap();
    let mut data = Vec::new();
    for v in 0..=255u8 {
        data.extend_from_slice(&[v, v, v]);
    }
    let img = RgbImage::new(16, 16, data).unwrap();
    let out = normalize_chw(&img);
    assert_eq!(out.len(), 3 * 256);
    for c in 0..3 {
        for v in 0..256 {
            let want = f32::from_bits(table[c][v].as_u64().unwrap() as u32);
            assert_eq!(out[c * 256 + v].to_bits(), want.to_bits(), "channel {c} level {v}");
        }
    }
    // Spot values.
    assert!((out[0] - (-0.48145466 / 0.26862954)).abs() < 1e-6);
    assert!((out[256 + 255] - ((1.0 - 0.4578275) / 0.26130258)).abs() < 1e-6);

    // CHW layout: out[c][y][x] comes from pixel (x, y) channel c.
    let img = noise_image(5, 5, 3);
    let out = preprocess(&img, Preprocess::Resize { size: 5 });
    for c in 0..3 {
        for y in 0..5 {
            for x in 0..5 {
                let v = img.pixel(x, y)[c] as f32;
                let want = (v / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
                assert_eq!(out[c * 25 + y * 5 + x], want);
            }
        }
    }
}

#[test]
fn model_resolution_passes_through_unresampled() {
    let img = noise_image(32, 32, 7);
    for mode in [Preprocess::ClipCenterCrop { size: 32 }, Preprocess::Resize { size: 32 }] {
        assert_eq!(preprocess_rgb(&img, mode), img, "{mode:?}");
    }
    assert_eq!(resize_bicubic(&img, 32, 32), img);

    // Shortest side already R: ClipCenterCrop only crops (offset 4 of 8).
    let tall = noise_image(32, 40, 8);
    assert_eq!(preprocess_rgb(&tall, Preprocess::ClipCenterCrop { size: 32 }), tall.crop(0, 4, 32, 32));
    // Width already right: only the vertical pass runs, so a constant
    // column stays exactly constant and each column is resampled alone.
    let mut data = Vec::new();
    for _y in 0..40 {
        for x in 0..32u8 {
            data.extend_from_slice(&[x * 8, 255 - x * 8, 77]);
        }
    }
    let cols = RgbImage::new(32, 40, data).unwrap();
    assert_eq!(preprocess_rgb(&cols, Preprocess::Resize { size: 32 }), cols.crop(0, 0, 32, 32));

    // Through a real PNG file at model resolution.
    let dir = scratch_dir("passthrough");
    let path = dir.join("exact32.png");
    image::save_buffer(&path, &img.data, 32, 32, image::ExtendedColorType::Rgb8).unwrap();
    let got = load_and_preprocess(&path, Preprocess::ClipCenterCrop { size: 32 }).unwrap();
    assert_eq!(got, normalize_chw(&img));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sizes_and_crop_offsets_follow_torchvision() {
    assert_eq!(shortest_side_size(37, 23, 32), (51, 32)); // int(51.478)
    assert_eq!(shortest_side_size(29, 41, 32), (32, 45)); // int(45.24)
    assert_eq!(shortest_side_size(640, 480, 224), (298, 224)); // int(298.67)
    assert_eq!(shortest_side_size(500, 375, 448), (597, 448)); // int(597.33)
    assert_eq!(shortest_side_size(300, 300, 224), (224, 224));
    // Python round: half to even.
    assert_eq!(center_crop_offset(32, 32), 0);
    assert_eq!(center_crop_offset(33, 32), 0); // round(0.5) = 0
    assert_eq!(center_crop_offset(35, 32), 2); // round(1.5) = 2
    assert_eq!(center_crop_offset(37, 32), 2); // round(2.5) = 2
    assert_eq!(center_crop_offset(45, 32), 6); // round(6.5) = 6
    assert_eq!(center_crop_offset(51, 32), 10); // round(9.5) = 10
    assert_eq!(center_crop_offset(298, 224), 37);
}

#[test]
fn batch_tensor_keeps_order() {
    let dir = fixture_folder(IMAGES);
    let paths: Vec<PathBuf> =
        ["grad37x23.png", "photo64x48.jpg", "gray29x41.png", "big101x77.png"].iter().map(|f| dir.join(f)).collect();
    let mode = Preprocess::ClipCenterCrop { size: 32 };
    let t = images_to_tensor(&paths, mode).unwrap();
    assert_eq!(t.dims(), &[4, 3, 32, 32]);
    let values = t.to_vec().unwrap();
    for (i, p) in paths.iter().enumerate() {
        let one = load_and_preprocess(p, mode).unwrap();
        assert_eq!(&values[i * 3 * 32 * 32..(i + 1) * 3 * 32 * 32], &one[..], "{}", p.display());
    }

    // A bad file in the batch is reported by name.
    let mut bad = paths.clone();
    bad.insert(2, dir.join("no-such-image.png"));
    bad.push(dir.join("another-missing.png"));
    let err = format!("{:#}", images_to_tensor(&bad, mode).unwrap_err());
    assert!(err.contains("no-such-image.png"), "the first failing file is reported: {err}");
}

fn expect_error(path: &Path, problem_hint: &str) {
    let err = load_rgb(path).expect_err("must fail");
    let plain = format!("{err}");
    let chain = format!("{err:#}");
    println!("{plain}");
    let shown = path.display().to_string();
    assert!(plain.contains(&shown), "error does not name the file: {plain}");
    assert!(chain.contains(&shown), "error does not name the file: {chain}");
    assert!(!plain.contains('\n'), "error is not one line: {plain:?}");
    assert!(plain.to_lowercase().contains(problem_hint), "error does not say '{problem_hint}': {plain}");
    let err = load_and_preprocess(path, Preprocess::Resize { size: 8 }).unwrap_err();
    assert!(format!("{err}").contains(&shown));
}

#[test]
fn unreadable_images_give_clear_errors() {
    let dir = scratch_dir("errors");

    expect_error(&dir.join("missing.jpg"), "not found");

    let empty = dir.join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    expect_error(&empty, "empty");

    let jpeg = std::fs::read(fixture_folder(IMAGES).join("photo64x48.jpg")).unwrap();
    let truncated = dir.join("truncated.jpg");
    std::fs::write(&truncated, &jpeg[..jpeg.len() / 2]).unwrap();
    expect_error(&truncated, "truncated");

    // A complete JPEG (as an EXIF-style thumbnail in an APP1 segment) inside
    // a truncated one: its end-of-image marker must not hide the truncation.
    let mut with_thumb = vec![0xFF, 0xD8, 0xFF, 0xE1];
    with_thumb.extend_from_slice(&((jpeg.len() + 2) as u16).to_be_bytes());
    with_thumb.extend_from_slice(&jpeg);
    with_thumb.extend_from_slice(&jpeg[2..]);
    assert_eq!(decode_rgb(&with_thumb).unwrap(), load_rgb(&fixture_folder(IMAGES).join("photo64x48.jpg")).unwrap());
    with_thumb.truncate(with_thumb.len() - jpeg.len() / 3);
    let truncated_thumb = dir.join("truncated-with-thumbnail.jpg");
    std::fs::write(&truncated_thumb, &with_thumb).unwrap();
    expect_error(&truncated_thumb, "truncated");

    let header_only = dir.join("header-only.jpg");
    std::fs::write(&header_only, &jpeg[..40]).unwrap();
    expect_error(&header_only, "truncated");

    let png = std::fs::read(fixture_folder(IMAGES).join("big101x77.png")).unwrap();
    let truncated_png = dir.join("truncated.png");
    std::fs::write(&truncated_png, &png[..png.len() / 2]).unwrap();
    expect_error(&truncated_png, "truncated");

    let text = dir.join("notes.jpg");
    std::fs::write(&text, b"this is not an image, just some text\n").unwrap();
    expect_error(&text, "not a jpeg or png");

    let gif = dir.join("anim.png");
    std::fs::write(&gif, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
    expect_error(&gif, "unsupported");

    expect_error(&dir, "directory");

    // Bytes without a path.
    assert!(decode_rgb(b"").is_err());
    // Bytes after the end-of-image marker are ignored, as decoders do.
    let mut trailing = jpeg.clone();
    trailing.extend_from_slice(b"\0\0 trailing junk \xFF\xD8");
    assert_eq!(decode_rgb(&trailing).unwrap(), decode_rgb(&jpeg).unwrap());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn resize_then_crop_equals_windowed_resize() {
    // preprocess computes only the kept window; it must equal a full resize
    // followed by the crop, for up- and downscaling and both pass orders.
    for (i, &(w, h, r)) in
        [(37, 23, 32), (23, 37, 16), (101, 77, 32), (64, 200, 24), (300, 40, 24), (9, 7, 32)].iter().enumerate()
    {
        let img = noise_image(w, h, 100 + i as u64);
        let (rw, rh) = shortest_side_size(w, h, r);
        for order in [PassOrder::Pillow13, PassOrder::HorizontalFirst] {
            let full = resize_bicubic_window(&img, rw, rh, (0, 0, rw, rh), order);
            let crop = full.crop(center_crop_offset(rw, r), center_crop_offset(rh, r), r, r);
            let got = preprocess_rgb_with(&img, Preprocess::ClipCenterCrop { size: r }, order);
            assert_eq!(got, crop, "{w}x{h} -> {r} {order:?}");
        }
    }
    // Pillow 13's order only differs where the height shrinks by more than
    // twice as many pixels as the width.
    let img = noise_image(40, 90, 5);
    let a = resize_bicubic_window(&img, 30, 30, (0, 0, 30, 30), PassOrder::Pillow13);
    let b = resize_bicubic_window(&img, 30, 30, (0, 0, 30, 30), PassOrder::HorizontalFirst);
    assert_ne!(a, b, "90 -> 30 tall shrink runs the vertical pass first in Pillow 13");
    let img = noise_image(90, 40, 5);
    let a = resize_bicubic_window(&img, 30, 30, (0, 0, 30, 30), PassOrder::Pillow13);
    let b = resize_bicubic_window(&img, 30, 30, (0, 0, 30, 30), PassOrder::HorizontalFirst);
    assert_eq!(a, b);
}
