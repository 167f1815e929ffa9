#!/usr/bin/env bash
# Every GPU check of the project, in one run, on a machine with an NVIDIA GPU,
# the CUDA 13 driver and compute-sanitizer but no Rust. It runs from a bundle
# made by tools/gpu-bundle.sh, whose entry script unpacks it and calls this:
#
#   bash gpu-bundle/run.sh OUTDIR                 # on the GPU machine
#   GPU_CHECK_DRY_RUN=1 bash tools/gpu-check.sh OUTDIR   # anywhere: no GPU step
#
# OUTDIR receives at most three files (the device tool returns few):
#   results.md     device, driver, date, commit, the libraries used, one row
#                  per check (PASS / FAIL (exit code) / TIMEOUT / NOT RUN /
#                  SKIP) with its time, the last lines of each failed check's
#                  log, and the bench report; printed at the end
#   logs.tar.gz    every check's raw log (logs/<check>.log) and bench/
#   bench.json     the engine's kernel and end-to-end figures, when bench ran
# Everything else is written to a scratch folder ($GPU_CHECK_WORK, default a
# new folder under $TMPDIR or /tmp). A failing check is recorded and the
# script goes on; it exits 1 if any check did not pass (SKIP counts as passed:
# the dry run exits 0).
#
# Time: the whole run is capped at TOTAL_S seconds (default 420, 7 minutes,
# so that with the machine's start a rerun fits a 15-minute device budget);
# each check gets the smaller of its own limit and what is left, less 20 s
# kept for packing the results.
#
# Stages and checks, in order of value:
#   smoke (about a minute; the test binaries with MLRPL_CUDA_SYNC=1, so a
#   fault names its kernel):
#     probe          mlrpl-engine --device cuda bench of one softmax case: the
#                    GPU and every library the engine loads are usable (when
#                    the engine cannot open the GPU, the later checks are
#                    NOT RUN: they could only fail the same way)
#     ops_smoke      cuda_ops: unary ops and matrix products (cuBLASLt, cuBLAS)
#     step_smoke     cuda_training: one MLR-PL step against the CPU
#   tests (one test thread: the index-fault flag and the plan and pool
#   counters are device-wide; MLRPL_CUDA_SYNC=1 on this first pass):
#     device_select  --device auto takes the GPU without a notice; with
#                    CUDA_VISIBLE_DEVICES= --device cuda fails with one line
#                    and --device auto falls back to the CPU with one line
#     cuda_ops       every primitive, CUDA vs CPU, forward and backward
#     cuda_training  MLR-PL steps (f32, bf16), one train() epoch, the
#                    steady-state pool test
#   runs:
#     train_bf16     mlrpl-engine train --device cuda, 1 epoch, embedded set
#                    (--precision auto: bf16 towers)
#     train_f32      the same with --precision f32
#     bench          mlrpl-engine bench --device cuda --quick: every kernel case
#                    checked against the CPU backend, then timed; end-to-end
#                    images/s (bench.json)
#     bench_torch    tools/bench_torch_kernels.py: the same cases with PyTorch
#     bench_report   tools/bench_kernels_report.py: torch / engine per case
#     kernels_nvrtc  the NVRTC fallback compiles every kernel
#     bench_e2e      tools/bench-vs-torch.sh --device cuda --rounds 1: the
#                    MLR-PL training step (bench --e2e) against PyTorch
#                    literal and optimized, ViT-B/16 at 448 (batch 32, 80
#                    classes), at 224 (batch 64) and ViT-B/32 at 224 (batch
#                    128, 20 classes); its table goes into results.md
#     prompt_memory  peak GPU memory of the MLR-PL training step, ViT-B/16 at
#                    224, batch 32, 80 and 1000 classes: the engine (bench
#                    --e2e, its pool's peak) and PyTorch literal (CoOp
#                    prompts, 77 positions; torch.cuda.max_memory_allocated),
#                    uncapped and, at 1000 classes, capped at 16 GiB (a
#                    16 GB GPU); out of memory is recorded as such; its table
#                    goes into results.md
#   sanitizers (last; limited to the kernels of kernels/*.cu listed in the
#   bundle's kernel-names.txt, so cuBLAS's kernels run uninstrumented):
#     memcheck       compute-sanitizer --tool memcheck on the training-step
#                    tests of cuda_training (one f32 and one bf16 step)
#     racecheck      the same under --tool racecheck
#   (when a sanitizer fails before the tests start, i.e. it refused the
#   kernel filter, <tool>_all_kernels runs it once more without the filter)
# The test binaries run with MLRPL_REQUIRE_GPU=1 and MLRPL_REQUIRE_NVRTC=1,
# so a test that cannot find the GPU or libnvrtc fails instead of skipping.
#
# Libraries: libcublas, libcublasLt and libnvrtc are looked for on
# LD_LIBRARY_PATH, in the dynamic linker's cache, in the CUDA toolkit
# ($CUDA_HOME, /usr/local/cuda) and in the lib folders of the nvidia-* pip
# wheels beside PyTorch; the folders used are put on LD_LIBRARY_PATH and
# written into results.md.
#
# Env: TOTAL_S, GPU_CHECK_DRY_RUN=1 (or --dry-run: every GPU step replaced by
# its SKIP row; the control flow, results.md and the three files still
# happen), GPU_CHECK_WORK, PYTHON (default python3), GPU_CHECK_SANITIZE_ALL=1
# (no kernel filter for the sanitizers).
set -uo pipefail

self=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/$(basename "${BASH_SOURCE[0]}")
bundle=$(dirname "$self")

# --device-select ENGINE DIR: the device_select check (run through `check`,
# hence as a command of its own).
if [[ ${1:-} == --device-select ]]; then
  engine=$2 dir=$3
  one_case=(bench --quick --runs 1 --filter softmax_fwd/mini-clip)
  status=0
  echo "# --device auto on the GPU machine: the GPU, no notice"
  "$engine" --device auto "${one_case[@]}" --out "$dir/auto" >/dev/null 2>"$dir/auto.err"
  rc=$?
  cat "$dir/auto.err"
  if [[ $rc -ne 0 ]] || grep -q '^device auto:' "$dir/auto.err"; then
    echo "FAIL: exit $rc, or --device auto did not take the GPU"
    status=1
  fi
  echo "# CUDA_VISIBLE_DEVICES= --device cuda: exit 1 with one line"
  CUDA_VISIBLE_DEVICES='' "$engine" --device cuda "${one_case[@]}" --out "$dir/hidden" >/dev/null 2>"$dir/cuda.err"
  rc=$?
  cat "$dir/cuda.err"
  if [[ $rc -ne 1 || $(grep -c . "$dir/cuda.err") -ne 1 ]] || ! grep -q '^error: --device cuda: ' "$dir/cuda.err"; then
    echo "FAIL: expected exit 1 and the single line 'error: --device cuda: ...' (exit $rc)"
    status=1
  fi
  echo "# CUDA_VISIBLE_DEVICES= --device auto: the CPU, with one notice"
  CUDA_VISIBLE_DEVICES='' "$engine" --device auto "${one_case[@]}" --out "$dir/hidden-auto" >/dev/null 2>"$dir/auto-cpu.err"
  rc=$?
  cat "$dir/auto-cpu.err"
  if [[ $rc -ne 0 || $(grep -c '^device auto: .*; running on the CPU$' "$dir/auto-cpu.err") -ne 1 ]]; then
    echo "FAIL: expected exit 0 and one 'device auto: ...; running on the CPU' line (exit $rc)"
    status=1
  fi
  exit $status
fi

# --prompt-memory ENGINE PYTHON DIR: the prompt_memory check; writes
# DIR/prompt-memory.md.
if [[ ${1:-} == --prompt-memory ]]; then
  engine=$2 python=$3 dir=$4
  table=$dir/prompt-memory.md
  mkdir -p "$dir"
  {
    echo "| classes | engine (pool peak, MiB) | PyTorch literal (max_memory_allocated, MiB) | PyTorch literal, 16 GiB cap |"
    echo "| --- | --- | --- | --- |"
  } >"$table"
  # field JSON: the peak (the engine's is under "figures"), or "out of memory".
  field() {
    "$python" -c 'import json, sys
d = json.load(open(sys.argv[1]))
d = d.get("figures", d)
print("out of memory (peak %.0f)" % d["peak_memory_mib"] if d.get("out_of_memory") else "%.0f" % d["peak_memory_mib"])' \
      "$1" 2>/dev/null || echo "failed"
  }
  status=0
  for classes in 80 1000; do
    e2e=(--device cuda bench --e2e --model vit-b16 --classes "$classes" --batch 32 --image-size 224)
    echo "# engine, $classes classes"
    "$engine" "${e2e[@]}" --runs 1 --warmup 0 --json >"$dir/engine-$classes.json" || status=1
    "$engine" "${e2e[@]}" --export "$dir/in-$classes" || status=1
    torch_run() {
      "$python" "$bundle/tools/torch_reference.py" --clip "$dir/in-$classes/clip.safetensors" \
        --inputs "$dir/in-$classes/inputs.safetensors" --variant literal --device cuda --steps 1 --warmup 1 "$@"
      local rc=$?
      [[ $rc -eq 0 || $rc -eq 3 ]] || status=1
    }
    echo "# PyTorch literal, $classes classes"
    torch_run --json "$dir/torch-$classes.json"
    capped="not run"
    if [[ $classes == 1000 ]]; then
      echo "# PyTorch literal, $classes classes, 16 GiB cap"
      torch_run --memory-cap-gib 16 --json "$dir/torch-$classes-16g.json"
      capped=$(field "$dir/torch-$classes-16g.json")
    fi
    echo "| $classes | $(field "$dir/engine-$classes.json") | $(field "$dir/torch-$classes.json") | $capped |" >>"$table"
    rm -rf "$dir/in-$classes"
  done
  cat "$table"
  exit $status
fi

dry_run=${GPU_CHECK_DRY_RUN:-0}
[[ $dry_run == 0 ]] && dry_run=
if [[ ${1:-} == --dry-run ]]; then
  dry_run=1
  shift
fi
if [[ $# -ne 1 ]]; then
  echo "usage: $0 [--dry-run] OUTDIR" >&2
  exit 2
fi
mkdir -p "$1" || exit 2
out=$(cd "$1" && pwd -P)
work=${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")}
mkdir -p "$work/logs" || exit 2
logs=$work/logs
total_s=${TOTAL_S:-420}
reserve_s=20
started=$(date +%s)
results=$work/results.md
engine=$bundle/bin/mlrpl-engine
tests=$bundle/tests
python=${PYTHON:-python3}
export MLRPL_REQUIRE_GPU=1 MLRPL_REQUIRE_NVRTC=1 MLRPL_KERNELS_DIR="$bundle/kernels"

# ---- libraries -------------------------------------------------------------
lib_dirs=()
for root in "${CUDA_HOME:-}" /usr/local/cuda; do
  [[ -n $root ]] || continue
  for d in "$root/lib64" "$root"/targets/*/lib; do [[ -d $d ]] && lib_dirs+=("$d"); done
done
# The nvidia-* pip wheels (PyTorch's CUDA libraries): nvidia/<name>/lib.
while IFS= read -r root; do
  for d in "$root"/*/lib; do [[ -d $d ]] && lib_dirs+=("$d"); done
done < <("$python" -c 'import nvidia; print("\n".join(nvidia.__path__))' 2>/dev/null)
ldconfig_bin=$(command -v ldconfig || echo /sbin/ldconfig)
# locate_lib NAME PREFERRED_DIR: the path of libNAME.so[.N] that will be used.
locate_lib() {
  local name=$1 preferred=$2 d f
  local -a ld
  IFS=: read -ra ld <<<"${LD_LIBRARY_PATH:-}"
  for d in "$preferred" "${ld[@]}"; do
    [[ -n $d ]] || continue
    for f in "$d/lib$name.so" "$d/lib$name.so".[0-9]*; do
      [[ -e $f ]] && { echo "$f"; return 0; }
    done
  done
  f=$("$ldconfig_bin" -p 2>/dev/null | awk -v n="lib$name.so" \
    'index($1, n) == 1 && (length($1) == length(n) || substr($1, length(n) + 1, 1) == ".") {print $NF; exit}')
  [[ -n $f ]] && { echo "$f"; return 0; }
  for d in "${lib_dirs[@]}"; do
    for f in "$d/lib$name.so" "$d/lib$name.so".[0-9]*; do
      [[ -e $f ]] && { echo "$f"; return 0; }
    done
  done
  return 1
}
lib_lines=()
previous=
for name in cuda cublas cublasLt nvrtc; do
  if path=$(locate_lib "$name" "$previous"); then
    dir=$(dirname "$path")
    case ":${LD_LIBRARY_PATH:-}:" in
      *":$dir:"*) how="on LD_LIBRARY_PATH" ;;
      *)
        if "$ldconfig_bin" -p 2>/dev/null | grep -qF " => $path"; then
          how="dynamic linker cache"
        else
          export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
          how="added to LD_LIBRARY_PATH"
        fi
        ;;
    esac
    lib_lines+=("lib$name: \`$path\` ($how)")
    [[ $name == cuda ]] || previous=$dir
  else
    lib_lines+=("lib$name: NOT FOUND (looked on LD_LIBRARY_PATH, in the linker cache and in: ${lib_dirs[*]:-no CUDA or pip folder})")
  fi
done

sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
sanitizer_filter=()
if [[ -z ${GPU_CHECK_SANITIZE_ALL:-} && -s $bundle/kernel-names.txt ]]; then
  while IFS= read -r k; do
    [[ -n $k ]] && sanitizer_filter+=(--kernel-name "kne=$k")
  done <"$bundle/kernel-names.txt"
  filter_line="the $((${#sanitizer_filter[@]} / 2)) kernels of kernels/*.cu (kernel-names.txt, --kernel-name kne=...)"
else
  filter_line="every kernel (no kernel-names.txt, or GPU_CHECK_SANITIZE_ALL set)"
fi

if [[ -n $dry_run ]]; then
  gpu="dry run: no GPU step runs"
else
  gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
fi
commit=$(sed -n 's/^commit: //p' "$bundle/MANIFEST" 2>/dev/null)
{
  echo "# GPU checks"
  echo
  echo "* device: ${gpu:-unknown (nvidia-smi failed)}"
  echo "* date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "* commit: ${commit:-unknown (no MANIFEST)}"
  echo "* host: $(uname -n) $(uname -m); time budget ${total_s} s"
  echo "* compute-sanitizer: ${sanitizer:-not found}; checks ${filter_line}"
  for line in "${lib_lines[@]}"; do echo "* $line"; done
  echo
  echo "| check | stage | result | seconds |"
  echo "| --- | --- | --- | --- |"
} >"$results"
printf '%s\n' "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}" "${lib_lines[@]}" >"$logs/libraries.log"

failures=0
failed=()
gate=
last_result=
# check NAME STAGE LIMIT_S COMMAND...: runs COMMAND with a timeout, logs to
# logs/NAME.log and appends one row to results.md.
check() {
  local name=$1 stage=$2 limit=$3
  shift 3
  local log="$logs/$name.log" result rc t0 left
  left=$((total_s - reserve_s - ($(date +%s) - started)))
  ((left < limit)) && limit=$left
  t0=$(date +%s)
  if [[ -n $gate ]]; then
    result="NOT RUN ($gate)"
  elif ((limit <= 0)); then
    result="NOT RUN (time budget spent)"
  elif [[ -n $dry_run ]]; then
    result="SKIP (dry run)"
  fi
  last_result=${result:-}
  if [[ -n ${result:-} ]]; then
    { printf '$'; printf ' %q' "$@"; echo; echo "$result"; } >"$log"
    [[ $result == SKIP* ]] || failures=$((failures + 1))
    echo "| $name | $stage | $result | 0 |" >>"$results"
    echo "== $name: $result" >&2
    return
  fi
  echo "== $name (limit ${limit}s)" >&2
  { printf '$'; printf ' %q' "$@"; echo; timeout --kill-after=10 "$limit" "$@"; } >"$log" 2>&1
  rc=$?
  case $rc in
    0) result=PASS ;;
    124 | 137) result="TIMEOUT after ${limit}s" ;;
    *) result="FAIL (exit $rc)" ;;
  esac
  [[ $rc -eq 0 ]] || { failures=$((failures + 1)); failed+=("$name"); }
  last_result=$result
  echo "| $name | $stage | $result | $(($(date +%s) - t0)) |" >>"$results"
  echo "   $result" >&2
}

sync=(env MLRPL_CUDA_SYNC=1)
one_case=(bench --quick --runs 1 --filter softmax_fwd/mini-clip)

# ---- smoke -----------------------------------------------------------------
check probe smoke 30 "$engine" --device cuda "${one_case[@]}" --out "$work/probe"
if grep -q '^error: --device cuda: ' "$logs/probe.log" 2>/dev/null; then
  gate="the engine could not open the GPU: see the probe row"
fi
check ops_smoke smoke 30 "${sync[@]}" "$tests/cuda_ops" --exact unary_ops_and_their_gradients matrix_products \
  --test-threads=1
check step_smoke smoke 30 "${sync[@]}" "$tests/cuda_training" --exact one_training_step_matches_the_cpu \
  --test-threads=1

# ---- tests -----------------------------------------------------------------
check device_select tests 30 bash "$self" --device-select "$engine" "$work"
check cuda_ops tests 100 "${sync[@]}" "$tests/cuda_ops" --test-threads=1
check cuda_training tests 100 "${sync[@]}" "$tests/cuda_training" --test-threads=1

# ---- runs ------------------------------------------------------------------
train_args=(train --device cuda --epochs 1 --warmup-epochs 0 --n-ctx 2 --workers 2)
check train_bf16 runs 60 "$engine" "${train_args[@]}" --run-dir "$work/run-bf16"
check train_f32 runs 60 "$engine" --precision f32 "${train_args[@]}" --run-dir "$work/run-f32"
check bench runs 90 "$engine" --device cuda bench --quick --out "$work/bench" --commit "${commit:-unknown}"
check bench_torch runs 60 "$python" "$bundle/tools/bench_torch_kernels.py" --engine "$work/bench/bench.json"
check bench_report runs 15 "$python" "$bundle/tools/bench_kernels_report.py" "$work/bench"
check kernels_nvrtc runs 60 "$tests/kernels_nvrtc" --test-threads=1
check bench_e2e runs 150 bash "$bundle/tools/bench-vs-torch.sh" --device cuda --engine "$engine" --python "$python" \
  --rounds 1 --wait-idle 0 --out "$work/e2e/benchmarks.md"
check prompt_memory runs 150 bash "$self" --prompt-memory "$engine" "$python" "$work/prompt-memory"

# ---- sanitizers ------------------------------------------------------------
step_tests=("$tests/cuda_training" training_step_matches_the_cpu --test-threads=1)
for tool in memcheck racecheck; do
  if [[ -n $sanitizer || -n $dry_run || -n $gate ]]; then
    check "$tool" sanitizers 90 "${sanitizer:-compute-sanitizer}" --tool "$tool" --error-exitcode 1 \
      --print-limit 20 "${sanitizer_filter[@]}" "${step_tests[@]}"
    if [[ $last_result == FAIL* && ${#sanitizer_filter[@]} -gt 0 ]] && ! grep -q '^running [0-9]* test' "$logs/$tool.log"; then
      # The tests never started: the sanitizer refused the kernel filter
      # (its syntax is the one unverified part). Once more, every kernel.
      check "${tool}_all_kernels" sanitizers 90 "$sanitizer" --tool "$tool" --error-exitcode 1 --print-limit 20 \
        "${step_tests[@]}"
    fi
  else
    echo "compute-sanitizer not found" >"$logs/$tool.log"
    echo "| $tool | sanitizers | FAIL (compute-sanitizer not found) | 0 |" >>"$results"
    failures=$((failures + 1))
    failed+=("$tool")
  fi
done

# ---- results ---------------------------------------------------------------
rm -rf "$work/run-bf16" "$work/run-f32"
{
  echo
  echo "$failures check(s) did not pass; total $(($(date +%s) - started)) s."
  for name in "${failed[@]}"; do
    echo
    echo "### $name: last lines of logs/$name.log"
    echo
    echo '```'
    tail -n 12 "$logs/$name.log" | cut -c1-240
    echo '```'
  done
  if [[ -f $work/e2e/benchmarks.md ]]; then
    echo
    echo "## bench_e2e: tools/bench-vs-torch.sh"
    echo
    head -n 40 "$work/e2e/benchmarks.md"
  fi
  if [[ -f $work/prompt-memory/prompt-memory.md ]]; then
    echo
    echo "## prompt_memory: peak GPU memory, ViT-B/16 at 224, batch 32"
    echo
    cat "$work/prompt-memory/prompt-memory.md"
  fi
  if [[ -f $work/bench/report.md ]]; then
    echo
    echo "## bench/report.md"
    echo
    head -n 60 "$work/bench/report.md"
  fi
} >>"$results"
cp "$results" "$out/results.md"
parts=(logs)
[[ -d $work/bench ]] && parts+=(bench)
tar -czf "$out/logs.tar.gz" -C "$work" "${parts[@]}"
[[ -f $work/bench/bench.json ]] && cp "$work/bench/bench.json" "$out/bench.json"
[[ -n ${GPU_CHECK_WORK:-} ]] || rm -rf "$work"
cat "$out/results.md"
[[ $failures -eq 0 ]]
