#!/usr/bin/env bash
# Fails when proto/ breaks backward compatibility with the previous commit's proto/ (`buf breaking`, the
# FILE rules of buf.yaml): clients and consumers built from the older contract must keep working.
#
# usage: scripts/check-proto-breaking.sh [--self-test]
#   (none)       compare the working tree's proto/ with that of $HOURGLASS_PROTO_BASE (default HEAD~1)
#   --self-test  show the check can fail: a copy of proto/ with one field renumbered must be refused
#                against proto/ itself, and proto/ accepted against itself; then run the check
set -euo pipefail
cd "$(dirname "$0")/.."

buf=$(bash e2e/servers/tools.sh buf)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# A module directory of its own (buf.yaml + proto/) holding `proto/` as it is in the working tree.
copy_module() {
    mkdir -p "$1"
    cp buf.yaml "$1/"
    cp -R proto "$1/"
}

self_test() {
    copy_module "$scratch/base"
    copy_module "$scratch/renumbered"
    local file="$scratch/renumbered/proto/hourglass/v1/event.proto"
    grep -q 'string event_id = 1;' "$file" || { echo "self-test: event.proto has no 'string event_id = 1;' to renumber" >&2; exit 1; }
    sed -i 's/string event_id = 1;/string event_id = 16;/' "$file"
    if "$buf" breaking "$scratch/base" --against "$scratch/base" >/dev/null; then
        echo "self-test: proto/ is compatible with itself, as it must be"
    else
        echo "self-test FAILED: buf breaking refused proto/ against itself" >&2
        exit 1
    fi
    local output
    if output=$("$buf" breaking "$scratch/renumbered" --against "$scratch/base" 2>&1); then
        echo "self-test FAILED: buf breaking accepted a renumbered field" >&2
        exit 1
    fi
    if ! grep -q 'event_id' <<<"$output"; then
        echo "self-test FAILED: buf breaking refused the renumbered copy without naming the field:" >&2
        echo "$output" >&2
        exit 1
    fi
    echo "self-test: a renumbered field is refused: $(head -n 1 <<<"$output")"
}

if [[ "${1:-}" == "--self-test" ]]; then
    self_test
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--self-test]" >&2
    exit 2
fi

base="${HOURGLASS_PROTO_BASE:-HEAD~1}"
if ! git rev-parse --verify --quiet "$base^{commit}" >/dev/null; then
    echo "no commit $base to compare proto/ with (a first commit or a shallow clone): fetch more history" >&2
    exit 1
fi
mkdir -p "$scratch/against"
git archive "$base" buf.yaml proto | tar -x -C "$scratch/against"
"$buf" breaking . --against "$scratch/against"
echo "proto/ is backward compatible with $base ($(git rev-parse --short "$base"))"
