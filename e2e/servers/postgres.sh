#!/usr/bin/env bash
# PostgreSQL 15 (Debian's packages and cluster tools) for the e2e tests.
#
# usage: postgres.sh start|stop|kill|destroy|reset|status|env [--name NAME --port PORT]
#
#   start   install postgresql if missing (apt-get), create cluster 15/main on port 5432 if missing, start it,
#           and create role `hourglass` (password `hourglass`, LOGIN CREATEDB) and database `hourglass` owned
#           by it; then check a password login over 127.0.0.1:5432. Idempotent.
#   stop    stop cluster 15/main if it runs
#   kill    stop it at once, like a crash (`pg_ctlcluster ... stop -m immediate`: no checkpoint)
#   destroy stop cluster 15/main and drop it with its data (`pg_dropcluster`): the next start makes a new one
#   reset   remove Hourglass's state: destroy the cluster if these scripts created it; otherwise (a machine's
#           own Postgres) drop only the databases owned by role `hourglass`, and the role
#   status  exit 0 if cluster 15/main accepts connections on 127.0.0.1:5432
#   env     print `export HOURGLASS_DATABASE_URL=postgres://hourglass:hourglass@127.0.0.1:5432/hourglass`
#
# --name/--port select another cluster (default main/5432), e.g. one a fault test stops and restarts while the
# main one keeps serving: `postgres.sh start --name fault --port 5442`.
#
# Needs root (or sudo) for apt-get and the cluster tools. Environment: HOURGLASS_POSTGRES_START_TIMEOUT (60).
set -euo pipefail

LOG_TAG=postgres
# shellcheck source=e2e/servers/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

PG_VERSION=15
PG_CLUSTER=main
PG_HOST=127.0.0.1
PG_PORT=5432
PG_BIN="/usr/lib/postgresql/$PG_VERSION/bin"
DB_USER=hourglass
DB_PASSWORD=hourglass
DB_NAME=hourglass
DATABASE_URL="postgres://$DB_USER:$DB_PASSWORD@$PG_HOST:$PG_PORT/$DB_NAME"
START_TIMEOUT="${HOURGLASS_POSTGRES_START_TIMEOUT:-60}"
CREATED_CLUSTERS_FILE="$HOURGLASS_CACHE_DIR/postgres-clusters-created"

installed() {
    command -v pg_ctlcluster >/dev/null 2>&1 && command -v pg_createcluster >/dev/null 2>&1 &&
        command -v psql >/dev/null 2>&1 && [[ -x "$PG_BIN/postgres" ]]
}

ensure_installed() {
    installed && return 0
    apt_install postgresql
    installed || die "apt-get installed postgresql, but PostgreSQL $PG_VERSION is not in $PG_BIN (another Debian release?)"
}

cluster_exists() {
    pg_lsclusters -h "$PG_VERSION" "$PG_CLUSTER" >/dev/null 2>&1
}

cluster_running() {
    cluster_exists && as_root pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" status >/dev/null 2>&1
}

# as_postgres CMD...: runs CMD as the postgres superuser (peer authentication over the Unix socket).
as_postgres() {
    if [[ "$(id -un)" == postgres ]]; then
        (cd / && "$@")
    elif ((EUID == 0)); then
        (cd / && runuser -u postgres -- "$@")
    elif command -v sudo >/dev/null 2>&1; then
        (cd / && sudo -u postgres -- "$@")
    else
        die "need root (or sudo) to run as postgres: $*"
    fi
}

psql_admin() {
    as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres "$@"
}

# login_works: a password login as the test role over TCP on 127.0.0.1 (what the tests do).
login_works() {
    PGCONNECT_TIMEOUT=5 psql -X -q -A -t -v ON_ERROR_STOP=1 "$DATABASE_URL" -c 'SELECT 1' 2>&1
}

# start_cluster: as_root keeps our descriptors from the server: the setup lock (fd 9), which it would hold
# for as long as it runs, and any pipe of our caller.
start_cluster() {
    as_root pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start >&2
}

cmd_start() {
    ensure_installed
    mkdir -p "$HOURGLASS_CACHE_DIR"
    exec 9>"$HOURGLASS_CACHE_DIR/postgres.lock" # one setup at a time
    flock 9

    if ! cluster_exists; then
        if port_open "$PG_HOST" "$PG_PORT"; then
            die "port $PG_PORT is taken by another server; cluster $PG_VERSION/$PG_CLUSTER cannot use it"
        fi
        log "creating cluster $PG_VERSION/$PG_CLUSTER on port $PG_PORT"
        as_root pg_createcluster --locale C.UTF-8 -p "$PG_PORT" "$PG_VERSION" "$PG_CLUSTER" >"$HOURGLASS_CACHE_DIR/pg_createcluster.log" 2>&1 || {
            cat "$HOURGLASS_CACHE_DIR/pg_createcluster.log" >&2
            die "pg_createcluster $PG_VERSION $PG_CLUSTER failed"
        }
        # Remembered, so `reset` may destroy what these scripts made and nothing else.
        echo "$PG_CLUSTER" >>"$CREATED_CLUSTERS_FILE"
    fi
    local port
    port=$(pg_lsclusters -h "$PG_VERSION" "$PG_CLUSTER" | awk '{ print $3 }')
    if [[ "$port" != "$PG_PORT" ]]; then
        # Installing postgresql while something held 5432 makes its cluster on 5433: move it back if it can.
        if cluster_running || port_open "$PG_HOST" "$PG_PORT"; then
            die "cluster $PG_VERSION/$PG_CLUSTER is set to port $port, not $PG_PORT, and cannot be moved now (it runs, or $PG_PORT is taken)"
        fi
        warn "cluster $PG_VERSION/$PG_CLUSTER is set to port $port; moving it to $PG_PORT"
        as_root pg_conftool "$PG_VERSION" "$PG_CLUSTER" set port "$PG_PORT"
    fi

    if cluster_running; then
        log "cluster $PG_VERSION/$PG_CLUSTER already running"
    else
        if port_open "$PG_HOST" "$PG_PORT"; then
            die "port $PG_PORT is taken by another server; cluster $PG_VERSION/$PG_CLUSTER cannot start"
        fi
        log "starting cluster $PG_VERSION/$PG_CLUSTER ..."
        start_cluster || {
            as_root tail -n 20 "/var/log/postgresql/postgresql-$PG_VERSION-$PG_CLUSTER.log" >&2 || true
            die "pg_ctlcluster $PG_VERSION $PG_CLUSTER start failed"
        }
    fi
    local deadline=$((SECONDS + START_TIMEOUT))
    until pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 1; do
        ((SECONDS < deadline)) || die "cluster $PG_VERSION/$PG_CLUSTER not accepting connections on $PG_HOST:$PG_PORT after $START_TIMEOUT s"
        sleep 0.2
    done

    # Role and database, created once; the role's password and attributes are reset on every start.
    psql_admin -v user="$DB_USER" -v pw="$DB_PASSWORD" -v db="$DB_NAME" <<'SQL'
SELECT format('CREATE ROLE %I', :'user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN CREATEDB PASSWORD %L', :'user', :'pw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L LOCALE %L TEMPLATE template0', :'db', :'user', 'UTF8', 'C.UTF-8')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'db', :'user') \gexec
SQL

    local encoding
    encoding=$(psql_admin -A -t -c "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'template1'")
    if [[ "$encoding" != UTF8 ]]; then
        warn "cluster $PG_VERSION/$PG_CLUSTER was created with encoding $encoding (no UTF-8 locale then): databases made from template1 get it too; $DB_NAME is UTF8"
    fi

    # Debian's pg_hba.conf allows scram-sha-256 logins over 127.0.0.1; a changed one may not.
    local out
    if ! out=$(login_works); then
        local hba
        local hba marker="# added by e2e/servers/postgres.sh"
        hba=$(psql_admin -A -t -c 'SHOW hba_file')
        as_root grep -qF -- "$marker" "$hba" && die "password login with $DATABASE_URL fails: $out"
        warn "password login over $PG_HOST failed ($out); allowing it in $hba"
        as_root sed -i "1i host $DB_NAME $DB_USER 127.0.0.1/32 scram-sha-256 $marker" "$hba"
        psql_admin -c 'SELECT pg_reload_conf()' >/dev/null
        sleep 0.5
        out=$(login_works) || die "password login with $DATABASE_URL still fails: $out"
    fi
    exec 9>&-
    log "ready: $DATABASE_URL"
}

cmd_stop() {
    if ! installed || ! cluster_running; then
        log "cluster $PG_VERSION/$PG_CLUSTER is not running"
        return 0
    fi
    log "stopping cluster $PG_VERSION/$PG_CLUSTER ..."
    as_root pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" stop >&2
    log "stopped"
}

cmd_kill() {
    if ! installed || ! cluster_running; then
        log "cluster $PG_VERSION/$PG_CLUSTER is not running"
        return 0
    fi
    as_root pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" stop -m immediate >&2
    log "cluster $PG_VERSION/$PG_CLUSTER stopped immediately"
}

cmd_destroy() {
    if ! installed || ! cluster_exists; then
        log "cluster $PG_VERSION/$PG_CLUSTER does not exist"
        return 0
    fi
    as_root pg_dropcluster --stop "$PG_VERSION" "$PG_CLUSTER" >&2
    log "cluster $PG_VERSION/$PG_CLUSTER destroyed"
}

# created_here: true if these scripts created the cluster (it is listed in CREATED_CLUSTERS_FILE).
created_here() {
    [[ -f "$CREATED_CLUSTERS_FILE" ]] && grep -qxF -- "$PG_CLUSTER" "$CREATED_CLUSTERS_FILE"
}

# reset: Hourglass's state in the cluster goes, nothing else. A cluster these scripts created is destroyed
# whole; one that was there before (a machine's own Postgres) keeps its other databases and roles, and
# loses only the databases the test role owns and that role.
cmd_reset() {
    if ! installed || ! cluster_exists; then
        log "cluster $PG_VERSION/$PG_CLUSTER does not exist"
        return 0
    fi
    if created_here; then
        cmd_destroy
        grep -vxF -- "$PG_CLUSTER" "$CREATED_CLUSTERS_FILE" >"$CREATED_CLUSTERS_FILE.new" || true
        mv "$CREATED_CLUSTERS_FILE.new" "$CREATED_CLUSTERS_FILE"
        return 0
    fi
    local was_running=true
    cluster_running || { was_running=false; start_cluster; }
    local deadline=$((SECONDS + START_TIMEOUT))
    until pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 1; do
        ((SECONDS < deadline)) || die "cluster $PG_VERSION/$PG_CLUSTER not accepting connections on $PG_HOST:$PG_PORT"
        sleep 0.2
    done
    local databases
    databases=$(psql_admin -A -t -v user="$DB_USER" <<'SQL'
SELECT datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE r.rolname = :'user'
SQL
)
    local database
    for database in $databases; do
        psql_admin -v db="$database" <<'SQL'
SELECT format('DROP DATABASE %I WITH (FORCE)', :'db') \gexec
SQL
    done
    psql_admin -v user="$DB_USER" <<'SQL' || warn "role $DB_USER kept: it still owns objects outside its databases"
SELECT format('DROP ROLE %I', :'user') WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
SQL
    log "cluster $PG_VERSION/$PG_CLUSTER (not created by these scripts) kept; its $(wc -w <<<"$databases") Hourglass database(s) and role $DB_USER dropped"
    $was_running || as_root pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" stop >&2
}

cmd_status() {
    if installed && cluster_running && pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 1; then
        log "cluster $PG_VERSION/$PG_CLUSTER running on $PG_HOST:$PG_PORT"
        return 0
    fi
    log "cluster $PG_VERSION/$PG_CLUSTER is not running"
    return 1
}

cmd_env() {
    printf 'export HOURGLASS_DATABASE_URL=%s\n' "$DATABASE_URL"
}

(($# >= 1)) || usage
action=$1
shift
while (($#)); do
    case "$1" in
        --name) PG_CLUSTER=${2:?--name needs a value}; shift 2 ;;
        --port) PG_PORT=${2:?--port needs a value}; shift 2 ;;
        *) usage ;;
    esac
done
[[ "$PG_CLUSTER" =~ ^[a-z][a-z0-9_]*$ ]] || die "invalid cluster name $PG_CLUSTER"
DATABASE_URL="postgres://$DB_USER:$DB_PASSWORD@$PG_HOST:$PG_PORT/$DB_NAME"
case "$action" in
    start | stop | kill | destroy | reset | status | env) "cmd_$action" ;;
    *) usage ;;
esac
