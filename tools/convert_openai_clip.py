#!/usr/bin/env python3
"""Converts an OpenAI CLIP checkpoint (.pt, TorchScript archive as released
by OpenAI, or a plain state dict) to safetensors in OpenAI's naming, which
`mlrpl-engine` loads directly.

  pip install torch safetensors
  python3 tools/convert_openai_clip.py ViT-B-16.pt ViT-B-16.safetensors [--dtype f16|bf16|f32]

The released files store f16 weights; by default their dtype is kept. The
scalars OpenAI's loader drops (input_resolution, context_length, vocab_size)
are dropped here too: the engine infers every size from the weight shapes.
"""
import argparse
import sys

import torch
from safetensors.torch import save_file

DROPPED = {"input_resolution", "context_length", "vocab_size"}
DTYPES = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}


def load_state_dict(path):
    try:
        return torch.jit.load(path, map_location="cpu").state_dict()
    except RuntimeError:
        pass  # not TorchScript: a pickled state dict
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        sys.exit(f"{path}: neither a TorchScript CLIP nor a state dict")
    return obj


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--dtype", choices=sorted(DTYPES), help="store as this dtype (default: keep)")
    args = ap.parse_args()
    sd = load_state_dict(args.src)
    sd = {k.removeprefix("module."): v for k, v in sd.items() if k not in DROPPED and torch.is_tensor(v)}
    if "visual.class_embedding" not in sd:
        sys.exit(f"{args.src}: no `visual.class_embedding`: not a ViT CLIP in OpenAI's naming")
    if args.dtype:
        sd = {k: v.to(DTYPES[args.dtype]) if v.is_floating_point() else v for k, v in sd.items()}
    save_file({k: v.contiguous() for k, v in sd.items()}, args.dst, metadata={"source": args.src})
    print(f"wrote {args.dst}: {len(sd)} tensors")


if __name__ == "__main__":
    main()
