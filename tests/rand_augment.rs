//! RandAugment: every op against torchvision + Pillow, the magnitude
//! tables, the draws (N ops, in the documented order), and the identity at
//! magnitude 0.
//!
//! The fixture in tests/fixtures/randaugment/ comes from
//! tools/make_randaugment_fixture.py (torchvision's `_apply_op` on PIL
//! images, the call `RandAugment.forward` makes). Every op must match it
//! exactly: the geometric ops use Pillow's own fixed-point sampling and the
//! point ops its float32 arithmetic, so no pixel may differ.

mod common;

use common::{fixture_bytes, fixture_manifest};
use mlrpl_engine::data::image::RgbImage;
use mlrpl_engine::data::rand_augment::{Op, RandAugment, MAX_MAGNITUDE, NUM_MAGNITUDE_BINS};
use mlrpl_engine::rng::Rng;
use serde_json::Value;

/// This file's fixture folder in tests/fixtures.
const RANDAUGMENT: &str = "randaugment";

fn op_named(name: &str) -> Op {
    *Op::ALL.iter().find(|op| op.name() == name).unwrap_or_else(|| panic!("no op {name}"))
}

/// Deterministic pseudo-random image.
fn noise_image(width: usize, height: usize, seed: u64) -> RgbImage {
    let mut rng = Rng::new(seed);
    RgbImage::new(width, height, (0..width * height * 3).map(|_| rng.below(256) as u8).collect()).unwrap()
}

#[test]
fn op_order_and_signs_are_torchvision_s() {
    let m = fixture_manifest(RANDAUGMENT);
    let names: Vec<&str> = m["op_order"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(names, Op::ALL.iter().map(|op| op.name()).collect::<Vec<_>>());
    for op in Op::ALL {
        assert_eq!(m["signed"][op.name()].as_bool(), Some(op.signed()), "{}", op.name());
    }
    assert_eq!(m["num_magnitude_bins"].as_u64(), Some(NUM_MAGNITUDE_BINS as u64));
}

#[test]
fn magnitude_tables_are_torch_s_to_the_bit() {
    let m = fixture_manifest(RANDAUGMENT);
    let check = |op: Op, table: &Value, width: usize, height: usize| {
        let table = table.as_array().unwrap();
        assert_eq!(table.len(), NUM_MAGNITUDE_BINS);
        for (bin, want) in table.iter().enumerate() {
            // Shortest float32 decimals (or Posterize's ints): read back as float32.
            let want = want.as_f64().unwrap() as f32;
            let got = op.magnitude(bin, width, height);
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{} at bin {bin} on {width}x{height}: {got} vs {want}",
                op.name()
            );
        }
    };
    let tables = m["magnitudes"].as_object().unwrap();
    assert_eq!(tables.len(), 9);
    for (name, table) in tables {
        check(op_named(name), table, 7, 5);
    }
    for size in m["translate_magnitudes"].as_array().unwrap() {
        let (w, h) = (size["width"].as_u64().unwrap() as usize, size["height"].as_u64().unwrap() as usize);
        check(Op::TranslateX, &size["TranslateX"], w, h);
        check(Op::TranslateY, &size["TranslateY"], w, h);
    }
    for op in [Op::Identity, Op::AutoContrast, Op::Equalize] {
        assert_eq!(op.magnitude(MAX_MAGNITUDE, 9, 9), 0.0);
    }
}

#[test]
fn every_op_matches_torchvision_exactly() {
    let m = fixture_manifest(RANDAUGMENT);
    let mut checked = Vec::new();
    for image in m["images"].as_array().unwrap() {
        let name = image["name"].as_str().unwrap();
        let (w, h) = (image["width"].as_u64().unwrap() as usize, image["height"].as_u64().unwrap() as usize);
        let input = RgbImage::new(w, h, fixture_bytes(RANDAUGMENT, &format!("{name}.rgb"))).unwrap();
        let expected = fixture_bytes(RANDAUGMENT, &format!("{name}.expected.rgb"));
        let cases = image["cases"].as_array().unwrap();
        assert_eq!(expected.len(), cases.len() * w * h * 3, "{name}: output size");
        for (case, want) in cases.iter().zip(expected.chunks_exact(w * h * 3)) {
            let op = op_named(case["op"].as_str().unwrap());
            let bin = case["bin"].as_u64().unwrap() as usize;
            let sign = case["sign"].as_i64().unwrap();
            let mut magnitude = op.magnitude(bin, w, h);
            if sign < 0 {
                magnitude = -magnitude;
            }
            let label = format!("{name} {} bin {bin} sign {sign}", op.name());
            // A float32 value written as a double; serde_json may read it 1 ulp off
            // as a double, never as a float32.
            assert_eq!(magnitude, case["magnitude"].as_f64().unwrap() as f32, "{label}: magnitude");
            let got = op.apply(&input, magnitude);
            assert_eq!((got.width, got.height), (w, h), "{label}");
            let wrong = got.data.chunks_exact(3).zip(want.chunks_exact(3)).filter(|(a, b)| a != b).count();
            assert_eq!(wrong, 0, "{label}: {wrong} of {} pixels differ from torchvision", w * h);
            checked.push(op);
        }
    }
    // Every op was checked, the geometric ones on a non-square image too.
    for op in Op::ALL {
        assert!(checked.contains(&op), "{} not in the fixture", op.name());
    }
    assert!(checked.len() >= 60, "{} cases", checked.len());
}

#[test]
fn magnitude_zero_leaves_the_image_unchanged() {
    let img = noise_image(13, 9, 4);
    for op in [Op::ShearX, Op::ShearY, Op::TranslateX, Op::TranslateY, Op::Rotate] {
        let zero = op.magnitude(0, img.width, img.height);
        assert_eq!(zero, 0.0, "{}", op.name());
        // Either sign: torchvision may hand over -0.0.
        assert!(op.apply(&img, zero) == img && op.apply(&img, -zero) == img, "{}", op.name());
        // And the op does move pixels at a larger magnitude.
        assert!(op.apply(&img, op.magnitude(9, img.width, img.height)) != img, "{}", op.name());
    }
    // Factor 1 for the enhance ops, 8 bits for Posterize.
    for op in [Op::Brightness, Op::Color, Op::Contrast, Op::Sharpness, Op::Posterize, Op::Identity] {
        assert!(op.apply(&img, op.magnitude(0, img.width, img.height)) == img, "{}", op.name());
    }
}

#[test]
fn n_ops_are_drawn_and_applied_in_the_documented_order() {
    let img = noise_image(16, 16, 5);
    for (ops, magnitude) in [(1, 9), (2, 9), (5, 30)] {
        let rand_augment = RandAugment::new(ops, magnitude).unwrap();
        for seed in 0..40 {
            let mut rng = Rng::new(seed);
            let got = rand_augment.apply(img.clone(), &mut rng);
            // Replay: per op, the op index, then the sign of a signed op.
            let mut replay = Rng::new(seed);
            let mut want = img.clone();
            for _ in 0..ops {
                let op = Op::ALL[replay.below(Op::ALL.len())];
                let mut m = op.magnitude(magnitude, 16, 16);
                if op.signed() && replay.below(2) == 1 {
                    m = -m;
                }
                want = op.apply(&want, m);
            }
            assert!(got == want, "N = {ops}, M = {magnitude}, seed {seed}");
            // No draw more or less than the replay took.
            assert_eq!(rng.next_u64(), replay.next_u64(), "N = {ops}, seed {seed}: draws");
        }
    }
    // More ops change the image more often than fewer (Identity is 1 of 14).
    let changed = |ops: usize| {
        let rand_augment = RandAugment::new(ops, 9).unwrap();
        (0..200).filter(|&s| rand_augment.apply(img.clone(), &mut Rng::new(s)) != img).count()
    };
    let (one, three) = (changed(1), changed(3));
    assert!(one > 150 && three > one, "images changed: {one} with N = 1, {three} with N = 3");
}

#[test]
fn every_op_is_drawn_with_both_signs() {
    let rand_augment = RandAugment::new(1, 9).unwrap();
    let mut seen = std::collections::HashSet::new();
    let img = noise_image(8, 8, 6);
    for seed in 0..2000 {
        let mut rng = Rng::new(seed);
        let op = Op::ALL[rng.below(Op::ALL.len())];
        let negative = op.signed() && rng.below(2) == 1;
        seen.insert((op.name(), negative));
        // The transform takes the same draws.
        let m = op.magnitude(9, 8, 8);
        assert!(rand_augment.apply(img.clone(), &mut Rng::new(seed)) == op.apply(&img, if negative { -m } else { m }));
    }
    let signed = Op::ALL.iter().filter(|op| op.signed()).count();
    assert_eq!(seen.len(), Op::ALL.len() + signed);
}
