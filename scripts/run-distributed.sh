#!/usr/bin/env bash
# Runs the distributed platform on this machine: starts Postgres, a Kafka broker and a Cassandra node
# (installing and caching what they need), builds `hourglass`, creates an ingest API key for the customer
# `demo`, prints a command that sends an event, then runs the ingestor (Kafka -> raw store) and the
# aggregator (raw store -> hourly rollups) in the background and the collector on 127.0.0.1:50051 in the
# foreground, until Ctrl-C.
#
# (`hourglass standalone`, one process with no external server, becomes the first command when it lands.)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export HOURGLASS_CACHE_DIR="${HOURGLASS_CACHE_DIR:-$HOME/.cache/hourglass}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOURGLASS_CACHE_DIR/target}"
listen_addr="${HOURGLASS_COLLECTOR_LISTEN_ADDR:-127.0.0.1:50051}"

servers_env=$(bash e2e/servers/start-all.sh)
eval "$servers_env"

cargo build --release --locked -p hourglass
hourglass="$CARGO_TARGET_DIR/release/hourglass"

# A key is shown only once, so the demo key is kept in the cache directory for the next run.
key_file="$HOURGLASS_CACHE_DIR/demo-ingest-key"
if ! [[ -s "$key_file" ]]; then
    "$hourglass" keys create --customer demo --scope ingest --name "run-distributed.sh" >"$key_file"
fi
api_key=$(cat "$key_file")
grpcurl=$(bash e2e/servers/tools.sh grpcurl 2>/dev/null || echo grpcurl)
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)

cat <<EOT

The collector starts on $listen_addr. Send an event from another terminal (grpcurl uses server reflection):

  $grpcurl -plaintext -H 'authorization: Bearer $api_key' \\
    -d '{"events":[{"eventId":"demo-1","eventType":"page_view","occurredAt":"$now","userId":"u1","properties":{"path":{"stringValue":"/"}}}]}' \\
    $listen_addr hourglass.v1.IngestService/IngestBatch

The ingestor stores it in Cassandra (keyspace hourglass) and marks its hour; within a minute the aggregator
writes the hour's provisional rollup and ledger row:
  psql $HOURGLASS_DATABASE_URL -c 'SELECT customer_id, hour_start, event_type, events, distinct_users, revision, is_final FROM hourly_rollups'
  $hourglass verify --from $(date -u +%Y-%m-%dT00:00:00Z) --to $(date -u -d tomorrow +%Y-%m-%dT00:00:00Z)

Measure:  $hourglass bench collector --events 1000000;  $hourglass bench ingestor --events 1000000

EOT
"$hourglass" ingestor --health-listen-addr 127.0.0.1:50061 &
ingestor_pid=$!
"$hourglass" aggregator &
aggregator_pid=$!
trap 'kill -TERM "$ingestor_pid" "$aggregator_pid" 2>/dev/null; wait "$ingestor_pid" "$aggregator_pid" 2>/dev/null' EXIT
"$hourglass" collector --listen-addr "$listen_addr"
