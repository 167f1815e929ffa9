#!/usr/bin/env bash
# Fuzzes the engine's loaders for a bounded time (docs/reliability.md).
#
#   bash tools/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 60; TARGETs default to all of them. Needs
# cargo-fuzz (installed from crates.io if absent) and runs it on the stable
# toolchain with RUSTC_BOOTSTRAP=1. The committed seed corpus
# (fuzz/corpus/<target>, written by tools/fuzz_corpus.py) is only read; new
# inputs go to fuzz/corpus-run/<target>, findings to fuzz/artifacts/<target>.
# Prints one line per target: executions, and the findings if any.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(weights coco_json voc_xml list label_mask tokenizer image)
fi
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo fuzz build
mkdir -p fuzz/logs
status=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus-run/$t" "fuzz/artifacts/$t"
    log="fuzz/logs/$t.log"
    rc=0
    cargo fuzz run "$t" "fuzz/corpus-run/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=16384 -print_final_stats=1 \
        >"$log" 2>&1 || rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    findings=$(find "fuzz/artifacts/$t" -type f | wc -l)
    if [ "$rc" -ne 0 ] || [ "$findings" -ne 0 ]; then
        status=1
        echo "$t: ${execs:-?} executions in ${secs} s, FINDINGS: $findings (exit $rc; see $log and fuzz/artifacts/$t)"
    else
        echo "$t: ${execs:-?} executions in ${secs} s, no finding"
    fi
done
exit $status
