#!/usr/bin/env python3
"""Generate tests/fixtures/metrics_sklearn.json for tests/metrics.rs.

Seeded random multi-label cases (scores are float32 probabilities, labels are
1 positive / -1 negative / 0 unknown, both [N, C] row-major), each with the
expected metrics of src/metrics.rs computed here independently:

  * per-class AP with scikit-learn's ``average_precision_score`` on the known
    entries (label != 0) of the class; ``null`` for a class without a known
    positive (sklearn is not called for it); ``map`` = mean of the non-null APs.
    sklearn groups tied scores as one threshold, which the Rust code follows.
  * CP, CR, CF1, OP, OR, OF1 at ``threshold`` and their top-3 versions, in
    numpy, with the definitions documented in src/metrics.rs:
      - known entries only; predicted positive iff score >= threshold; top-3:
        additionally among the 3 highest scores of the image (ties to the lower
        class index, via a stable sort), all classes when C <= 3;
      - per class Nc (correct), Np (predicted), Ng (ground truth);
      - CP / CR: mean over classes with Ng > 0 of Nc/Np (0 when Np == 0) and
        Nc/Ng; OP = sum Nc / sum Np (0 when sum Np == 0), OR = sum Nc / sum Ng;
      - F1 = 2 P R / (P + R), 0 when P + R == 0.

The cases: (a) random scores and labels for several (N, C), with unknown
labels, a class without any positive and a class with only unknown labels;
(b) scores rounded to one decimal (many ties, some exactly at 0.5); (c) classes
whose labels are all positive.

Scores are stored as IEEE float32 bit patterns (``scores_bits``) so that the
Rust side reads exactly the values sklearn saw.

Usage: python tools/make_metrics_fixture.py [--out tests/fixtures/metrics_sklearn.json]
Needs numpy and scikit-learn (the committed file: numpy 2.4.6,
scikit-learn 1.9.1).
"""

import argparse
import json
import os

import numpy as np
import sklearn
from sklearn.metrics import average_precision_score

THRESHOLD = 0.5
TOP_K = 3


def make_case(rng, n, c, unknown_frac, decimals=None):
    """Random labels (with per-class positive rates) and scores correlated with them."""
    pos_rate = rng.uniform(0.05, 0.6, size=c)
    gt = rng.random((n, c)) < pos_rate
    labels = np.where(gt, 1, -1).astype(np.int64)
    labels[rng.random((n, c)) < unknown_frac] = 0
    logits = 1.5 * (2.0 * gt - 1.0) + rng.normal(0.0, 1.5, size=(n, c))
    scores = 1.0 / (1.0 + np.exp(-logits))
    if decimals is not None:
        scores = np.round(scores, decimals)
    return scores.astype(np.float32), labels


def sklearn_aps(scores, labels):
    aps = []
    for k in range(scores.shape[1]):
        known = labels[:, k] != 0
        y = (labels[known, k] == 1).astype(np.int64)
        s = scores[known, k]
        if y.sum() == 0:
            aps.append(None)
        else:
            aps.append(float(average_precision_score(y, s)))
    return aps


def threshold_metrics(pred, labels):
    known = labels != 0
    gt = labels == 1
    nc = np.sum(known & gt & pred, axis=0).astype(np.float64)
    np_ = np.sum(known & pred, axis=0).astype(np.float64)
    ng = np.sum(known & gt, axis=0).astype(np.float64)
    has_pos = ng > 0
    prec = np.where(np_ > 0, nc / np.maximum(np_, 1.0), 0.0)
    rec = nc / np.maximum(ng, 1.0)
    cp = float(prec[has_pos].mean()) if has_pos.any() else 0.0
    cr = float(rec[has_pos].mean()) if has_pos.any() else 0.0
    op = float(nc.sum() / np_.sum()) if np_.sum() > 0 else 0.0
    or_ = float(nc.sum() / ng.sum()) if ng.sum() > 0 else 0.0

    def f1(p, r):
        return 2.0 * p * r / (p + r) if p + r > 0 else 0.0

    return {"cp": cp, "cr": cr, "cf1": f1(cp, cr), "op": op, "or": or_, "of1": f1(op, or_)}


def expected(scores, labels):
    n, c = scores.shape
    aps = sklearn_aps(scores, labels)
    present = [a for a in aps if a is not None]
    out = {"per_class_ap": aps, "map": float(np.mean(present))}
    pred = scores >= np.float32(THRESHOLD)
    out.update(threshold_metrics(pred, labels))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :TOP_K]
    top = np.zeros((n, c), dtype=bool)
    top[np.arange(n)[:, None], order] = True
    for key, v in threshold_metrics(pred & top, labels).items():
        out[key + "_top3"] = v
    return out


def record(name, scores, labels):
    n, c = scores.shape
    case = {
        "name": name,
        "n": n,
        "c": c,
        "scores_bits": scores.astype(np.float32).reshape(-1).view(np.uint32).tolist(),
        "labels": labels.reshape(-1).tolist(),
    }
    case.update(expected(scores, labels))
    return case


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures", "metrics_sklearn.json"))
    args = ap.parse_args()
    rng = np.random.default_rng(20240607)
    cases = []

    # (a) random scores and labels.
    for n, c in [(8, 3), (40, 2), (50, 5), (120, 10), (200, 7)]:
        scores, labels = make_case(rng, n, c, unknown_frac=0.3)
        if c >= 5:
            labels[:, 1] = np.where(labels[:, 1] == 0, 0, -1)  # no positive
            labels[:, 3] = 0  # nothing known
        cases.append(record(f"random_{n}x{c}", scores, labels))
    scores, labels = make_case(rng, 150, 6, unknown_frac=0.0)
    cases.append(record("random_150x6_complete", scores, labels))

    # (b) many ties.
    scores, labels = make_case(rng, 200, 6, unknown_frac=0.2, decimals=1)
    cases.append(record("ties_200x6", scores, labels))
    scores, labels = make_case(rng, 60, 4, unknown_frac=0.0, decimals=1)
    cases.append(record("ties_60x4_complete", scores, labels))
    scores, labels = make_case(rng, 300, 3, unknown_frac=0.1, decimals=0)
    cases.append(record("ties_300x3_binary_scores", scores, labels))

    # (c) every label positive for some classes.
    scores, labels = make_case(rng, 30, 4, unknown_frac=0.2)
    labels[:, 1] = 1  # all positive, none unknown
    labels[:, 2] = np.where(labels[:, 2] == 0, 0, 1)  # all known are positive
    cases.append(record("all_positive_30x4", scores, labels))

    doc = {
        "generator": "tools/make_metrics_fixture.py",
        "sklearn_version": sklearn.__version__,
        "numpy_version": np.__version__,
        "threshold": THRESHOLD,
        "top_k": TOP_K,
        "cases": cases,
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out}: {len(cases)} cases, {os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
