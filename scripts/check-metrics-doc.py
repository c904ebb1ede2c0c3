#!/usr/bin/env python3
"""docs/metrics.md's table of Hourglass metrics, generated from the code, and the check that it cannot drift.

usage: check-metrics-doc.py [--write] [--self-test]

The table is made from the metric-name modules (`crates/*/src/telemetry.rs`): each `pub const X: &str =
"hourglass_..."` with its doc comment (the meaning), its `describe_*!` call (type, unit), and the label keys
(and literal values) of every `metrics::counter!/gauge!/histogram!` call on it anywhere in `crates/`. The
binary configures the exporter with buckets, so a histogram is exposed as a Prometheus histogram
(`_bucket{le=…}`, `_sum`, `_count`).

Without --write, it fails (exit 1) when:
  - the table between the markers in docs/metrics.md is not the generated one (run with --write);
  - a metric that the alerts (charts/hourglass/alerts/hourglass.rules.yaml), the dashboard
    (charts/hourglass/dashboards/hourglass.json) or the CloudWatch alarms (deploy/cloudwatch/alarms.yaml)
    name is in neither of docs/metrics.md's tables (Hourglass's, or the external metrics the alerts read).

--self-test checks that a renamed metric and an undocumented alert metric are both caught.
Needs PyYAML (scripts/check-deploy.sh runs it in the tools venv, where cfn-lint brings it).
"""

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "metrics.md"
RULES = ROOT / "charts" / "hourglass" / "alerts" / "hourglass.rules.yaml"
DASHBOARD = ROOT / "charts" / "hourglass" / "dashboards" / "hourglass.json"
ALARMS = ROOT / "deploy" / "cloudwatch" / "alarms.yaml"
START = "<!-- metrics-table:start (scripts/check-metrics-doc.py --write) -->"
END = "<!-- metrics-table:end -->"

CONST = re.compile(r'((?:^\s*///.*\n)+)\s*pub const (\w+): &str = "(hourglass_\w+)";', re.M)
DESCRIBE = re.compile(r"describe_(counter|gauge|histogram)!\(\s*(\w+)\s*,\s*(?:metrics::Unit::(\w+)\s*,)?", re.S)
EMIT = re.compile(r"metrics::(counter|gauge|histogram)!\(\s*(?:crate::)?telemetry::(\w+)")
LABEL = re.compile(r'"(\w+)"\s*=>\s*("(?:[^"\\]|\\.)*"|[^,)]+)')
UNITS = {"Seconds": "seconds", "Bytes": "bytes", "Milliseconds": "milliseconds", "Count": "count"}
EXPOSED = {"counter": "counter", "gauge": "gauge", "histogram": "histogram"}

# PromQL words that are not metric names.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "group", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
    "offset", "rate", "irate", "increase", "delta", "idelta", "deriv", "absent", "absent_over_time",
    "avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "count_over_time", "last_over_time",
    "quantile_over_time", "histogram_quantile", "clamp_min", "clamp_max", "clamp", "vector", "scalar",
    "time", "timestamp", "label_replace", "label_join", "sort", "sort_desc", "abs", "ceil", "floor",
    "round", "changes", "resets", "predict_linear", "inf", "nan", "e", "s", "m", "h", "d", "w", "y",
}


def call_text(source, start):
    """The text of a macro call from its opening parenthesis to the matching one."""
    depth = 0
    for index in range(start, len(source)):
        if source[index] == "(":
            depth += 1
        elif source[index] == ")":
            depth -= 1
            if depth == 0:
                return source[start : index + 1]
    return source[start:]


def collect(root):
    """{metric: {"type", "unit", "labels": {key: set of values or None}, "meaning", "crate"}}."""
    metrics = {}
    consts = {}
    for module in sorted(root.glob("crates/*/src/telemetry.rs")):
        source = module.read_text()
        crate = module.parts[-3]
        for doc, const, name in CONST.findall(source):
            meaning = " ".join(line.strip()[3:].strip() for line in doc.strip().splitlines())
            metrics[name] = {"type": None, "unit": None, "labels": {}, "meaning": meaning, "crate": crate}
            consts[(crate, const)] = name
        for kind, const, unit in DESCRIBE.findall(source):
            name = consts.get((crate, const))
            if name is None:
                continue
            metrics[name]["type"] = kind
            metrics[name]["unit"] = UNITS.get(unit, unit.lower()) if unit else None
    # Label keys from every emission. The emitting crate is the one whose telemetry module names the const
    # (a crate may emit another's metric through `hourglass_x::telemetry`); match by const name, preferring
    # the emitting file's own crate.
    for path in sorted(root.glob("crates/*/src/**/*.rs")):
        source = path.read_text()
        crate = path.relative_to(root).parts[1]
        for match in EMIT.finditer(source):
            kind, const = match.groups()
            name = consts.get((crate, const)) or next(
                (metric for (_, other), metric in consts.items() if other == const), None
            )
            if name is None:
                continue
            entry = metrics[name]
            if entry["type"] is None:
                entry["type"] = kind
            text = call_text(source, match.end() - len(match.group(0)) + match.group(0).index("("))
            for key, value in LABEL.findall(text):
                values = entry["labels"].setdefault(key, set())
                if values is None:
                    continue
                if value.startswith('"'):
                    values.add(value.strip('"'))
                else:
                    entry["labels"][key] = None  # computed at run time: the meaning says what it holds
    return metrics


def unit_of(name, entry):
    if entry["unit"]:
        return entry["unit"]
    for suffix, unit in (("_seconds", "seconds"), ("_bytes", "bytes")):
        if name.endswith(suffix):
            return unit
    return "count"


def table(metrics):
    lines = [
        START,
        "| metric | type | unit | labels | meaning |",
        "|---|---|---|---|---|",
    ]
    for name in sorted(metrics):
        entry = metrics[name]
        if entry["type"] is None:
            raise SystemExit(f"{name}: neither described nor emitted anywhere in crates/")
        labels = []
        for key in sorted(entry["labels"]):
            values = entry["labels"][key]
            labels.append(f"`{key}`" + (": " + ", ".join(f"`{v}`" for v in sorted(values)) if values else ""))
        meaning = entry["meaning"].replace("|", "\\|")
        lines.append(
            f"| `{name}` | {EXPOSED[entry['type']]} | {unit_of(name, entry)} | {'; '.join(labels) or '—'} | {meaning} |"
        )
    lines.append(END)
    return "\n".join(lines)


def documented_names(doc_text):
    """Every metric name in a table row of the doc (first column, in backticks)."""
    return set(re.findall(r"^\| `([a-zA-Z_:][a-zA-Z0-9_:]*)`", doc_text, re.M))


def promql_metrics(expression):
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or label names."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    without_matchers = re.sub(r"\{[^}]*\}", "", without_strings)
    without_grouping = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", without_matchers)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_grouping)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", without_ranges):
        word, is_call = match.groups()
        if is_call or word in PROMQL_WORDS or re.fullmatch(r"\d+\w*", word):
            continue
        names.add(word)
    return names


def referenced(root):
    """{metric: [where it is referenced]}, from the alerts, the dashboard and the CloudWatch alarms."""
    found = {}
    rules = yaml.safe_load((root / RULES.relative_to(ROOT)).read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            for name in promql_metrics(rule["expr"]):
                found.setdefault(name, []).append(f"alert {rule.get('alert', rule.get('record'))}")
    dashboard_path = root / DASHBOARD.relative_to(ROOT)
    dashboard = json.loads(dashboard_path.read_text())
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            for name in promql_metrics(target.get("expr", "")):
                found.setdefault(name, []).append(f"dashboard panel {panel.get('title')!r}")
    alarms = (root / ALARMS.relative_to(ROOT)).read_text()
    for name in re.findall(r"^\s*MetricName:\s*([A-Za-z_:][\w:]*)", alarms, re.M):
        found.setdefault(name, []).append("CloudWatch alarms")
    return found


def base_name(name, documented):
    """A histogram's `_bucket` / `_sum` / `_count` series are documented under the histogram's name."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in documented:
            return name[: -len(suffix)]
    return name


def check(root, write=False):
    doc_path = root / DOC.relative_to(ROOT)
    doc = doc_path.read_text()
    if START not in doc or END not in doc:
        return [f"{doc_path}: the markers {START} and {END} are missing"]
    generated = table(collect(root))
    current = doc[doc.index(START) : doc.index(END) + len(END)]
    problems = []
    if current != generated:
        if write:
            doc = doc.replace(current, generated)
            doc_path.write_text(doc)
            print(f"wrote the metrics table of {doc_path}")
        else:
            problems.append(f"{doc_path}: the metrics table differs from the code: run scripts/check-metrics-doc.py --write")
    documented = documented_names(doc)
    for name, places in sorted(referenced(root).items()):
        if base_name(name, documented) not in documented:
            problems.append(f"{name} ({', '.join(sorted(set(places)))}) is not in {doc_path.name}")
    return problems


def self_test():
    """A copy of the repository's relevant files where a metric was renamed in the code, and one where an
    alert names a metric the doc lacks: each must be reported."""
    import shutil
    import tempfile

    files = [DOC, RULES, DASHBOARD, ALARMS] + list(ROOT.glob("crates/*/src/**/*.rs"))
    with tempfile.TemporaryDirectory() as temporary:
        copy = Path(temporary)
        for path in files:
            target = copy / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
        assert check(copy) == [], f"the copy itself should pass: {check(copy)}"
        telemetry = copy / "crates" / "aggregator" / "src" / "telemetry.rs"
        original = telemetry.read_text()
        telemetry.write_text(original.replace('"hourglass_aggregator_job_lag_seconds"', '"hourglass_aggregator_lag_seconds"'))
        problems = check(copy)
        assert any("differs from the code" in problem for problem in problems), problems
        telemetry.write_text(original)
        rules = copy / RULES.relative_to(ROOT)
        rules.write_text(rules.read_text().replace("hourglass_ledger_unbalanced_final_hours", "hourglass_ledger_unbalanced_hours"))
        problems = check(copy)
        assert any(p.startswith("hourglass_ledger_unbalanced_hours") for p in problems), problems
    print("self-test: a renamed metric and an undocumented alert metric are both caught")


def main(arguments):
    if arguments not in ([], ["--write"], ["--self-test"]):
        print(__doc__, file=sys.stderr)
        return 2
    if arguments == ["--self-test"]:
        self_test()
        arguments = []
    problems = check(ROOT, write=arguments == ["--write"])
    for problem in problems:
        print(f"metrics doc: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"metrics doc: {DOC.relative_to(ROOT)} matches the code, and documents every metric the alerts, dashboard and alarms use")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
