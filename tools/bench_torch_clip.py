#!/usr/bin/env python3
"""PyTorch CPU baseline for benches/clip_forward.rs: CLIP ViT-B/32 image
encoder at 224x224, batch 8, with OpenAI's own model code.

Setup (once, or whenever the files are missing): builds a seeded random
ViT-B/32 CLIP with ``clip.model.CLIP`` (the ``clip-anytorch`` wheel), with
layer norms and biases randomised too (OpenAI's init leaves them at 1 / 0) and
every weight rounded to f16, so the f16 file holds exactly the model that is
timed. It writes

  WEIGHTS  every parameter in OpenAI's state-dict naming, stored f16
  IO       ``input`` [B, 3, 224, 224] (seeded N(0, 1), f32) and ``expected``
           = ``model.encode_image(input)`` [B, 512] (f32)

Each run (later rounds reuse the files): loads WEIGHTS into the model, checks
``encode_image(input)`` against ``expected`` (||a - b|| / ||b|| <= 1e-4),
then times ``encode_image`` under ``torch.no_grad()`` and under
``torch.inference_mode()``: warm-up, then the median of N runs each, the two
modes interleaved run by run. The faster mode's median is the figure
reported (``median_s``), and which mode it was (``mode``).

Usage:
  python tools/bench_torch_clip.py --weights W.safetensors --io IO.safetensors
      [--runs N] [--warmup N] [--threads N] [--seed S] [--batch B]
      [--json PATH] [--setup-only] [--force-setup]
Threads: torch.set_num_threads(--threads, default os.cpu_count()).
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_clip_dumps as clip_dumps  # noqa: E402

FORMAT_VERSION = 1
TOLERANCE = 1e-4
# ViT-B/32 (OpenAI's "ViT-B/32" checkpoint's sizes).
VIT_B32 = dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
               context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12)


def build_model(seed):
    """The parity fixtures' random CLIP (layer norms and biases randomised),
    at ViT-B/32 size; weights exact in f16."""
    return clip_dumps.build_openai(VIT_B32, seed)


def rel_err(got, want):
    got, want = got.double(), want.double()
    return ((got - want).norm() / want.norm().clamp_min(1e-300)).item()


def setup(args):
    model = build_model(args.seed)
    sd = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    meta = {"format_version": str(FORMAT_VERSION), "config": json.dumps(VIT_B32), "seed": str(args.seed),
            "generator": "tools/bench_torch_clip.py"}
    save_file(sd, args.weights, metadata=meta)
    g = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randn(args.batch, 3, VIT_B32["image_resolution"], VIT_B32["image_resolution"], generator=g)
    with torch.no_grad():
        expected = model.encode_image(x).float()
    save_file({"input": x.contiguous(), "expected": expected.contiguous()}, args.io, metadata=meta)
    print(f"wrote {args.weights} ({os.path.getsize(args.weights) / 2**20:.0f} MiB) and {args.io}")


def load_model(args):
    model = clip_dumps.openai_clip.CLIP(**VIT_B32).float().eval()
    sd = {k: v.float() for k, v in load_file(args.weights).items()}
    model.load_state_dict(sd, strict=True)
    io = load_file(args.io)
    return model, io["input"].float(), io["expected"].float()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="f16 safetensors weights (OpenAI naming)")
    ap.add_argument("--io", required=True, help="safetensors with `input` and `expected`")
    ap.add_argument("--runs", type=int, default=int(os.environ.get("CLIP_BENCH_RUNS", 10)))
    ap.add_argument("--warmup", type=int, default=int(os.environ.get("CLIP_BENCH_WARMUP", 3)))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--json", default=os.environ.get("CLIP_BENCH_JSON_TORCH"))
    ap.add_argument("--setup-only", action="store_true", help="write the files, time nothing")
    ap.add_argument("--force-setup", action="store_true", help="rewrite the files even if present")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    if args.force_setup or not (os.path.exists(args.weights) and os.path.exists(args.io)):
        setup(args)
    if args.setup_only:
        return

    model, x, expected = load_model(args)
    batch = x.shape[0]
    # Check before timing, in each mode.
    errs = {}
    for mode, ctx in (("no_grad", torch.no_grad), ("inference_mode", torch.inference_mode)):
        with ctx():
            errs[mode] = rel_err(model.encode_image(x), expected)
        if not errs[mode] <= TOLERANCE:
            sys.exit(f"torch encode_image ({mode}) differs from the stored expected output: "
                     f"{errs[mode]:.3e} > {TOLERANCE}")

    print(f"torch {torch.__version__} CLIP ViT-B/32 encode_image, batch {batch}, {threads} threads, "
          f"warm-up {args.warmup} + median of {args.runs} runs per mode")
    contexts = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}
    for _ in range(args.warmup):
        for ctx in contexts.values():
            with ctx():
                model.encode_image(x)
    times = {m: [] for m in contexts}
    for _ in range(max(1, args.runs)):
        for mode, ctx in contexts.items():
            with ctx():
                t = time.perf_counter()
                out = model.encode_image(x)
                times[mode].append(time.perf_counter() - t)
            del out
    per_mode = {}
    for mode, ts in times.items():
        med = statistics.median(ts)
        per_mode[mode] = {"median_s": med, "min_s": min(ts), "times_s": ts, "images_per_s": batch / med,
                          "check_err": errs[mode]}
        print(f"  {mode:<15} median {med * 1e3:9.2f} ms/batch  min {min(ts) * 1e3:9.2f} ms  "
              f"{batch / med:8.2f} images/s  check err {errs[mode]:.1e}")
    best = min(per_mode, key=lambda m: per_mode[m]["median_s"])
    print(f"  faster mode: {best}")

    if args.json:
        doc = {
            "impl": f"torch {torch.__version__} clip.model.CLIP.encode_image",
            "torch_version": torch.__version__,
            "threads": threads,
            "batch": batch,
            "warmup": args.warmup,
            "runs": args.runs,
            "tolerance": TOLERANCE,
            "mode": best,
            "median_s": per_mode[best]["median_s"],
            "min_s": per_mode[best]["min_s"],
            "images_per_s": per_mode[best]["images_per_s"],
            "check_err": errs[best],
            "modes": per_mode,
            "mkldnn_enabled": torch.backends.mkldnn.is_available(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
