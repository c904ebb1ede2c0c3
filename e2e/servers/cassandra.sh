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

SERVER=cassandra
SERVER_TITLE=Cassandra
SERVER_NOUN=server
SERVER_POM="$HOURGLASS_SERVERS_DIR/cassandra/pom.xml"
JAVA_REQUIREMENT="runs on Java 11 or 17"
DEFAULT_PORT=19042
PORT_OFFSETS=(storage=1000 JMX=2000)
START_TIMEOUT="${HOURGLASS_CASSANDRA_START_TIMEOUT:-120}"
STOP_TIMEOUT="${HOURGLASS_CASSANDRA_STOP_TIMEOUT:-60}"
ENV_VAR=HOURGLASS_CQL_NODES
READY_DOING="answering CQL on"
READY_DO="answer CQL on"
NOT_READY_YET="not answering CQL on"
java_server_init

TOOLS_LOGBACK="$SERVER_HOME/logback-tools.xml"
HEAP_OPTS="${HOURGLASS_CASSANDRA_HEAP_OPTS:--Xms1g -Xmx1g}"
LOG_LEVEL="${HOURGLASS_CASSANDRA_LOG_LEVEL:-WARN}"
COMMITLOG_SYNC="${HOURGLASS_CASSANDRA_COMMITLOG_SYNC:-periodic}"

java_supported() {
    (($1 == 11 || $1 == 17))
}

# ------------------------------------------------------------------------------------------- JVM and tools

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

instance_paths() {
    CONFIG="$INST/cassandra.yaml"
    LOGBACK="$INST/logback.xml"
    DB="$INST/db"
    SERVER_LOG="$INST/cassandra.log"
    JVM_LOG="$INST/jvm.log"
    SERVER_OUT=$JVM_LOG
    SERVER_LOGS=("$SERVER_LOG" "$JVM_LOG")
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

server_ready() {
    cql_ready "$@"
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
    local commitlog_sync storage_port
    commitlog_sync=$(commitlog_sync_config)
    storage_port=$(port_of storage)
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
      - seeds: "127.0.0.1:$storage_port"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $storage_port
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

# before_launch: the directories the config names that Cassandra does not make itself.
before_launch() {
    mkdir -p "$DB" "$INST/triggers"
}

launch_server() {
    local jmx_port
    jmx_port=$(port_of JMX)
    # shellcheck disable=SC2086 # HEAP_OPTS and HOURGLASS_CASSANDRA_JAVA_OPTS are lists of flags
    spawn_server java $HEAP_OPTS -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -XX:+PerfDisableSharedMem "${JAVA17_MODULE_FLAGS[@]}" \
        -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true -Djava.security.manager=allow \
        -Dcassandra-foreground=yes \
        -Dcassandra.config="file://$CONFIG" \
        -Dcassandra.storagedir="$DB" \
        -Dlogback.configurationFile="$LOGBACK" \
        -Dcassandra.jmx.local.port="$jmx_port" \
        -Dcassandra.triggers_dir="$INST/triggers" \
        -Dcassandra.skip_wait_for_gossip_to_settle=0 \
        -Dcassandra.ring_delay_ms=100 \
        -Dcassandra.shutdown_announce_in_ms=0 \
        -Djdk.attach.allowAttachSelf=true \
        -Dio.netty.tryReflectionSetAccessible=true \
        ${HOURGLASS_CASSANDRA_JAVA_OPTS:-} \
        -cp "$SERVER_LIB/*" org.apache.cassandra.service.CassandraDaemon
}

cmd_start() {
    resolve_port
    commitlog_sync_config >/dev/null # fails at once on a bad HOURGLASS_CASSANDRA_COMMITLOG_SYNC
    start_instance
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
    local jmx_port
    jmx_port=$(port_of JMX "$RECORDED_PORT")
    ensure_java
    ensure_jars
    ensure_tools_logback
    exec java -Xmx256m -XX:+UseSerialGC "${JAVA17_MODULE_FLAGS[@]}" -Djava.awt.headless=true \
        -Dlogback.configurationFile="$TOOLS_LOGBACK" \
        -cp "$SERVER_LIB/*" org.apache.cassandra.tools.NodeTool \
        -h 127.0.0.1 -p "$jmx_port" "$@"
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
        log "jars in $SERVER_LIB"
        ;;
    *) instance_command "$command" "$@" ;;
esac
