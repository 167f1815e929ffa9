#!/usr/bin/env python3
"""PyTorch CPU matmul baseline for benches/gemm.rs.

Times torch.matmul (f32, CPU) on the same shapes as the engine benchmark
(``m x k x n``: op(A) is [m, k], op(B) is [k, n]; the ``-bT`` case multiplies
by the transpose view of a weight stored [n, k], as nn.Linear does), with the
thread count set to the number of cores, a warm-up, and the median of N runs.
Each shape is checked against a float64 product before it is timed.

Usage:
  python tools/bench_torch_matmul.py [--json PATH] [--runs N] [--warmup N]
                                     [--threads N] [FILTER]
"""

import argparse
import json
import os
import re
import statistics
import sys
import time

import torch

# (name, what, m, k, n, trans_b) -- keep in step with CASES in benches/gemm.rs.
CASES = [
    ("square-1024", "headline shape of the requirement", 1024, 1024, 1024, False),
    ("proj-512x768x768", "512 rows through a 768->768 projection", 512, 768, 768, False),
    ("vit-mlp-fc1", "ViT-B/16@448 MLP fc1: 785 tokens, 768->3072", 785, 768, 3072, False),
    ("vit-mlp-fc2", "ViT-B/16@448 MLP fc2: 785 tokens, 3072->768", 785, 3072, 768, False),
    ("vit-qkv-bT", "ViT-B/16@448 QKV, x @ W^T with W stored [2304, 768]", 785, 768, 2304, True),
]
TOLERANCE = 1e-4


def blas_backend():
    cfg = torch.__config__.show()
    lines = [l.strip(" -") for l in cfg.splitlines()]
    blas = [l for l in lines if "Math Kernel Library" in l or "OpenBLAS" in l or "MKL-DNN" in l]
    info = re.findall(r"BLAS_INFO=\w+", cfg) + [l for l in lines if l.startswith("CPU capability")]
    return "; ".join(dict.fromkeys(blas + info))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=os.environ.get("GEMM_BENCH_JSON_TORCH"))
    ap.add_argument("--runs", type=int, default=int(os.environ.get("GEMM_BENCH_RUNS", 15)))
    ap.add_argument("--warmup", type=int, default=int(os.environ.get("GEMM_BENCH_WARMUP", 3)))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("filter", nargs="?")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__} CPU matmul, {threads} threads, "
          f"warm-up {args.warmup} + median of {args.runs} runs")
    print(f"BLAS: {blas_backend()}")
    print(f"{'shape':<18} {'m x k x n':>16} {'bT':>3} {'median ms':>10} {'min ms':>10} {'GFLOP/s':>10} {'err':>9}")

    results = []
    for ci, (name, what, m, k, n, trans_b) in enumerate(CASES):
        if args.filter and args.filter not in name:
            continue
        g = torch.Generator().manual_seed(1000 + ci)
        a = torch.randn(m, k, generator=g, dtype=torch.float32)
        if trans_b:
            w = torch.randn(n, k, generator=g, dtype=torch.float32)
            b = w.t()  # a strided view, no copy: what F.linear hands to BLAS
        else:
            b = torch.randn(k, n, generator=g, dtype=torch.float32)

        got = torch.matmul(a, b)
        want = torch.matmul(a.double(), b.double())
        err = ((got.double() - want).abs().max() / want.pow(2).mean().sqrt()).item()
        if not err <= TOLERANCE:
            sys.exit(f"{name}: torch result differs from float64: {err:.3e} > {TOLERANCE}")
        del got, want

        for _ in range(args.warmup):
            torch.matmul(a, b)
        times = []
        for _ in range(max(1, args.runs)):
            t = time.perf_counter()
            out = torch.matmul(a, b)
            times.append(time.perf_counter() - t)
            del out
        med = statistics.median(times)
        best = min(times)
        flops = 2.0 * m * n * k
        gflops = flops / med / 1e9
        print(f"{name:<18} {f'{m}x{k}x{n}':>16} {'y' if trans_b else 'n':>3} "
              f"{med * 1e3:>10.3f} {best * 1e3:>10.3f} {gflops:>10.1f} {err:>9.1e}")
        results.append({
            "name": name, "what": what, "m": m, "k": k, "n": n, "trans_b": trans_b,
            "median_s": med, "min_s": best, "gflops": gflops, "gflops_best": flops / best / 1e9,
            "check_err": err,
        })

    if args.json:
        doc = {
            "impl": f"torch {torch.__version__} torch.matmul",
            "torch_version": torch.__version__,
            "blas": blas_backend(),
            "threads": threads,
            "warmup": args.warmup,
            "runs": args.runs,
            "tolerance": TOLERANCE,
            "results": results,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
