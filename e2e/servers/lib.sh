# shellcheck shell=bash
# Shared helpers for the e2e server scripts. Source it; do not run it.
#
#   HOURGLASS_CACHE_DIR  where downloads and server instances live (default: $HOME/.cache/hourglass)
#
# Every message goes to stderr, so that stdout stays clean for what callers capture
# (`eval "$(kafka.sh env)"`, `BUF=$(tools.sh buf)`).

if [[ -n "${_HOURGLASS_SERVERS_LIB:-}" ]]; then
    return 0
fi
_HOURGLASS_SERVERS_LIB=1

HOURGLASS_CACHE_DIR="${HOURGLASS_CACHE_DIR:-${HOME:-/root}/.cache/hourglass}"
export HOURGLASS_CACHE_DIR

HOURGLASS_SERVERS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Tag put before every message, e.g. `[kafka]`; each script sets its own.
LOG_TAG="${LOG_TAG:-servers}"

log()  { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "$LOG_TAG" "$*" >&2; }
die()  { printf '[%s] ERROR: %s\n' "$LOG_TAG" "$*" >&2; exit 1; }

# port_open HOST PORT: true if something accepts TCP connections on HOST:PORT.
# Points HOURGLASS_BIN at a debug build of `hourglass`, built now and copied to $HOURGLASS_CACHE_DIR/$1/,
# unless HOURGLASS_BIN already names a binary. A copy: the shared target directory may be rebuilt (another
# branch, another test) while the caller runs. Call from the repository's root.
use_hourglass_debug_build() {
    [[ -n "${HOURGLASS_BIN:-}" ]] && return 0
    local copy_dir="$HOURGLASS_CACHE_DIR/$1"
    # shellcheck source=scripts/build-prerequisites.sh
    source scripts/build-prerequisites.sh
    log "building hourglass (debug)"
    SQLX_OFFLINE=true cargo build --quiet --locked -p hourglass
    mkdir -p "$copy_dir"
    cp "$CARGO_TARGET_DIR/debug/hourglass" "$copy_dir/hourglass.tmp"
    mv -f "$copy_dir/hourglass.tmp" "$copy_dir/hourglass"
    export HOURGLASS_BIN="$copy_dir/hourglass"
}

port_open() {
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# wait_for_port HOST PORT TIMEOUT_SECS [PID]
# Waits until HOST:PORT accepts connections. Returns 1 on timeout, and 2 at once if PID is given
# and that process has died in the meantime.
wait_for_port() {
    local host=$1 port=$2 timeout_secs=$3 pid=${4:-}
    local deadline=$((SECONDS + timeout_secs))
    while ((SECONDS < deadline)); do
        if port_open "$host" "$port"; then
            return 0
        fi
        if [[ -n "$pid" ]] && ! pid_alive "$pid"; then
            return 2
        fi
        sleep 0.2
    done
    port_open "$host" "$port"
}

# pid_alive PID: true if the process exists and has not finished exiting. A dead process whose parent does
# not reap it (e.g. in a container whose PID 1 is not an init) stays a zombie, which counts as dead; but
# right after SIGKILL a multi-threaded process (a JVM) shows its main thread as a zombie while its other
# threads still exit and its sockets are still open, which counts as alive.
pid_alive() {
    local pid=$1 state tasks
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    state=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$pid/stat" 2>/dev/null) || return 1
    if [[ "$state" == Z || "$state" == X ]]; then
        tasks=$(find "/proc/$pid/task" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        ((tasks > 1))
        return
    fi
    return 0
}

# wait_port_closed HOST PORT TIMEOUT_SECS: true once nothing accepts connections on HOST:PORT.
wait_port_closed() {
    local host=$1 port=$2 deadline=$((SECONDS + $3))
    while port_open "$host" "$port"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# as_root CMD...: runs CMD as root (directly when root, else through sudo when present), with no inherited
# descriptor above 2 (see without_inherited_fds; sudo closes them itself): some of these commands start
# servers (pg_ctlcluster start, apt-get installing postgresql).
as_root() {
    if ((EUID == 0)); then
        without_inherited_fds "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# without_inherited_fds CMD...: runs CMD with every descriptor above 2 closed. For commands that leave a
# server running: a server that inherits a pipe of our caller (or a lock we hold) keeps it open for as long
# as it runs, and whoever reads that pipe to its end waits for ever.
without_inherited_fds() {
    bash -c 'for fd in /proc/$$/fd/*; do fd=${fd##*/}; if ((fd > 2)); then eval "exec $fd>&-"; fi; done; exec "$@"' _ "$@"
}

# apt_install PKG...: installs Debian packages (apt-get update first, non-interactive). apt's output goes
# to a log file, shown only when it fails. The UTF-8 locale is for the cluster that installing postgresql
# creates: made with no locale set (CI, a minimal image), it would be SQL_ASCII.
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install these by hand: $*"
    local out start=$SECONDS
    out=$(mktemp "${TMPDIR:-/tmp}/hourglass-apt.XXXXXX")
    log "installing Debian packages: $* (apt-get; output in $out) ..."
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$out" 2>&1 ||
        ! as_root env DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 LC_ALL=C.UTF-8 apt-get install -y -q --no-install-recommends "$@" >>"$out" 2>&1; then
        tail -n 30 "$out" >&2
        die "apt-get install $* failed (output above, all of it in $out)"
    fi
    rm -f "$out"
    log "installed $* in $((SECONDS - start)) s"
}

# usage: prints the comment at the top of the running script (from line 2 to `set -euo`) and exits 2. The
# running script is the last of BASH_SOURCE: the first is this file.
usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[-1]}" >&2
    exit 2
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

# ------------------------------------------------------------------------------- Java servers from Maven jars
#
# kafka.sh and cassandra.sh each run a Java server from the jars a pom fetches from Maven Central, as named
# instances: $HOURGLASS_CACHE_DIR/SERVER-instances/NAME/ holds an instance's files, among them the pid of its
# server (SERVER.pid) and the port it last started on (port). The commands start, stop, kill, destroy, status
# and env are the same for both, below; what differs, the script sets before it calls java_server_init:
#
#   SERVER            `kafka`: names the jar and instance directories, the pid file, the markers in the logs
#   SERVER_TITLE      `Kafka`, and SERVER_NOUN, `broker`: for messages
#   SERVER_POM        the pom whose dependencies are the server's jars; its <SERVER.version> is the version
#   JAVA_REQUIREMENT  `needs Java 17 or newer`: the message when java_supported refuses the `java` on PATH
#   DEFAULT_PORT      the port of instance `main`
#   PORT_OFFSETS      the instance's other ports as NAME=OFFSET from its port (`controller=1000`): start wants
#                     them free, stop waits until they are closed; port_of NAME gives one
#   START_TIMEOUT, STOP_TIMEOUT   seconds
#   ENV_VAR           the variable `env` prints an export of, as 127.0.0.1:PORT
#   READY_DOING, READY_DO, NOT_READY_YET   the words of the messages about the server answering on
#                     127.0.0.1:PORT (`listening on`, `listen on`, `not accepting connections on`)
#
# and it defines these functions:
#
#   java_supported MAJOR    true if the server runs on that major version of Java
#   instance_paths          sets (from INST) CONFIG, a file on the server's command line by which instance_pid
#                           tells the instance's server from another process; SERVER_OUT, the file that gets
#                           the JVM's stdout and stderr; SERVER_LOGS, the files mark_logs marks; and its own
#                           paths
#   write_instance_config   writes the config files for PORT (on each start)
#   before_launch           what start does after writing the port file, before launching the server
#   launch_server           spawn_server with the server's command line
#   server_ready HOST PORT  true if the server answers on HOST:PORT: what start waits for and status checks
#   print_log_tail          shows the end of the logs when start fails
#
# A script may define its own cmd_COMMAND after sourcing this file, e.g. to check its settings first.

# Above this size the JVM's output file (SERVER_OUT) is moved to FILE.1 on the next start: nothing else rolls
# it.
SERVER_OUT_MAX_BYTES=$((50 * 1024 * 1024))

# java_server_init: reads the version from the pom and sets the paths that follow from it.
java_server_init() {
    # shellcheck disable=SC2153 # SERVER_POM is set by the script that sources this file
    SERVER_VERSION=$(sed -n "s:.*<$SERVER.version>\([^<]*\)</$SERVER.version>.*:\1:p" "$SERVER_POM" | head -n1)
    [[ -n "$SERVER_VERSION" ]] || die "cannot read <$SERVER.version> from $SERVER_POM"
    SERVER_HOME="$HOURGLASS_CACHE_DIR/$SERVER-$SERVER_VERSION"
    SERVER_LIB="$SERVER_HOME/lib"
    INSTANCES_DIR="$HOURGLASS_CACHE_DIR/$SERVER-instances"
    DEFAULT_NAME=main
    NAME=$DEFAULT_NAME
    PORT_ARG=""
}

ensure_java() {
    if ! command -v java >/dev/null 2>&1; then
        apt_install openjdk-17-jre-headless
    fi
    local major
    major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
    if [[ -n "$major" ]] && ! java_supported "$major"; then
        die "$SERVER_TITLE $SERVER_VERSION $JAVA_REQUIREMENT; \`java\` is version $major"
    fi
}

ensure_maven() {
    if ! command -v mvn >/dev/null 2>&1; then
        apt_install maven
    fi
}

# ensure_jars: the server's (and its tools') jars in $SERVER_LIB, fetched once with Maven. They are fetched
# into a temporary directory that is renamed into place only when complete, with the checksum of the pom that
# produced them, so neither an interrupted download nor a changed pom is taken for a valid cache.
ensure_jars() {
    local sum
    sum=$(sha256sum "$SERVER_POM" | cut -d' ' -f1)
    if [[ -f "$SERVER_LIB/.pom.sha256" && "$(<"$SERVER_LIB/.pom.sha256")" == "$sum" ]]; then
        return 0
    fi
    mkdir -p "$SERVER_HOME"
    # One download at a time, e.g. when the main and fault instances start together on a new machine.
    exec 9>"$SERVER_HOME/.lock"
    flock 9
    if [[ -f "$SERVER_LIB/.pom.sha256" && "$(<"$SERVER_LIB/.pom.sha256")" == "$sum" ]]; then
        exec 9>&-
        return 0
    fi
    rm -rf "$SERVER_HOME"/fetch.tmp.* "$SERVER_HOME"/lib.old.* # left by an interrupted earlier run
    ensure_java
    ensure_maven
    local work start=$SECONDS
    work=$(mktemp -d "$SERVER_HOME/fetch.tmp.XXXXXX")
    cp "$SERVER_POM" "$work/pom.xml"
    log "fetching $SERVER_TITLE $SERVER_VERSION jars from Maven Central into $SERVER_LIB (once) ..."
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
    if [[ -e "$SERVER_LIB" ]]; then
        mv "$SERVER_LIB" "$SERVER_HOME/lib.old.$$"
    fi
    mv "$work/lib" "$SERVER_LIB"
    rm -rf "$work" "$SERVER_HOME/lib.old.$$"
    exec 9>&-
    log "fetched $jars jars ($(du -sh "$SERVER_LIB" | cut -f1)) in $((SECONDS - start)) s"
}

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

# set_instance: checks NAME and PORT_ARG, and sets the paths of instance NAME and the port it last started on.
set_instance() {
    [[ "$NAME" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "bad --name '$NAME' (letters, digits, _ . -)"
    if [[ -n "$PORT_ARG" ]]; then
        local entry max_offset=0
        for entry in "${PORT_OFFSETS[@]}"; do
            if ((${entry#*=} > max_offset)); then
                max_offset=${entry#*=}
            fi
        done
        [[ "$PORT_ARG" =~ ^[0-9]+$ ]] && ((PORT_ARG > 0 && PORT_ARG + max_offset < 65536)) ||
            die "bad --port '$PORT_ARG' (1..$((65535 - max_offset)))"
    fi
    INST="$INSTANCES_DIR/$NAME"
    PID_FILE="$INST/$SERVER.pid"
    PORT_FILE="$INST/port"
    instance_paths
    RECORDED_PORT=""
    if [[ -f "$PORT_FILE" ]]; then
        RECORDED_PORT=$(<"$PORT_FILE")
    fi
}

# resolve_port: PORT is --port if given, else the port the instance last started on, else DEFAULT_PORT for
# `main`.
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
}

# port_of NAME [BASE]: the port NAME of PORT_OFFSETS for an instance on BASE (default: PORT).
port_of() {
    local entry
    for entry in "${PORT_OFFSETS[@]}"; do
        if [[ "${entry%%=*}" == "$1" ]]; then
            printf '%s\n' "$((${2:-$PORT} + ${entry#*=}))"
            return 0
        fi
    done
    die "no port '$1' in PORT_OFFSETS"
}

# instance_ports BASE: all the ports of an instance on BASE, BASE first.
instance_ports() {
    local entry
    printf '%s\n' "$1"
    for entry in "${PORT_OFFSETS[@]}"; do
        printf '%s\n' "$(($1 + ${entry#*=}))"
    done
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

# wait_ready PID SECS: waits until the server answers on 127.0.0.1:$PORT (server_ready). Returns 1 on timeout,
# 2 at once if PID dies in the meantime.
wait_ready() {
    local pid=$1 deadline=$((SECONDS + $2))
    wait_for_port 127.0.0.1 "$PORT" "$2" "$pid" || return $?
    while ! server_ready 127.0.0.1 "$PORT"; do
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
        for port in $(instance_ports "$RECORDED_PORT"); do
            wait_port_closed 127.0.0.1 "$port" 5 || warn "port $port still open after pid $pid exited"
        done
    fi
    return 0
}

# mark_logs TEXT: appends a `==== DATE SERVER.sh TEXT ====` line to each of SERVER_LOGS (while the server is
# down), so that a log shows which lines came from which run.
mark_logs() {
    local line f
    line=$(printf '==== %s %s.sh %s ====' "$(date -Is)" "$SERVER" "$*")
    for f in "${SERVER_LOGS[@]}"; do
        printf '%s\n' "$line" >>"$f"
    done
}

# spawn_server CMD...: starts CMD in $INST as the instance's server, its output appended to $SERVER_OUT, and
# returns at once.
spawn_server() {
    # setsid + nohup: the server outlives the calling shell and its terminal. The wrapper writes its own pid,
    # which exec makes the server's, and closes every descriptor above 2. A plain `cmd &` (not a `( ... & )`
    # subshell, which would stay behind waiting for the server with our stderr open) and every standard
    # descriptor redirected: a caller reading our output through a pipe (or any other descriptor it passed
    # down) is not kept waiting by the server.
    setsid nohup bash -c 'cd "$1" && echo $$ >"$2" && shift 2 &&
        for fd in /proc/$$/fd/*; do fd=${fd##*/}; if ((fd > 2)); then eval "exec $fd>&-"; fi; done &&
        exec "$@"' _ "$INST" "$PID_FILE" "$@" \
        </dev/null >>"$SERVER_OUT" 2>&1 9>&- &
    disown # no "Killed" notice from this shell if start must kill the server
}

# start_instance: starts the instance on PORT (resolve_port first) and waits until it answers; exits 0 at once
# if it already runs.
start_instance() {
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
        for p in $(instance_ports "$PORT"); do
            if port_open 127.0.0.1 "$p"; then
                die "port $p is already taken by another process (not instance '$NAME'); choose another --port"
            fi
        done
        ensure_java
        ensure_jars
        mkdir -p "$INST"
        if [[ -f "$SERVER_OUT" ]] && (($(stat -c %s "$SERVER_OUT") > SERVER_OUT_MAX_BYTES)); then
            mv -f "$SERVER_OUT" "$SERVER_OUT.1"
        fi
        write_instance_config
        printf '%s\n' "$PORT" >"$PORT_FILE"
        RECORDED_PORT=$PORT
        before_launch
        mark_logs "start (port $PORT)"
        local entry others=""
        for entry in "${PORT_OFFSETS[@]}"; do
            others+="${entry%%=*} $((PORT + ${entry#*=})), "
        done
        log "starting instance '$NAME' on 127.0.0.1:$PORT (${others}dir $INST) ..."
        launch_server
        local i
        for ((i = 0; i < 50; i++)); do
            pid=$(instance_pid) && break
            sleep 0.1
        done
        [[ -n "${pid:-}" ]] || { print_log_tail; die "the $SERVER_NOUN did not start (no live pid in $PID_FILE)"; }
    fi
    local rc=0
    wait_ready "$pid" "$START_TIMEOUT" || rc=$?
    case $rc in
        0) ;;
        2)
            print_log_tail
            rm -f "$PID_FILE"
            die "the $SERVER_NOUN (pid $pid) exited before $READY_DOING 127.0.0.1:$PORT"
            ;;
        *)
            print_log_tail
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 10 || true
            rm -f "$PID_FILE"
            die "the $SERVER_NOUN (pid $pid) did not $READY_DO 127.0.0.1:$PORT within $START_TIMEOUT s; killed it"
            ;;
    esac
    local ms=$((($(date +%s%N) - t0) / 1000000))
    log "instance '$NAME' ready on 127.0.0.1:$PORT (pid $pid) after $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s"
}

cmd_start() {
    resolve_port
    start_instance
}

# running_pid: like instance_pid, but when the server does not run, says so and clears its pid file.
running_pid() {
    if ! instance_pid; then
        rm -f "$PID_FILE"
        log "instance '$NAME' is not running"
        return 1
    fi
}

cmd_stop() {
    local pid t0
    pid=$(running_pid) || return 0
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
    pid=$(running_pid) || return 0
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
    if ! server_ready 127.0.0.1 "$port"; then
        log "instance '$NAME' (pid $pid) is $NOT_READY_YET 127.0.0.1:$port yet"
        return 1
    fi
    log "instance '$NAME' running on 127.0.0.1:$port (pid $pid)"
}

cmd_env() {
    resolve_port
    printf 'export %s=127.0.0.1:%s\n' "$ENV_VAR" "$PORT"
    if declare -F extra_env >/dev/null; then
        extra_env
    fi
}

# instance_command COMMAND ARGS...: runs one of the instance commands (start stop kill destroy status env) or
# help; anything else is a usage error.
instance_command() {
    local command=$1
    shift
    case "$command" in
        start | stop | kill | destroy | status | env)
            parse_instance_opts "$@"
            "cmd_$command"
            ;;
        -h | --help | help) usage ;;
        *) log "unknown command: $command"; usage ;;
    esac
}
