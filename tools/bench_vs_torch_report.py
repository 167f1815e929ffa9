#!/usr/bin/env python3
"""The report of tools/bench-vs-torch.sh: reads the per-round JSON files of
the engine (`bench --e2e --json`) and of tools/torch_reference.py from
$BENCH_WORK/<config>/ and prints (and with WRITE=1 writes to OUT) the
markdown of docs/benchmarks.md: one table of ratios, the first-step losses
compared, where the step's time goes. Exits 1 when the first losses of a
configuration disagree.

Usage (by the script): python tools/bench_vs_torch_report.py WRITE OUT
"""
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_report import write_report  # noqa: E402

# The first-step losses must agree this closely: f32 everywhere, or bf16
# towers (engine, optimized) against bf16 autocast (literal) on a GPU.
LOSS_TOLERANCE = {"f32": 1e-4, "bf16": 2e-2}
SIDES = ["engine", "optimized", "literal"]
CONFIG_TEXT = {
    "cpu-b32": "random ViT-B/32 at 224, batch 8, 20 classes, f32",
    "cpu-bundled": "bundled CLIP at 64, batch 32, 10 classes, f32 (`train`'s default run)",
    "gpu-b16-448": "random ViT-B/16 at 448, batch 32, 80 classes, bf16 towers",
    "gpu-b16-224": "random ViT-B/16 at 224, batch 64, 80 classes, bf16 towers",
    "gpu-b32-224": "random ViT-B/32 at 224, batch 128, 20 classes, bf16 towers",
}


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-30)


def load(work, config, rounds):
    runs = {s: [json.load(open(f"{work}/{config}/{s}-{r}.json")) for r in range(1, rounds + 1)] for s in SIDES}
    for r in runs["engine"]:
        r.update(r.pop("figures"))
    busy = [open(f"{work}/{config}/busy-{r}").read().split() for r in range(1, rounds + 1)]
    precision = open(f"{work}/{config}/flags").read().split()[0]
    return runs, busy, precision


def med(runs, side, kind):
    return statistics.median(r[kind]["median_ms"] for r in runs[side])


def main():
    write, out = sys.argv[1] == "1", sys.argv[2]
    E = os.environ
    work, rounds = E["BENCH_WORK"], int(E["BENCH_ROUNDS"])
    configs = E["BENCH_CONFIGS"].split()
    rows, loss_rows, phase_rows, loads, notes, failed = [], [], [], [], [], []
    for c in configs:
        runs, busy, precision = load(work, c, rounds)
        eng0, lit0, opt0 = runs["engine"][0], runs["literal"][0], runs["optimized"][0]
        batch = eng0["config"]["batch"]
        ms = {s: med(runs, s, "train") for s in SIDES}
        inf = {s: med(runs, s, "inference") for s in SIDES}
        peak = {s: max(r["peak_memory_mib"] for r in runs[s]) for s in SIDES}
        mfu = statistics.median(r["train"]["mfu"] for r in runs["engine"])
        # Process CPU time per step, all threads: what other processes on a
        # shared machine change least (the engine's is the sum of its phases').
        cpu = {"engine": statistics.median(sum(r["phases_cpu_ms"].values()) for r in runs["engine"])}
        for s in ["optimized", "literal"]:
            seen = [r["train_cpu_ms"] for r in runs[s] if "train_cpu_ms" in r]
            cpu[s] = statistics.median(seen) if seen else float("nan")
        per_round = " / ".join(f'{o["train"]["median_ms"] / e["train"]["median_ms"]:.2f}'
                               for e, o in zip(runs["engine"], runs["optimized"]))
        rows.append(
            f"| {c} | {ms['engine']:.0f} ({batch / ms['engine'] * 1e3:.2f}) | {ms['optimized']:.0f} "
            f"({batch / ms['optimized'] * 1e3:.2f}) | {ms['literal']:.0f} ({batch / ms['literal'] * 1e3:.2f}) | "
            f"**{ms['optimized'] / ms['engine']:.2f}x** ({per_round}) | **{ms['literal'] / ms['engine']:.2f}x** | "
            f"{inf['engine']:.0f} / {inf['optimized']:.0f} / {inf['literal']:.0f} | "
            f"{peak['engine']:.0f} / {peak['optimized']:.0f} / {peak['literal']:.0f} | "
            f"{cpu['engine']:.0f} / {cpu['optimized']:.0f} / {cpu['literal']:.0f} | {100 * mfu:.1f}% |")
        losses = {s: runs[s][0]["first_loss"] for s in SIDES}
        worst = max(rel(losses["engine"], losses["literal"]), rel(losses["engine"], losses["optimized"]),
                    rel(losses["optimized"], losses["literal"]))
        ok = worst <= LOSS_TOLERANCE[precision]
        if not ok:
            failed.append(c)
        loss_rows.append(f"| {c} | {losses['engine']:.6f} | {losses['optimized']:.6f} | {losses['literal']:.6f} | "
                         f"{worst:.1e} | {'agree' if ok else '**DISAGREE**'} (<= {LOSS_TOLERANCE[precision]:g}) |")
        phases = {k: statistics.median(r["phases_ms"][k] for r in runs["engine"]) for k in eng0["phases_ms"]}
        total = sum(phases.values())
        phase_rows.append(f"| {c} engine | " + " | ".join(
            f"{phases[k]:.0f} ({100 * phases[k] / total:.0f}%)" for k in
            ["vision", "text", "decoupling", "loss", "backward", "optimizer"]) + f" | {ms['engine']:.0f} |")
        for s in ["optimized", "literal"]:
            tp = {k: statistics.median(r["phases_ms"][k] for r in runs[s]) for k in runs[s][0]["phases_ms"]}
            tt = sum(tp.values())
            phase_rows.append(
                f"| {c} torch {s} | {tp['vision']:.0f} ({100 * tp['vision'] / tt:.0f}%) | "
                f"{tp['forward']:.0f} ({100 * tp['forward'] / tt:.0f}%), text + decoupling + loss | | | "
                f"{tp['backward']:.0f} ({100 * tp['backward'] / tt:.0f}%) | {tp['optimizer']:.0f} | {ms[s]:.0f} |")
        loads.append(f"{c}: " + "; ".join(f"round {r}: {b[0]}% before, " + ", ".join(b[1:])
                                          for r, b in enumerate(busy, 1)))
        compiled = {r["compiled"] for r in runs["optimized"]}
        errors = {r["compile_error"] for r in runs["optimized"] if r["compile_error"]}
        notes.append(
            f"{c}: {CONFIG_TEXT.get(c, c)}; text pass {eng0['text_length']} positions (engine, optimized) "
            f"against {lit0['config']['text_length']} (literal); matrix rate {eng0['matrix_rate']['gflops']:.0f} "
            f"GFLOP/s ({eng0['matrix_rate']['shape']} {eng0['matrix_rate']['dtype']}); step "
            f"{eng0['train']['model_gflop']:.1f} GFLOP; optimized torch.compile: "
            f"{'used' if compiled == {True} else 'not used' + (' (' + '; '.join(errors) + ')' if errors else '')}; "
            f"literal bf16 autocast: {'yes' if lit0['autocast_bf16'] else 'no'}")
    target = {"cpu": "engine >= 1.0x optimized and >= 2x literal",
              "cuda": "engine >= 1.2x optimized and >= 2x literal, lower peak memory"}[E["BENCH_DEVICE"]]
    md = f"""# The MLR-PL training step: engine against PyTorch

Generated by `tools/bench-vs-torch.sh` (its notes section, below, is kept).
Target ({E["BENCH_DEVICE"]}): {target}.

| | |
|---|---|
| date | {E["BENCH_DATE"]} |
| device | {E["BENCH_CPU"]} (CPU family {E["BENCH_CPUFAM"]}), {E["BENCH_CORES"]} cores; ISA flags seen: {E["BENCH_FLAGS"].strip()}; {runs["engine"][0]["device"]} |
| torch | {runs["optimized"][0]["torch_version"]}, {runs["optimized"][0]["threads"]} threads |
| commit | {E["BENCH_COMMIT"]} |
| command | `{E["BENCH_CMD"]}` ({rounds} rounds of {E["BENCH_STEPS"]} timed steps after {E["BENCH_WARMUP"]} warm-up, per process) |
| method | each side is one process per round (weights and inputs from the same files, written by `bench --e2e --export`); the side going first rotates; a figure is the median over rounds of each process's median step; speed ratio = torch ms / engine ms (> 1: engine faster) |
| other processes' CPU share | {" / ".join(loads)} |

Training step, ms (images/s); inference step (logits, no tape) ms; peak memory MiB (CPU: the process's peak
resident set; GPU: the engine's pool peak in use, torch's `max_memory_allocated`); CPU ms / step: process CPU
time of all threads (spin-waits included; on a loaded machine the figure other processes change least);
MFU: the engine's step model FLOPs (matrix products) per second over its measured matrix rate (measured in
the same process, fastest of five: on a loaded machine it can come out low and the MFU above 100%).

| config | engine | torch optimized | torch literal | engine vs optimized (per round) | engine vs literal | inference e / o / l | peak MiB e / o / l | CPU ms / step e / o / l | engine MFU |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

First step's loss (same weights, batch and initial parameters):

| config | engine | torch optimized | torch literal | largest relative difference | |
|---|---:|---:|---:|---:|---|
{chr(10).join(loss_rows)}

## Where the step's time goes

Mean ms per phase (share), median over rounds. Torch's forward after the vision tower is one phase.

| | vision | text | decoupling | loss | backward | optimizer | step (median) |
|---|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(phase_rows)}

{chr(10).join("* " + n for n in notes)}
"""
    write_report(md, out, write)
    if failed:
        sys.exit(f"the first-step losses disagree for {', '.join(failed)}")


if __name__ == "__main__":
    main()
