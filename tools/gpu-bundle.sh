#!/usr/bin/env bash
# Build, on a CPU machine with Rust and the CUDA toolchain, everything that
# tools/gpu-check.sh runs on a GPU machine without Rust, as one compressed
# archive in the ignored folder gpu-bundle/ (or $1):
#
#   gpu-bundle/bundle.tar.xz   the bundle:
#       bin/mlrpl-engine           release binary (kernels embedded as fatbins)
#       tests/<name>               the GPU test binaries (release profile)
#                                  (all binaries stripped of debug info)
#       kernels/*.cu, *.cuh        sources, for the NVRTC fallback test
#       kernel-names.txt           the entry points of kernels/*.cu (read from
#                                  the fatbins), which the sanitizers check
#       gpu-check.sh               the script to run there
#       tools/bench_*.py           the PyTorch side of `bench` and its report
#       tools/bench-vs-torch.sh,   the MLR-PL step against PyTorch (bench_e2e)
#       tools/torch_reference.py
#       MANIFEST                   commit, date, toolchains, files, sizes, sha256
#   gpu-bundle/run.sh          entry script: unpacks the archive, runs gpu-check.sh
#   gpu-bundle/MANIFEST        the same MANIFEST, plus the archive's size
#
# What a device call carries (the working tree and the carried paths
# together) must stay under 64 MiB; this script measures the tree (the files
# `git ls-files` lists plus the untracked, not ignored ones) and the bundle
# folder, prints both, and fails unless their sum is under 60 MiB. Needs nvcc
# (build.rs finds .cuda-toolchain/; run tools/cuda-toolchain.sh first) so the
# kernels are fatbins, not NVRTC sources, and xz. Run it under `nice` on a
# shared machine; CARGO_BUILD_JOBS is honoured.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
out=${1:-$repo/gpu-bundle}
tests=(cuda_ops cuda_training kernels_nvrtc)
limit=$((60 * 1024 * 1024))
cd "$repo"

if [[ -z "${NVCC:-}" && ! -x .cuda-toolchain/bin/nvcc ]] && ! command -v nvcc >/dev/null; then
  echo "gpu-bundle: no nvcc (\$NVCC, PATH or .cuda-toolchain/); run tools/cuda-toolchain.sh first" >&2
  exit 1
fi

echo "gpu-bundle: building the release binary" >&2
bin_json=$(cargo build --release --locked --bin mlrpl-engine --message-format=json)

echo "gpu-bundle: building the GPU test binaries (${tests[*]})" >&2
test_args=()
for t in "${tests[@]}"; do test_args+=(--test "$t"); done
json=$(cargo test --release --locked --no-run --message-format=json "${test_args[@]}")

rm -rf "$out"
stage=$out/stage
mkdir -p "$stage/bin" "$stage/tests" "$stage/kernels" "$stage/tools"
# artifact REASON NAME [JSON]: from cargo's JSON messages (default: the test
# build's), the executable of target NAME or the build script's OUT_DIR.
artifact() {
  printf '%s\n' "${3:-$json}" | python3 -c '
import json, sys
reason, name = sys.argv[1], sys.argv[2]
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"):
        continue
    msg = json.loads(line)
    if msg.get("reason") != reason:
        continue
    if reason == "compiler-artifact" and msg.get("executable") and msg["target"]["name"] == name:
        print(msg["executable"])
    elif reason == "build-script-executed" and "mlrpl-engine" in msg["package_id"]:
        print(msg["out_dir"])
' "$1" "$2"
}
engine=$(artifact compiler-artifact mlrpl-engine "$bin_json")
if [[ -z "$engine" ]]; then
  echo "gpu-bundle: cargo reported no mlrpl-engine executable" >&2
  exit 1
fi
cp "$engine" "$stage/bin/mlrpl-engine"
for t in "${tests[@]}"; do
  exe=$(artifact compiler-artifact "$t")
  if [[ -z "$exe" ]]; then
    echo "gpu-bundle: cargo reported no executable for test $t" >&2
    exit 1
  fi
  cp "$exe" "$stage/tests/$t"
done
# Debug info (line tables of every dependency) is 80% of each binary; the
# symbols stay, so panics and compute-sanitizer still name Rust functions.
strip --strip-debug "$stage/bin/mlrpl-engine" "$stage"/tests/*
cp kernels/*.cu kernels/*.cuh "$stage/kernels/"
cp tools/gpu-check.sh "$stage/"
cp tools/bench_torch_kernels.py tools/bench_kernels_report.py "$stage/tools/"
cp tools/bench-vs-torch.sh tools/bench-lib.sh tools/torch_reference.py tools/bench_vs_torch_report.py \
  tools/bench_report.py "$stage/tools/"
chmod +x "$stage/gpu-check.sh"

# The kernels' entry points, for the sanitizers' --kernel-name filter: each
# kernel is an ELF section .text.<name> of its module's fatbin (one per
# kernels/*.cu file, in the build script's OUT_DIR).
kernel_out=$(artifact build-script-executed mlrpl-engine | tail -n 1)/kernels
for cu in kernels/*.cu; do
  fatbin=$kernel_out/$(basename "$cu" .cu).fatbin
  names=$(strings "$fatbin" 2>/dev/null | sed -n 's/^\.text\.//p' | sort -u)
  if [[ -z $names ]]; then
    echo "gpu-bundle: found no kernel in $fatbin (was the build made without nvcc?)" >&2
    exit 1
  fi
  printf '%s\n' "$names"
done | sort -u >"$stage/kernel-names.txt"

commit=$(git rev-parse HEAD)
dirty=
if git status --porcelain --untracked-files=no | grep -q .; then dirty=" (with uncommitted changes)"; fi
nvcc_bin=${NVCC:-$(command -v nvcc || echo "$repo/.cuda-toolchain/bin/nvcc")}
{
  echo "commit: $commit$dirty"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m)"
  echo "rustc: $(rustc --version)"
  echo "nvcc: $("$nvcc_bin" --version 2>/dev/null | grep -o 'release [0-9.]*' || echo unknown)"
  echo "tests: ${tests[*]}"
  echo "kernels: $(wc -l <"$stage/kernel-names.txt") entry points"
  echo "files:"
  (cd "$stage" && find . -type f ! -name MANIFEST | sort | while read -r f; do
    printf '  %s %s %s\n' "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -c1-16)" "$f"
  done)
} >"$stage/MANIFEST"

echo "gpu-bundle: compressing (xz)" >&2
tar -cf - -C "$stage" . | xz -6 -T "${CARGO_BUILD_JOBS:-2}" >"$out/bundle.tar.xz"
unpacked=$(du -sb "$stage" | cut -f1)
rm -rf "$stage"
cp tools/gpu-bundle-run.sh "$out/run.sh"
chmod +x "$out/run.sh"
tar -xJf "$out/bundle.tar.xz" -O ./MANIFEST >"$out/MANIFEST"
echo "archive: bundle.tar.xz $(stat -c %s "$out/bundle.tar.xz") bytes ($unpacked unpacked), sha256 $(sha256sum "$out/bundle.tar.xz" | cut -c1-16)" >>"$out/MANIFEST"

# What travels to the device: the working tree (tracked files and untracked,
# not ignored ones) plus the carried bundle folder.
tree=$( (git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s -- 2>/dev/null || true) |
  awk '{s += $1} END {print s + 0}')
bundle=$(du -sb "$out" | cut -f1)
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "gpu-bundle: tree $tree bytes ($(mib "$tree")), bundle $out $bundle bytes ($(mib "$bundle")), together $((tree + bundle)) bytes ($(mib $((tree + bundle)))); limit $limit ($(mib "$limit"))" >&2
if ((tree + bundle >= limit)); then
  echo "gpu-bundle: tree + bundle are not under 60 MiB; they would not travel to a GPU machine (64 MiB with everything)" >&2
  exit 1
fi
echo "gpu-bundle: on the GPU machine: bash gpu-bundle/run.sh OUTDIR (device tool: carry [\"gpu-bundle\"], command: bash gpu-bundle/run.sh \$OUT)" >&2
