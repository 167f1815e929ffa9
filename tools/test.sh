#!/usr/bin/env bash
# All the tests, as CI runs them (.ci/run): formatting, clippy with warnings
# as errors, then the test suite with every kernel compiled by the pinned
# nvcc and NVRTC (tools/cuda-toolchain.sh installs them into .cuda-toolchain/)
# and, without a GPU, the CUDA suites on the simulated GPU (docs/gpu/
# simulator.md) under two schedules: forward order with full grids (inside
# `cargo test`), then reverse order with 2-block grid-stride launches under
# AddressSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --check
bash tools/cuda-toolchain.sh
. .cuda-toolchain/env.sh
cargo clippy --locked --all-targets -- -D warnings
MLRPL_REQUIRE_NVCC=1 MLRPL_REQUIRE_NVRTC=1 cargo test --locked
MLRPL_SIM=1 MLRPL_SIM_ORDER=reverse MLRPL_CUDA_MAX_GRID=2 \
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$PWD/tools/sim-asan-runner.sh" \
  MLRPL_REQUIRE_NVCC=1 cargo test --locked --test cuda_ops --test cuda_training
