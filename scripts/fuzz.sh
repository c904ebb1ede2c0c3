#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ (cargo-fuzz, libFuzzer) for a while each: `scripts/fuzz.sh [--seconds N]
# [target...]`, every target for 60 s by default.
#
# The targets build with nightly (cargo-fuzz needs its sanitizer flags) in a target directory of their own,
# $HOURGLASS_CACHE_DIR/fuzz-target, so the stable build's cache is never rebuilt; the project itself stays
# on stable. What is missing is installed first: the nightly toolchain (minimal profile) and cargo-fuzz
# (pinned). Each target starts from its committed seeds (fuzz/corpus/<target>/seed-*) and from what earlier
# runs on this machine found ($HOURGLASS_CACHE_DIR/fuzz-corpus/<target>, where new inputs go), and prints
# its executions, executions per second, coverage (libFuzzer's `cov:`) and corpus size. A crash, a leak, a
# timeout (10 s for one input) or running out of memory fails the script, which prints the input that did
# it (fuzz/artifacts/<target>/) and the command that reproduces it. README (Fuzzing) says what to do next.
set -euo pipefail

cargo_fuzz_version=0.13.2
seconds=60
targets=()
while (($#)); do
    case "$1" in
        --seconds) seconds="${2:?--seconds needs a number}"; shift 2 ;;
        --seconds=*) seconds="${1#--seconds=}"; shift ;;
        -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "usage: scripts/fuzz.sh [--seconds N] [target...]" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[[ "$seconds" =~ ^[0-9]+$ ]] && ((seconds > 0)) || { echo "--seconds takes a positive number, not $seconds" >&2; exit 2; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
cache="${HOURGLASS_CACHE_DIR:-$HOME/.cache/hourglass}"
export CARGO_TARGET_DIR="$cache/fuzz-target"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "installing the nightly toolchain (for the fuzz build only)" >&2
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version 2>/dev/null | grep -qF "$cargo_fuzz_version"; then
    echo "installing cargo-fuzz $cargo_fuzz_version" >&2
    cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi

if ((${#targets[@]} == 0)); then
    mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
fi

started=$SECONDS
cargo +nightly fuzz build --fuzz-dir fuzz >&2
echo "fuzz build: $((SECONDS - started)) s" >&2

log_dir="$cache/fuzz-logs"
mkdir -p "$log_dir"
printf '%-16s %12s %10s %8s %10s %8s\n' target executions exec/s cov corpus seconds
failed=()
for target in "${targets[@]}"; do
    corpus="$cache/fuzz-corpus/$target"
    mkdir -p "$corpus" "fuzz/corpus/$target" "fuzz/artifacts/$target"
    log="$log_dir/$target.log"
    # -timeout: one input taking 10 s is a hang; -rss_limit_mb: libFuzzer's default, stated. A target's
    # dictionary (fuzz/dict/<target>.dict: its format's tokens) helps it past keywords it would rarely guess.
    options=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
    if [[ -f "fuzz/dict/$target.dict" ]]; then
        options+=(-dict="fuzz/dict/$target.dict")
    fi
    target_started=$SECONDS
    status=0
    cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$corpus" "fuzz/corpus/$target" -- "${options[@]}" \
        >"$log" 2>&1 || status=$?
    elapsed=$((SECONDS - target_started))
    # libFuzzer's status lines: "#123 NEW cov: 45 ft: 67 corp: 8/120b ... exec/s: 900 rss: 40Mb".
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    exec_per_second=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    coverage=$(grep -oE 'cov: [0-9]+' <<<"$last" | grep -oE '[0-9]+' || true)
    corpus_size=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' <<<"$last" | cut -d' ' -f2 || true)
    printf '%-16s %12s %10s %8s %10s %8s\n' "$target" "${executions:-?}" "${exec_per_second:-?}" \
        "${coverage:-?}" "${corpus_size:-?}" "$elapsed"
    if ((status != 0)); then
        failed+=("$target")
        artifact=$(sed -n 's/.*Test unit written to \(fuzz\/artifacts\/[^ ]*\).*/\1/p' "$log" | tail -n 1)
        {
            echo "FAILED: $target (exit $status); the end of its log ($log):"
            grep -vE '^#[0-9]+' "$log" | tail -n 40
            if [[ -n "$artifact" ]]; then
                echo "the input: $artifact"
                echo "reproduce it (runs that one input):"
                echo "  CARGO_TARGET_DIR=$CARGO_TARGET_DIR cargo +nightly fuzz run --fuzz-dir fuzz $target $artifact"
            fi
        } >&2
    fi
done
echo "fuzzing: $((SECONDS - started)) s in all" >&2
if ((${#failed[@]})); then
    echo "fuzz targets that failed: ${failed[*]}" >&2
    exit 1
fi
