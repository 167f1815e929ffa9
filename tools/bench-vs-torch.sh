#!/usr/bin/env bash
# The MLR-PL training step, engine against PyTorch, side by side in one run:
# `mlrpl-engine bench --e2e` against tools/torch_reference.py's *literal*
# (OpenAI's CLIP code, CoOp-style prompts, the module as written) and
# *optimized* (the engine's algebra, SDPA, torch.compile) versions, on the
# same random weights and inputs (written once by `bench --e2e --export`),
# rounds interleaved with the side going first rotating. The three first-step
# losses are compared (they must agree: same model, same batch). Prints one
# table of ratios and writes docs/benchmarks.md (its notes section is kept).
#
# Usage: tools/bench-vs-torch.sh [--device cpu|cuda] [--config NAME]...
#                                [--rounds N] [--steps N] [--warmup N]
#                                [--engine BIN] [--python PY] [--wait-idle S]
#                                [--out FILE | --no-write]
#
#   --device D      cpu (default) or cuda; picks the default configurations.
#   --config NAME   one configuration (repeatable); default: every one of the
#                   device's. CPU: cpu-b32 (random ViT-B/32 at 224, batch 8,
#                   20 classes, f32) and cpu-bundled (the bundled CLIP at 64,
#                   batch 32, 10 classes: `train`'s default run). GPU (bf16
#                   towers): gpu-b16-448 (ViT-B/16 at 448, batch 32, 80
#                   classes), gpu-b16-224 (batch 64, 80 classes), gpu-b32-224
#                   (ViT-B/32 at 224, batch 128, 20 classes).
#   --rounds N      rounds (default 3); figures are medians over rounds of
#                   each process's median step.
#   --steps N       timed steps per process (default 10); --warmup N untimed
#                   ones first (default 2).
#   --engine BIN    the engine binary (default: cargo build --release, then
#                   target/release/mlrpl-engine).
#   --python PY     a Python with torch and clip-anytorch (default: the venv
#                   .venv-bench/, created with pip when missing).
#   --wait-idle S   wait up to S s (default 300) before each round for the
#                   other processes to use < 10% CPU; their share is recorded
#                   either way.
#   --out FILE      report (default docs/benchmarks.md); --no-write: print only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=tools/bench-lib.sh
source "$ROOT/tools/bench-lib.sh"

INVOCATION="tools/bench-vs-torch.sh${*:+ $*}"
DEVICE=cpu
CONFIGS=()
ROUNDS=3
STEPS=10
WARMUP=2
ENGINE=
PY=
WAIT_IDLE=300
OUT="docs/benchmarks.md"
WRITE=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --device) DEVICE="$2"; shift 2 ;;
        --config) CONFIGS+=("$2"); shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --steps) STEPS="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --engine) ENGINE="$2"; shift 2 ;;
        --python) PY="$2"; shift 2 ;;
        --wait-idle) WAIT_IDLE="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --no-write) WRITE=0; shift ;;
        -h|--help) sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-vs-torch: unknown argument $1" >&2; exit 2 ;;
    esac
done

# config NAME: the engine's model flags and precision for NAME.
config_flags() {
    case "$1" in
        cpu-b32) echo "--model vit-b32 --image-size 224 --batch 8 --classes 20 f32" ;;
        cpu-bundled) echo "--clip $ROOT/assets/clip/mini-clip.safetensors --batch 32 --classes 10 f32" ;;
        gpu-b16-448) echo "--model vit-b16 --image-size 448 --batch 32 --classes 80 bf16" ;;
        gpu-b16-224) echo "--model vit-b16 --image-size 224 --batch 64 --classes 80 bf16" ;;
        gpu-b32-224) echo "--model vit-b32 --image-size 224 --batch 128 --classes 20 bf16" ;;
        *) echo "bench-vs-torch: unknown --config $1 (cpu-b32, cpu-bundled, gpu-b16-448, gpu-b16-224, gpu-b32-224)" >&2
           exit 2 ;;
    esac
}
if ((${#CONFIGS[@]} == 0)); then
    case "$DEVICE" in
        cpu) CONFIGS=(cpu-b32 cpu-bundled) ;;
        cuda) CONFIGS=(gpu-b16-448 gpu-b16-224 gpu-b32-224) ;;
        *) echo "bench-vs-torch: --device must be cpu or cuda, not $DEVICE" >&2; exit 2 ;;
    esac
fi
for c in "${CONFIGS[@]}"; do config_flags "$c" >/dev/null; done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench-vs-torch.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

if [[ -z $PY ]]; then
    VENV="${BENCH_VENV:-$ROOT/.venv-bench}"
    ensure_bench_venv "$VENV" "import torch, clip.model, safetensors" \
        torch numpy clip-anytorch safetensors "setuptools<70"
    PY="$VENV/bin/python"
fi
if [[ -z $ENGINE ]]; then
    echo "== building the engine (cargo build --release)"
    cargo build --release --bin mlrpl-engine
    ENGINE="${CARGO_TARGET_DIR:-$ROOT/target}/release/mlrpl-engine"
fi
[[ -x $ENGINE ]] || { echo "bench-vs-torch: no engine binary at $ENGINE" >&2; exit 1; }

for c in "${CONFIGS[@]}"; do
    read -r -a flags <<<"$(config_flags "$c")"
    precision=${flags[-1]}
    unset 'flags[-1]'
    dir="$WORK/$c"
    mkdir -p "$dir"
    echo "== $c: writing the weights and inputs ($dir)"
    "$ENGINE" --device "$DEVICE" --precision "$precision" bench --e2e "${flags[@]}" --export "$dir"
    # The engine's model flags, with the exported files in place of --model.
    clip="$dir/clip.safetensors"
    run_flags=()
    for ((i = 0; i < ${#flags[@]}; i++)); do
        case "${flags[i]}" in
            --model) i=$((i + 1)) ;;
            --clip) clip="${flags[i + 1]}"; i=$((i + 1)) ;;
            *) run_flags+=("${flags[i]}") ;;
        esac
    done
    echo "$clip" >"$dir/clip-path"
    echo "$precision ${run_flags[*]}" >"$dir/flags"
    side_engine() {
        "$ENGINE" --device "$DEVICE" --precision "$precision" bench --e2e "${run_flags[@]}" --clip "$clip" \
            --inputs "$dir/inputs.safetensors" --runs "$STEPS" --warmup "$WARMUP" --json >"$dir/engine-$1.json"
    }
    side_torch() {
        "${TORCH_ENV[@]}" "$PY" tools/torch_reference.py --variant "$2" --device "$DEVICE" --clip "$clip" \
            --inputs "$dir/inputs.safetensors" --steps "$STEPS" --warmup "$WARMUP" --json "$dir/$2-$1.json"
    }
    sides=(engine literal optimized)
    for ((r = 1; r <= ROUNDS; r++)); do
        busy=$(wait_idle)
        order=("${sides[@]:$(((r - 1) % 3))}" "${sides[@]:0:$(((r - 1) % 3))}")
        echo "== $c round $r/$ROUNDS (other load before: ${busy}% CPU): ${order[*]}"
        others=()
        for side in "${order[@]}"; do
            if [[ $side == engine ]]; then
                run_measured "$WORK/other" side_engine "$r"
            else
                run_measured "$WORK/other" side_torch "$r" "$side"
            fi
            others+=("$side=$(cat "$WORK/other")")
        done
        echo "$busy ${others[*]}" >"$dir/busy-$r"
        echo "   other processes' CPU share: ${others[*]}"
    done
done

export_machine_info
export BENCH_WORK="$WORK" BENCH_ROUNDS="$ROUNDS" BENCH_STEPS="$STEPS" BENCH_WARMUP="$WARMUP" BENCH_DEVICE="$DEVICE"
export BENCH_CONFIGS="${CONFIGS[*]}" BENCH_CMD="$INVOCATION"
export BENCH_COMMIT="$(bench_commit src Cargo.toml Cargo.lock tools/torch_reference.py)"
"$PY" tools/bench_vs_torch_report.py "$WRITE" "$OUT"
