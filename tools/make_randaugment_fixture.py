#!/usr/bin/env python3
"""Generate the RandAugment parity fixture used by tests/rand_augment.rs.

torchvision's ``RandAugment(num_ops, magnitude, num_magnitude_bins=31)``
draws, for each of its ``num_ops`` steps, an op and (for signed ops) a sign,
then calls ``torchvision.transforms.autoaugment._apply_op`` with the op's
magnitude at bin ``magnitude`` of ``_augmentation_space``. This script makes
those calls itself for fixed (op, bin, sign) cases, so the random draws are
left out and every op is checked on its own:

  * the images: a few small deterministic PIL RGB images (one not square, so
    that width and height cannot be swapped unnoticed; one of low contrast,
    so that AutoContrast and Equalize have work to do);
  * the magnitudes: ``RandAugment()._augmentation_space(31, (H, W))``, the
    float32 values of torch.linspace written as their shortest decimals (the
    translations for the fixture sizes and for 224 and 448, the only ones
    that depend on the size), so the Rust tables are held to torch's to the
    bit;
  * the outputs: ``_apply_op(img, op, +/-magnitude, NEAREST, fill=None)`` on
    the PIL image (DualCoOp's training transform augments PIL images, after
    the resize and before ToTensor), as raw uint8 RGB (row-major,
    interleaved).

Files written to tests/fixtures/randaugment/ (about 90 KB in all):
  manifest.json        versions, magnitude tables, images, cases
  <image>.rgb          each input image
  <image>.expected.rgb the outputs of every case of that image, concatenated
                       in manifest order (case i at offset i * W * H * 3)

Usage (the ignored venv of tools/bench-lib.sh has torch, torchvision, PIL and
numpy):
  .venv-bench/bin/python tools/make_randaugment_fixture.py
The committed fixture: torch 2.12.1, torchvision 0.27.1, Pillow 13.0.0,
numpy 2.4.
"""

import argparse
import json
import os
import re

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image
from torchvision.transforms import InterpolationMode, RandAugment
from torchvision.transforms.autoaugment import _apply_op

NUM_BINS = 31
# Bins and signs of every signed op: torchvision's default magnitude (9) both
# ways (for the colour ops: one factor below 1, one above) and the largest
# one; Posterize and Solarize (unsigned) at a few bins.
SIGNED_CASES = [(9, 1), (9, -1), (30, 1)]
UNSIGNED_BINS = {"Posterize": [9, 30], "Solarize": [0, 9, 30], "AutoContrast": [0], "Equalize": [0], "Identity": [0]}
GEOMETRIC = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}


def pattern(h, w, seed, low, high):
    """Gradients, seeded noise and a saturated checker block, scaled into
    [low, high]: every pixel distinct enough that a sampling error shows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.empty((h, w, 3), dtype=np.float64)
    img[..., 0] = 255.0 * x / (w - 1)
    img[..., 1] = 255.0 * y / (h - 1)
    img[..., 2] = 127.5 + 127.5 * np.sin((x + 2 * y) / 3.0)
    img += rng.normal(0.0, 25.0, size=img.shape)
    y0, y1, x0, x1 = h // 3, 2 * h // 3, w // 3, 2 * w // 3
    checker = ((np.arange(y0, y1)[:, None] + np.arange(x0, x1)[None, :]) % 2) * 255.0
    img[y0:y1, x0:x1, :] = checker[..., None]
    img = low + np.clip(img, 0, 255) * (high - low) / 255.0
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# (name, width, height, seed, low, high, which ops, description). Each case
# of every image costs W * H * 3 bytes, so only the square image gets all ops.
IMAGES = [
    ("square20", 20, 20, 1, 0, 255, "all", "20x20, full range: every op"),
    ("wide24x16", 24, 16, 2, 0, 255, "geometric", "24 wide, 16 high: each geometric op uses the right axis"),
    ("dim16", 16, 16, 3, 60, 140, "colour", "16x16, levels 60..140: the colour and histogram ops have work to do"),
]


def shortest_f32(value):
    """The shortest decimal that reads back as the same float32."""
    return float(np.format_float_positional(np.float32(value), unique=True, trim="0"))


def magnitude_tables(height, width):
    """{op: [31 magnitudes]} of the ops with a table: float32 values written
    as their shortest decimals, or ints (Posterize)."""
    space = RandAugment()._augmentation_space(NUM_BINS, (height, width))
    tables = {}
    for name, (values, _signed) in space.items():
        if values.ndim == 0:
            continue
        if values.dtype.is_floating_point:
            assert values.dtype == torch.float32
            tables[name] = [shortest_f32(v) for v in values.tolist()]
        else:
            tables[name] = [int(v) for v in values.tolist()]
    return tables


def compact_json(value):
    """json.dumps with indent 1, but each list of numbers and each object
    without nested containers on one line (a table or a case per line)."""
    text = json.dumps(value, indent=1)
    text = re.sub(r"\[\s+([-+0-9.e,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    return re.sub(r"\{\s+([^{}\[\]]+?)\s+\}", lambda m: "{" + " ".join(m.group(1).split()) + "}", text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "randaugment"))
    args = ap.parse_args()
    out = os.path.normpath(args.out)
    os.makedirs(out, exist_ok=True)

    sizes = sorted({(h, w) for _, w, h, *_ in IMAGES} | {(224, 224), (448, 448)})
    manifest = {
        "generator": "tools/make_randaugment_fixture.py",
        "versions": {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "pillow": PIL.__version__,
            "numpy": np.__version__,
        },
        "num_magnitude_bins": NUM_BINS,
        "op_order": list(RandAugment()._augmentation_space(NUM_BINS, (8, 8)).keys()),
        "signed": {k: v[1] for k, v in RandAugment()._augmentation_space(NUM_BINS, (8, 8)).items()},
        "magnitudes": {k: v for k, v in magnitude_tables(8, 8).items() if not k.startswith("Translate")},
        "translate_magnitudes": [],
        "images": [],
    }
    # Only the translations depend on the image size.
    for h, w in sizes:
        tables = magnitude_tables(h, w)
        assert all(tables[k] == v for k, v in manifest["magnitudes"].items())
        manifest["translate_magnitudes"].append(
            {"height": h, "width": w, "TranslateX": tables["TranslateX"], "TranslateY": tables["TranslateY"]}
        )
    for name, w, h, seed, low, high, which, description in IMAGES:
        pixels = pattern(h, w, seed, low, high)
        with open(os.path.join(out, f"{name}.rgb"), "wb") as f:
            f.write(pixels.tobytes())
        img = Image.fromarray(pixels, "RGB")
        space = RandAugment()._augmentation_space(NUM_BINS, (h, w))
        cases, outputs = [], []
        for op, (values, signed) in space.items():
            if which != "all" and (op in GEOMETRIC) != (which == "geometric"):
                continue
            plan = SIGNED_CASES if signed else [(b, 1) for b in UNSIGNED_BINS[op]]
            for bin_, sign in plan:
                # As RandAugment.forward: the bin's value as a Python float, negated for sign -1.
                magnitude = float(values[bin_].item()) if values.ndim > 0 else 0.0
                if sign < 0:
                    magnitude *= -1.0
                result = _apply_op(img, op, magnitude, interpolation=InterpolationMode.NEAREST, fill=None)
                assert result.size == (w, h) and result.mode == "RGB"
                outputs.append(np.asarray(result, dtype=np.uint8).tobytes())
                cases.append({"op": op, "bin": bin_, "sign": sign, "magnitude": magnitude})
        with open(os.path.join(out, f"{name}.expected.rgb"), "wb") as f:
            f.write(b"".join(outputs))
        manifest["images"].append(
            {"name": name, "width": w, "height": h, "description": description, "cases": cases}
        )
    with open(os.path.join(out, "manifest.json"), "w") as f:
        f.write(compact_json(manifest) + "\n")
    total = sum(os.path.getsize(os.path.join(out, fn)) for fn in os.listdir(out))
    print(f"{out}: {sum(len(i['cases']) for i in manifest['images'])} cases, {total} bytes in all")


if __name__ == "__main__":
    main()
