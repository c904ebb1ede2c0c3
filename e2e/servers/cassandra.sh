#!/usr/bin/env bash
# A real Apache Cassandra node (single node, from Maven Central jars): the CQL server of the e2e tests and
# benchmarks (ScyllaDB speaks the same CQL protocol but cannot be installed here).
#
# usage: cassandra.sh start|stop|kill|destroy|status|env [--name NAME] [--port PORT]
#        cassandra.sh nodetool [--name NAME] ARGS...   org.apache.cassandra.tools.NodeTool over local JMX
#        cassandra.sh fetch                            only fetch the jars (once)
#
#   start   start the instance; exit 0 at once if it already runs. Ready means: the CQL port answers an
#           OPTIONS request of the native protocol (v4) with SUPPORTED
#   stop    SIGTERM (Cassandra drains: flushes memtables), wait up to 60 s, then SIGKILL
#   destroy kill the instance and delete its directory (data, logs, port): the next start is a new server
#   kill    SIGKILL at once (fault tests); the next start replays the commit log of the same data dir. With
#           `commitlog_sync: periodic` (10 s, the default) the writes of the last 10 s before a kill are lost
#   status  exit 0 if the instance runs and answers CQL
#   env     print `export HOURGLASS_CQL_NODES=127.0.0.1:PORT`
#
# Instance NAME (default `main`, CQL port 19042) lives in $HOURGLASS_CACHE_DIR/cassandra-instances/NAME/:
# cassandra.yaml and logback.xml (rewritten on each start), db/ (commitlog, data, saved_caches, hints,
# cdc_raw), triggers/ (empty), cassandra.pid, port, cassandra.log (WARN and above plus a few INFO lines, rolled
# at 20 MB, 2 old files kept) and jvm.log (the JVM's own stdout/stderr). The storage (gossip) port is
# PORT+1000, the JMX port (local only) PORT+2000. Another instance needs its own --port the first time (e.g.
# `cassandra.sh start --name fault --port 19142`); later commands find it by --name alone.
#
# Environment: HOURGLASS_CACHE_DIR, HOURGLASS_CASSANDRA_START_TIMEOUT (120), HOURGLASS_CASSANDRA_STOP_TIMEOUT
# (60), HOURGLASS_CASSANDRA_HEAP_OPTS ("-Xms1g -Xmx1g"), HOURGLASS_CASSANDRA_JAVA_OPTS (extra JVM flags),
# HOURGLASS_CASSANDRA_LOG_LEVEL (WARN; INFO shows every flush and compaction), HOURGLASS_CASSANDRA_COMMITLOG_SYNC
# (periodic: acknowledged writes of the last 10 s lost on SIGKILL; batch: a commit log sync before each
# acknowledgement; group: the same, syncing every 10 ms); these two take effect on the next start.
set -euo pipefail

LOG_TAG=cassandra
# shellcheck source=e2e/servers/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

CASSANDRA_POM="$HOURGLASS_SERVERS_DIR/cassandra/pom.xml"
CASSANDRA_VERSION=$(sed -n 's:.*<cassandra.version>\([^<]*\)</cassandra.version>.*:\1:p' "$CASSANDRA_POM" | head -n1)
[[ -n "$CASSANDRA_VERSION" ]] || die "cannot read <cassandra.version> from $CASSANDRA_POM"
CASSANDRA_HOME="$HOURGLASS_CACHE_DIR/cassandra-$CASSANDRA_VERSION"
CASSANDRA_LIB="$CASSANDRA_HOME/lib"
TOOLS_LOGBACK="$CASSANDRA_HOME/logback-tools.xml"
INSTANCES_DIR="$HOURGLASS_CACHE_DIR/cassandra-instances"

DEFAULT_NAME=main
DEFAULT_PORT=19042
STORAGE_PORT_OFFSET=1000
JMX_PORT_OFFSET=2000
START_TIMEOUT="${HOURGLASS_CASSANDRA_START_TIMEOUT:-120}"
STOP_TIMEOUT="${HOURGLASS_CASSANDRA_STOP_TIMEOUT:-60}"
HEAP_OPTS="${HOURGLASS_CASSANDRA_HEAP_OPTS:--Xms1g -Xmx1g}"
LOG_LEVEL="${HOURGLASS_CASSANDRA_LOG_LEVEL:-WARN}"
COMMITLOG_SYNC="${HOURGLASS_CASSANDRA_COMMITLOG_SYNC:-periodic}"
JVM_LOG_MAX_BYTES=$((50 * 1024 * 1024))

usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2
    exit 2
}

# ---------------------------------------------------------------------------------------------- Java and jars

ensure_java() {
    if ! command -v java >/dev/null 2>&1; then
        apt_install openjdk-17-jre-headless
    fi
    local major
    major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
    if [[ -n "$major" ]] && ((major != 11 && major != 17)); then
        die "Cassandra $CASSANDRA_VERSION runs on Java 11 or 17; \`java\` is version $major"
    fi
}

ensure_maven() {
    if ! command -v mvn >/dev/null 2>&1; then
        apt_install maven
    fi
}

# ensure_jars: the server's jars in $CASSANDRA_LIB, fetched once with Maven. They are fetched into a temporary
# directory that is renamed into place only when complete, with the checksum of the pom that produced them, so
# neither an interrupted download nor a changed pom is taken for a valid cache.
ensure_jars() {
    local sum
    sum=$(sha256sum "$CASSANDRA_POM" | cut -d' ' -f1)
    if [[ -f "$CASSANDRA_LIB/.pom.sha256" && "$(<"$CASSANDRA_LIB/.pom.sha256")" == "$sum" ]]; then
        return 0
    fi
    mkdir -p "$CASSANDRA_HOME"
    # One download at a time, e.g. when the main and fault nodes start together on a new machine.
    exec 9>"$CASSANDRA_HOME/.lock"
    flock 9
    if [[ -f "$CASSANDRA_LIB/.pom.sha256" && "$(<"$CASSANDRA_LIB/.pom.sha256")" == "$sum" ]]; then
        exec 9>&-
        return 0
    fi
    rm -rf "$CASSANDRA_HOME"/fetch.tmp.* "$CASSANDRA_HOME"/lib.old.* # left by an interrupted earlier run
    ensure_java
    ensure_maven
    local work start=$SECONDS
    work=$(mktemp -d "$CASSANDRA_HOME/fetch.tmp.XXXXXX")
    cp "$CASSANDRA_POM" "$work/pom.xml"
    log "fetching Cassandra $CASSANDRA_VERSION jars from Maven Central into $CASSANDRA_LIB (once) ..."
    if ! (cd "$work" && mvn -B -q dependency:copy-dependencies -DoutputDirectory="$work/lib") >"$work/mvn.log" 2>&1; then
        sed 's/\x1b\[[0-9;]*m//g' "$work/mvn.log" | tail -n 40 >&2
        rm -rf "$work"
        die "mvn dependency:copy-dependencies failed (output above)"
    fi
    local jars
    jars=$(find "$work/lib" -maxdepth 1 -name '*.jar' | wc -l)
    if ((jars == 0)); then
        rm -rf "$work"
        die "mvn fetched no jars"
    fi
    printf '%s\n' "$sum" >"$work/lib/.pom.sha256"
    if [[ -e "$CASSANDRA_LIB" ]]; then
        mv "$CASSANDRA_LIB" "$CASSANDRA_HOME/lib.old.$$"
    fi
    mv "$work/lib" "$CASSANDRA_LIB"
    rm -rf "$work" "$CASSANDRA_HOME/lib.old.$$"
    exec 9>&-
    log "fetched $jars jars ($(du -sh "$CASSANDRA_LIB" | cut -f1)) in $((SECONDS - start)) s"
}

# write_file PATH: writes stdin to PATH atomically (temp file + rename), so that concurrent readers never
# see half a file.
write_file() {
    local path=$1 tmp
    tmp=$(mktemp "$path.tmp.XXXXXX")
    cat >"$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" "$path"
}

# nodetool logs WARN and above to stderr.
ensure_tools_logback() {
    [[ -f "$TOOLS_LOGBACK" ]] && return 0
    write_file "$TOOLS_LOGBACK" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<configuration scan="false">
  <appender name="STDERR" class="ch.qos.logback.core.ConsoleAppender">
    <target>System.err</target>
    <encoder><pattern>%-5level %logger{1} - %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="STDERR"/></root>
</configuration>
EOF
}

# Java 17 module flags Cassandra needs (what its conf/jvm17-server.options gives the server).
JAVA17_MODULE_FLAGS=(
    --add-exports=java.base/jdk.internal.misc=ALL-UNNAMED
    --add-exports=java.base/jdk.internal.ref=ALL-UNNAMED
    --add-exports=java.base/sun.nio.ch=ALL-UNNAMED
    --add-exports=java.base/java.lang.ref=ALL-UNNAMED
    --add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
    --add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED
    --add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED
    --add-exports=java.sql/java.sql=ALL-UNNAMED
    --add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED
    --add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
    --add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED
    --add-opens=java.base/java.lang=ALL-UNNAMED
    --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens=java.base/java.lang.module=ALL-UNNAMED
    --add-opens=java.base/java.io=ALL-UNNAMED
    --add-opens=java.base/java.nio=ALL-UNNAMED
    --add-opens=java.base/java.net=ALL-UNNAMED
    --add-opens=java.base/java.math=ALL-UNNAMED
    --add-opens=java.base/java.util=ALL-UNNAMED
    --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
    --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED
    --add-opens=java.base/jdk.internal.loader=ALL-UNNAMED
    --add-opens=java.base/jdk.internal.ref=ALL-UNNAMED
    --add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED
    --add-opens=java.base/jdk.internal.math=ALL-UNNAMED
    --add-opens=java.base/jdk.internal.module=ALL-UNNAMED
    --add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED
    --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED
    --add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
)

# ------------------------------------------------------------------------------------------------- instances

NAME=$DEFAULT_NAME
PORT_ARG=""

parse_instance_opts() {
    while (($#)); do
        case "$1" in
            --name) [[ $# -ge 2 ]] || usage; NAME=$2; shift 2 ;;
            --name=*) NAME=${1#--name=}; shift ;;
            --port) [[ $# -ge 2 ]] || usage; PORT_ARG=$2; shift 2 ;;
            --port=*) PORT_ARG=${1#--port=}; shift ;;
            -h | --help) usage ;;
            *) log "unknown argument: $1"; usage ;;
        esac
    done
    set_instance
}

set_instance() {
    [[ "$NAME" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "bad --name '$NAME' (letters, digits, _ . -)"
    if [[ -n "$PORT_ARG" ]]; then
        [[ "$PORT_ARG" =~ ^[0-9]+$ ]] && ((PORT_ARG > 0 && PORT_ARG + JMX_PORT_OFFSET < 65536)) ||
            die "bad --port '$PORT_ARG' (1..$((65535 - JMX_PORT_OFFSET)))"
    fi
    INST="$INSTANCES_DIR/$NAME"
    PID_FILE="$INST/cassandra.pid"
    PORT_FILE="$INST/port"
    CONFIG="$INST/cassandra.yaml"
    LOGBACK="$INST/logback.xml"
    DB="$INST/db"
    SERVER_LOG="$INST/cassandra.log"
    JVM_LOG="$INST/jvm.log"
    RECORDED_PORT=""
    if [[ -f "$PORT_FILE" ]]; then
        RECORDED_PORT=$(<"$PORT_FILE")
    fi
}

# resolve_port: --port if given, else the port the instance last started on, else 19042 for `main`.
resolve_port() {
    if [[ -n "$PORT_ARG" ]]; then
        PORT=$PORT_ARG
    elif [[ -n "$RECORDED_PORT" ]]; then
        PORT=$RECORDED_PORT
    elif [[ "$NAME" == "$DEFAULT_NAME" ]]; then
        PORT=$DEFAULT_PORT
    else
        die "instance '$NAME' has never been started: give it a --port"
    fi
    STORAGE_PORT=$((PORT + STORAGE_PORT_OFFSET))
    JMX_PORT=$((PORT + JMX_PORT_OFFSET))
}

# instance_pid: prints the pid of this instance's server and succeeds if it is alive (and really is this
# instance's server, not another process that reused the pid).
instance_pid() {
    local pid
    [[ -f "$PID_FILE" ]] || return 1
    pid=$(<"$PID_FILE")
    pid_alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$CONFIG" || return 1
    printf '%s\n' "$pid"
}

# cql_ready HOST PORT: true if the CQL native protocol answers on HOST:PORT: sends OPTIONS (protocol v4,
# stream 1, empty body) and expects the header of a SUPPORTED response (version 0x84, flags 0, stream 1,
# opcode 0x06). An open port alone is not enough: the protocol answers only once the server is ready.
cql_ready() {
    local reply
    # shellcheck disable=SC2016 # $1 and $2 belong to the inner shell
    reply=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf "\x04\x00\x00\x01\x05\x00\x00\x00\x00" >&3
        head -c 5 <&3 | od -An -tx1' _ "$1" "$2" 2>/dev/null) || return 1
    [[ "${reply//[[:space:]]/}" == 8400000106 ]]
}

# wait_cql_ready PID SECS: waits until CQL answers on 127.0.0.1:$PORT. Returns 1 on timeout, 2 at once if
# PID dies in the meantime.
wait_cql_ready() {
    local pid=$1 deadline=$((SECONDS + $2))
    wait_for_port 127.0.0.1 "$PORT" "$2" "$pid" || return $?
    while ! cql_ready 127.0.0.1 "$PORT"; do
        pid_alive "$pid" || return 2
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# wait_gone PID SECS: true once PID has exited and its listeners are closed.
wait_gone() {
    local pid=$1 deadline=$((SECONDS + $2)) port
    while pid_alive "$pid"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
    if [[ -n "${RECORDED_PORT:-}" ]]; then
        for port in "$RECORDED_PORT" "$((RECORDED_PORT + STORAGE_PORT_OFFSET))" "$((RECORDED_PORT + JMX_PORT_OFFSET))"; do
            wait_port_closed 127.0.0.1 "$port" 5 || warn "port $port still open after pid $pid exited"
        done
    fi
    return 0
}

# print_log_tail: the lines both logs got since the last `cassandra.sh start` (at most 40 of each).
print_log_tail() {
    local f
    for f in "$SERVER_LOG" "$JVM_LOG"; do
        if [[ -s "$f" ]]; then
            log "last lines of $f:"
            awk '/^==== .* cassandra\.sh start / { n = 0 } { line[n++] = $0 } END { for (i = 0; i < n; i++) print line[i] }' "$f" |
                tail -n 40 | cut -c1-400 | sed 's/^/    /' >&2
        fi
    done
}

# mark_logs TEXT: appends a `==== DATE cassandra.sh TEXT ====` line to both logs (while the server is down).
mark_logs() {
    local line f
    line=$(printf '==== %s cassandra.sh %s ====' "$(date -Is)" "$*")
    for f in "$SERVER_LOG" "$JVM_LOG"; do
        printf '%s\n' "$line" >>"$f"
    done
}

# commitlog_sync_config: the commit log settings for HOURGLASS_CASSANDRA_COMMITLOG_SYNC.
commitlog_sync_config() {
    case "$COMMITLOG_SYNC" in
        periodic)
            cat <<'EOF'
# Writes are acknowledged before the commit log is synced, and a restart replays the commit log only up to its
# last sync: a SIGKILL loses the writes of the last 10 s (HOURGLASS_CASSANDRA_COMMITLOG_SYNC=batch to keep them).
commitlog_sync: periodic
commitlog_sync_period: 10000ms
EOF
            ;;
        batch)
            cat <<'EOF'
# HOURGLASS_CASSANDRA_COMMITLOG_SYNC=batch: every write is acknowledged after the commit log is synced.
commitlog_sync: batch
EOF
            ;;
        group)
            cat <<'EOF'
# HOURGLASS_CASSANDRA_COMMITLOG_SYNC=group: writes are acknowledged after the commit log is synced, every 10 ms.
commitlog_sync: group
commitlog_sync_group_window: 10ms
EOF
            ;;
        *) die "HOURGLASS_CASSANDRA_COMMITLOG_SYNC must be periodic, batch or group, not '$COMMITLOG_SYNC'" ;;
    esac
}

write_instance_config() {
    local commitlog_sync
    commitlog_sync=$(commitlog_sync_config)
    write_file "$CONFIG" <<EOF
# Written by e2e/servers/cassandra.sh on each start: edits here are overwritten.
cluster_name: hourglass-$NAME
num_tokens: 16
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
commitlog_directory: $DB/commitlog
data_file_directories:
  - $DB/data
saved_caches_directory: $DB/saved_caches
hints_directory: $DB/hints
cdc_raw_directory: $DB/cdc_raw
$commitlog_sync
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$STORAGE_PORT"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $STORAGE_PORT
native_transport_port: $PORT
start_native_transport: true
endpoint_snitch: SimpleSnitch
# Batch size limits, raised from 5 KiB / 50 KiB for UNLOGGED batches of many rows. Cassandra 5.0 checks them only
# for batches that span more than one partition (a warning to the client and the log / "Batch too large").
batch_size_warn_threshold: 64KiB
batch_size_fail_threshold: 640KiB
# Tests create and drop many keyspaces: no snapshot of every dropped or truncated table.
auto_snapshot: false
EOF
    write_file "$LOGBACK" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by e2e/servers/cassandra.sh: $LOG_LEVEL and above to cassandra.log (rolled at 20 MB, 2 old files),
     plus the INFO lines of the commit log replay and of the CQL server starting and stopping. -->
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.rolling.RollingFileAppender">
    <file>$SERVER_LOG</file>
    <rollingPolicy class="ch.qos.logback.core.rolling.FixedWindowRollingPolicy">
      <fileNamePattern>$SERVER_LOG.%i</fileNamePattern>
      <minIndex>1</minIndex>
      <maxIndex>2</maxIndex>
    </rollingPolicy>
    <triggeringPolicy class="ch.qos.logback.core.rolling.SizeBasedTriggeringPolicy">
      <maxFileSize>20MB</maxFileSize>
    </triggeringPolicy>
    <encoder>
      <pattern>%-5level [%thread] %date{ISO8601} %logger{1} - %msg%n</pattern>
    </encoder>
  </appender>
  <logger name="org.apache.cassandra.db.commitlog.CommitLog" level="INFO"/>
  <logger name="org.apache.cassandra.transport.Server" level="INFO"/>
  <logger name="org.apache.cassandra.transport.PipelineConfigurator" level="INFO"/>
  <root level="$LOG_LEVEL">
    <appender-ref ref="FILE"/>
  </root>
</configuration>
EOF
}

cmd_start() {
    resolve_port
    commitlog_sync_config >/dev/null # fails at once on a bad HOURGLASS_CASSANDRA_COMMITLOG_SYNC
    local pid t0
    t0=$(date +%s%N)
    if pid=$(instance_pid); then
        if [[ -n "$RECORDED_PORT" && "$RECORDED_PORT" != "$PORT" ]]; then
            die "instance '$NAME' already runs on port $RECORDED_PORT (pid $pid); stop it before moving it to $PORT"
        fi
        if port_open 127.0.0.1 "$PORT"; then
            log "instance '$NAME' already running on 127.0.0.1:$PORT (pid $pid)"
            return 0
        fi
        log "instance '$NAME' is starting (pid $pid); waiting for 127.0.0.1:$PORT ..."
    else
        rm -f "$PID_FILE"
        local p
        for p in "$PORT" "$STORAGE_PORT" "$JMX_PORT"; do
            if port_open 127.0.0.1 "$p"; then
                die "port $p is already taken by another process (not instance '$NAME'); choose another --port"
            fi
        done
        ensure_java
        ensure_jars
        mkdir -p "$INST" "$DB" "$INST/triggers"
        if [[ -f "$JVM_LOG" ]] && (($(stat -c %s "$JVM_LOG") > JVM_LOG_MAX_BYTES)); then
            mv -f "$JVM_LOG" "$JVM_LOG.1"
        fi
        write_instance_config
        printf '%s\n' "$PORT" >"$PORT_FILE"
        RECORDED_PORT=$PORT
        mark_logs "start (port $PORT)"
        log "starting instance '$NAME' on 127.0.0.1:$PORT (storage $STORAGE_PORT, JMX $JMX_PORT, dir $INST) ..."
        # setsid + nohup: the server outlives the calling shell and its terminal. The wrapper writes its own
        # pid, which exec makes the server's, and closes every descriptor above 2. A plain `cmd &` (not a
        # `( ... & )` subshell, which would stay behind waiting for the server with our stderr open) and
        # every standard descriptor redirected: a caller reading our output through a pipe (or any other
        # descriptor it passed down) is not kept waiting by the server.
        # shellcheck disable=SC2086 # HEAP_OPTS and HOURGLASS_CASSANDRA_JAVA_OPTS are lists of flags
        setsid nohup bash -c 'cd "$1" && echo $$ >"$2" && shift 2 &&
            for fd in /proc/$$/fd/*; do fd=${fd##*/}; if ((fd > 2)); then eval "exec $fd>&-"; fi; done &&
            exec "$@"' _ "$INST" "$PID_FILE" \
            java $HEAP_OPTS -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -XX:+PerfDisableSharedMem "${JAVA17_MODULE_FLAGS[@]}" \
            -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true -Djava.security.manager=allow \
            -Dcassandra-foreground=yes \
            -Dcassandra.config="file://$CONFIG" \
            -Dcassandra.storagedir="$DB" \
            -Dlogback.configurationFile="$LOGBACK" \
            -Dcassandra.jmx.local.port="$JMX_PORT" \
            -Dcassandra.triggers_dir="$INST/triggers" \
            -Dcassandra.skip_wait_for_gossip_to_settle=0 \
            -Dcassandra.ring_delay_ms=100 \
            -Dcassandra.shutdown_announce_in_ms=0 \
            -Djdk.attach.allowAttachSelf=true \
            -Dio.netty.tryReflectionSetAccessible=true \
            ${HOURGLASS_CASSANDRA_JAVA_OPTS:-} \
            -cp "$CASSANDRA_LIB/*" org.apache.cassandra.service.CassandraDaemon \
            </dev/null >>"$JVM_LOG" 2>&1 9>&- &
        disown # no "Killed" notice from this shell if the server must be killed below
        local i
        for ((i = 0; i < 50; i++)); do
            pid=$(instance_pid) && break
            sleep 0.1
        done
        [[ -n "${pid:-}" ]] || { print_log_tail; die "the server did not start (no live pid in $PID_FILE)"; }
    fi
    local rc=0
    wait_cql_ready "$pid" "$START_TIMEOUT" || rc=$?
    case $rc in
        0) ;;
        2)
            print_log_tail
            rm -f "$PID_FILE"
            die "the server (pid $pid) exited before answering CQL on 127.0.0.1:$PORT"
            ;;
        *)
            print_log_tail
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 10 || true
            rm -f "$PID_FILE"
            die "the server (pid $pid) did not answer CQL on 127.0.0.1:$PORT within $START_TIMEOUT s; killed it"
            ;;
    esac
    local ms=$((($(date +%s%N) - t0) / 1000000))
    log "instance '$NAME' ready on 127.0.0.1:$PORT (pid $pid) after $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s"
}

cmd_stop() {
    local pid t0
    if ! pid=$(instance_pid); then
        rm -f "$PID_FILE"
        log "instance '$NAME' is not running"
        return 0
    fi
    t0=$SECONDS
    log "stopping instance '$NAME' (pid $pid, SIGTERM) ..."
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$STOP_TIMEOUT"; then
        warn "instance '$NAME' (pid $pid) still running after $STOP_TIMEOUT s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || die "pid $pid survived SIGKILL"
    fi
    rm -f "$PID_FILE"
    log "instance '$NAME' stopped in $((SECONDS - t0)) s"
}

cmd_kill() {
    local pid
    if ! pid=$(instance_pid); then
        rm -f "$PID_FILE"
        log "instance '$NAME' is not running"
        return 0
    fi
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "pid $pid survived SIGKILL"
    rm -f "$PID_FILE"
    mark_logs "kill (pid $pid, SIGKILL)"
    log "instance '$NAME' killed (pid $pid, SIGKILL)"
}

cmd_destroy() {
    cmd_kill
    rm -rf "$INST"
    log "instance '$NAME' destroyed ($INST removed)"
}

cmd_status() {
    local pid port=${RECORDED_PORT:-}
    if [[ -z "$port" ]]; then
        log "instance '$NAME' is not running (never started)"
        return 1
    fi
    if ! pid=$(instance_pid); then
        log "instance '$NAME' is not running"
        return 1
    fi
    if ! cql_ready 127.0.0.1 "$port"; then
        log "instance '$NAME' (pid $pid) is not answering CQL on 127.0.0.1:$port yet"
        return 1
    fi
    log "instance '$NAME' running on 127.0.0.1:$port (pid $pid)"
}

cmd_env() {
    resolve_port
    printf 'export HOURGLASS_CQL_NODES=127.0.0.1:%s\n' "$PORT"
}

# nodetool [--name NAME] ARGS...: NodeTool against the instance's local JMX port (e.g. `flush`, `status`,
# `tablestats KEYSPACE`).
cmd_nodetool() {
    while (($#)); do
        case "$1" in
            --name) [[ $# -ge 2 ]] || usage; NAME=$2; shift 2 ;;
            --name=*) NAME=${1#--name=}; shift ;;
            *) break ;;
        esac
    done
    set_instance
    [[ -n "$RECORDED_PORT" ]] || die "instance '$NAME' has never been started"
    instance_pid >/dev/null || die "instance '$NAME' is not running"
    ensure_java
    ensure_jars
    ensure_tools_logback
    exec java -Xmx256m -XX:+UseSerialGC "${JAVA17_MODULE_FLAGS[@]}" -Djava.awt.headless=true \
        -Dlogback.configurationFile="$TOOLS_LOGBACK" \
        -cp "$CASSANDRA_LIB/*" org.apache.cassandra.tools.NodeTool \
        -h 127.0.0.1 -p "$((RECORDED_PORT + JMX_PORT_OFFSET))" "$@"
}

# ------------------------------------------------------------------------------------------------------ main

(($#)) || usage
command=$1
shift
case "$command" in
    nodetool) cmd_nodetool "$@" ;;
    fetch)
        (($# == 0)) || usage
        ensure_java
        ensure_jars
        log "jars in $CASSANDRA_LIB"
        ;;
    start | stop | kill | destroy | status | env)
        parse_instance_opts "$@"
        "cmd_$command"
        ;;
    -h | --help | help) usage ;;
    *) log "unknown command: $command"; usage ;;
esac
