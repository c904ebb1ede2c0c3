#!/usr/bin/env bash
# Runs the distributed platform on this machine: starts Postgres, a Kafka broker and a Cassandra node
# (installing and caching what they need), builds `hourglass`, creates ingest and query API keys for the
# customer `demo`, prints commands that send events and report them, then runs the ingestor (Kafka -> raw
# store), the aggregator (raw store -> hourly rollups) and the query service (127.0.0.1:50052) in the
# background and the collector on 127.0.0.1:50051 in the foreground, until Ctrl-C.
#
# For the whole platform in one process with no external server, see scripts/run-standalone.sh.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export HOURGLASS_CACHE_DIR="${HOURGLASS_CACHE_DIR:-$HOME/.cache/hourglass}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOURGLASS_CACHE_DIR/target}"
listen_addr="${HOURGLASS_COLLECTOR_LISTEN_ADDR:-127.0.0.1:50051}"
query_addr="${HOURGLASS_QUERY_LISTEN_ADDR:-127.0.0.1:50052}"

# shellcheck source=scripts/build-prerequisites.sh
source scripts/build-prerequisites.sh

servers_env=$(bash e2e/servers/start-all.sh)
eval "$servers_env"

cargo build --release --locked -p hourglass
hourglass="$CARGO_TARGET_DIR/release/hourglass"

# A key is shown only once, so the demo keys are kept in the cache directory for the next run; one the
# database no longer knows (a new Postgres cluster, a revoked key) is replaced.
demo_key() {
    local scope=$1 key_file="$HOURGLASS_CACHE_DIR/demo-$1-key" key
    key=$(cat "$key_file" 2>/dev/null || true)
    if [[ -z "$key" ]] || ! "$hourglass" keys list --customer demo | grep -qF -- "${key:0:12}"; then
        "$hourglass" keys create --customer demo --scope "$scope" --name "run-distributed.sh" >"$key_file"
        key=$(cat "$key_file")
    fi
    printf '%s' "$key"
}
api_key=$(demo_key ingest)
query_key=$(demo_key query)
grpcurl=$(bash e2e/servers/tools.sh grpcurl 2>/dev/null || echo grpcurl)
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)

cat <<EOT

The collector starts on $listen_addr. Send an event from another terminal (grpcurl uses server reflection):

  $grpcurl -plaintext -H 'authorization: Bearer $api_key' \\
    -d '{"events":[{"eventId":"demo-1","eventType":"page_view","occurredAt":"$now","userId":"u1","properties":{"path":{"stringValue":"/"}}}]}' \\
    $listen_addr hourglass.v1.IngestService/IngestBatch

or 10,000 generated ones:

  $hourglass send --target http://$listen_addr --api-key $api_key --events 10000

The ingestor stores them in Cassandra (keyspace hourglass) and marks their hour; within a minute the
aggregator writes the hour's provisional rollup and ledger row, and the query service reports it:
  $hourglass report --target http://$query_addr --api-key $query_key --last-hours 2 --by-event-type
  $hourglass verify --from $(date -u +%Y-%m-%dT00:00:00Z) --to $(date -u -d tomorrow +%Y-%m-%dT00:00:00Z)

Measure:  $hourglass bench collector;  $hourglass bench ingestor;  $hourglass bench query

EOT
"$hourglass" ingestor --health-listen-addr 127.0.0.1:50061 &
ingestor_pid=$!
"$hourglass" aggregator &
aggregator_pid=$!
"$hourglass" query --listen-addr "$query_addr" &
query_pid=$!
trap 'kill -TERM "$ingestor_pid" "$aggregator_pid" "$query_pid" 2>/dev/null; wait "$ingestor_pid" "$aggregator_pid" "$query_pid" 2>/dev/null' EXIT
"$hourglass" collector --listen-addr "$listen_addr"
