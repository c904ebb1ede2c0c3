#!/usr/bin/env bash
# Command-line tools the e2e tests and CI need, installed on demand and cached.
#
# usage: tools.sh buf|grpcurl|sqlx|helm|promtool|cfn-lint|deploy-checks|grpc-health-probe|e2e-python
#
#   buf       make sure `buf` can be run and print the path of its binary on stdout: the one on PATH if there
#             is one, else the one of PyPI's buf-bin (HOURGLASS_BUF_VERSION, default below) installed with pip
#             into the venv $HOURGLASS_CACHE_DIR/venv (created once, reused).
#   grpcurl   the same for grpcurl: the one on PATH, else `go install`ed (HOURGLASS_GRPCURL_VERSION) into
#             $HOURGLASS_CACHE_DIR/bin (about a minute the first time).
#   sqlx      the same for sqlx-cli (Postgres and rustls only, HOURGLASS_SQLX_CLI_VERSION): `cargo install`ed
#             into $HOURGLASS_CACHE_DIR/sqlx-cli (a few minutes the first time); prints the `sqlx` binary.
#   helm      helm (HOURGLASS_HELM_VERSION), `go install`ed into $HOURGLASS_CACHE_DIR/tools/helm-VERSION (about
#             80 s the first time); prints the binary. Never the one on PATH: the checks need this version.
#   promtool  the same for Prometheus's promtool (HOURGLASS_PROMTOOL_VERSION; about 6 minutes the first time).
#   cfn-lint  the same for cfn-lint (HOURGLASS_CFN_LINT_VERSION), pip-installed into the venv (it brings PyYAML,
#             which scripts/check-metrics-doc.py uses from that venv's python).
#   deploy-checks  the Go checkers of deploy/checks (strict Kubernetes manifests, Envoy bootstrap), built into
#             $HOURGLASS_CACHE_DIR/deploy-checks/HASH, HASH being that of their sources (go.mod, go.sum, *.go),
#             so a change rebuilds them and nothing else does; prints the directory of the `manifests` and
#             `envoy` binaries.
#   grpc-health-probe  grpc-health-probe (HOURGLASS_GRPC_HEALTH_PROBE_VERSION), `go install`ed like helm (about
#             10 s the first time); prints the binary. The e2e balancer's health checks run it: a gRPC health
#             check of a named service, as the chart's Envoy does.
#   e2e-python  the venv of the e2e scenarios, $HOURGLASS_CACHE_DIR/e2e-venv, with e2e/requirements.txt
#             installed (again whenever that file changes); prints its python. The SDK itself is installed
#             into it by e2e/run.sh, from sdks/python, on every run.
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
HELM_VERSION="${HOURGLASS_HELM_VERSION:-v3.22.0}"
PROMTOOL_VERSION="${HOURGLASS_PROMTOOL_VERSION:-v0.316.0}"
CFN_LINT_VERSION="${HOURGLASS_CFN_LINT_VERSION:-1.58.0}"
GRPC_HEALTH_PROBE_VERSION="${HOURGLASS_GRPC_HEALTH_PROBE_VERSION:-v0.4.62}"
TOOLS_BIN="$HOURGLASS_CACHE_DIR/bin"
E2E_VENV="$HOURGLASS_CACHE_DIR/e2e-venv"

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

# go_install_pinned NAME PACKAGE VERSION: prints the path of NAME `go install`ed from PACKAGE@VERSION into
# $HOURGLASS_CACHE_DIR/tools/NAME-VERSION, installing it the first time. The build goes to a temporary
# directory renamed into place, so an interrupted one is never taken for a cached binary.
go_install_pinned() {
    local name=$1 package=$2 version=$3
    local dir="$HOURGLASS_CACHE_DIR/tools/$name-$version"
    if ! [[ -x "$dir/$name" ]]; then
        command -v go >/dev/null 2>&1 || die "$name needs Go to be installed (go install)"
        mkdir -p "$HOURGLASS_CACHE_DIR/tools"
        exec 9>"$HOURGLASS_CACHE_DIR/tools/.$name.lock" # one install at a time
        flock 9
        if ! [[ -x "$dir/$name" ]]; then
            local work start=$SECONDS
            work=$(mktemp -d "$HOURGLASS_CACHE_DIR/tools/.$name.XXXXXX")
            log "installing $name $version (go install $package@$version) into $dir ..."
            if ! GOBIN="$work" go install "$package@$version" >&2; then
                rm -rf "$work"
                die "go install $package@$version failed"
            fi
            rm -rf "$dir"
            mv "$work" "$dir"
            log "installed $name $version in $((SECONDS - start)) s"
        fi
        exec 9>&-
    fi
    printf '%s\n' "$dir/$name"
}

cmd_cfn_lint() {
    local cfn_lint="$VENV/bin/cfn-lint"
    if [[ -x "$cfn_lint" ]] && [[ "$("$cfn_lint" --version 2>/dev/null)" == *"$CFN_LINT_VERSION"* ]]; then
        printf '%s\n' "$cfn_lint"
        return 0
    fi
    mkdir -p "$HOURGLASS_CACHE_DIR"
    exec 9>"$HOURGLASS_CACHE_DIR/venv.lock" # one install at a time
    flock 9
    if ! { [[ -x "$cfn_lint" ]] && [[ "$("$cfn_lint" --version 2>/dev/null)" == *"$CFN_LINT_VERSION"* ]]; }; then
        ensure_venv
        log "installing cfn-lint==$CFN_LINT_VERSION (PyPI) into $VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "cfn-lint==$CFN_LINT_VERSION" >&2 ||
            die "pip install cfn-lint==$CFN_LINT_VERSION failed"
        "$cfn_lint" --version >/dev/null 2>&1 || die "$cfn_lint does not run after installing cfn-lint"
    fi
    exec 9>&-
    printf '%s\n' "$cfn_lint"
}

cmd_deploy_checks() {
    local sources="$HOURGLASS_SERVERS_DIR/../../deploy/checks"
    command -v go >/dev/null 2>&1 || die "the deploy checks need Go to be built"
    local hash
    hash=$(cd "$sources" && find . -name '*.go' -o -name go.mod -o -name go.sum | LC_ALL=C sort |
        xargs sha256sum | sha256sum | cut -c1-16)
    local dir="$HOURGLASS_CACHE_DIR/deploy-checks/$hash"
    if ! [[ -x "$dir/manifests" && -x "$dir/envoy" ]]; then
        mkdir -p "$HOURGLASS_CACHE_DIR/deploy-checks"
        exec 9>"$HOURGLASS_CACHE_DIR/deploy-checks/.lock"
        flock 9
        if ! [[ -x "$dir/manifests" && -x "$dir/envoy" ]]; then
            local work start=$SECONDS
            work=$(mktemp -d "$HOURGLASS_CACHE_DIR/deploy-checks/.build.XXXXXX")
            log "building the deploy checks (deploy/checks, sources $hash) ..."
            if ! (cd "$sources" && go build -mod=readonly -o "$work/" ./cmd/...) >&2; then
                rm -rf "$work"
                die "go build of deploy/checks failed"
            fi
            # Builds of older sources are of no further use.
            find "$HOURGLASS_CACHE_DIR/deploy-checks" -mindepth 1 -maxdepth 1 -type d ! -name '.*' -exec rm -rf {} +
            mv "$work" "$dir"
            log "built the deploy checks in $((SECONDS - start)) s"
        fi
        exec 9>&-
    fi
    printf '%s\n' "$dir"
}

# cmd_e2e_python: the e2e venv with e2e/requirements.txt, reinstalled when the file's checksum changes.
cmd_e2e_python() {
    local requirements="$HOURGLASS_SERVERS_DIR/../requirements.txt" sum python="$E2E_VENV/bin/python"
    sum=$(sha256sum "$requirements" | cut -d' ' -f1)
    if [[ -x "$python" && -f "$E2E_VENV/.requirements.sha256" && "$(<"$E2E_VENV/.requirements.sha256")" == "$sum" ]]; then
        printf '%s\n' "$python"
        return 0
    fi
    mkdir -p "$HOURGLASS_CACHE_DIR"
    exec 9>"$HOURGLASS_CACHE_DIR/e2e-venv.lock" # one install at a time
    flock 9
    if ! [[ -x "$python" && -f "$E2E_VENV/.requirements.sha256" && "$(<"$E2E_VENV/.requirements.sha256")" == "$sum" ]]; then
        if ! { [[ -x "$python" ]] && "$python" -c 'import pip' >/dev/null 2>&1; }; then
            VENV=$E2E_VENV ensure_venv
        fi
        local start=$SECONDS
        log "installing e2e/requirements.txt (PyPI) into $E2E_VENV"
        "$python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2 ||
            die "pip install -r e2e/requirements.txt failed"
        printf '%s\n' "$sum" >"$E2E_VENV/.requirements.sha256"
        log "installed in $((SECONDS - start)) s"
    fi
    exec 9>&-
    printf '%s\n' "$python"
}

(($# == 1)) || usage
case "$1" in
    sqlx) cmd_sqlx ;;
    buf) cmd_buf ;;
    grpcurl) cmd_grpcurl ;;
    helm) go_install_pinned helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" ;;
    promtool) go_install_pinned promtool github.com/prometheus/prometheus/cmd/promtool "$PROMTOOL_VERSION" ;;
    cfn-lint) cmd_cfn_lint ;;
    deploy-checks) cmd_deploy_checks ;;
    grpc-health-probe) go_install_pinned grpc-health-probe github.com/grpc-ecosystem/grpc-health-probe "$GRPC_HEALTH_PROBE_VERSION" ;;
    e2e-python) cmd_e2e_python ;;
    *) usage ;;
esac
