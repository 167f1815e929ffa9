#!/usr/bin/env bash
# Build, on a CPU machine with Rust and the CUDA toolchain, everything that
# tools/gpu-check.sh runs on a GPU machine without Rust, into the ignored
# folder gpu-bundle/ (or $1):
#
#   gpu-bundle/bin/mlrpl-engine        release binary (kernels embedded as fatbins)
#   gpu-bundle/tests/<name>            the GPU test binaries (release profile)
#                                      (all binaries stripped of debug info)
#   gpu-bundle/kernels/*.cu, *.cuh     sources, for the NVRTC fallback test
#   gpu-bundle/gpu-check.sh            the script to run there
#   gpu-bundle/tools/bench_*.py        the PyTorch side of `bench` and its report
#   gpu-bundle/MANIFEST                commit, date, toolchains, files, sizes, sha256
#
# The bundle must stay under 64 MiB (what a device call carries); the script
# fails if it does not. Needs nvcc (build.rs finds .cuda-toolchain/; run
# tools/cuda-toolchain.sh first) so the kernels are fatbins, not NVRTC
# sources. Run it under `nice` on a shared machine; CARGO_BUILD_JOBS is
# honoured.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
out=${1:-$repo/gpu-bundle}
tests=(cuda_ops cuda_training kernels_nvrtc)
limit=$((64 * 1024 * 1024))
cd "$repo"

if [[ -z "${NVCC:-}" && ! -x .cuda-toolchain/bin/nvcc ]] && ! command -v nvcc >/dev/null; then
  echo "gpu-bundle: no nvcc (\$NVCC, PATH or .cuda-toolchain/); run tools/cuda-toolchain.sh first" >&2
  exit 1
fi

echo "gpu-bundle: building the release binary" >&2
cargo build --release --locked --bin mlrpl-engine

echo "gpu-bundle: building the GPU test binaries (${tests[*]})" >&2
test_args=()
for t in "${tests[@]}"; do test_args+=(--test "$t"); done
json=$(cargo test --release --locked --no-run --message-format=json "${test_args[@]}")

rm -rf "$out"
mkdir -p "$out/bin" "$out/tests" "$out/kernels" "$out/tools"
cp target/release/mlrpl-engine "$out/bin/"
for t in "${tests[@]}"; do
  exe=$(printf '%s\n' "$json" | python3 -c '
import json, sys
name = sys.argv[1]
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"):
        continue
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["name"] == name:
        print(msg["executable"])
' "$t")
  if [[ -z "$exe" ]]; then
    echo "gpu-bundle: cargo reported no executable for test $t" >&2
    exit 1
  fi
  cp "$exe" "$out/tests/$t"
done
# Debug info (line tables of every dependency) is 80% of each binary; the
# symbols stay, so panics and compute-sanitizer still name Rust functions.
strip --strip-debug "$out/bin/mlrpl-engine" "$out"/tests/*
cp kernels/*.cu kernels/*.cuh "$out/kernels/"
cp tools/gpu-check.sh "$out/"
cp tools/bench_torch_kernels.py tools/bench_kernels_report.py "$out/tools/"
chmod +x "$out/gpu-check.sh"

commit=$(git rev-parse HEAD)
dirty=$(git status --porcelain --untracked-files=no | grep -q . && echo " (with uncommitted changes)" || true)
nvcc_bin=${NVCC:-$(command -v nvcc || echo "$repo/.cuda-toolchain/bin/nvcc")}
{
  echo "commit: $commit$dirty"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m)"
  echo "rustc: $(rustc --version)"
  echo "nvcc: $("$nvcc_bin" --version 2>/dev/null | grep -o 'release [0-9.]*' || echo unknown)"
  echo "tests: ${tests[*]}"
  echo "files:"
  (cd "$out" && find . -type f ! -name MANIFEST | sort | while read -r f; do
    printf '  %s %s %s\n' "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -c1-16)" "$f"
  done)
} >"$out/MANIFEST"

total=$(du -sb "$out" | cut -f1)
echo "gpu-bundle: $out holds $total bytes (limit $limit)" >&2
if (( total > limit )); then
  echo "gpu-bundle: the bundle is over 64 MiB; it would not travel to a GPU machine" >&2
  exit 1
fi
