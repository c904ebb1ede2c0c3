#!/usr/bin/env bash
# Runs the platform's front door on this machine: starts Postgres and a Kafka broker (installing and caching
# what they need), builds `hourglass`, creates an ingest API key for the customer `demo`, prints a command
# that sends an event, and runs the collector on 127.0.0.1:50051 until Ctrl-C.
#
# (`hourglass standalone`, one process with no external server, replaces this script when it lands.)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export HOURGLASS_CACHE_DIR="${HOURGLASS_CACHE_DIR:-$HOME/.cache/hourglass}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOURGLASS_CACHE_DIR/target}"
listen_addr="${HOURGLASS_COLLECTOR_LISTEN_ADDR:-127.0.0.1:50051}"

bash e2e/servers/postgres.sh start
bash e2e/servers/kafka.sh start
eval "$(bash e2e/servers/postgres.sh env)"
eval "$(bash e2e/servers/kafka.sh env)"

cargo build --release --locked -p hourglass
hourglass="$CARGO_TARGET_DIR/release/hourglass"

# A key is shown only once, so the demo key is kept in the cache directory for the next run.
key_file="$HOURGLASS_CACHE_DIR/demo-ingest-key"
if ! [[ -s "$key_file" ]]; then
    "$hourglass" keys create --customer demo --scope ingest --name "run-collector.sh" >"$key_file"
fi
api_key=$(cat "$key_file")
grpcurl=$(bash e2e/servers/tools.sh grpcurl 2>/dev/null || echo grpcurl)
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)

cat <<EOT

The collector starts on $listen_addr. Send an event from another terminal (grpcurl uses server reflection):

  $grpcurl -plaintext -H 'authorization: Bearer $api_key' \\
    -d '{"events":[{"eventId":"demo-1","eventType":"page_view","occurredAt":"$now","userId":"u1","properties":{"path":{"stringValue":"/"}}}]}' \\
    $listen_addr hourglass.v1.IngestService/IngestBatch

Measure it:  $hourglass bench collector --events 1000000

EOT
exec "$hourglass" collector --listen-addr "$listen_addr"
