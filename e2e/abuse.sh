#!/usr/bin/env bash
# The HTTP/2 abuse suite (issue 25): attacks on a running `hourglass standalone`, each shed within its limits.
#
# usage: e2e/abuse.sh [--attack-secs N] [ATTACK...]
#
#   ATTACK  rapid-reset, continuation-flood, idle-connections, idle-streams, unread-acks, slow-sender
#           (default: all, in that order)
#
# Starts its own standalone on a free loopback port with a temporary data directory (no shared server is
# touched), runs each attack beside a well-behaved client that ingests over a bidirectional stream and
# queries, and prints per attack what the attacker achieved, the server's RSS and fds, the good client's
# ack latency against its baseline, and health afterwards; then a table. Exits non-zero only on functional
# failures (see e2e/hourglass_e2e/abuse.py), never on latency. About 2 minutes.
#
# Builds `hourglass` (debug) unless HOURGLASS_BIN names one; the venv is the e2e one (tools.sh e2e-python),
# with the SDK's stubs installed from sdks/python as e2e/run.sh installs them.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export HOURGLASS_CACHE_DIR="${HOURGLASS_CACHE_DIR:-$HOME/.cache/hourglass}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOURGLASS_CACHE_DIR/target}"
LOG_TAG=abuse
# shellcheck source=e2e/servers/lib.sh
source e2e/servers/lib.sh

use_hourglass_debug_build abuse
python=$(bash e2e/servers/tools.sh e2e-python)
"$python" -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps "$root/sdks/python" >&2
rm -rf "$root/sdks/python/build"
# Thousands of connections on both sides: the runner raises its soft fd limit, which the server inherits.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
PYTHONPATH="$root/e2e" exec "$python" -m hourglass_e2e.abuse "$@"
