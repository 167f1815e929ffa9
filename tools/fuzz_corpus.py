#!/usr/bin/env python3
"""Writes the small seed corpus of the fuzz targets (fuzz/corpus/<target>/):
valid inputs of each loader, so that the fuzzer starts past the first checks.
Run from the repository root: python3 tools/fuzz_corpus.py"""

import json
import re
import shutil
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def write(target, name, data):
    path = CORPUS / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None, dtype="F32"):
    """tensors: {name: (shape, values)}; values as floats."""
    header, blobs, offset = {}, [], 0
    size = {"F32": 4, "F16": 2}[dtype]
    for name, (shape, values) in sorted(tensors.items()):
        if dtype == "F32":
            blob = struct.pack(f"<{len(values)}f", *values)
        else:
            blob = struct.pack(f"<{len(values)}e", *values)
        assert len(blob) == size * len(values)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def micro_clip(width=4, layers=1, patch=2, grid=2, vocab=10, context=8, embed=4, naming="openai"):
    """A CLIP in OpenAI's naming small enough to fuzz (a few KiB)."""
    t = {}

    def put(name, *shape):
        n = 1
        for d in shape:
            n *= d
        t[name] = (shape, [((i * 37) % 17 - 8) / 16.0 for i in range(n)])

    def block(prefix):
        put(f"{prefix}.attn.in_proj_weight", 3 * width, width)
        put(f"{prefix}.attn.in_proj_bias", 3 * width)
        put(f"{prefix}.attn.out_proj.weight", width, width)
        put(f"{prefix}.attn.out_proj.bias", width)
        for ln in ["ln_1", "ln_2"]:
            put(f"{prefix}.{ln}.weight", width)
            put(f"{prefix}.{ln}.bias", width)
        put(f"{prefix}.mlp.c_fc.weight", 4 * width, width)
        put(f"{prefix}.mlp.c_fc.bias", 4 * width)
        put(f"{prefix}.mlp.c_proj.weight", width, 4 * width)
        put(f"{prefix}.mlp.c_proj.bias", width)

    put("visual.conv1.weight", width, 3, patch, patch)
    put("visual.class_embedding", width)
    put("visual.positional_embedding", grid * grid + 1, width)
    for ln in ["ln_pre", "ln_post"]:
        put(f"visual.{ln}.weight", width)
        put(f"visual.{ln}.bias", width)
    put("visual.proj", width, embed)
    put("token_embedding.weight", vocab, width)
    put("positional_embedding", context, width)
    put("ln_final.weight", width)
    put("ln_final.bias", width)
    put("text_projection", width, embed)
    put("logit_scale")
    for i in range(layers):
        block(f"visual.transformer.resblocks.{i}")
        block(f"transformer.resblocks.{i}")
    return t


def main():
    shutil.rmtree(CORPUS, ignore_errors=True)
    meta = {"vision_heads": "1", "text_heads": "1"}
    write("weights", "micro-clip-openai", safetensors(micro_clip(), meta))
    write("weights", "micro-clip-2-layers-f16", safetensors(micro_clip(layers=2), meta, dtype="F16"))
    write("weights", "no-metadata", safetensors({"a": ((2,), [1.0, 2.0])}))

    names = re.findall(r'"([^"]+)"', re.search(
        r"COCO_CATEGORIES[^=]*=\s*\[(.*?)\];", (ROOT / "src/data/coco.rs").read_text(), re.S).group(1))
    assert len(names) == 80, len(names)
    cats = [{"id": i + 1 + (i // 10), "name": n, "supercategory": "x"} for i, n in enumerate(names)]
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4},
                   {"id": 7, "file_name": "b.jpg", "width": 4, "height": 4}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0},
                        {"id": 2, "image_id": 7, "category_id": cats[-1]["id"], "iscrowd": 1}],
        "categories": cats,
    }
    write("coco_json", "two-images", json.dumps(coco))

    write("voc_xml", "two-objects", "<annotation><filename>000001.jpg</filename>"
          "<object><name>dog</name><difficult>0</difficult></object>"
          "<object><name>person</name><difficult>1</difficult></object></annotation>")
    write("voc_xml", "empty", "<annotation/>")

    write("list", "csv", b"\x00path,labels\na.png,cat;?dog\n\"b,c.png\",dog\n# comment\nd.png\n")
    write("list", "csv-classes-skip", b"\x06a.png,cat\nb.png,?dog;cat\n")
    write("list", "json", b'\x01[{"path": "a.png", "labels": ["cat"], "unknown": ["dog"]}, {"path": "b.png"}]')

    mask = {"format": "mlrpl-label-mask", "version": 1, "num_items": 4, "num_classes": 3, "known_ratio": 0.5,
            "seed": 0, "num_kept": 6, "mask_base64": "VQU="}
    write("label_mask", "4x3", json.dumps(mask))

    for i, text in enumerate(["a photo of a cat.", "Two dogs & a CAT!", "héllo wörld 123 — ok?", "", "X X X X dog."]):
        write("tokenizer", f"text-{i}", text)

    for name in ["palette16x12.png", "gray29x41.png", "grad37x23.png", "photo64x48.jpg"]:
        write("image", name, (ROOT / "tests/fixtures/images" / name).read_bytes())


if __name__ == "__main__":
    main()
