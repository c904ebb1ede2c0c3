#!/usr/bin/env bash
# Builds the `hourglass` container image (Containerfile at the repository's root) and smoke-tests it.
#
#   e2e/image.sh build    release build, assemble the root filesystem, build the image; prints its name and size
#   e2e/image.sh smoke    build, then run `hourglass standalone` in it as uid 65532 on a read-only root with a
#                         volume for its data, send events from outside with `hourglass send`, read them back
#                         with grpcurl (exact counts), stop it with SIGTERM and check it exits 0 within the
#                         chart's grace period
#
#   HOURGLASS_IMAGE             image name (default ghcr.io/hourglass-analytics/hourglass:<chart appVersion>,
#                               what charts/hourglass deploys by default)
#   HOURGLASS_CONTAINER_ENGINE  podman (default; installed from Debian when missing) or docker
#
# Podman runs here without a daemon or registry (vfs storage, runc; its default ulimits dropped, which a
# container cannot raise as root-in-a-VM here). Progress goes to stderr; `build` prints the image name on stdout.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
LOG_TAG=image
# shellcheck source=e2e/servers/lib.sh
source e2e/servers/lib.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOURGLASS_CACHE_DIR/target}"
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/hourglass/Chart.yaml)
crate_version=$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version = "\(.*\)"$/\1/p' Cargo.toml)
[[ "$app_version" == "$crate_version" ]] ||
    die "charts/hourglass/Chart.yaml appVersion ($app_version) differs from the workspace version ($crate_version)"
image="${HOURGLASS_IMAGE:-ghcr.io/hourglass-analytics/hourglass:$app_version}"
engine="${HOURGLASS_CONTAINER_ENGINE:-podman}"

# engine ARGS...: the container engine with the flags that work on this kind of machine.
engine() {
    if [[ "$engine" == podman ]]; then
        CONTAINERS_CONF="$HOURGLASS_CACHE_DIR/image/containers.conf" \
            podman --storage-driver vfs --runtime runc "$@"
    else
        "$engine" "$@"
    fi
}

ensure_engine() {
    if [[ "$engine" == podman ]]; then
        if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
            log "installing podman and runc (Debian)"
            if [[ $(id -u) == 0 ]]; then
                DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc >&2
            else
                sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc >&2
            fi
        fi
        mkdir -p "$HOURGLASS_CACHE_DIR/image"
        printf '[containers]\ndefault_ulimits = []\n' >"$HOURGLASS_CACHE_DIR/image/containers.conf"
    else
        command -v "$engine" >/dev/null || die "$engine is not installed"
    fi
}

# copy_library PATH DEST_ROOT: the file behind PATH (symlinks resolved) at PATH's own name under DEST_ROOT.
copy_library() {
    local path=$1 dest=$2
    mkdir -p "$dest$(dirname "$path")"
    cp -L "$path" "$dest$path"
}

cmd_build() {
    ensure_engine
    # shellcheck source=scripts/build-prerequisites.sh
    source scripts/build-prerequisites.sh
    log "building hourglass (release)"
    SQLX_OFFLINE=true cargo build --release --locked -p hourglass >&2
    local binary="$CARGO_TARGET_DIR/release/hourglass"
    local context="$HOURGLASS_CACHE_DIR/image/context"
    rm -rf "$context"
    mkdir -p "$context/rootfs/usr/local/bin" "$context/rootfs/etc/ssl/certs" "$context/rootfs/tmp" "$context/data"
    chmod 1777 "$context/rootfs/tmp"
    # The symbols are for profiling on the build machine; the image needs none (about 4× smaller).
    strip --strip-all -o "$context/rootfs/usr/local/bin/hourglass" "$binary"
    local library
    for library in $(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
        copy_library "$library" "$context/rootfs"
    done
    [[ -f /etc/ssl/certs/ca-certificates.crt ]] || die "no /etc/ssl/certs/ca-certificates.crt: apt-get install ca-certificates"
    cp /etc/ssl/certs/ca-certificates.crt "$context/rootfs/etc/ssl/certs/"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nhourglass:x:65532:65532:hourglass:/var/lib/hourglass:/sbin/nologin\n' \
        >"$context/rootfs/etc/passwd"
    printf 'root:x:0:\nhourglass:x:65532:\n' >"$context/rootfs/etc/group"
    printf 'hosts: files dns\n' >"$context/rootfs/etc/nsswitch.conf"
    cp Containerfile "$context/Containerfile"
    log "building $image"
    # The docker format keeps HEALTHCHECK (the OCI format has no field for it).
    local format=()
    [[ "$engine" == podman ]] && format=(--format docker)
    engine build "${format[@]}" --build-arg "VERSION=$app_version" \
        --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
        -t "$image" -f "$context/Containerfile" "$context" >&2
    # The previous build's image is now untagged: drop it (vfs storage keeps a full copy of every layer).
    engine image prune -f >/dev/null
    local size
    size=$(engine image inspect --format '{{.Size}}' "$image")
    log "image $image: $((size / 1000000)) MB ($size bytes)"
    echo "$image"
}

cmd_smoke() {
    cmd_build >/dev/null
    local binary="$CARGO_TARGET_DIR/release/hourglass"
    local grpcurl
    grpcurl=$(bash e2e/servers/tools.sh grpcurl)
    local grace
    grace=$(awk '/^collector:/ { in_collector = 1; next } /^[^ #]/ { in_collector = 0 }
                 in_collector && /^  terminationGracePeriodSeconds:/ { print $2; exit }' charts/hourglass/values.yaml)
    [[ "$grace" =~ ^[0-9]+$ ]] || die "cannot read collector.terminationGracePeriodSeconds from charts/hourglass/values.yaml"
    local port metrics_port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    metrics_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # Globals: the EXIT trap runs after this function has returned.
    smoke_name=hourglass-smoke
    smoke_data=$(mktemp -d)
    local name=$smoke_name data=$smoke_data
    chown 65532:65532 "$data"
    engine rm -f "$name" >/dev/null 2>&1 || true
    trap 'engine rm -f "$smoke_name" >/dev/null 2>&1 || true; rm -rf "$smoke_data"' EXIT

    log "running $image: standalone on 127.0.0.1:$port as uid 65532, read-only root, data volume $data"
    local started=$SECONDS started_ns
    started_ns=$(date +%s%N)
    # --no-healthcheck: podman would schedule the image's HEALTHCHECK with systemd timers, which a machine
    # without systemd refuses noisily; the probe is run by hand below.
    engine run -d --name "$name" --network host --read-only --user 65532:65532 --no-healthcheck \
        -v "$data:/var/lib/hourglass" --tmpfs /tmp \
        "$image" --log-format json --metrics-listen-addr "127.0.0.1:$metrics_port" \
        standalone --listen-addr "127.0.0.1:$port" >/dev/null
    until "$binary" health --target "http://127.0.0.1:$port" >/dev/null 2>&1; do
        if [[ $(engine inspect --format '{{.State.Running}}' "$name") != true ]]; then
            engine logs "$name" >&2 || true
            die "the container exited before it was SERVING"
        fi
        ((SECONDS - started < 60)) || die "not SERVING after 60 s"
        sleep 0.1
    done
    local serving_ms=$((($(date +%s%N) - started_ns) / 1000000))
    log "SERVING $serving_ms ms after podman run"

    local ingest_key query_key
    ingest_key=$(sed -n 's/^ingest: *//p' "$data/demo-keys.txt")
    query_key=$(sed -n 's/^query: *//p' "$data/demo-keys.txt")
    [[ -n "$ingest_key" && -n "$query_key" ]] || die "no demo keys in the data volume"
    # The image's HEALTHCHECK is its own binary; it asks the default port, and this container listens on
    # another (host network), so run the same probe inside the container on the right one.
    grep -q '"health"' <<<"$(engine image inspect --format '{{json .Config.Healthcheck}}' "$image")" ||
        die "the image has no HEALTHCHECK running hourglass health"
    engine exec "$name" /usr/local/bin/hourglass health --target "http://127.0.0.1:$port" >&2

    local events=20000
    log "sending $events events from outside the container"
    local sent
    sent=$("$binary" send --target "http://127.0.0.1:$port" --api-key "$ingest_key" --events "$events")
    echo "$sent" >&2
    grep -Eq "accepted +$events\b" <<<"$sent" || die "not every event was accepted"

    log "reading them back with grpcurl (reflection, summed report over the last hours)"
    local start end counted=0 deadline=$((SECONDS + 90)) answer
    start=$(date -u -d "@$(( ($(date +%s) / 3600 - 2) * 3600 ))" +%Y-%m-%dT%H:%M:%SZ)
    end=$(date -u -d "@$(( ($(date +%s) / 3600 + 2) * 3600 ))" +%Y-%m-%dT%H:%M:%SZ)
    while ((SECONDS < deadline)); do
        answer=$("$grpcurl" -plaintext -H "authorization: Bearer $query_key" \
            -d "{\"range\": {\"start\": \"$start\", \"end\": \"$end\"}}" \
            "127.0.0.1:$port" hourglass.v1.QueryService/GetHourlyMetrics)
        counted=$(python3 -c 'import json, sys; print(sum(int(row.get("events", 0)) for row in json.load(sys.stdin).get("rows", [])))' <<<"$answer")
        [[ "$counted" == "$events" ]] && break
        sleep 1
    done
    [[ "$counted" == "$events" ]] || die "the report counts $counted events, not $events: $answer"
    # Read the page into a variable first: `curl | grep -q` under pipefail fails whenever grep finds the line
    # and exits before curl has written the rest (curl: (23) Failed writing body), which is a race on page size.
    local metrics
    metrics=$(curl -fsS "http://127.0.0.1:$metrics_port/metrics") || die "the metrics port did not answer"
    grep -q '^process_resident_memory_bytes' <<<"$metrics" || die "no process metrics on the metrics port"

    log "stopping it with SIGTERM (grace ${grace} s, the chart's collector.terminationGracePeriodSeconds)"
    local stop_started=$SECONDS
    engine stop --time "$grace" "$name" >/dev/null
    local stopped_in=$((SECONDS - stop_started)) exit_code
    exit_code=$(engine inspect --format '{{.State.ExitCode}}' "$name")
    ((stopped_in < grace)) || die "it took ${stopped_in} s to stop (grace ${grace} s): killed, not drained"
    [[ "$exit_code" == 0 ]] || { engine logs "$name" >&2; die "exit code $exit_code after SIGTERM"; }
    grep -q '"shutdown complete"\|shutdown complete' <<<"$(engine logs "$name" 2>&1)" ||
        die "no 'shutdown complete' in its logs"

    local size
    size=$(engine image inspect --format '{{.Size}}' "$image")
    printf 'image smoke test passed: image %s MB, SERVING %s ms after start, sent %s, counted %s, exit %s after SIGTERM in %s s\n' \
        "$((size / 1000000))" "$serving_ms" "$events" "$counted" "$exit_code" "$stopped_in"
}

case "${1:-}" in
    build) cmd_build ;;
    smoke) cmd_smoke ;;
    *)
        echo "usage: e2e/image.sh build|smoke" >&2
        exit 2
        ;;
esac
