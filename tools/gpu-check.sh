#!/usr/bin/env bash
# Every GPU check of the project, in one run, on a machine with an NVIDIA GPU,
# the CUDA 13 driver and compute-sanitizer but no Rust. Run it from a bundle
# made by tools/gpu-bundle.sh (it is copied there as gpu-bundle/gpu-check.sh):
#
#   gpu-bundle/gpu-check.sh OUTDIR
#
# Writes OUTDIR/results.md (device, driver, date, commit, one row per check
# with PASS / FAIL (exit code) / TIMEOUT and its time) and OUTDIR/<check>.log
# with each check's raw output. A failing check is recorded and the script
# goes on; it exits 1 if any check did not pass. The whole run is capped at
# TOTAL_S seconds (default 450, i.e. under 8 minutes): each check gets the
# smaller of its own limit and what is left.
#
# Checks:
#   cuda_ops        every primitive, CUDA vs CPU, forward and backward
#   cuda_training   one MLR-PL step and one train() epoch, CUDA vs CPU
#   kernels_nvrtc   the NVRTC fallback compiles every kernel
#   train_smoke     mlrpl-engine train --device cuda, 1 epoch, embedded set
#                   (--precision auto: bf16 towers)
#   train_smoke_f32 the same with --precision f32
#   bench           mlrpl-engine bench --device cuda --quick: every kernel case
#                   checked against the CPU backend, then timed; end-to-end
#                   images/s (OUTDIR/bench/bench.json, bench.md)
#   bench_torch     tools/bench_torch_kernels.py: the same cases with PyTorch
#                   on the same GPU (OUTDIR/bench/torch.json)
#   bench_report    tools/bench_kernels_report.py: OUTDIR/bench/report.md,
#                   torch time / engine time per case
#   memcheck        compute-sanitizer --tool memcheck on the training-step
#                   tests of cuda_training (one f32 and one bf16 MLR-PL step,
#                   3 SGD steps each: every kernel of a step, cuBLAS and
#                   cuBLASLt included), not a whole epoch, which the
#                   sanitizers slow down tenfold or more
#   racecheck       the same under compute-sanitizer --tool racecheck
# The test binaries run with MLRPL_REQUIRE_GPU=1 and MLRPL_REQUIRE_NVRTC=1,
# so a test that cannot find the GPU or libnvrtc fails instead of skipping.
# The bench checks run before the sanitizers: they are short and bounded,
# the sanitizer runs take whatever time is left.
set -uo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
bundle=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
out=$1
mkdir -p "$out"
out=$(cd "$out" && pwd -P)
total_s=${TOTAL_S:-450}
started=$(date +%s)
results="$out/results.md"
engine="$bundle/bin/mlrpl-engine"
export MLRPL_REQUIRE_GPU=1 MLRPL_REQUIRE_NVRTC=1 MLRPL_KERNELS_DIR="$bundle/kernels"
# libnvrtc for the NVRTC test, where a CUDA toolkit is installed.
for lib in "${CUDA_HOME:-/usr/local/cuda}/lib64" /usr/local/cuda/lib64; do
  [[ -d "$lib" ]] && export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)

gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
commit=$(sed -n 's/^commit: //p' "$bundle/MANIFEST" 2>/dev/null)
{
  echo "# GPU checks"
  echo
  echo "* device: ${gpu:-unknown (nvidia-smi failed)}"
  echo "* date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "* commit: ${commit:-unknown (no MANIFEST)}"
  echo "* host: $(uname -n) $(uname -m)"
  echo "* compute-sanitizer: ${sanitizer:-not found}"
  echo
  echo "| check | result | seconds | log |"
  echo "| --- | --- | --- | --- |"
} >"$results"

failures=0
# check NAME LIMIT_S COMMAND...: runs COMMAND with a timeout, logs to
# OUTDIR/NAME.log and appends one row to results.md.
check() {
  local name=$1 limit=$2
  shift 2
  local left=$((total_s - ($(date +%s) - started)))
  (( left < limit )) && limit=$left
  local log="$out/$name.log" result rc t0
  if (( limit <= 0 )); then
    echo "not run: the ${total_s}s budget was spent" >"$log"
    echo "| $name | NOT RUN (time budget spent) | 0 | $name.log |" >>"$results"
    failures=$((failures + 1))
    return
  fi
  echo "== $name (limit ${limit}s)" >&2
  t0=$(date +%s)
  { echo "\$ $*"; timeout --kill-after=10 "$limit" "$@"; } >"$log" 2>&1
  rc=$?
  case $rc in
    0) result=PASS ;;
    124 | 137) result="TIMEOUT after ${limit}s" ;;
    *) result="FAIL (exit $rc)" ;;
  esac
  [[ $rc -eq 0 ]] || failures=$((failures + 1))
  echo "| $name | $result | $(($(date +%s) - t0)) | $name.log |" >>"$results"
  echo "   $result" >&2
}

check cuda_ops 120 "$bundle/tests/cuda_ops" --test-threads=4
check cuda_training 120 "$bundle/tests/cuda_training" --test-threads=2
check kernels_nvrtc 60 "$bundle/tests/kernels_nvrtc"

train_args=(train --device cuda --epochs 1 --warmup-epochs 0 --n-ctx 2 --workers 2)
check train_smoke 90 "$engine" "${train_args[@]}" --run-dir "$out/run-smoke"
check train_smoke_f32 90 "$engine" --precision f32 "${train_args[@]}" --run-dir "$out/run-smoke-f32"

python=${PYTHON:-python3}
check bench 90 "$engine" --device cuda bench --quick --out "$out/bench" --commit "${commit:-unknown}"
check bench_torch 60 "$python" "$bundle/tools/bench_torch_kernels.py" --engine "$out/bench/bench.json"
check bench_report 10 "$python" "$bundle/tools/bench_kernels_report.py" "$out/bench"

step_tests=("$bundle/tests/cuda_training" training_step_matches_the_cpu --test-threads=1)
if [[ -n "$sanitizer" ]]; then
  check memcheck 120 "$sanitizer" --tool memcheck --error-exitcode 1 --print-limit 20 "${step_tests[@]}"
  check racecheck 120 "$sanitizer" --tool racecheck --error-exitcode 1 --print-limit 20 "${step_tests[@]}"
else
  for tool in memcheck racecheck; do
    echo "compute-sanitizer not found" >"$out/$tool.log"
    echo "| $tool | FAIL (compute-sanitizer not found) | 0 | $tool.log |" >>"$results"
    failures=$((failures + 1))
  done
fi
rm -rf "$out"/run-smoke "$out"/run-smoke-f32

{
  echo
  echo "$failures check(s) did not pass; total $(($(date +%s) - started)) s."
} >>"$results"
cat "$results"
[[ $failures -eq 0 ]]
