# Shell helpers shared by the side-by-side CPU benchmarks (tools/bench-*.sh).
# Source it from bash after `set -euo pipefail`:
#
#   source "$ROOT/tools/bench-lib.sh"
#
# Globals the functions read (set them before calling):
#   WORK       a scratch folder (children_cpu_ms, run_measured write there)
#   WAIT_IDLE  seconds wait_idle waits at most for an idle machine (default 300)
#
# Functions:
#   cpu_busy                  % of the machine's CPU time busy over 1 s
#   wait_idle                 waits until cpu_busy < 10% (or WAIT_IDLE s
#                             passed) and prints the last reading
#   children_cpu_ms           CPU ms used so far by this shell's finished
#                             children (call from the main shell)
#   run_measured FILE CMD...  runs CMD; writes to FILE the % of the machine's
#                             CPU time that *other* processes used meanwhile
#   ensure_bench_venv VENV CHECK PKG...
#                             creates VENV and pip-installs PKG... unless its
#                             python can already run the statement CHECK
#   bench_executable NAME     builds benches/NAME.rs (`cargo bench --no-run`)
#                             and prints its executable's path
#   bench_commit PATH...      short HEAD commit, "+ uncommitted changes" when
#                             PATH... differ from it
#   export_machine_info       exports BENCH_CPU (lscpu model name),
#                             BENCH_CPUFAM, BENCH_CORES, BENCH_FLAGS,
#                             BENCH_KERNEL, BENCH_RUSTC, BENCH_DATE
# Array:
#   TORCH_ENV                 prefix for torch commands: `"${TORCH_ENV[@]}" python ...`

# The OPENBLAS_* tuning some environments set is meant for OpenBLAS/numpy;
# torch uses MKL, but unset it for the torch process anyway.
TORCH_ENV=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)

# Fraction of CPU time (0-100) used by everything on the machine over 1 s.
cpu_busy() {
    local a b
    read -r -a a < <(head -1 /proc/stat)
    sleep 1
    read -r -a b < <(head -1 /proc/stat)
    local total=0 idle i
    for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
    idle=$((b[4] - a[4] + b[5] - a[5]))
    if ((total <= 0)); then echo 0; else echo $(((100 * (total - idle)) / total)); fi
}

wait_idle() {
    local start=$SECONDS busy limit=${WAIT_IDLE:-300}
    while :; do
        busy=$(cpu_busy)
        if ((busy < 10)) || ((SECONDS - start >= limit)); then
            echo "$busy"
            return
        fi
        echo "   machine busy (${busy}% CPU), waiting..." >&2
        sleep 4
    done
}

# CPU time (ms) of this shell's finished children, from `times` (run in this
# shell, not a subshell, or it would see the subshell's children only).
children_cpu_ms() {
    times > "$WORK/times"
    tail -1 "$WORK/times" | awk '
        function ms(t,  m, x) { m = t; sub(/m.*/, "", m); x = t; sub(/^[0-9]+m/, "", x); sub(/s$/, "", x); return (m * 60 + x) * 1000 }
        { printf "%d\n", ms($1) + ms($2) }'
}

# run_measured FILE CMD...: runs CMD and writes to FILE the share (%) of the
# machine's CPU time that other processes used meanwhile: (all busy - ours) / all.
run_measured() {
    local file=$1 a b c0 c1 total=0 idle i
    shift
    read -r -a a < <(head -1 /proc/stat)
    children_cpu_ms > "$WORK/c0"
    "$@"
    children_cpu_ms > "$WORK/c1"
    read -r -a b < <(head -1 /proc/stat)
    c0=$(cat "$WORK/c0"); c1=$(cat "$WORK/c1")
    for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
    idle=$((b[4] - a[4] + b[5] - a[5]))
    awk -v t="$total" -v i="$idle" -v ours="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { if (t <= 0) { print 0; exit } other = ((t - i) * 1000 / hz - ours) / (t * 1000 / hz) * 100;
                 if (other < 0) other = 0; printf "%.0f\n", other }' > "$file"
}

# ensure_bench_venv VENV CHECK PKG...: the venv's python must run CHECK (a
# Python statement such as "import torch"); otherwise create VENV (with
# $PYTHON, default python3) and pip-install PKG... into it. The plain `torch`
# wheel from PyPI is a CUDA build (several GiB with its nvidia-* dependencies)
# whose CPU path (MKL / oneDNN) is the same as the CPU-only build's.
ensure_bench_venv() {
    local venv=$1 check=$2
    shift 2
    if ! "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
        echo "== setting up $venv: pip install $* (large download)"
        [[ -x "$venv/bin/python" ]] || "${PYTHON:-python3}" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --upgrade pip
        "$venv/bin/python" -m pip install --quiet "$@"
    fi
}

# bench_executable NAME: builds `cargo bench --bench NAME` without running it
# and prints the path of the executable. Rounds that run this file directly
# cannot be disturbed by a rebuild when a source file changes meanwhile (as
# `cargo bench` in every round would be).
bench_executable() {
    cargo bench --bench "$1" --no-run --message-format=json 2>/dev/null |
        grep -F '"kind":["bench"]' | grep -F "\"name\":\"$1\"" |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1
}

# bench_commit PATH...: "abc1234", "abc1234 (+ uncommitted changes)" when any
# PATH differs from HEAD, or "uncommitted" outside a git checkout.
bench_commit() {
    local commit
    commit="$(git rev-parse --short HEAD 2>/dev/null || true)"
    if [[ -z "$commit" ]]; then
        echo "uncommitted"
    elif [[ -n "$(git status --porcelain -- "$@" 2>/dev/null)" ]]; then
        echo "$commit (+ uncommitted changes)"
    else
        echo "$commit"
    fi
}

export_machine_info() {
    BENCH_CPU="$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
    BENCH_CPUFAM="$(lscpu | sed -n 's/^CPU family:[[:space:]]*//p' | head -1)"
    BENCH_CORES="$(nproc)"
    BENCH_FLAGS="$(grep -m1 -o -w -E 'avx512f|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    BENCH_KERNEL="$(uname -sr)"
    BENCH_RUSTC="$(rustc --version 2>/dev/null || echo "no rustc on this machine")"
    BENCH_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')"
    export BENCH_CPU BENCH_CPUFAM BENCH_CORES BENCH_FLAGS BENCH_KERNEL BENCH_RUSTC BENCH_DATE
}
