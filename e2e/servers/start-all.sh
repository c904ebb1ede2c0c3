#!/usr/bin/env bash
# Starts (installing and caching as needed) every server the distributed platform and its tests use:
# Postgres, Kafka and Cassandra. Prints their addresses as `export` lines on stdout, for
#   eval "$(bash e2e/servers/start-all.sh)"
# Progress and errors go to stderr.
set -euo pipefail
servers=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
for server in postgres kafka cassandra; do
    bash "$servers/$server.sh" start
done
for server in postgres kafka cassandra; do
    bash "$servers/$server.sh" env
    echo
done
