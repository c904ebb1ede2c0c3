#!/usr/bin/env bash
# A real Apache Kafka broker (single-node KRaft, from Maven Central jars) for the e2e tests and benchmarks.
#
# usage: kafka.sh start|stop|kill|destroy|status|env [--name NAME] [--port PORT] [--secure]
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
# `start --secure` (first start of an instance; remembered after) makes PORT a SASL_SSL listener, as managed
# Kafka offers (MSK, Confluent Cloud, Strimzi's TLS listener): TLS with a certificate of the instance's own test
# CA (tls/ca.pem in its directory) for 127.0.0.1 and localhost, and SASL/SCRAM-SHA-512 with the user
# `hourglass` (password in tls/scram-password). The broker talks to itself on a plaintext listener at PORT+2000.
# `env` then also prints HOURGLASS_KAFKA_OPTIONS with the client settings (CA, mechanism, user, password).
#
# Environment: HOURGLASS_CACHE_DIR, HOURGLASS_KAFKA_START_TIMEOUT (60), HOURGLASS_KAFKA_STOP_TIMEOUT (30),
# HOURGLASS_KAFKA_HEAP_OPTS ("-Xmx1g -Xms256m"), HOURGLASS_KAFKA_JAVA_OPTS (extra JVM flags for the broker),
# HOURGLASS_KAFKA_TOOLS_JAVA_OPTS (extra JVM flags for perf-producer, perf-consumer, topics).
set -euo pipefail

LOG_TAG=kafka
# shellcheck source=e2e/servers/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

SERVER=kafka
SERVER_TITLE=Kafka
SERVER_NOUN=broker
SERVER_POM="$HOURGLASS_SERVERS_DIR/kafka/pom.xml"
JAVA_REQUIREMENT="needs Java 17 or newer"
DEFAULT_PORT=19092
PORT_OFFSETS=(controller=1000 internal=2000)
START_TIMEOUT="${HOURGLASS_KAFKA_START_TIMEOUT:-60}"
STOP_TIMEOUT="${HOURGLASS_KAFKA_STOP_TIMEOUT:-30}"
ENV_VAR=HOURGLASS_KAFKA_BROKERS
READY_DOING="listening on"
READY_DO="listen on"
NOT_READY_YET="not accepting connections on"
java_server_init

KAFKA_TOOLS_LOG4J="$SERVER_HOME/log4j2-tools.xml"
HEAP_OPTS="${HOURGLASS_KAFKA_HEAP_OPTS:--Xmx1g -Xms256m}"

java_supported() {
    (($1 >= 17))
}

# ---------------------------------------------------------------------------------------------------- tools

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
        -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" -cp "$SERVER_LIB/*" "$main_class" "$@"
}

# ------------------------------------------------------------------------------------------------- instances

instance_paths() {
    TLS_DIR="$INST/tls"
    SECURE_MARKER="$INST/secure"
    CONFIG="$INST/server.properties"
    LOG4J="$INST/log4j2.xml"
    DATA="$INST/data"
    BROKER_LOG="$INST/broker.log"
    SERVER_OUT=$BROKER_LOG
    SERVER_LOGS=("$BROKER_LOG")
}

server_ready() {
    port_open "$@"
}

print_log_tail() {
    if [[ -f "$BROKER_LOG" ]]; then
        log "last lines of $BROKER_LOG:"
        tail -n 40 "$BROKER_LOG" | sed 's/^/    /' >&2
    fi
}

# secure_instance: true if the instance was (or is being) started with --secure.
secure_instance() {
    [[ "$SECURE_ARG" == true || -f "$SECURE_MARKER" ]]
}

# ensure_tls_material: the instance's test CA, the broker's certificate for 127.0.0.1 and localhost (signed by
# it, key and chain in one PEM keystore) and the SCRAM password, made once.
ensure_tls_material() {
    [[ -f "$TLS_DIR/broker-keystore.pem" && -f "$TLS_DIR/scram-password" ]] && return 0
    command -v openssl >/dev/null || die "--secure needs openssl (apt-get install openssl)"
    rm -rf "$TLS_DIR"
    mkdir -p "$TLS_DIR"
    log "making a test CA and a broker certificate in $TLS_DIR"
    (
        cd "$TLS_DIR"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 \
            -subj "/CN=hourglass test CA ($NAME)" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr -subj "/CN=localhost" 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >broker.ext
        openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out broker.pem -days 3650 \
            -extfile broker.ext 2>/dev/null
        # Kafka's PEM keystore: the unencrypted PKCS#8 key, then the certificate chain.
        cat broker.key broker.pem ca.pem >broker-keystore.pem
        openssl rand -hex 16 >scram-password
        chmod 600 ca.key broker.key broker-keystore.pem scram-password
    ) || die "making the TLS material failed"
}

write_instance_config() {
    local controller_port internal_port
    controller_port=$(port_of controller)
    internal_port=$(port_of internal)
    local listeners
    if secure_instance; then
        touch "$SECURE_MARKER"
        ensure_tls_material
        listeners="listeners=SASL_SSL://127.0.0.1:$PORT,INTERNAL://127.0.0.1:$internal_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=SASL_SSL://127.0.0.1:$PORT,INTERNAL://127.0.0.1:$internal_port
inter.broker.listener.name=INTERNAL
listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$TLS_DIR/broker-keystore.pem"
    else
        listeners="listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    fi
    write_file "$CONFIG" <<EOF
# Written by e2e/servers/kafka.sh on each start: edits here are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
$listeners
controller.listener.names=CONTROLLER
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
    local cp="$SERVER_LIB/*" cluster_id
    cluster_id=$(java -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" -cp "$cp" kafka.tools.StorageTool random-uuid 2>>"$BROKER_LOG")
    log "formatting $DATA (cluster id $cluster_id)"
    local scram=()
    if secure_instance; then
        # SCRAM credentials are stored in the cluster metadata; formatting is when KRaft can take them
        # without a running broker.
        scram=(--add-scram "SCRAM-SHA-512=[name=hourglass,password=$(<"$TLS_DIR/scram-password")]")
    fi
    if ! java -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" -cp "$cp" kafka.tools.StorageTool format \
        --ignore-formatted -t "$cluster_id" -c "$CONFIG" "${scram[@]}" >>"$BROKER_LOG" 2>&1; then
        print_log_tail
        die "formatting $DATA failed"
    fi
}

# before_launch: the KRaft log dir formatted, before the first start.
before_launch() {
    format_storage
}

launch_server() {
    # shellcheck disable=SC2086 # HEAP_OPTS and HOURGLASS_KAFKA_JAVA_OPTS are lists of flags
    spawn_server java $HEAP_OPTS ${HOURGLASS_KAFKA_JAVA_OPTS:-} -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$LOG4J" -cp "$SERVER_LIB/*" kafka.Kafka "$CONFIG"
}

# extra_env: for a --secure instance, the client settings it needs, as `hourglass --kafka-options` takes them.
extra_env() {
    secure_instance || return 0
    printf "export HOURGLASS_KAFKA_OPTIONS='security.protocol=SASL_SSL;sasl.mechanisms=SCRAM-SHA-512;sasl.username=hourglass;sasl.password=%s;ssl.ca.location=%s'\n" \
        "$(<"$TLS_DIR/scram-password")" "$TLS_DIR/ca.pem"
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
        log "jars in $SERVER_LIB"
        ;;
    *)
        SECURE_ARG=false
        instance_args=()
        for arg in "$@"; do
            if [[ "$arg" == --secure ]]; then
                [[ "$command" == start ]] || usage
                SECURE_ARG=true
            else
                instance_args+=("$arg")
            fi
        done
        instance_command "$command" "${instance_args[@]}"
        ;;
esac
