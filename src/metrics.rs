//! Evaluation metrics for multi-label recognition with partial labels
//! (docs/model.md §7): per-class average precision and mAP, and the
//! threshold-based CP, CR, CF1, OP, OR, OF1 with their top-3 versions.
//!
//! All values are **fractions in `[0, 1]`**; [`MultiLabelMetrics::summary_table`]
//! (and the CLI) print them as percentages.
//!
//! # Inputs
//!
//! [`evaluate`] takes probabilities `scores` and `labels`, both `[N * C]`
//! row-major (image-major: entry `n * C + c` is image `n`, class `c`). A label
//! is `1` (positive), `-1` (negative) or `0` (unknown). **An unknown entry is
//! excluded from every metric**: it is not ranked in its class's AP and counts
//! neither as a prediction nor as a ground truth in the threshold metrics
//! (it still takes part in choosing an image's top 3, see below, because what
//! a model predicts does not depend on the labels).
//!
//! # Average precision and mAP
//!
//! Non-interpolated AP of one class over its known entries: with the `P`
//! positives ranked by descending score, `AP = (1/P) Σ_k precision@rank(k)`.
//! A class without a known positive has no AP (`None`) and is left out of the
//! mAP, which is the mean over the classes that have one.
//!
//! **Ties** follow scikit-learn's `average_precision_score`: entries with equal
//! scores form one threshold, so they are all admitted at once. Scanning the
//! distinct scores from high to low, with `tp`/`fp` the cumulative counts after
//! admitting the group `g` and `Δtp_g` the positives inside it,
//! `AP = Σ_g (Δtp_g / P) · tp / (tp + fp)`, i.e. every positive of a tied group
//! gets the precision at the end of the group. Without ties this is exactly the
//! mean of precision@rank over the positives; with ties it does not depend on
//! the order inside a group (a plain sort-and-scan, as in HCP-MLR-PL's
//! `AveragePrecisionMeter.average_precision` or ASL's `average_precision`, does).
//! Scores compare as `f32` values exactly (`0.0 == -0.0`).
//!
//! # Threshold metrics
//!
//! For a class `c`, over its known entries: `Ng_c` = positives, `Np_c` =
//! predicted positives, `Nc_c` = positives predicted positive.
//!
//! * An entry is predicted positive when `score >= threshold` (inclusive, as
//!   HCP-MLR-PL's `scores >= 0` on logits, i.e. probability `>= 0.5`).
//! * Top-3 version: an entry is predicted positive when its class is among the
//!   3 highest-scored classes of its image **and** `score >= threshold`. This is
//!   what HCP-MLR-PL (and ML-GCN, whose `AveragePrecisionMeter.overall_topk` it
//!   reuses) computes: it keeps the `topk(3)` classes and marks each positive
//!   only if its logit is `>= 0`. Ties for the third place are broken towards
//!   the lower class index; an image with fewer than 3 classes keeps them all.
//! * `CP = mean_c Nc_c / Np_c`, `CR = mean_c Nc_c / Ng_c`, where the mean runs
//!   over the classes with at least one known positive (the classes of the
//!   mAP), and a class with `Np_c = 0` has precision 0 (HCP-MLR-PL sets
//!   `Np[Np == 0] = 1`). HCP-MLR-PL averages over all classes; it is evaluated
//!   on fully labelled test sets where every class has a positive, so the two
//!   agree there; for a class without a positive its `Nc/Ng` is 0/0 (NaN in
//!   HCP-MLR-PL), hence the restriction.
//! * `OP = Σ_c Nc_c / Σ_c Np_c` and `OR = Σ_c Nc_c / Σ_c Ng_c`, pooled over the
//!   known entries of **all** classes (a false positive in a class without a
//!   positive still lowers OP). `OP = 0` when nothing is predicted.
//! * `CF1 = 2 CP CR / (CP + CR)`, `OF1 = 2 OP OR / (OP + OR)`, and 0 when the
//!   denominator is 0 (HCP-MLR-PL would give NaN).
//!
//! # What HCP-MLR-PL does (for reference)
//!
//! HCP-MLR-PL evaluates on complete test labels: before evaluation it maps
//! `-1` to `0`, so every entry is a known positive or negative; the partial
//! labels (`0`) exist only in training. Our exclusion of unknown entries
//! reduces to its behaviour on such data, and matches the partial-label AP of
//! ASL's follow-up code (which filters out unlabelled entries and skips classes
//! without a positive). The figure HCP-MLR-PL logs as "mAP" is VOC2012-style
//! interpolated AP (`Compute_mAP_VOC2012`); the non-interpolated one that
//! docs/model.md §7 asks for is its "averageAP".
//!
//! # Cost
//!
//! `O(C · N log N)` for the APs (one sort per class) and `O(N · C)` for the
//! rest.

use anyhow::{bail, ensure, Result};
use std::fmt::Write as _;

/// How many top-scored classes per image the top-k metrics keep.
pub const TOP_K: usize = 3;

/// Non-interpolated average precision of one class.
///
/// `scores[i]` is the score of entry `i` (higher means more likely positive),
/// `positives[i]` whether it is a positive. Returns `None` when there is no
/// positive. Tied scores are one threshold, as in scikit-learn's
/// `average_precision_score` (see the module documentation), so the result
/// does not depend on the input order.
///
/// # Panics
///
/// If the two slices differ in length or a score is NaN (use [`evaluate`] for
/// checked input).
pub fn average_precision(scores: &[f32], positives: &[bool]) -> Option<f64> {
    assert_eq!(
        scores.len(),
        positives.len(),
        "average_precision: {} scores but {} labels",
        scores.len(),
        positives.len()
    );
    assert!(!scores.iter().any(|s| s.is_nan()), "average_precision: NaN score");
    let mut entries: Vec<(f32, bool)> = scores.iter().copied().zip(positives.iter().copied()).collect();
    ap_of_entries(&mut entries)
}

/// AP of `(score, is_positive)` entries (no NaN); sorts `entries` in place.
fn ap_of_entries(entries: &mut [(f32, bool)]) -> Option<f64> {
    let num_pos = entries.iter().filter(|e| e.1).count();
    if num_pos == 0 {
        return None;
    }
    // Descending; `total_cmp` is a total order and keeps 0.0 and -0.0 adjacent,
    // and the grouping below uses `==`, so they form one group.
    entries.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut sum = 0.0f64;
    let mut i = 0;
    while i < entries.len() {
        let score = entries[i].0;
        let mut group_tp = 0u64;
        while i < entries.len() && entries[i].0 == score {
            if entries[i].1 {
                group_tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        if group_tp > 0 {
            tp += group_tp;
            sum += group_tp as f64 * (tp as f64 / (tp + fp) as f64);
        }
    }
    Some(sum / num_pos as f64)
}

/// Every metric of docs/model.md §7, as fractions in `[0, 1]`.
///
/// The plain fields use predictions `score >= threshold`; the `_top3` fields
/// additionally require the class to be among the image's 3 highest scores.
/// See the module documentation for the exact definitions.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MultiLabelMetrics {
    /// Mean of `per_class_ap` over the classes that have an AP.
    pub map: f64,
    /// AP of each class over its known entries; `None` for a class without a
    /// known positive.
    pub per_class_ap: Vec<Option<f64>>,
    /// Per-class precision, averaged over the classes with a known positive.
    pub cp: f64,
    /// Per-class recall, averaged over the classes with a known positive.
    pub cr: f64,
    /// `2 CP CR / (CP + CR)`.
    pub cf1: f64,
    /// Overall (pooled) precision.
    pub op: f64,
    /// Overall (pooled) recall.
    pub or: f64,
    /// `2 OP OR / (OP + OR)`.
    pub of1: f64,
    /// CP with top-3 predictions.
    pub cp_top3: f64,
    /// CR with top-3 predictions.
    pub cr_top3: f64,
    /// CF1 with top-3 predictions.
    pub cf1_top3: f64,
    /// OP with top-3 predictions.
    pub op_top3: f64,
    /// OR with top-3 predictions.
    pub or_top3: f64,
    /// OF1 with top-3 predictions.
    pub of1_top3: f64,
}

/// Per-class counts over known entries: correct, predicted, ground truth.
#[derive(Default, Clone, Copy)]
struct Counts {
    nc: u64,
    np: u64,
    ng: u64,
}

impl Counts {
    /// Adds one known entry: whether it is a positive and whether it is predicted one.
    fn add(&mut self, positive: bool, predicted: bool) {
        self.ng += positive as u64;
        self.np += predicted as u64;
        self.nc += (positive && predicted) as u64;
    }
}

/// `2 a b / (a + b)`, 0 when `a + b == 0`.
fn harmonic(a: f64, b: f64) -> f64 {
    if a + b > 0.0 {
        2.0 * a * b / (a + b)
    } else {
        0.0
    }
}

/// (CP, CR, CF1, OP, OR, OF1) from per-class counts.
fn rates(counts: &[Counts]) -> (f64, f64, f64, f64, f64, f64) {
    let (mut cp_sum, mut cr_sum, mut classes) = (0.0f64, 0.0f64, 0usize);
    let (mut nc, mut np, mut ng) = (0u64, 0u64, 0u64);
    for k in counts {
        nc += k.nc;
        np += k.np;
        ng += k.ng;
        if k.ng > 0 {
            classes += 1;
            if k.np > 0 {
                cp_sum += k.nc as f64 / k.np as f64;
            }
            cr_sum += k.nc as f64 / k.ng as f64;
        }
    }
    let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
    let cp = if classes > 0 { cp_sum / classes as f64 } else { 0.0 };
    let cr = if classes > 0 { cr_sum / classes as f64 } else { 0.0 };
    let op = ratio(nc, np);
    let or = ratio(nc, ng);
    (cp, cr, harmonic(cp, cr), op, or, harmonic(op, or))
}

/// Marks, for one image's scores, the (up to) `k` highest-scored classes;
/// ties go to the lower class index.
fn top_k_mask(row: &[f32], k: usize, mask: &mut [bool]) {
    mask.iter_mut().for_each(|m| *m = false);
    if row.len() <= k {
        mask.iter_mut().for_each(|m| *m = true);
        return;
    }
    // `best` holds class indices sorted by (score desc, index asc).
    let mut best: Vec<usize> = Vec::with_capacity(k + 1);
    for (c, &s) in row.iter().enumerate() {
        // Position of c: after every kept class with score >= s (those come
        // first, having a higher score or the same score and a lower index).
        let pos = best.iter().position(|&b| row[b] < s).unwrap_or(best.len());
        if pos < k {
            best.insert(pos, c);
            best.truncate(k);
        }
    }
    for b in best {
        mask[b] = true;
    }
}

/// Computes every metric of docs/model.md §7.
///
/// * `scores`: probabilities, `[N * num_classes]` row-major (image-major).
/// * `labels`: same shape; `1` positive, `-1` negative, `0` unknown (unknown
///   entries are excluded from every metric).
/// * `threshold`: an entry is predicted positive when `score >= threshold`
///   (docs/model.md §7: 0.5).
///
/// # Errors
///
/// `num_classes == 0`; `scores` and `labels` of different lengths, or a length
/// that is not a multiple of `num_classes`; a NaN score or threshold; a label
/// other than `-1`, `0`, `1`; no known positive in any class (the mAP would be
/// undefined).
pub fn evaluate(scores: &[f32], labels: &[f32], num_classes: usize, threshold: f32) -> Result<MultiLabelMetrics> {
    ensure!(num_classes > 0, "evaluate: num_classes must be positive");
    ensure!(
        scores.len() == labels.len(),
        "evaluate: scores has {} entries but labels has {}",
        scores.len(),
        labels.len()
    );
    ensure!(
        scores.len().is_multiple_of(num_classes),
        "evaluate: {} scores are not a whole number of rows of {} classes",
        scores.len(),
        num_classes
    );
    ensure!(!threshold.is_nan(), "evaluate: threshold is NaN");
    let c_n = num_classes;
    let n = scores.len() / c_n;
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        bail!("evaluate: score of image {}, class {} is NaN", i / c_n, i % c_n);
    }
    if let Some(i) = labels.iter().position(|&l| l != 1.0 && l != 0.0 && l != -1.0) {
        bail!(
            "evaluate: label of image {}, class {} is {} (expected 1, -1 or 0 for unknown)",
            i / c_n,
            i % c_n,
            labels[i]
        );
    }

    // Threshold and top-3 counts, one pass over the images.
    let mut at_thr = vec![Counts::default(); c_n];
    let mut at_top = vec![Counts::default(); c_n];
    let mut mask = vec![false; c_n];
    for img in 0..n {
        let row = &scores[img * c_n..(img + 1) * c_n];
        let lab = &labels[img * c_n..(img + 1) * c_n];
        top_k_mask(row, TOP_K, &mut mask);
        for c in 0..c_n {
            if lab[c] == 0.0 {
                continue;
            }
            let gt = lab[c] > 0.0;
            let pred = row[c] >= threshold;
            let pred_top = pred && mask[c];
            at_thr[c].add(gt, pred);
            at_top[c].add(gt, pred_top);
        }
    }

    // Per-class AP over known entries.
    let mut entries: Vec<(f32, bool)> = Vec::with_capacity(n);
    let mut per_class_ap = Vec::with_capacity(c_n);
    for c in 0..c_n {
        entries.clear();
        entries.extend(
            (0..n).map(|img| img * c_n + c).filter(|&i| labels[i] != 0.0).map(|i| (scores[i], labels[i] > 0.0)),
        );
        per_class_ap.push(ap_of_entries(&mut entries));
    }
    let aps: Vec<f64> = per_class_ap.iter().flatten().copied().collect();
    ensure!(!aps.is_empty(), "evaluate: no class has a known positive label among {} images, so mAP is undefined", n);
    let map = aps.iter().sum::<f64>() / aps.len() as f64;

    let (cp, cr, cf1, op, or, of1) = rates(&at_thr);
    let (cp_top3, cr_top3, cf1_top3, op_top3, or_top3, of1_top3) = rates(&at_top);
    Ok(MultiLabelMetrics {
        map,
        per_class_ap,
        cp,
        cr,
        cf1,
        op,
        or,
        of1,
        cp_top3,
        cr_top3,
        cf1_top3,
        op_top3,
        or_top3,
        of1_top3,
    })
}

/// The candidate thresholds of [`f1_threshold`]: 0.01, 0.02, ..., 0.99.
const THRESHOLD_STEPS: u32 = 100;

/// The probability threshold, among 0.01, 0.02, ..., 0.99, at which CF1
/// over the known entries of `scores` is highest (the lowest such one on a
/// tie): a validation split chooses it, a test split is then measured at it.
/// Same inputs and errors as [`evaluate`].
pub fn f1_threshold(scores: &[f32], labels: &[f32], num_classes: usize) -> Result<f32> {
    // evaluate() checks the inputs once, so the loop below can trust them.
    evaluate(scores, labels, num_classes, 0.5)?;
    let mut best = (0.5f32, f64::NEG_INFINITY);
    for step in 1..THRESHOLD_STEPS {
        let threshold = step as f32 / THRESHOLD_STEPS as f32;
        let mut counts = vec![Counts::default(); num_classes];
        for (i, (&score, &label)) in scores.iter().zip(labels).enumerate() {
            if label != 0.0 {
                counts[i % num_classes].add(label > 0.0, score >= threshold);
            }
        }
        let cf1 = rates(&counts).2;
        if cf1 > best.1 {
            best = (threshold, cf1);
        }
    }
    Ok(best.0)
}

impl MultiLabelMetrics {
    /// CP, CR, CF1, OP, OR, OF1 at the threshold.
    pub fn threshold_rates(&self) -> [f64; 6] {
        [self.cp, self.cr, self.cf1, self.op, self.or, self.of1]
    }

    /// One line of the threshold metrics in percent, e.g. for a
    /// validation-chosen threshold: `CP 61.20 CR 40.00 CF1 48.38 OP ...`.
    pub fn threshold_line(&self) -> String {
        let names = ["CP", "CR", "CF1", "OP", "OR", "OF1"];
        let cells: Vec<String> =
            names.iter().zip(self.threshold_rates()).map(|(n, v)| format!("{n} {:.2}", 100.0 * v)).collect();
        cells.join(" ")
    }
    /// A compact text table, in percent: the mAP (with how many classes it
    /// averages), a row of CP CR CF1 OP OR OF1 at the threshold and one for
    /// top-3, and, when `class_names` is given, one AP row per class (`-` for
    /// a class without a known positive; a class beyond the given names is
    /// shown as `class <index>`).
    pub fn summary_table(&self, class_names: Option<&[String]>) -> String {
        let pct = |v: f64| format!("{:6.2}", 100.0 * v);
        let with_ap = self.per_class_ap.iter().filter(|a| a.is_some()).count();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "mAP {} (over {} of {} classes with a known positive)",
            pct(self.map).trim_start(),
            with_ap,
            self.per_class_ap.len()
        );
        let _ = writeln!(out, "{:<9} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}", "", "CP", "CR", "CF1", "OP", "OR", "OF1");
        for (name, v) in [
            ("threshold", self.threshold_rates()),
            ("top-3", [self.cp_top3, self.cr_top3, self.cf1_top3, self.op_top3, self.or_top3, self.of1_top3]),
        ] {
            let cells: Vec<String> = v.iter().map(|&x| pct(x)).collect();
            let _ = writeln!(out, "{:<9} {}", name, cells.join(" "));
        }
        if let Some(names) = class_names {
            let labels: Vec<String> = (0..self.per_class_ap.len())
                .map(|c| names.get(c).cloned().unwrap_or_else(|| format!("class {c}")))
                .collect();
            let width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0).max(5);
            let _ = writeln!(out, "{:<width$} {:>6}", "class", "AP");
            for (label, ap) in labels.iter().zip(&self.per_class_ap) {
                let cell = ap.map(pct).unwrap_or_else(|| format!("{:>6}", "-"));
                let _ = writeln!(out, "{:<width$} {}", label, cell);
            }
        }
        out
    }
}
