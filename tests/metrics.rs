//! `src/metrics.rs` against hand-computed cases and against scikit-learn:
//! `tests/fixtures/metrics_sklearn.json` (made by
//! `tools/make_metrics_fixture.py`) holds seeded random cases with sklearn's
//! per-class `average_precision_score` on the known entries and a numpy
//! reimplementation of CP/CR/CF1/OP/OR/OF1 and their top-3 versions.

use mlrpl_engine::metrics::{average_precision, evaluate, f1_threshold, MultiLabelMetrics};
use serde_json::Value;
use std::path::Path;

const TOL: f64 = 1e-6;

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= 1e-12, "{what}: {a} != {b}");
}

// ---------------------------------------------------------------- AP by hand

#[test]
fn ap_ranks_one_and_three() {
    let ap = average_precision(&[0.9, 0.8, 0.7, 0.6], &[true, false, true, false]).unwrap();
    close(ap, (1.0 + 2.0 / 3.0) / 2.0, "AP");
}

#[test]
fn ap_does_not_depend_on_input_order() {
    let ap = average_precision(&[0.6, 0.7, 0.9, 0.8], &[false, true, true, false]).unwrap();
    close(ap, (1.0 + 2.0 / 3.0) / 2.0, "AP");
}

#[test]
fn ap_perfect_worst_and_single() {
    close(average_precision(&[0.9, 0.8, 0.1], &[true, true, false]).unwrap(), 1.0, "perfect");
    // The only positive ranked last of 4: precision 1/4.
    close(average_precision(&[0.9, 0.8, 0.7, 0.1], &[false, false, false, true]).unwrap(), 0.25, "last");
    // Positives at ranks 3 and 4 of 4: (1/3 + 2/4) / 2.
    close(
        average_precision(&[0.9, 0.8, 0.7, 0.1], &[false, false, true, true]).unwrap(),
        (1.0 / 3.0 + 0.5) / 2.0,
        "bottom two",
    );
    close(average_precision(&[0.3], &[true]).unwrap(), 1.0, "single");
    close(average_precision(&[0.3, 0.2, 0.9], &[true, true, true]).unwrap(), 1.0, "all positive");
}

#[test]
fn ap_none_without_positive() {
    assert_eq!(average_precision(&[0.9, 0.1], &[false, false]), None);
    assert_eq!(average_precision(&[], &[]), None);
}

#[test]
fn ap_ties_are_one_threshold() {
    // Three tied entries, one positive: sklearn admits the whole group at once,
    // precision 1/3, whatever the order inside the group.
    for pos in 0..3 {
        let mut positives = [false; 3];
        positives[pos] = true;
        close(average_precision(&[0.5, 0.5, 0.5], &positives).unwrap(), 1.0 / 3.0, "tie of 3");
    }
    // Groups {0.9: -}, {0.5: +, -, -}, {0.1: +}:
    // (1 * 1/4 + 1 * 2/5) / 2.
    let want = (0.25 + 0.4) / 2.0;
    let scores = [0.9, 0.5, 0.5, 0.5, 0.1];
    let mut positives = [false, true, false, false, true];
    close(average_precision(&scores, &positives).unwrap(), want, "groups");
    positives = [false, false, false, true, true];
    close(average_precision(&scores, &positives).unwrap(), want, "groups, other order");
    // 0.0 and -0.0 are the same score.
    close(average_precision(&[0.0, -0.0], &[false, true]).unwrap(), 0.5, "signed zeros");
}

#[test]
#[should_panic(expected = "2 scores but 1 labels")]
fn ap_length_mismatch_panics() {
    average_precision(&[0.1, 0.2], &[true]);
}

// ----------------------------------------------------------- evaluate by hand

/// 4 images x 3 classes; class 2 has an unknown entry with the top score.
#[test]
fn evaluate_hand_case() {
    #[rustfmt::skip]
    let scores = [
        0.9, 0.6, 0.2,
        0.4, 0.7, 0.8,
        0.3, 0.2, 0.55,
        0.8, 0.1, 0.45,
    ];
    #[rustfmt::skip]
    let labels = [
        1.0, -1.0, 1.0,
        -1.0, 1.0, 0.0,
        1.0, -1.0, -1.0,
        -1.0, 0.0, 1.0,
    ];
    let m = evaluate(&scores, &labels, 3, 0.5).unwrap();
    // Class 0: .9+ .8- .4- .3+ -> (1 + 2/4)/2. Class 1: .7+ first -> 1.
    // Class 2 (the unknown .8 left out): .55- .45+ .2+ -> (1/2 + 2/3)/2.
    let aps = [0.75, 1.0, 7.0 / 12.0];
    for (c, want) in aps.iter().enumerate() {
        close(m.per_class_ap[c].unwrap(), *want, &format!("AP[{c}]"));
    }
    close(m.map, 7.0 / 9.0, "mAP");
    // (Nc, Np, Ng): class 0 (1, 2, 2), class 1 (1, 2, 1), class 2 (0, 1, 2).
    close(m.cp, (0.5 + 0.5 + 0.0) / 3.0, "CP");
    close(m.cr, (0.5 + 1.0 + 0.0) / 3.0, "CR");
    close(m.cf1, 0.4, "CF1");
    close(m.op, 2.0 / 5.0, "OP");
    close(m.or, 2.0 / 5.0, "OR");
    close(m.of1, 2.0 / 5.0, "OF1");
    // 3 classes: the top 3 are all classes, so the top-3 row is the same.
    close(m.cp_top3, m.cp, "CP top3");
    close(m.cr_top3, m.cr, "CR top3");
    close(m.cf1_top3, m.cf1, "CF1 top3");
    close(m.op_top3, m.op, "OP top3");
    close(m.or_top3, m.or, "OR top3");
    close(m.of1_top3, m.of1, "OF1 top3");
}

/// 2 images x 5 classes: top-3 selection, ties for the third place, and a
/// class without a known positive.
#[test]
fn evaluate_top3_hand_case() {
    #[rustfmt::skip]
    let scores = [
        0.9, 0.8, 0.7, 0.6, 0.1,
        0.6, 0.6, 0.6, 0.6, 0.95,
    ];
    #[rustfmt::skip]
    let labels = [
        1.0, -1.0, -1.0, 1.0, -1.0,
        -1.0, 1.0, 1.0, 1.0, 0.0,
    ];
    let m = evaluate(&scores, &labels, 5, 0.5).unwrap();
    assert_eq!(m.per_class_ap[4], None, "class 4 has no known positive");
    close(m.per_class_ap[0].unwrap(), 1.0, "AP0");
    close(m.per_class_ap[1].unwrap(), 0.5, "AP1");
    close(m.per_class_ap[2].unwrap(), 0.5, "AP2");
    close(m.per_class_ap[3].unwrap(), 1.0, "AP3 (tied positives)");
    close(m.map, 0.75, "mAP over the 4 classes with a positive");
    // Threshold: every known entry of classes 0-3 is predicted;
    // (Nc, Np, Ng) = (1,2,1) (1,2,1) (1,2,1) (2,2,2) (0,0,0).
    close(m.cp, (0.5 + 0.5 + 0.5 + 1.0) / 4.0, "CP");
    close(m.cr, 1.0, "CR");
    close(m.cf1, 10.0 / 13.0, "CF1");
    close(m.op, 5.0 / 8.0, "OP");
    close(m.or, 1.0, "OR");
    close(m.of1, 10.0 / 13.0, "OF1");
    // Top 3: image 0 keeps classes 0, 1, 2; image 1 keeps 4 (unknown), then
    // the lowest indices of the tie at 0.6: 0 and 1.
    // (Nc, Np, Ng) = (1,2,1) (1,2,1) (0,1,1) (0,0,2) (0,0,0).
    close(m.cp_top3, 0.25, "CP top3");
    close(m.cr_top3, 0.5, "CR top3");
    close(m.cf1_top3, 1.0 / 3.0, "CF1 top3");
    close(m.op_top3, 2.0 / 5.0, "OP top3");
    close(m.or_top3, 2.0 / 5.0, "OR top3");
    close(m.of1_top3, 2.0 / 5.0, "OF1 top3");
}

/// A top-3 class below the threshold is not predicted.
#[test]
fn top3_also_needs_the_threshold() {
    let m = evaluate(&[0.9, 0.3, 0.2, 0.1], &[1.0, 1.0, -1.0, -1.0], 4, 0.5).unwrap();
    close(m.cp_top3, 0.5, "CP top3 (class 1 predicts nothing: precision 0)");
    close(m.cr_top3, 0.5, "CR top3");
    close(m.op_top3, 1.0, "OP top3");
    close(m.or_top3, 0.5, "OR top3");
    // Inclusive threshold: a score equal to it is predicted.
    let m = evaluate(&[0.5, 0.2], &[1.0, -1.0], 2, 0.5).unwrap();
    close(m.op, 1.0, "OP at score == threshold");
    close(m.or, 1.0, "OR at score == threshold");
}

#[test]
fn nothing_predicted_gives_zero_not_nan() {
    let m = evaluate(&[0.1, 0.2, 0.3, 0.4], &[1.0, -1.0, -1.0, 1.0], 2, 0.5).unwrap();
    for (name, v) in [("cp", m.cp), ("cr", m.cr), ("cf1", m.cf1), ("op", m.op), ("or", m.or), ("of1", m.of1)] {
        assert_eq!(v, 0.0, "{name}");
    }
}

// ----------------------------------------------------------- unknown labels

/// A deterministic pseudo-random case (xorshift), N x C.
fn pseudo_random(n: usize, c: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut s = seed;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut scores = Vec::with_capacity(n * c);
    let mut labels = Vec::with_capacity(n * c);
    for _ in 0..n * c {
        let u = next();
        let label = if u < 0.2 {
            0.0
        } else if u < 0.5 {
            1.0
        } else {
            -1.0
        };
        let noise = next();
        scores.push(if label > 0.0 { 0.3 + 0.7 * noise } else { 0.7 * noise });
        labels.push(label);
    }
    (scores, labels)
}

fn assert_same(a: &MultiLabelMetrics, b: &MultiLabelMetrics, with_top3: bool) {
    assert_eq!(a.per_class_ap, b.per_class_ap);
    assert_eq!(a.map, b.map);
    assert_eq!([a.cp, a.cr, a.cf1, a.op, a.or, a.of1], [b.cp, b.cr, b.cf1, b.op, b.or, b.of1]);
    if with_top3 {
        assert_eq!(
            [a.cp_top3, a.cr_top3, a.cf1_top3, a.op_top3, a.or_top3, a.of1_top3],
            [b.cp_top3, b.cr_top3, b.cf1_top3, b.op_top3, b.or_top3, b.of1_top3]
        );
    }
}

#[test]
fn unknown_entries_are_excluded() {
    let (c, n) = (6, 40);
    let (scores, labels) = pseudo_random(n, c, 0x9e3779b97f4a7c15);
    assert!(labels.contains(&0.0));
    let base = evaluate(&scores, &labels, c, 0.5).unwrap();

    // Any score on an unknown entry: AP and threshold metrics unchanged (the
    // top 3 of an image may change, since it is chosen among all classes).
    for fill in [0.0f32, 1.0, 0.5, 0.77] {
        let moved: Vec<f32> = scores.iter().zip(&labels).map(|(&s, &l)| if l == 0.0 { fill } else { s }).collect();
        assert_same(&base, &evaluate(&moved, &labels, c, 0.5).unwrap(), false);
    }

    // Images whose labels are all unknown change nothing at all.
    let mut more_scores = scores.clone();
    let mut more_labels = labels.clone();
    for i in 0..5 * c {
        more_scores.push(if i % 2 == 0 { 0.99 } else { 0.01 });
        more_labels.push(0.0);
    }
    assert_same(&base, &evaluate(&more_scores, &more_labels, c, 0.5).unwrap(), true);

    // Per-class AP equals the AP of that class's known entries alone.
    for k in 0..c {
        let (s, p): (Vec<f32>, Vec<bool>) =
            (0..n).map(|i| i * c + k).filter(|&i| labels[i] != 0.0).map(|i| (scores[i], labels[i] > 0.0)).unzip();
        assert_eq!(base.per_class_ap[k], average_precision(&s, &p), "class {k}");
    }
}

#[test]
fn classes_without_positive_are_left_out_of_map() {
    #[rustfmt::skip]
    let scores = [
        0.9, 0.9, 0.2, 0.7,
        0.1, 0.8, 0.6, 0.3,
        0.6, 0.4, 0.9, 0.2,
    ];
    // Class 1: only negatives; class 2: only unknown; class 3: negatives and unknown.
    #[rustfmt::skip]
    let labels = [
        1.0, -1.0, 0.0, -1.0,
        -1.0, -1.0, 0.0, 0.0,
        1.0, -1.0, 0.0, -1.0,
    ];
    let m = evaluate(&scores, &labels, 4, 0.5).unwrap();
    assert_eq!(m.per_class_ap, vec![Some(1.0), None, None, None]);
    close(m.map, 1.0, "mAP");
    // CP/CR only over class 0 (Nc 2, Np 2, Ng 2) ...
    close(m.cp, 1.0, "CP");
    close(m.cr, 1.0, "CR");
    // ... while OP pools every known entry: class 1 predicts 0.9 and 0.8
    // (negatives), class 3 predicts 0.7: Nc 2, Np 5.
    close(m.op, 2.0 / 5.0, "OP");
    close(m.or, 1.0, "OR");
}

// ------------------------------------------------------------------ errors

fn err(scores: &[f32], labels: &[f32], c: usize, thr: f32) -> String {
    format!("{:#}", evaluate(scores, labels, c, thr).unwrap_err())
}

#[test]
fn errors_not_panics() {
    let e = err(&[0.1, 0.2, 0.3], &[1.0, -1.0], 1, 0.5);
    assert!(e.contains('3') && e.contains('2'), "{e}");
    let e = err(&[0.1, 0.2, 0.3], &[1.0, -1.0, 1.0], 2, 0.5);
    assert!(e.contains('3') && e.contains('2'), "{e}");
    let e = err(&[0.1, 0.2], &[1.0, -1.0], 0, 0.5);
    assert!(e.contains("num_classes"), "{e}");
    let e = err(&[0.1, f32::NAN, 0.3, 0.4], &[1.0, -1.0, 1.0, -1.0], 2, 0.5);
    assert!(e.contains("NaN") && e.contains("image 0, class 1"), "{e}");
    let e = err(&[0.1, 0.2], &[1.0, -1.0], 2, f32::NAN);
    assert!(e.contains("threshold"), "{e}");
    let e = err(&[0.1, 0.2, 0.3, 0.4], &[1.0, -1.0, 0.5, -1.0], 2, 0.5);
    assert!(e.contains("image 1, class 0") && e.contains("0.5"), "{e}");
    let e = err(&[0.1, 0.2], &[-1.0, 0.0], 2, 0.5);
    assert!(e.contains("no class has a known positive"), "{e}");
    let e = err(&[], &[], 3, 0.5);
    assert!(e.contains("no class has a known positive"), "{e}");
}

// ------------------------------------------------------------------- table

#[test]
fn summary_table_lists_what_it_should() {
    let m = evaluate(&[0.9, 0.2, 0.1, 0.8], &[1.0, -1.0, -1.0, -1.0], 2, 0.5).unwrap();
    let plain = m.summary_table(None);
    assert!(plain.contains("mAP 100.00"), "{plain}");
    assert!(plain.contains("1 of 2 classes"), "{plain}");
    for h in ["CP", "CR", "CF1", "OP", "OR", "OF1", "threshold", "top-3"] {
        assert!(plain.contains(h), "{h} missing:\n{plain}");
    }
    assert!(!plain.contains("person"));
    let names = vec!["person".to_string(), "bicycle".to_string()];
    let named = m.summary_table(Some(&names));
    let person = named.lines().find(|l| l.starts_with("person")).unwrap();
    assert!(person.trim_end().ends_with("100.00"), "{named}");
    let bicycle = named.lines().find(|l| l.starts_with("bicycle")).unwrap();
    assert!(bicycle.trim_end().ends_with('-'), "{named}");
    // Missing names fall back to the index.
    let short = m.summary_table(Some(&names[..1]));
    assert!(short.contains("class 1"), "{short}");
}

// ----------------------------------------------------------------- sklearn

#[test]
fn matches_sklearn_fixture() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics_sklearn.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let threshold = doc["threshold"].as_f64().unwrap() as f32;
    assert_eq!(doc["top_k"].as_u64(), Some(3));
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    let mut checked_aps = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (n, c) = (case["n"].as_u64().unwrap() as usize, case["c"].as_u64().unwrap() as usize);
        let scores: Vec<f32> = case["scores_bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| f32::from_bits(b.as_u64().unwrap() as u32))
            .collect();
        let labels: Vec<f32> = case["labels"].as_array().unwrap().iter().map(|l| l.as_i64().unwrap() as f32).collect();
        assert_eq!(scores.len(), n * c, "{name}");
        let m = evaluate(&scores, &labels, c, threshold).unwrap();

        let want_aps = case["per_class_ap"].as_array().unwrap();
        assert_eq!(want_aps.len(), c, "{name}");
        for (k, want) in want_aps.iter().enumerate() {
            match (want.as_f64(), m.per_class_ap[k]) {
                (None, None) => {}
                (Some(w), Some(got)) => {
                    assert!((w - got).abs() <= TOL, "{name} AP[{k}]: sklearn {w}, ours {got}");
                    checked_aps += 1;
                }
                (w, got) => panic!("{name} AP[{k}]: sklearn {w:?}, ours {got:?}"),
            }
        }
        let fields = [
            ("map", m.map),
            ("cp", m.cp),
            ("cr", m.cr),
            ("cf1", m.cf1),
            ("op", m.op),
            ("or", m.or),
            ("of1", m.of1),
            ("cp_top3", m.cp_top3),
            ("cr_top3", m.cr_top3),
            ("cf1_top3", m.cf1_top3),
            ("op_top3", m.op_top3),
            ("or_top3", m.or_top3),
            ("of1_top3", m.of1_top3),
        ];
        for (key, got) in fields {
            let want = case[key].as_f64().unwrap_or_else(|| panic!("{name}: no {key}"));
            assert!((want - got).abs() <= TOL, "{name} {key}: expected {want}, got {got}");
        }
    }
    assert!(checked_aps > 40, "only {checked_aps} APs compared");
}

/// The tie case of the fixture really has many ties (else it would test
/// nothing): scores rounded to one decimal, at most 11 distinct values.
#[test]
fn fixture_tie_cases_have_ties() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics_sklearn.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let case = doc["cases"].as_array().unwrap().iter().find(|c| c["name"] == "ties_200x6").unwrap();
    let bits: Vec<u64> = case["scores_bits"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap()).collect();
    let mut distinct = bits.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() <= 11 && bits.len() == 1200, "{} distinct scores", distinct.len());
}

// ------------------------------------------------------- threshold choice

#[test]
fn f1_threshold_separates_low_positives_from_lower_negatives() {
    // Every positive scores 0.30 or more, every negative 0.20 or less: CF1
    // is 1 from 0.21 to 0.30, and the lowest of those is chosen.
    let scores = [0.35, 0.10, 0.30, 0.20, 0.05, 0.40];
    let labels = [1.0, -1.0, 1.0, -1.0, -1.0, 1.0];
    let t = f1_threshold(&scores, &labels, 2).unwrap();
    assert!((t - 0.21).abs() < 1e-6, "{t}");
    assert_eq!(evaluate(&scores, &labels, 2, t).unwrap().cf1, 1.0);
    assert!(evaluate(&scores, &labels, 2, 0.5).unwrap().cf1 < 1.0);
}

#[test]
fn f1_threshold_beats_every_grid_point_and_ignores_unknown_entries() {
    let (mut scores, mut labels) = pseudo_random(60, 5, 3);
    let chosen = f1_threshold(&scores, &labels, 5).unwrap();
    let best = evaluate(&scores, &labels, 5, chosen).unwrap().cf1;
    for step in 1..100 {
        assert!(evaluate(&scores, &labels, 5, step as f32 / 100.0).unwrap().cf1 <= best);
    }
    labels[0] = 0.0;
    let choices: Vec<f32> = [1.0, 0.0]
        .iter()
        .map(|&unknown_score| {
            scores[0] = unknown_score;
            f1_threshold(&scores, &labels, 5).unwrap()
        })
        .collect();
    assert_eq!(choices[0], choices[1], "an unknown entry's score moved the threshold");
    assert!(f1_threshold(&[0.5], &[0.0], 1).is_err(), "no known positive");
}
