#!/usr/bin/env bash
# Runs the platform as it is deployed, on this machine, and the e2e scenarios against it.
#
# usage: e2e/run.sh [--seed N] [--scale F] [--keep-servers] [--sdk-tests] [--log-dir DIR] [SCENARIO...]
#
#   SCENARIO   a name or number (default: all seven, in order): 1 steady, 2 collector-rolling-restart,
#              3 ingestor-kill, 4 broker-outage, 5 postgres-restart, 6 cassandra-outage, 7 aggregator-query-kill
#   --seed N   seed of everything random (events, customers' shares, fault times); default 1
#   --scale F  multiplies every load's events per second (CI runs less than 1); default 1
#   --keep-servers  leave the run's Kafka, Cassandra and Postgres instances running (the next run starts faster)
#   --sdk-tests  run the Python SDK's own tests (sdks/python/tests, against `hourglass standalone`) first
#
# Starts Kafka, Cassandra and Postgres instances of its own (`e2e`: ports 19592, 19542, 5462; never the
# shared `main` ones, which other tests use: the scenarios stop and restart these), then two collectors and
# two query services behind haproxy (generated from the Helm chart's Envoy config), two ingestors in one
# consumer group and two aggregators, each its own `hourglass` process reading the hourglass.toml the chart
# renders. Topics, keyspace, database and consumer group are new for every run. Prints each scenario's
# figures and where the run's logs are ($HOURGLASS_CACHE_DIR/e2e-runs/...), stops everything it started at
# the end, also on failure or Ctrl-C, and exits non-zero if a scenario failed.
#
# Builds `hourglass` (debug) unless HOURGLASS_BIN names one. Installs what it needs once, cached in
# $HOURGLASS_CACHE_DIR: haproxy (apt), grpc-health-probe and helm (go install), a venv with the SDK
# (sdks/python) and the scenarios' packages (e2e/requirements.txt).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export HOURGLASS_CACHE_DIR="${HOURGLASS_CACHE_DIR:-$HOME/.cache/hourglass}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOURGLASS_CACHE_DIR/target}"
LOG_TAG=e2e
# shellcheck source=e2e/servers/lib.sh
source e2e/servers/lib.sh

sdk_tests=false
arguments=()
for argument in "$@"; do
    case "$argument" in
        -h | --help) usage ;;
        --sdk-tests) sdk_tests=true ;;
        *) arguments+=("$argument") ;;
    esac
done

use_hourglass_debug_build e2e
command -v haproxy >/dev/null 2>&1 || apt_install haproxy
command -v psql >/dev/null 2>&1 || apt_install postgresql-client
HOURGLASS_E2E_HELM=$(bash e2e/servers/tools.sh helm)
HOURGLASS_E2E_PROBE=$(bash e2e/servers/tools.sh grpc-health-probe)
python=$(bash e2e/servers/tools.sh e2e-python)
# The SDK as a user installs it (its stubs generated from proto/ now), without fetching anything: its
# build and runtime dependencies are in the venv already.
"$python" -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps "$root/sdks/python" >&2
rm -rf "$root/sdks/python/build"
if $sdk_tests; then
    log "the Python SDK's tests (sdks/python/tests, against hourglass standalone)"
    (cd sdks/python && "$python" -m pytest -q -p no:cacheprovider tests)
fi
# The runner's own unit tests (the secret scan that ends every run), before the run relies on them.
"$python" -m pytest -q -p no:cacheprovider e2e/tests
export HOURGLASS_E2E_HELM HOURGLASS_E2E_PROBE HOURGLASS_E2E_REPOSITORY="$root"
PYTHONPATH="$root/e2e" exec "$python" -m hourglass_e2e ${arguments[@]+"${arguments[@]}"}
