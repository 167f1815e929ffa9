//! The HCP-MLR-PL partial-label mask: proportion, determinism, validation of
//! `--known-ratio`, and the saved file.

use mlrpl_engine::data::partial::{check_known_ratio, LabelMask, DEFAULT_MASK_SEED};
use std::path::PathBuf;

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mlrpl-partial-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("mask.json")
}

fn bits(mask: &LabelMask) -> Vec<bool> {
    let mut out = Vec::new();
    for i in 0..mask.num_items() {
        for c in 0..mask.num_classes() {
            out.push(mask.is_kept(i, c));
        }
    }
    out
}

#[test]
fn kept_proportion_matches_the_ratio_over_100k_labels() {
    for &p in &[0.1, 0.3, 0.5, 0.7, 0.9] {
        let mask = LabelMask::sample(1250, 80, p, DEFAULT_MASK_SEED).unwrap();
        let kept = bits(&mask).iter().filter(|&&b| b).count();
        assert_eq!(kept, mask.num_kept());
        let frac = kept as f64 / 100_000.0;
        // Binomial std at 100k draws is at most 0.0016; 0.008 is 5 sigma.
        assert!((frac - p).abs() < 0.008, "p {p}: kept {frac}");
        assert!((mask.kept_fraction() - frac).abs() < 1e-12);
        // No structure: per-class and per-item halves agree with p too.
        let first_classes =
            (0..1250).flat_map(|i| (0..40).map(move |c| (i, c))).filter(|&(i, c)| mask.is_kept(i, c)).count();
        assert!((first_classes as f64 / 50_000.0 - p).abs() < 0.012, "p {p}: first half of classes");
    }
}

#[test]
fn positives_and_negatives_are_dropped_alike() {
    let (n, c) = (2000, 50);
    let mask = LabelMask::sample(n, c, 0.4, 0).unwrap();
    let (mut pos, mut pos_kept, mut neg, mut neg_kept) = (0, 0, 0, 0);
    for i in 0..n {
        let labels: Vec<f32> = (0..c).map(|k| if (i * 7 + k * 3) % 5 == 0 { 1.0 } else { -1.0 }).collect();
        let masked = mask.apply(&labels, i);
        for k in 0..c {
            let kept = mask.is_kept(i, k);
            assert_eq!(masked[k], if kept { labels[k] } else { 0.0 });
            if labels[k] > 0.0 {
                pos += 1;
                pos_kept += kept as usize;
            } else {
                neg += 1;
                neg_kept += kept as usize;
            }
        }
    }
    let (fp, fneg) = (pos_kept as f64 / pos as f64, neg_kept as f64 / neg as f64);
    assert!((fp - 0.4).abs() < 0.02 && (fneg - 0.4).abs() < 0.02, "positives {fp}, negatives {fneg}");
}

#[test]
fn same_seed_same_mask_other_seed_other_mask() {
    let a = LabelMask::sample(300, 20, 0.5, 7).unwrap();
    let b = LabelMask::sample(300, 20, 0.5, 7).unwrap();
    let c = LabelMask::sample(300, 20, 0.5, 8).unwrap();
    assert_eq!(bits(&a), bits(&b));
    assert_ne!(bits(&a), bits(&c));
    // Nested across ratios: the same draws, so a label kept at p is kept at any p' > p.
    let d = LabelMask::sample(300, 20, 0.7, 7).unwrap();
    for (x, y) in bits(&a).iter().zip(bits(&d)) {
        assert!(!x || y);
    }
}

#[test]
fn ratio_one_keeps_every_label() {
    let mask = LabelMask::sample(500, 80, 1.0, 0).unwrap();
    assert_eq!(mask.num_kept(), 500 * 80);
    assert!(bits(&mask).iter().all(|&b| b));
    let labels = vec![1.0, -1.0, 0.0, 1.0];
    let m = LabelMask::sample(3, 4, 1.0, 0).unwrap();
    assert_eq!(m.apply(&labels, 2), labels);
}

#[test]
fn bad_ratios_are_errors_naming_the_flag() {
    for &p in &[0.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
        let err = LabelMask::sample(10, 3, p, 0).unwrap_err().to_string();
        assert!(err.contains("--known-ratio"), "{err}");
        assert!(err.contains(&format!("{p}")), "{err} should name {p}");
        assert!(check_known_ratio(p).is_err());
    }
    for &p in &[1e-9, 0.1, 0.5, 1.0] {
        check_known_ratio(p).unwrap();
    }
}

#[test]
fn save_and_load_round_trip() {
    let path = temp_path("round-trip");
    // 77 x 13 = 1001 labels: the last byte is partial.
    let mask = LabelMask::sample(77, 13, 0.3, 42).unwrap();
    mask.save(&path).unwrap();
    let back = LabelMask::load(&path, 77, 13).unwrap();
    assert_eq!(bits(&back), bits(&mask));
    assert_eq!(back.num_kept(), mask.num_kept());
    assert_eq!(back.known_ratio(), 0.3);
    assert_eq!(back.seed(), 42);
    assert_eq!(back.source(), Some(path.as_path()));
    // The file is readable JSON with the documented fields.
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(json["format"], "mlrpl-label-mask");
    assert_eq!(json["num_items"], 77);
    assert_eq!(json["num_classes"], 13);
    assert_eq!(json["seed"], 42);
    assert!(json["mask_base64"].as_str().unwrap().len() == 1001usize.div_ceil(8).div_ceil(3) * 4);
    // No temporary file left beside it.
    let leftovers: Vec<_> =
        std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

#[test]
fn wrong_shape_load_names_the_file_and_both_shapes() {
    let path = temp_path("wrong-shape");
    LabelMask::sample(1000, 80, 0.5, 0).unwrap().save(&path).unwrap();
    let err = LabelMask::load(&path, 82081, 80).unwrap_err().to_string();
    assert_eq!(err, format!("label mask {} is for 1000 x 80 labels, the dataset has 82081 x 80", path.display()));
    let err = LabelMask::load(&path, 1000, 20).unwrap_err().to_string();
    assert!(err.contains("1000 x 80") && err.contains("1000 x 20"), "{err}");
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

#[test]
fn damaged_or_missing_files_are_errors_naming_the_file() {
    let path = temp_path("damaged");
    let missing = path.with_file_name("nope.json");
    let err = format!("{:#}", LabelMask::load(&missing, 1, 1).unwrap_err());
    assert!(err.contains("nope.json"), "{err}");

    std::fs::write(&path, "not json").unwrap();
    let err = format!("{:#}", LabelMask::load(&path, 1, 1).unwrap_err());
    assert!(err.contains(&path.display().to_string()), "{err}");

    // Edit the kept count: the checksum-like check fires.
    LabelMask::sample(10, 10, 0.5, 0).unwrap().save(&path).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["num_kept"] = serde_json::json!(1000);
    std::fs::write(&path, json.to_string()).unwrap();
    let err = format!("{:#}", LabelMask::load(&path, 10, 10).unwrap_err());
    assert!(err.contains(&path.display().to_string()) && err.contains("damaged"), "{err}");

    // Truncated bit string.
    json["num_kept"] = serde_json::json!(0);
    json["mask_base64"] = serde_json::json!("AAAA");
    std::fs::write(&path, json.to_string()).unwrap();
    let err = format!("{:#}", LabelMask::load(&path, 10, 10).unwrap_err());
    assert!(err.contains(&path.display().to_string()), "{err}");
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}
