#!/usr/bin/env python3
"""Joins the engine's bench.json and PyTorch's torch.json (written by
tools/bench_torch_kernels.py from the same case list) into report.md: one
row per case with both times and the ratio torch time / engine time (> 1:
the engine is faster), the devices, dates and commands of both runs.

Usage:
  python tools/bench_kernels_report.py DIR [--engine DIR/bench.json] [--torch DIR/torch.json] [--out DIR/report.md]
Needs no torch: only the standard library.
"""

import argparse
import json
import math
import os
import sys


def fmt_ms(ms):
    return f"{ms:.1f}" if ms >= 100 else f"{ms:.3f}" if ms >= 1 else f"{ms:.4f}"


def fmt_rate(value):
    return f"{value:.0f}" if value >= 100 else f"{value:.2f}"


def engine_rate_per_ms(fig):
    """The engine's amount of work per call, so torch's throughput is the
    same work over torch's time."""
    return fig["throughput"] * fig["ms"]


def report(engine, torch_doc):
    by_id = {f["id"]: f for f in torch_doc["figures"]}
    same_device = engine["device_kind"] == torch_doc["device_kind"]
    rows, ratios = [], []
    for fig in engine["figures"]:
        t = by_id.get(fig["id"])
        check = "reference" if fig["check_error"] is None else f"{fig['check_error']:.1e}"
        if t is None:
            rows.append(f"| {fig['id']} | {fig['shape']} | {fmt_ms(fig['ms'])} | engine only | | {fmt_rate(fig['throughput'])} {fig['unit']} | | {check} |")
            continue
        ratio = t["ms"] / fig["ms"]
        ratios.append(ratio)
        torch_rate = engine_rate_per_ms(fig) / t["ms"]
        rows.append(
            f"| {fig['id']} | {fig['shape']} | {fmt_ms(fig['ms'])} | {fmt_ms(t['ms'])} | **{ratio:.2f}x** | "
            f"{fmt_rate(fig['throughput'])} {fig['unit']} | {fmt_rate(torch_rate)} {fig['unit']} | {check} |"
        )
    geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios)) if ratios else float("nan")
    warning = "" if same_device else (
        f"\n**Warning: the engine ran on {engine['device_kind']} and PyTorch on {torch_doc['device_kind']}; "
        "the ratios compare different devices.**\n"
    )
    impls = "\n".join(f"* `{f['id']}`: {f['impl']}" for f in torch_doc["figures"])
    bandwidth = copy_bandwidth_lines(engine, torch_doc)
    return f"""# Kernel benchmarks: engine vs PyTorch

**{len(ratios)} ops timed on both sides; geometric mean of torch time / engine time: {geomean:.2f}x (> 1: engine faster).**
{warning}
| | engine | PyTorch |
| --- | --- | --- |
| device | {engine['device']} | {torch_doc['device']} |
| date | {engine['date']} | {torch_doc['date']} |
| version | mlrpl-engine {engine['engine_version']}, commit {engine['commit']} | torch {torch_doc['torch_version']}, {torch_doc['threads']} CPU threads |
| command | `{engine['command']}` | `{torch_doc['command']}` |
| method | {engine['warmup']} warm-up calls, median of {engine['runs']} samples of >= {engine['min_sample_ms']} ms | {torch_doc['warmup']} warm-up calls, median of {torch_doc['runs']} samples of >= {torch_doc['min_sample_ms']} ms |
| check | {engine['reference']} | not checked (same op, independent random inputs) |

Ratio = torch ms / engine ms per call, same shapes (read from the engine's bench.json), same device kind, same
timing method (CUDA: stream time between events around back-to-back calls; CPU: wall clock). Throughput counts
the engine's work (bytes each tensor read or written once, or FLOPs) for both sides.

| benchmark | shape | engine ms | torch ms | torch / engine | engine | torch | engine check error |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}

{bandwidth}
PyTorch calls:

{impls}
"""


def copy_bandwidth_lines(engine, torch_doc):
    """The masked BCE steps' GB/s as a share of the copy bandwidth PyTorch
    measured on its device (issue 16's target: >= 80%), or nothing when
    torch.json has no copy figure."""
    copy = torch_doc.get("copy_bandwidth")
    if not copy:
        return ""
    lines = [f"Copy bandwidth ({copy['impl']}, bytes read plus written): {copy['gb_per_s']:.0f} GB/s on {torch_doc['device']}.", ""]
    for fig in engine["figures"]:
        if fig["op"] == "masked_bce_step" and fig["unit"] == "GB/s":
            share = fig["throughput"] / copy["gb_per_s"]
            lines.append(f"* `{fig['id']}` ({fig['shape']}): {fig['throughput']:.0f} GB/s, {100 * share:.0f}% of the copy bandwidth")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="folder holding bench.json and torch.json")
    ap.add_argument("--engine")
    ap.add_argument("--torch")
    ap.add_argument("--out")
    args = ap.parse_args()
    paths = {
        "engine": args.engine or os.path.join(args.dir, "bench.json"),
        "torch": args.torch or os.path.join(args.dir, "torch.json"),
    }
    docs = {}
    for side, path in paths.items():
        try:
            with open(path) as f:
                docs[side] = json.load(f)
        except (OSError, ValueError) as e:
            sys.exit(f"cannot read the {side} figures {path}: {e}")
    md = report(docs["engine"], docs["torch"])
    out = args.out or os.path.join(args.dir, "report.md")
    with open(out, "w") as f:
        f.write(md)
    print(md)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
