#!/usr/bin/env bash
# A real Apache Kafka broker (single-node KRaft, from Maven Central jars) for the e2e tests and benchmarks.
#
# usage: kafka.sh start|stop|kill|destroy|status|env [--name NAME] [--port PORT]
#        kafka.sh perf-producer ARGS...   org.apache.kafka.tools.ProducerPerformance
#        kafka.sh perf-consumer ARGS...   org.apache.kafka.tools.ConsumerPerformance
#        kafka.sh topics ARGS...          org.apache.kafka.tools.TopicCommand
#        kafka.sh fetch                   only fetch the jars (once)
#
#   start   start the instance (formats its storage the first time); exit 0 at once if it already runs
#   stop    SIGTERM, wait up to 30 s, then SIGKILL
#   destroy kill the instance and delete its directory (data, logs, port): the next start is a new server
#   kill    SIGKILL at once (fault tests); the next start recovers from the same log dir
#   status  exit 0 if the instance runs and accepts connections
#   env     print `export HOURGLASS_KAFKA_BROKERS=127.0.0.1:PORT`
#
# Instance NAME (default `main`, port 19092) lives in $HOURGLASS_CACHE_DIR/kafka-instances/NAME/:
# server.properties, log4j2.xml, data/ (KRaft log dir), kafka.pid, port, broker.log (WARN and above, and the
# JVM's stdout/stderr). The controller listens on PORT+1000. Another instance needs its own --port the first
# time (e.g. `kafka.sh start --name fault --port 19192`); later commands find it by --name alone.
#
# Environment: HOURGLASS_CACHE_DIR, HOURGLASS_KAFKA_START_TIMEOUT (60), HOURGLASS_KAFKA_STOP_TIMEOUT (30),
# HOURGLASS_KAFKA_HEAP_OPTS ("-Xmx1g -Xms256m"), HOURGLASS_KAFKA_JAVA_OPTS (extra JVM flags for the broker),
# HOURGLASS_KAFKA_TOOLS_JAVA_OPTS (extra JVM flags for perf-producer, perf-consumer, topics).
set -euo pipefail

LOG_TAG=kafka
# shellcheck source=e2e/servers/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

KAFKA_POM="$HOURGLASS_SERVERS_DIR/kafka/pom.xml"
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\([^<]*\)</kafka.version>.*:\1:p' "$KAFKA_POM" | head -n1)
[[ -n "$KAFKA_VERSION" ]] || die "cannot read <kafka.version> from $KAFKA_POM"
KAFKA_HOME="$HOURGLASS_CACHE_DIR/kafka-$KAFKA_VERSION"
KAFKA_LIB="$KAFKA_HOME/lib"
KAFKA_TOOLS_LOG4J="$KAFKA_HOME/log4j2-tools.xml"
INSTANCES_DIR="$HOURGLASS_CACHE_DIR/kafka-instances"

DEFAULT_NAME=main
DEFAULT_PORT=19092
CONTROLLER_PORT_OFFSET=1000
START_TIMEOUT="${HOURGLASS_KAFKA_START_TIMEOUT:-60}"
STOP_TIMEOUT="${HOURGLASS_KAFKA_STOP_TIMEOUT:-30}"
HEAP_OPTS="${HOURGLASS_KAFKA_HEAP_OPTS:--Xmx1g -Xms256m}"
BROKER_LOG_MAX_BYTES=$((50 * 1024 * 1024))

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
    if [[ -n "$major" ]] && ((major < 17)); then
        die "Kafka $KAFKA_VERSION needs Java 17 or newer; \`java\` is version $major"
    fi
}

ensure_maven() {
    if ! command -v mvn >/dev/null 2>&1; then
        apt_install maven
    fi
}

# ensure_jars: the broker's and tools' jars in $KAFKA_LIB, fetched once with Maven. They are fetched into a
# temporary directory that is renamed into place only when complete, with the checksum of the pom that
# produced them, so neither an interrupted download nor a changed pom is taken for a valid cache.
ensure_jars() {
    local sum
    sum=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
    if [[ -f "$KAFKA_LIB/.pom.sha256" && "$(<"$KAFKA_LIB/.pom.sha256")" == "$sum" ]]; then
        return 0
    fi
    mkdir -p "$KAFKA_HOME"
    # One download at a time, e.g. when the main and fault brokers start together on a new machine.
    exec 9>"$KAFKA_HOME/.lock"
    flock 9
    if [[ -f "$KAFKA_LIB/.pom.sha256" && "$(<"$KAFKA_LIB/.pom.sha256")" == "$sum" ]]; then
        exec 9>&-
        return 0
    fi
    rm -rf "$KAFKA_HOME"/fetch.tmp.* "$KAFKA_HOME"/lib.old.* # left by an interrupted earlier run
    ensure_java
    ensure_maven
    local work start=$SECONDS
    work=$(mktemp -d "$KAFKA_HOME/fetch.tmp.XXXXXX")
    cp "$KAFKA_POM" "$work/pom.xml"
    log "fetching Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIB (once) ..."
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
    if [[ -e "$KAFKA_LIB" ]]; then
        mv "$KAFKA_LIB" "$KAFKA_HOME/lib.old.$$"
    fi
    mv "$work/lib" "$KAFKA_LIB"
    rm -rf "$work" "$KAFKA_HOME/lib.old.$$"
    exec 9>&-
    log "fetched $jars jars ($(du -sh "$KAFKA_LIB" | cut -f1)) in $((SECONDS - start)) s"
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

# The tools (perf-producer, perf-consumer, topics, StorageTool) log WARN and above to stderr.
ensure_tools_log4j() {
    [[ -f "$KAFKA_TOOLS_LOG4J" ]] && return 0
    write_file "$KAFKA_TOOLS_LOG4J" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="warn">
  <Appenders>
    <Console name="stderr" target="SYSTEM_ERR">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="WARN"><AppenderRef ref="stderr"/></Root>
  </Loggers>
</Configuration>
EOF
}

run_tool() {
    local main_class=$1
    shift
    ensure_java
    ensure_jars
    ensure_tools_log4j
    # shellcheck disable=SC2086 # HOURGLASS_KAFKA_TOOLS_JAVA_OPTS is a list of flags
    exec java ${HOURGLASS_KAFKA_TOOLS_JAVA_OPTS:-} -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" -cp "$KAFKA_LIB/*" "$main_class" "$@"
}

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
    [[ "$NAME" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "bad --name '$NAME' (letters, digits, _ . -)"
    if [[ -n "$PORT_ARG" ]]; then
        [[ "$PORT_ARG" =~ ^[0-9]+$ ]] && ((PORT_ARG > 0 && PORT_ARG + CONTROLLER_PORT_OFFSET < 65536)) ||
            die "bad --port '$PORT_ARG' (1..$((65535 - CONTROLLER_PORT_OFFSET)))"
    fi
    INST="$INSTANCES_DIR/$NAME"
    PID_FILE="$INST/kafka.pid"
    PORT_FILE="$INST/port"
    CONFIG="$INST/server.properties"
    LOG4J="$INST/log4j2.xml"
    DATA="$INST/data"
    BROKER_LOG="$INST/broker.log"
    RECORDED_PORT=""
    if [[ -f "$PORT_FILE" ]]; then
        RECORDED_PORT=$(<"$PORT_FILE")
    fi
}

# resolve_port: --port if given, else the port the instance last started on, else 19092 for `main`.
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
    CONTROLLER_PORT=$((PORT + CONTROLLER_PORT_OFFSET))
}

# instance_pid: prints the pid of this instance's broker and succeeds if it is alive (and really is this
# instance's broker, not another process that reused the pid).
instance_pid() {
    local pid
    [[ -f "$PID_FILE" ]] || return 1
    pid=$(<"$PID_FILE")
    pid_alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$CONFIG" || return 1
    printf '%s\n' "$pid"
}

# wait_gone PID SECS: true once PID has exited and its listeners are closed.
wait_gone() {
    local pid=$1 deadline=$((SECONDS + $2)) port
    while pid_alive "$pid"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
    if [[ -n "${RECORDED_PORT:-}" ]]; then
        for port in "$RECORDED_PORT" "$((RECORDED_PORT + CONTROLLER_PORT_OFFSET))"; do
            wait_port_closed 127.0.0.1 "$port" 5 || warn "port $port still open after pid $pid exited"
        done
    fi
    return 0
}

print_log_tail() {
    if [[ -f "$BROKER_LOG" ]]; then
        log "last lines of $BROKER_LOG:"
        tail -n 40 "$BROKER_LOG" | sed 's/^/    /' >&2
    fi
}

write_instance_config() {
    write_file "$CONFIG" <<EOF
# Written by e2e/servers/kafka.sh on each start: edits here are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA
num.partitions=12
auto.create.topics.enable=true
delete.topic.enable=true
default.replication.factor=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# After a SIGKILL the restarted controller keeps the old broker registration alive for a whole session
# before the broker may register again: 9 s by default, added to every restart in the fault tests.
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000
EOF
    write_file "$LOG4J" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by e2e/servers/kafka.sh: WARN and above to broker.log, plus the line saying the broker started. -->
<Configuration status="warn">
  <Appenders>
    <File name="file" fileName="$BROKER_LOG" append="true">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="kafka.server.KafkaRaftServer" level="INFO"/>
    <Root level="WARN"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
EOF
}

# format_storage: formats the KRaft log dir unless it is formatted already (meta.properties written).
format_storage() {
    if [[ -f "$DATA/meta.properties" ]]; then
        return 0
    fi
    rm -rf "$DATA" # a half-formatted dir from an interrupted format
    ensure_tools_log4j
    local cp="$KAFKA_LIB/*" cluster_id
    cluster_id=$(java -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" -cp "$cp" kafka.tools.StorageTool random-uuid 2>>"$BROKER_LOG")
    log "formatting $DATA (cluster id $cluster_id)"
    if ! java -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" -cp "$cp" kafka.tools.StorageTool format \
        --ignore-formatted -t "$cluster_id" -c "$CONFIG" >>"$BROKER_LOG" 2>&1; then
        print_log_tail
        die "formatting $DATA failed"
    fi
}

cmd_start() {
    resolve_port
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
        for p in "$PORT" "$CONTROLLER_PORT"; do
            if port_open 127.0.0.1 "$p"; then
                die "port $p is already taken by another process (not instance '$NAME'); choose another --port"
            fi
        done
        ensure_java
        ensure_jars
        mkdir -p "$INST"
        if [[ -f "$BROKER_LOG" ]] && (($(stat -c %s "$BROKER_LOG") > BROKER_LOG_MAX_BYTES)); then
            mv -f "$BROKER_LOG" "$BROKER_LOG.1"
        fi
        write_instance_config
        printf '%s\n' "$PORT" >"$PORT_FILE"
        RECORDED_PORT=$PORT
        format_storage
        printf '==== %s kafka.sh start (port %s) ====\n' "$(date -Is)" "$PORT" >>"$BROKER_LOG"
        log "starting instance '$NAME' on 127.0.0.1:$PORT (controller $CONTROLLER_PORT, dir $INST) ..."
        # setsid + nohup: the broker outlives the calling shell and its terminal. The wrapper writes its own
        # pid, which exec makes the broker's, and closes every descriptor above 2. A plain `cmd &` (not a
        # `( ... & )` subshell, which would stay behind waiting for the broker with our stderr open) and
        # every standard descriptor redirected: a caller reading our output through a pipe (or any other
        # descriptor it passed down) is not kept waiting by the broker.
        # shellcheck disable=SC2086 # HEAP_OPTS and HOURGLASS_KAFKA_JAVA_OPTS are lists of flags
        setsid nohup bash -c 'cd "$1" && echo $$ >"$2" && shift 2 &&
            for fd in /proc/$$/fd/*; do fd=${fd##*/}; if ((fd > 2)); then eval "exec $fd>&-"; fi; done &&
            exec "$@"' _ "$INST" "$PID_FILE" \
            java $HEAP_OPTS ${HOURGLASS_KAFKA_JAVA_OPTS:-} -Djava.awt.headless=true \
            -Dlog4j2.configurationFile="$LOG4J" -cp "$KAFKA_LIB/*" kafka.Kafka "$CONFIG" \
            </dev/null >>"$BROKER_LOG" 2>&1 9>&- &
        local i
        for ((i = 0; i < 50; i++)); do
            pid=$(instance_pid) && break
            sleep 0.1
        done
        [[ -n "${pid:-}" ]] || { print_log_tail; die "the broker did not start (no live pid in $PID_FILE)"; }
    fi
    local rc=0
    wait_for_port 127.0.0.1 "$PORT" "$START_TIMEOUT" "$pid" || rc=$?
    case $rc in
        0) ;;
        2)
            print_log_tail
            rm -f "$PID_FILE"
            die "the broker (pid $pid) exited before listening on 127.0.0.1:$PORT"
            ;;
        *)
            print_log_tail
            kill -KILL "$pid" 2>/dev/null || true
            rm -f "$PID_FILE"
            die "the broker (pid $pid) did not listen on 127.0.0.1:$PORT within $START_TIMEOUT s; killed it"
            ;;
    esac
    local ms=$((($(date +%s%N) - t0) / 1000000))
    log "instance '$NAME' ready on 127.0.0.1:$PORT (pid $pid) after $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s"
}

cmd_stop() {
    local pid
    if ! pid=$(instance_pid); then
        rm -f "$PID_FILE"
        log "instance '$NAME' is not running"
        return 0
    fi
    log "stopping instance '$NAME' (pid $pid, SIGTERM) ..."
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$STOP_TIMEOUT"; then
        warn "instance '$NAME' (pid $pid) still running after $STOP_TIMEOUT s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || die "pid $pid survived SIGKILL"
    fi
    rm -f "$PID_FILE"
    log "instance '$NAME' stopped"
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
    if ! port_open 127.0.0.1 "$port"; then
        log "instance '$NAME' (pid $pid) is not accepting connections on 127.0.0.1:$port yet"
        return 1
    fi
    log "instance '$NAME' running on 127.0.0.1:$port (pid $pid)"
}

cmd_env() {
    resolve_port
    printf 'export HOURGLASS_KAFKA_BROKERS=127.0.0.1:%s\n' "$PORT"
}

# ------------------------------------------------------------------------------------------------------ main

(($#)) || usage
command=$1
shift
case "$command" in
    perf-producer) run_tool org.apache.kafka.tools.ProducerPerformance "$@" ;;
    perf-consumer) run_tool org.apache.kafka.tools.ConsumerPerformance "$@" ;;
    topics) run_tool org.apache.kafka.tools.TopicCommand "$@" ;;
    fetch)
        (($# == 0)) || usage
        ensure_java
        ensure_jars
        ensure_tools_log4j
        log "jars in $KAFKA_LIB"
        ;;
    start | stop | kill | destroy | status | env)
        parse_instance_opts "$@"
        "cmd_$command"
        ;;
    -h | --help | help) usage ;;
    *) log "unknown command: $command"; usage ;;
esac
