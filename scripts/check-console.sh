#!/usr/bin/env bash
# The web console's checks (README: the web console), run by scripts/test.sh:
#   1. `npm ci` from the committed console/package-lock.json (npm's cache in $HOURGLASS_CACHE_DIR/npm), then
#      `npm run build`: the TypeScript client generated from proto/ (buf, protoc-gen-es), type-checked and
#      bundled by Vite into console/dist;
#   2. the rebuilt console/dist must equal the committed one, which the binary embeds: a change to console/src
#      or to proto/ committed without rebuilding the console fails here (docs/architecture.md: the web console);
#   3. Chromium (Debian's package) installed if missing, and the browser test (console/tests/browser.mjs)
#      against a standalone of the debug build; screenshots in $CARGO_TARGET_DIR/console-screenshots.
#
# Usage: scripts/check-console.sh              all three
#        scripts/check-console.sh --build-only 1 and 2 (after changing console/src: commit what it builds)
set -euo pipefail

build_only=false
case "${1:-}" in
    --build-only) build_only=true ;;
    "") ;;
    *) echo "usage: scripts/check-console.sh [--build-only]" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export HOURGLASS_CACHE_DIR="${HOURGLASS_CACHE_DIR:-$HOME/.cache/hourglass}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOURGLASS_CACHE_DIR/target}"
export npm_config_cache="$HOURGLASS_CACHE_DIR/npm"

# Vite 7 needs Node 20.19 or newer.
node_version=$(node --version 2>/dev/null || echo none)
if ! node -e 'const [major, minor] = process.versions.node.split(".").map(Number); process.exit(major > 20 || (major === 20 && minor >= 19) ? 0 : 1)' 2>/dev/null; then
    echo "check-console: Node.js 20.19 or newer is needed (found: $node_version)" >&2
    exit 1
fi

echo "check-console: npm ci, then build the console from console/src and proto/" >&2
(cd console && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
if ! git diff --quiet -- console/dist || [[ -n "$(git ls-files --others --exclude-standard -- console/dist)" ]]; then
    git status --short -- console/dist >&2
    echo "check-console: console/dist differs from what console/src and proto/ build: run scripts/check-console.sh --build-only and commit console/dist" >&2
    exit 1
fi
echo "check-console: console/dist matches its sources" >&2
$build_only && exit 0

if [[ ! -x /usr/bin/chromium ]]; then
    echo "check-console: installing Debian's chromium" >&2
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium >/dev/null
fi

cargo build -p hourglass --locked --quiet
HOURGLASS_BIN="$CARGO_TARGET_DIR/debug/hourglass" node console/tests/browser.mjs
