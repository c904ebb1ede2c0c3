#!/usr/bin/env bash
# Starts (installing and caching as needed) every server the distributed platform and its tests use:
# Postgres, Kafka and Cassandra. Prints their addresses as `export` lines on stdout, for
#   eval "$(bash e2e/servers/start-all.sh)"
# Progress and errors go to stderr.
#
# With --fresh, every Kafka and Cassandra instance (the main ones and those fault tests made) is destroyed
# first, data and all, and every Postgres 15 cluster is reset (`postgres.sh reset`: destroyed if these
# scripts created it, else only Hourglass's databases and role dropped, so a machine's own Postgres keeps
# its other data), so the servers start as on a machine that never ran Hourglass; downloads are kept.
set -euo pipefail
servers=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/servers/lib.sh
source "$servers/lib.sh"
if [[ "${1:-}" == --fresh ]]; then
    for server in kafka cassandra; do
        for instance in "$HOURGLASS_CACHE_DIR/$server-instances"/*/; do
            [[ -d "$instance" ]] || continue
            bash "$servers/$server.sh" destroy --name "$(basename "$instance")"
        done
    done
    if command -v pg_lsclusters >/dev/null 2>&1; then
        pg_lsclusters -h 15 2>/dev/null | awk '{ print $2, $3 }' | while read -r cluster port; do
            bash "$servers/postgres.sh" reset --name "$cluster" --port "$port"
        done
    fi
elif (($#)); then
    echo "usage: start-all.sh [--fresh]" >&2
    exit 2
fi
for server in postgres kafka cassandra; do
    bash "$servers/$server.sh" start
done
for server in postgres kafka cassandra; do
    bash "$servers/$server.sh" env
    echo
done
