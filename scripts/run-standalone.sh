#!/usr/bin/env bash
# Runs the whole platform in one process, `hourglass standalone`: no Kafka, no CQL server, no Postgres.
# Builds `hourglass` (release), then starts it on 127.0.0.1:50051 with its data in ./hourglass-data of the
# clone, until Ctrl-C. It prints the commands that send sample events and report them.
#
#   HOURGLASS_DATA_DIR=/var/lib/hourglass scripts/run-standalone.sh      # another data directory
#   HOURGLASS_COLLECTOR_LISTEN_ADDR=0.0.0.0:50051 scripts/run-standalone.sh
#   scripts/run-standalone.sh --help                                      # every flag (also HOURGLASS_* variables)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export HOURGLASS_CACHE_DIR="${HOURGLASS_CACHE_DIR:-$HOME/.cache/hourglass}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOURGLASS_CACHE_DIR/target}"
export HOURGLASS_DATA_DIR="${HOURGLASS_DATA_DIR:-$root/hourglass-data}"
export HOURGLASS_COLLECTOR_LISTEN_ADDR="${HOURGLASS_COLLECTOR_LISTEN_ADDR:-127.0.0.1:50051}"

# shellcheck source=scripts/build-prerequisites.sh
source scripts/build-prerequisites.sh
cargo build --release --locked -p hourglass
exec "$CARGO_TARGET_DIR/release/hourglass" standalone "$@"
