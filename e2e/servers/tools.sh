#!/usr/bin/env bash
# Command-line tools the e2e tests and CI need, installed on demand and cached.
#
# usage: tools.sh buf|grpcurl|sqlx
#
#   buf       make sure `buf` can be run and print the path of its binary on stdout: the one on PATH if there
#             is one, else the one of PyPI's buf-bin (HOURGLASS_BUF_VERSION, default below) installed with pip
#             into the venv $HOURGLASS_CACHE_DIR/venv (created once, reused).
#   grpcurl   the same for grpcurl: the one on PATH, else `go install`ed (HOURGLASS_GRPCURL_VERSION) into
#             $HOURGLASS_CACHE_DIR/bin (about a minute the first time).
#   sqlx      the same for sqlx-cli (Postgres and rustls only, HOURGLASS_SQLX_CLI_VERSION): `cargo install`ed
#             into $HOURGLASS_CACHE_DIR/sqlx-cli (a few minutes the first time); prints the `sqlx` binary.
#
# e.g.  BUF=$("$(dirname "$0")"/tools.sh buf) && "$BUF" lint
set -euo pipefail

LOG_TAG=tools
# shellcheck source=e2e/servers/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

VENV="$HOURGLASS_CACHE_DIR/venv"
BUF_VERSION="${HOURGLASS_BUF_VERSION:-1.75.0}"
GRPCURL_VERSION="${HOURGLASS_GRPCURL_VERSION:-v1.9.4}"
SQLX_CLI_VERSION="${HOURGLASS_SQLX_CLI_VERSION:-0.9.0}"
TOOLS_BIN="$HOURGLASS_CACHE_DIR/bin"

# ensure_venv: a working Python venv at $VENV (one whose python runs; a broken or half-made one is made anew).
ensure_venv() {
    if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import pip' >/dev/null 2>&1; then
        return 0
    fi
    local python
    python=$(command -v python3 || true)
    if [[ -z "$python" ]]; then
        apt_install python3 python3-venv
        python=$(command -v python3) || die "python3 not found after installing it"
    fi
    rm -rf "$VENV"
    mkdir -p "$HOURGLASS_CACHE_DIR"
    log "creating venv $VENV"
    if ! "$python" -m venv "$VENV" >&2; then
        # Debian's python3 comes without venv/ensurepip unless python3-venv is installed.
        rm -rf "$VENV"
        apt_install python3-venv
        "$python" -m venv "$VENV" >&2 || die "$python -m venv $VENV failed"
    fi
}

cmd_buf() {
    local buf
    if buf=$(command -v buf); then
        log "buf on PATH: $buf ($("$buf" --version 2>&1))"
        printf '%s\n' "$buf"
        return 0
    fi
    buf="$VENV/bin/buf"
    if [[ -x "$buf" ]] && "$buf" --version >/dev/null 2>&1; then
        printf '%s\n' "$buf"
        return 0
    fi
    mkdir -p "$HOURGLASS_CACHE_DIR"
    exec 9>"$HOURGLASS_CACHE_DIR/venv.lock" # one install at a time
    flock 9
    if ! { [[ -x "$buf" ]] && "$buf" --version >/dev/null 2>&1; }; then
        ensure_venv
        log "installing buf-bin==$BUF_VERSION (PyPI) into $VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "buf-bin==$BUF_VERSION" >&2 ||
            die "pip install buf-bin==$BUF_VERSION failed"
        "$buf" --version >/dev/null 2>&1 || die "$buf does not run after installing buf-bin"
        log "installed buf $("$buf" --version 2>&1) at $buf"
    fi
    exec 9>&-
    printf '%s\n' "$buf"
}

cmd_grpcurl() {
    local grpcurl
    if grpcurl=$(command -v grpcurl); then
        printf '%s\n' "$grpcurl"
        return 0
    fi
    grpcurl="$TOOLS_BIN/grpcurl"
    if ! [[ -x "$grpcurl" ]]; then
        command -v go >/dev/null 2>&1 || die "grpcurl needs Go to be installed (go install)"
        mkdir -p "$TOOLS_BIN"
        log "installing grpcurl $GRPCURL_VERSION (go install) into $TOOLS_BIN"
        GOBIN="$TOOLS_BIN" go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION" >&2 ||
            die "go install grpcurl@$GRPCURL_VERSION failed"
    fi
    printf '%s\n' "$grpcurl"
}

cmd_sqlx() {
    local root="$HOURGLASS_CACHE_DIR/sqlx-cli"
    local sqlx="$root/bin/sqlx"
    if ! [[ -x "$sqlx" ]] || ! "$sqlx" --version 2>/dev/null | grep -q "$SQLX_CLI_VERSION"; then
        command -v cargo >/dev/null 2>&1 || die "sqlx-cli needs cargo"
        log "installing sqlx-cli $SQLX_CLI_VERSION (cargo install) into $root"
        CARGO_TARGET_DIR="$HOURGLASS_CACHE_DIR/sqlx-cli-target" cargo install sqlx-cli --version "$SQLX_CLI_VERSION" \
            --no-default-features --features postgres,rustls --locked --root "$root" >&2 ||
            die "cargo install sqlx-cli $SQLX_CLI_VERSION failed"
    fi
    printf '%s\n' "$sqlx"
}

(($# == 1)) || usage
case "$1" in
    sqlx) cmd_sqlx ;;
    buf) cmd_buf ;;
    grpcurl) cmd_grpcurl ;;
    *) usage ;;
esac
