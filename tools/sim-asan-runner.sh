#!/usr/bin/env bash
# Cargo's runner for the simulated GPU's AddressSanitizer pass: runs a test
# binary with the ASan runtime preloaded (the simulator's libraries are
# ASan-instrumented, the Rust binary is not) and MLRPL_SIM_ASAN=1, so that
# tests/common/sim.rs builds and loads the instrumented simulator. Use it as
#   CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$PWD/tools/sim-asan-runner.sh" cargo test --test cuda_ops
set -euo pipefail
runtime=$("${CXX:-g++}" -print-file-name=libasan.so)
if [[ ! -e "$runtime" ]]; then
  echo "sim-asan-runner: ${CXX:-g++} has no libasan.so ($runtime)" >&2
  exit 2
fi
export LD_PRELOAD="$runtime${LD_PRELOAD:+:$LD_PRELOAD}"
# Rust's test harness keeps some allocations to the end; leaks are not what
# this pass looks for.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=0}"
export MLRPL_SIM_ASAN=1
exec "$@"
