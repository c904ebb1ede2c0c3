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
