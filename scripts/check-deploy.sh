#!/usr/bin/env bash
# Checks the deployment artifacts with the real tools (no server needed); scripts/test.sh runs it.
#
#   1. charts/hourglass: `helm lint --strict` and `helm template` with each values file (values.yaml,
#      values-production.yaml, values-laptop.yaml); every rendered manifest decoded strictly into its
#      Kubernetes API type (deploy/checks/cmd/manifests); the rendered hourglass.toml accepted by the binary's
#      own loader (`hourglass config print ROLE --config FILE`, so `cargo build -p hourglass` first).
#   2. The rendered Envoy bootstrap validated against Envoy's API (go-control-plane, deploy/checks/cmd/envoy),
#      and its protocols: the query listener takes HTTP/1.1 besides HTTP/2 (codec AUTO, for the web console
#      and its gRPC-Web calls) and routes /console/ and a query method to the query cluster; the other
#      listeners in front of gRPC services take HTTP/2 only.
#   3. The alerts: `promtool check rules` and `promtool test rules` (charts/hourglass/alerts).
#   4. The CloudWatch alarms: cfn-lint (deploy/cloudwatch/alarms.yaml).
#   5. docs/metrics.md against the code, and every metric the alerts, dashboard and alarms use documented
#      (scripts/check-metrics-doc.py); docs/capacity.md's plan against the bench figures it is computed from
#      (scripts/capacity.py --check).
# Each check also shows it can fail: a deliberately broken manifest, Envoy bootstrap (including one per
# protocol rule above), alert rule and metrics doc must each be refused.
#
# Tools are installed on first use and cached in $HOURGLASS_CACHE_DIR (default ~/.cache/hourglass) by
# e2e/servers/tools.sh: helm and promtool with `go install` (promtool takes ~6 minutes once), cfn-lint into
# the venv, the Go checkers built once per version of their sources. Cached, the whole script takes seconds.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export HOURGLASS_CACHE_DIR="${HOURGLASS_CACHE_DIR:-$HOME/.cache/hourglass}"
chart=charts/hourglass
# The chart needs Kubernetes 1.30 (native preStop sleep); helm template assumes an older one unless told.
kube_version=1.30.0

step() { printf '\n==> %s\n' "$*" >&2; }
fail() { printf 'check-deploy: %s\n' "$*" >&2; exit 1; }
# must_fail WHAT CMD...: runs CMD, which must fail; its output is kept from the log unless it passes.
must_fail() {
    local what=$1
    shift
    if "$@" >"$work/must-fail.log" 2>&1; then
        cat "$work/must-fail.log" >&2
        fail "self-test: $what was accepted"
    fi
    printf 'self-test: %s refused (%s)\n' "$what" "$(grep -m1 -iE 'error|invalid|fail|unknown' "$work/must-fail.log" | cut -c1-160)" >&2
}
# refused_for REASON: the last must_fail's command was refused for REASON (a fixed string of its output), not
# for a fault of the broken copy itself.
refused_for() {
    grep -qF -- "$1" "$work/must-fail.log" || { cat "$work/must-fail.log" >&2; fail "self-test: refused, but not for: $1"; }
}

step "deploy tools (cached in $HOURGLASS_CACHE_DIR)"
helm=$(bash e2e/servers/tools.sh helm)
promtool=$(bash e2e/servers/tools.sh promtool)
cfn_lint=$(bash e2e/servers/tools.sh cfn-lint)
checks=$(bash e2e/servers/tools.sh deploy-checks)
python="$(dirname "$cfn_lint")/python"
# The binary itself, to check the configuration file the chart renders (the test run builds it anyway).
cargo build --quiet --locked -p hourglass
hourglass="${CARGO_TARGET_DIR:-target}/debug/hourglass"

work=$(mktemp -d "${TMPDIR:-/tmp}/hourglass-check-deploy.XXXXXX")
trap 'rm -rf "$work"' EXIT
# What a browser asks the query listener for: the console's page and one of its gRPC-Web calls.
envoy_web=(-web-listener query -web-cluster query -web-paths /console/,/hourglass.v1.QueryService/GetHourlyMetrics)

for values in values.yaml values-production.yaml values-laptop.yaml; do
    step "helm lint and template: $values"
    "$helm" lint --strict "$chart" -f "$chart/$values" --kube-version "$kube_version"
    rendered="$work/${values%.yaml}.rendered.yaml"
    "$helm" template hourglass "$chart" -f "$chart/$values" --namespace hourglass \
        --kube-version "$kube_version" >"$rendered"
    "$checks/manifests" "$rendered"
    "$checks/envoy" -configmap-key envoy.yaml "${envoy_web[@]}" "$rendered"
    # The rendered hourglass.toml, checked by the binary's own loader for every role: an unknown key, a key in
    # the wrong role's table or a value of the wrong type fails here rather than at a pod's start.
    "$python" -c 'import sys, yaml
files = {d["data"]["hourglass.toml"] for d in yaml.safe_load_all(open(sys.argv[1]))
         if d and d["kind"] == "ConfigMap" and "hourglass.toml" in d.get("data", {})}
assert len(files) == 1, f"the roles and the migration Job must read the same file, not {len(files)}"
sys.stdout.write(files.pop())' "$rendered" >"$work/hourglass.toml"
    [[ -s "$work/hourglass.toml" ]] || fail "no hourglass.toml rendered with $values"
    for role in collector ingestor aggregator query; do
        "$hourglass" config print "$role" --config "$work/hourglass.toml" >"$work/config-print.log" 2>&1 ||
            { cat "$work/config-print.log" >&2; fail "hourglass $role refuses the hourglass.toml rendered with $values"; }
    done
    echo "hourglass.toml: accepted by hourglass config print for collector, ingestor, aggregator and query" >&2
done

step "helm template with exec readiness probes (hourglass health in the image, for clusters without gRPC probes)"
"$helm" template hourglass "$chart" --namespace hourglass --kube-version "$kube_version" \
    --set probes.readiness.kind=exec >"$work/exec-probes.rendered.yaml"
"$checks/manifests" "$work/exec-probes.rendered.yaml"
grep -q '"/usr/local/bin/hourglass", "health"' "$work/exec-probes.rendered.yaml" || fail "no exec probe rendered"
must_fail "a readiness probe kind that is neither grpc nor exec" \
    "$helm" template hourglass "$chart" --kube-version "$kube_version" --set probes.readiness.kind=http

step "self-tests: a misspelt manifest field, a wrong config key and broken Envoy bootstraps are refused"
printf 'cql-nodes = "not-a-list:9042"\n[collector]\nmax-in-flight-byte = 1\n' >"$work/broken.toml"
must_fail "a hourglass.toml with a misspelt key and a wrongly typed value" \
    "$hourglass" config print collector --config "$work/broken.toml"
sed 's/maxUnavailable: 0/maxUnavailabel: 0/' "$work/values.rendered.yaml" >"$work/broken-manifests.yaml"
must_fail "a Deployment with a misspelt field" "$checks/manifests" "$work/broken-manifests.yaml"
"$checks/envoy" -configmap-key envoy.yaml "${envoy_web[@]}" -dump "$work/envoy.yaml" "$work/values.rendered.yaml" >/dev/null
sed 's/lb_policy: LEAST_REQUEST/lb_policy: LEAST_REQUESTS/' "$work/envoy.yaml" >"$work/broken-envoy-enum.yaml"
must_fail "an Envoy bootstrap with a misspelt enum" "$checks/envoy" "$work/broken-envoy-enum.yaml"
sed 's/interval: 2s/interval: 0s/' "$work/envoy.yaml" >"$work/broken-envoy-interval.yaml"
must_fail "an Envoy bootstrap with a zero health-check interval" "$checks/envoy" "$work/broken-envoy-interval.yaml"
# The protocol rules. Listeners render in the order ingest, query, stats: the first AUTO is the query
# listener's, the first HTTP2 the ingest listener's, and the second route of prefix / the query route.
sed '0,/codec_type: AUTO/s//codec_type: HTTP2/' "$work/envoy.yaml" >"$work/broken-envoy-query-h2.yaml"
must_fail "an Envoy query listener that refuses HTTP/1.1 (codec HTTP2)" \
    "$checks/envoy" "${envoy_web[@]}" "$work/broken-envoy-query-h2.yaml"
refused_for "listener query: codec_type HTTP2 refuses HTTP/1.1"
sed '0,/codec_type: HTTP2/s//codec_type: AUTO/' "$work/envoy.yaml" >"$work/broken-envoy-ingest-auto.yaml"
must_fail "an Envoy ingest listener that takes HTTP/1.1 (codec AUTO)" \
    "$checks/envoy" "${envoy_web[@]}" "$work/broken-envoy-ingest-auto.yaml"
refused_for "listener ingest: codec_type AUTO, but it routes to the gRPC cluster ingest"
awk '/match: \{prefix: "\/"\}/ && ++n == 2 { sub(/prefix: "\/"/, "prefix: \"/hourglass.v1.QueryService/\"") } 1' \
    "$work/envoy.yaml" >"$work/broken-envoy-grpc-only.yaml"
must_fail "an Envoy query listener that routes the gRPC paths only (no /console/)" \
    "$checks/envoy" "${envoy_web[@]}" "$work/broken-envoy-grpc-only.yaml"
refused_for "no route matches /console/"
awk '/match: \{prefix: "\/"\}/ && ++n == 2 { indent = substr($0, 1, index($0, "-") - 1)
        print indent "- match: {prefix: \"/console/\"}"; print indent "  route: {cluster: admin}" } 1' \
    "$work/envoy.yaml" >"$work/broken-envoy-console-elsewhere.yaml"
must_fail "an Envoy query listener that routes /console/ to another cluster" \
    "$checks/envoy" "${envoy_web[@]}" "$work/broken-envoy-console-elsewhere.yaml"
refused_for "/console/: routed to admin, not to the cluster query"

step "alerts: promtool check rules, test rules"
"$promtool" check rules "$chart/alerts/hourglass.rules.yaml"
(cd "$chart/alerts" && "$promtool" test rules hourglass.rules.test.yaml)
# The tests must be able to fail: with the rollup-lag threshold at 20 h or the ledger alert needing 3
# unbalanced hours, their cases that must fire do not.
mkdir -p "$work/alerts"
cp "$chart/alerts/hourglass.rules.test.yaml" "$work/alerts/"
sed 's/job_lag_seconds) > 7200/job_lag_seconds) > 72000/' "$chart/alerts/hourglass.rules.yaml" >"$work/alerts/hourglass.rules.yaml"
must_fail "the rollup-lag tests against a 20 h threshold" bash -c 'cd "$1" && "$2" test rules hourglass.rules.test.yaml' _ "$work/alerts" "$promtool"
sed 's/final_hours) > 0/final_hours) > 2/' "$chart/alerts/hourglass.rules.yaml" >"$work/alerts/hourglass.rules.yaml"
must_fail "the ledger-mismatch tests against a threshold of 2 hours" bash -c 'cd "$1" && "$2" test rules hourglass.rules.test.yaml' _ "$work/alerts" "$promtool"

step "CloudWatch alarms: cfn-lint"
"$cfn_lint" deploy/cloudwatch/alarms.yaml
echo "deploy/cloudwatch/alarms.yaml: cfn-lint found nothing" >&2

step "docs/metrics.md against the code"
"$python" scripts/check-metrics-doc.py --self-test

step "docs/capacity.md's plan against docs/capacity-bench.json"
"$python" scripts/capacity.py --check

step "deploy checks passed"
