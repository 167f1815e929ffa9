#!/usr/bin/env python3
"""Generate the image-preprocessing fixtures used by tests/image_preprocess.rs.

Writes a few small deterministic images into tests/fixtures/images/ and, for
each of them, what PIL produces with CLIP's preprocessing, as raw uint8 RGB
pixels (row-major, interleaved R G B) taken after resize/crop and before
normalisation:

  * ``clip_center_crop`` R: torchvision ``Resize(R, interpolation=BICUBIC)``
    followed by ``CenterCrop(R)`` (what ``clip.load``'s transform does),
    reproduced here with PIL directly so that torch/torchvision are not needed:
      - shortest side -> R, other side -> int(R * long / short)
        (torchvision ``_compute_resized_output_size``); nothing is resampled
        when the size does not change;
      - ``PIL.Image.resize((w, h), Image.BICUBIC)``;
      - crop top/left = int(round((side - R) / 2.0)) (Python round, half to
        even; torchvision ``center_crop``).
  * ``resize`` R: plain ``PIL.Image.resize((R, R), Image.BICUBIC)`` (the
    MLR-PL mode); nothing is resampled when the image already is R x R.

Every image is converted with ``convert("RGB")`` first (the Rust pipeline
decodes to RGB before resampling). ``manifest.json`` lists the images, the
float32 normalisation table ((v / 255 - mean) / std in float32, torch's
ToTensor + Normalize order) as IEEE bit patterns, and one ``expected`` entry
per Pillow version with its cases and its decoded pixels of every image (so
that the resampler can be checked apart from the JPEG decoder). Pillow 13
changed the order of the two resampling passes for images whose height
shrinks much more than their width, so outputs are kept per version (files
identical across versions are stored once).

Usage:
  python tools/make_image_fixture.py                 # images + this Pillow's outputs
  python tools/make_image_fixture.py --add-expected  # add another Pillow's outputs
                                                     # (run from a venv with it)
The committed fixtures: images and outputs with Pillow 13.0.0, outputs added
with Pillow 12.3.0 (numpy 2.4). Needs Pillow and numpy.
"""

import argparse
import json
import os
import struct
import zlib

import numpy as np
import PIL
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

BICUBIC = Image.Resampling.BICUBIC if hasattr(Image, "Resampling") else Image.BICUBIC


def pattern(h, w, seed):
    """Gradient + seeded noise + a hard-edged block (exercises ringing and
    the 0/255 clipping of the bicubic overshoot)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.empty((h, w, 3), dtype=np.float64)
    img[..., 0] = 255.0 * x / max(w - 1, 1)
    img[..., 1] = 255.0 * y / max(h - 1, 1)
    img[..., 2] = 127.5 + 127.5 * np.sin((x + 2 * y) / 3.0)
    img += rng.normal(0.0, 30.0, size=img.shape)
    # a saturated black/white checker block in the middle third
    y0, y1, x0, x1 = h // 3, 2 * h // 3, w // 3, 2 * w // 3
    checker = ((np.arange(y0, y1)[:, None] // 2 + np.arange(x0, x1)[None, :] // 2) % 2) * 255.0
    img[y0:y1, x0:x1, :] = checker[..., None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_png_raw(path, arr, color_type, bit_depth):
    """Minimal PNG writer (PIL cannot write 16-bit RGB)."""
    h, w = arr.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\x00" + arr[y].astype(dtype).tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def make_images(out):
    """Returns [(file name, description)]."""
    made = []

    Image.fromarray(pattern(23, 37, 1), "RGB").save(os.path.join(out, "grad37x23.png"))
    made.append(("grad37x23.png", "RGB PNG, landscape, upsampled by both modes, crop offset 9.5 -> 10"))

    Image.fromarray(pattern(48, 64, 2), "RGB").save(os.path.join(out, "photo64x48.jpg"), quality=90)
    made.append(("photo64x48.jpg", "baseline JPEG, 4:2:0 chroma, quality 90, downsampled"))

    Image.fromarray(pattern(40, 48, 10), "RGB").save(os.path.join(out, "progressive48x40.jpg"), quality=85, progressive=True)
    made.append(("progressive48x40.jpg", "progressive JPEG, 4:2:0 chroma, quality 85"))

    gray = pattern(41, 29, 3)[..., 0]
    Image.fromarray(gray, "L").save(os.path.join(out, "gray29x41.png"))
    made.append(("gray29x41.png", "8-bit grayscale PNG, portrait, crop offset 6.5 -> 6"))

    rgba = np.concatenate([pattern(40, 40, 4), pattern(40, 40, 5)[..., :1]], axis=2)
    Image.fromarray(rgba, "RGBA").save(os.path.join(out, "rgba40x40.png"))
    made.append(("rgba40x40.png", "RGBA PNG with varying alpha (alpha dropped)"))

    Image.fromarray(pattern(77, 101, 6), "RGB").save(os.path.join(out, "big101x77.png"))
    made.append(("big101x77.png", "RGB PNG, downscale factors 2.4 and 4.2 (antialiasing support)"))

    rgb16 = pattern(30, 20, 7).astype(np.uint16) * 257 + np.random.default_rng(8).integers(0, 257, size=(30, 20, 3))
    write_png_raw(os.path.join(out, "rgb16_20x30.png"), rgb16.astype(np.uint16), 2, 16)
    made.append(("rgb16_20x30.png", "16-bit RGB PNG (PIL keeps the high byte)"))

    pal = Image.fromarray(pattern(12, 16, 9), "RGB").quantize(colors=16, method=Image.Quantize.MEDIANCUT)
    pal.save(os.path.join(out, "palette16x12.png"))
    made.append(("palette16x12.png", "palette PNG, 16 colours"))
    return made


def clip_center_crop(im, r):
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = r, int(r * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), BICUBIC)
    top = int(round((new_h - r) / 2.0))
    left = int(round((new_w - r) / 2.0))
    return im.crop((left, top, left + r, top + r)), (new_w, new_h), (left, top)


def plain_resize(im, r):
    if im.size != (r, r):
        im = im.resize((r, r), BICUBIC)
    return im, (r, r), (0, 0)


def pass_order(version):
    """Pillow 13 picks the pass order (vertical first when the height shrinks
    by more than twice as many pixels as the width); older ones always ran
    the horizontal pass first."""
    return "pillow13" if int(version.split(".")[0]) >= 13 else "horizontal_first"


def write_once(out, rel_dir, name, data):
    """Writes `data` under expected/, reusing an identical file written for
    another Pillow version (PNG decoding, most resize outputs)."""
    for existing in sorted(os.listdir(os.path.join(out, "expected"))):
        cand = os.path.join(out, "expected", existing, name)
        if os.path.isfile(cand) and open(cand, "rb").read() == data:
            return f"expected/{existing}/{name}"
    os.makedirs(os.path.join(out, "expected", rel_dir), exist_ok=True)
    with open(os.path.join(out, "expected", rel_dir, name), "wb") as f:
        f.write(data)
    return f"expected/{rel_dir}/{name}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "images"))
    ap.add_argument(
        "--add-expected",
        action="store_true",
        help="keep the images and the other Pillow versions' outputs; add (or replace) this Pillow's",
    )
    args = ap.parse_args()
    out = os.path.normpath(args.out)
    manifest_path = os.path.join(out, "manifest.json")

    if args.add_expected:
        with open(manifest_path) as f:
            manifest = json.load(f)
        manifest["expected"] = [e for e in manifest["expected"] if e["pillow_version"] != PIL.__version__]
    else:
        if os.path.isdir(os.path.join(out, "expected")):
            for dp, _, fns in os.walk(os.path.join(out, "expected"), topdown=False):
                for fn in fns:
                    os.remove(os.path.join(dp, fn))
                os.rmdir(dp)
        os.makedirs(out, exist_ok=True)
        images = [{"file": name, "description": desc} for name, desc in make_images(out)]
        # float32 normalisation table, torch order: ToTensor (x / 255) then
        # Normalize ((x - mean) / std), all in float32.
        table = []
        for c in range(3):
            v = np.arange(256, dtype=np.float32) / np.float32(255.0)
            v = (v - np.float32(CLIP_MEAN[c])) / np.float32(CLIP_STD[c])
            table.append([int(b) for b in v.astype(np.float32).view(np.uint32)])
        manifest = {
            "generator": "tools/make_image_fixture.py",
            "images_made_with": {"pillow": PIL.__version__, "numpy": np.__version__},
            "clip_mean": CLIP_MEAN,
            "clip_std": CLIP_STD,
            "normalize_table_f32_bits": table,
            "images": images,
            "expected": [],
        }
    os.makedirs(os.path.join(out, "expected"), exist_ok=True)

    tag = f"pillow-{PIL.__version__}"
    per_image = {}
    for img in manifest["images"]:
        name = img["file"]
        src = Image.open(os.path.join(out, name))
        src.load()
        img["width"], img["height"] = src.size
        rgb = src.convert("RGB")
        decoded = write_once(out, tag, f"{name}.decoded.rgb", np.asarray(rgb, dtype=np.uint8).tobytes())
        cases = []
        for mode, r, fn in (("clip_center_crop", 32, clip_center_crop), ("resize", 24, plain_resize)):
            res, resized, crop = fn(rgb, r)
            assert res.size == (r, r) and res.mode == "RGB"
            path = write_once(out, tag, f"{name}.{mode}{r}.rgb", np.asarray(res, dtype=np.uint8).tobytes())
            cases.append({"mode": mode, "size": r, "resized": list(resized), "crop": list(crop), "pixels": path})
        if src.mode == "RGBA":
            # CLIP's own transform converts to RGB *after* resize/crop, and
            # PIL resizes RGBA premultiplied; record how much that differs.
            a, _, _ = clip_center_crop(src, 32)
            b, _, _ = clip_center_crop(rgb, 32)
            d = np.abs(np.asarray(a.convert("RGB"), np.int16) - np.asarray(b, np.int16))
            print(f"{name}: CLIP order (resize RGBA, then RGB) vs RGB first: max diff {d.max()}, "
                  f"{int((d > 0).sum())} of {d.size} values differ")
        per_image[name] = {"pil_mode": src.mode, "decoded": decoded, "cases": cases}

    manifest["expected"].append({
        "pillow_version": PIL.__version__,
        "numpy_version": np.__version__,
        "pass_order": pass_order(PIL.__version__),
        "images": per_image,
    })
    manifest["expected"].sort(key=lambda e: [int(x) if x.isdigit() else x for x in e["pillow_version"].split(".")])
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(out) for fn in fns)
    print(f"{out}: expected outputs for Pillow {', '.join(e['pillow_version'] for e in manifest['expected'])}; "
          f"{total} bytes in all")


if __name__ == "__main__":
    main()
