#!/usr/bin/env bash
# The project's test command (CI runs exactly this through .ci/run).
#
# Installs and starts what the tests need, reusing what earlier runs cached, then runs every check and test:
#   1. Postgres 15 (Debian package), Apache Kafka and Apache Cassandra (Maven Central jars), via e2e/servers/*.sh;
#   2. `buf lint` and `buf breaking` (against the previous commit, with a self-test) on proto/, and the deployment artifacts (scripts/check-deploy.sh: helm, Envoy, promtool, cfn-lint);
#   3. the crate layering check, `cargo fmt --check`, `cargo clippy` (warnings are errors);
#   4. `cargo test --workspace`: unit tests, and real-server tests against the Postgres and Kafka above;
#      then a short run of every fuzz target (scripts/fuzz.sh: nightly and cargo-fuzz, in a target directory
#      of their own);
#   5. the web console (scripts/check-console.sh): console/dist rebuilt from its sources with npm and compared
#      with the committed files, then its browser test in headless Chromium against a standalone;
#   6. the e2e tier (e2e/run.sh): the Python SDK's tests, then the scenarios on the deployed shape;
#   7. the container image (e2e/image.sh smoke): built with podman, standalone run in it as the chart runs it;
#   8. the HTTP/2 abuse suite (e2e/abuse.sh): attacks on a standalone of its own, each shed within its limits.
#
# Caches live in $HOURGLASS_CACHE_DIR (default ~/.cache/hourglass): Kafka jars and instances, the Python venv
# for buf, and the cargo target directory (CARGO_TARGET_DIR, kept outside the clone). The servers keep running
# afterwards, so a second run starts in seconds; stop them with `e2e/servers/kafka.sh stop`,
# `e2e/servers/cassandra.sh stop` and `e2e/servers/postgres.sh stop`.
#
# `scripts/test.sh --fresh` (what CI runs) first removes all Hourglass state that earlier runs left (Kafka and
# Cassandra instances, the Postgres clusters these scripts created or, in a machine's own cluster, role
# `hourglass` and its databases; demo keys), keeping only downloads and the build cache: a test that passes
# only because an earlier run created a keyspace, a topic or a key then fails here, not on a newcomer's
# machine.
set -euo pipefail

fresh=false
case "${1:-}" in
    --fresh) fresh=true ;;
    "") ;;
    *) echo "usage: scripts/test.sh [--fresh]" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export HOURGLASS_CACHE_DIR="${HOURGLASS_CACHE_DIR:-$HOME/.cache/hourglass}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOURGLASS_CACHE_DIR/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# CI builds a clean clone once: incremental compilation would only add its ~20 GB of session files to the
# shared target directory.
if [[ "${CI:-}" == true ]]; then
    export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
fi
# Checked queries build from the committed .sqlx/ data, never from whatever database happens to be set.
export SQLX_OFFLINE=true
unset DATABASE_URL

step() { printf '\n==> %s\n' "$*" >&2; }

# shellcheck source=scripts/build-prerequisites.sh
source scripts/build-prerequisites.sh

if $fresh; then
    step "servers (fresh: Hourglass state of earlier runs removed)"
    rm -f "$HOURGLASS_CACHE_DIR"/demo-*-key
    servers_env=$(bash e2e/servers/start-all.sh --fresh)
else
    step "servers"
    servers_env=$(bash e2e/servers/start-all.sh)
fi
eval "$servers_env"
export HOURGLASS_TEST_DATABASE_URL="$HOURGLASS_DATABASE_URL"
export HOURGLASS_TEST_KAFKA_BROKERS="$HOURGLASS_KAFKA_BROKERS"
export HOURGLASS_TEST_CQL_NODES="$HOURGLASS_CQL_NODES"

# Each test creates a database of its own; drop those of earlier runs.
psql "$HOURGLASS_DATABASE_URL" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'hourglass_test_%'" |
    while read -r database; do
        psql "$HOURGLASS_DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$database\"" >/dev/null
    done

step "buf lint"
buf=$(bash e2e/servers/tools.sh buf)
"$buf" lint

step "buf breaking: proto/ backward compatible with the previous commit's, and the check shown to fail on a renumbered field (scripts/check-proto-breaking.sh)"
bash scripts/check-proto-breaking.sh --self-test

step "tracking-plan JSON Schema against its examples (scripts/check-tracking-plan-schema.py)"
# From the e2e venv, where e2e/requirements.txt pins jsonschema: a new machine's python3 has none.
"$(bash e2e/servers/tools.sh e2e-python)" scripts/check-tracking-plan-schema.py

step "deployment artifacts: chart, Envoy, alerts, alarms, metrics doc (scripts/check-deploy.sh)"
bash scripts/check-deploy.sh

step "sqlx offline query data (.sqlx/) matches the queries and the migrations"
sqlx=$(bash e2e/servers/tools.sh sqlx)
check_database="${HOURGLASS_DATABASE_URL%/*}/hourglass_sqlx_check"
psql "$HOURGLASS_DATABASE_URL" -qc "DROP DATABASE IF EXISTS hourglass_sqlx_check" -c "CREATE DATABASE hourglass_sqlx_check" >/dev/null
"$sqlx" migrate run --source crates/postgres/migrations --database-url "$check_database" >/dev/null
PATH="$(dirname "$sqlx"):$PATH" SQLX_OFFLINE=false DATABASE_URL="$check_database" \
    cargo sqlx prepare --check --workspace -- --all-targets

step "crate layering (docs/architecture.md)"
python3 scripts/check-layering.py --self-test

step "every promise of docs/guarantees.md names a test that exists"
python3 scripts/check-guarantees.py --self-test

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
test_log="$HOURGLASS_CACHE_DIR/last-test-run.log"
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$test_log"
test_status=${PIPESTATUS[0]}
set -e

# Long enough to catch what the seeds lead to at once (a few hundred thousand inputs on the fast targets);
# the long runs are scripts/fuzz.sh --seconds N by hand (README: Fuzzing).
fuzz_seconds="${HOURGLASS_FUZZ_SECONDS:-40}"
step "fuzz: every target for ${fuzz_seconds} s (scripts/fuzz.sh)"
fuzz_status=0
bash scripts/fuzz.sh --seconds "$fuzz_seconds" || fuzz_status=$?

step "web console: built files match their sources, then the browser test in headless Chromium (scripts/check-console.sh)"
console_status=0
bash scripts/check-console.sh || console_status=$?

# Half the scenarios' load: their faults keep their timing, so this costs CPU, not coverage (README: End to end).
step "e2e: the Python SDK's tests, then the scenarios on the deployed shape (e2e/run.sh)"
e2e_status=0
bash e2e/run.sh --sdk-tests --scale "${HOURGLASS_E2E_SCALE:-0.5}" || e2e_status=$?
step "container image: build it, run standalone in it (uid 65532, read-only root), events in and counted (e2e/image.sh smoke)"
image_status=0
bash e2e/image.sh smoke || image_status=$?
step "HTTP/2 abuse suite: rapid reset, CONTINUATION flood, idle connections and streams, unread acks, slow senders (e2e/abuse.sh)"
abuse_status=0
bash e2e/abuse.sh || abuse_status=$?
# One closing line for the whole run (cargo prints one per test binary, the last often a doc-test run).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' "$test_log"
((test_status == 0)) || exit "$test_status"
((fuzz_status == 0)) || exit "$fuzz_status"
((console_status == 0)) || exit "$console_status"
((e2e_status == 0)) || exit "$e2e_status"
((image_status == 0)) || exit "$image_status"
exit "$abuse_status"
