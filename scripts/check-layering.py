#!/usr/bin/env python3
"""Checks the crate graph keeps the layers of docs/architecture.md.

    contract (proto) <- core <- backends (kafka, cql, postgres, embedded)
                            <- stages (collector, ingestor, aggregator, query, and grpc, what they share)
    wiring (the `hourglass` binary) may depend on anything; `conformance` (the seam suites) on core only.
    config (flag defaults, the layered loader) depends on no workspace crate; any crate but core and proto
    may depend on it (core stays free of clap).

A backend never depends on a stage, a stage never on a backend or on another stage (grpc aside), and every
workspace crate has a layer (a new crate must be placed here). Only normal dependencies count: tests of a
stage run against real backends, so dev-dependencies may cross layers.

Usage: scripts/check-layering.py             check the workspace (runs `cargo metadata`)
       scripts/check-layering.py --self-test also show that a deliberately wrong dependency fails
"""

import json
import subprocess
import sys

LAYER = {
    "hourglass-proto": "contract",
    "hourglass-core": "core",
    "hourglass-config": "config",
    "hourglass-kafka": "backend",
    "hourglass-cql": "backend",
    "hourglass-postgres": "backend",
    "hourglass-embedded": "backend",
    "hourglass-grpc": "shared-stage",
    "hourglass-collector": "stage",
    "hourglass-ingestor": "stage",
    "hourglass-aggregator": "stage",
    "hourglass-query": "stage",
    "hourglass-conformance": "tests",
    "hourglass": "wiring",
}

# What each layer may depend on.
ALLOWED = {
    "contract": set(),
    "core": {"contract"},
    "config": set(),
    "backend": {"contract", "core", "config"},
    "shared-stage": {"contract", "core", "config"},
    "stage": {"contract", "core", "config", "shared-stage"},
    "tests": {"contract", "core", "config"},
    "wiring": {"contract", "core", "config", "backend", "shared-stage", "stage", "tests"},
}

# Edges that break the rules, each with why, until the issue that removes it lands. None today: the
# last two (the ingestor on Kafka, the embedded backends on the ingestor) went when the read side of the
# event log became a seam. Nothing may be added here without an issue that removes it.
KNOWN_EXCEPTIONS = {}


def workspace_edges(metadata):
    """(crate, dependency) pairs of normal dependencies between workspace crates, and the crate names."""
    names = {package["name"] for package in metadata["packages"]}
    edges = set()
    for package in metadata["packages"]:
        for dependency in package["dependencies"]:
            if dependency["name"] in names and dependency.get("kind") is None:
                edges.add((package["name"], dependency["name"]))
    return names, edges


def violations(names, edges):
    problems = []
    for name in sorted(names - LAYER.keys()):
        problems.append(f"{name} has no layer: place it in scripts/check-layering.py and docs/architecture.md")
    for crate, dependency in sorted(edges):
        if crate not in LAYER or dependency not in LAYER:
            continue
        if (crate, dependency) in KNOWN_EXCEPTIONS:
            continue
        if LAYER[dependency] not in ALLOWED[LAYER[crate]]:
            problems.append(
                f"{crate} ({LAYER[crate]}) depends on {dependency} ({LAYER[dependency]}): "
                f"a {LAYER[crate]} may depend only on {', '.join(sorted(ALLOWED[LAYER[crate]])) or 'nothing'}"
            )
    for crate, dependency in sorted(KNOWN_EXCEPTIONS):
        if (crate, dependency) not in edges:
            problems.append(f"known exception {crate} -> {dependency} is gone: remove it from KNOWN_EXCEPTIONS")
    return problems


def main():
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps", "--locked"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    names, edges = workspace_edges(metadata)
    problems = violations(names, edges)
    if "--self-test" in sys.argv[1:]:
        wrong = violations(names, edges | {("hourglass-collector", "hourglass-postgres")})
        if not any("hourglass-collector (stage) depends on hourglass-postgres (backend)" in line for line in wrong):
            print("self-test failed: a stage depending on a backend was not caught", file=sys.stderr)
            return 1
        core_on_config = violations(names, edges | {("hourglass-core", "hourglass-config")})
        if not any("hourglass-core (core) depends on hourglass-config (config)" in line for line in core_on_config):
            print("self-test failed: core depending on the config crate was not caught", file=sys.stderr)
            return 1
        unplaced = violations(names | {"hourglass-new"}, edges)
        if not any("hourglass-new has no layer" in line for line in unplaced):
            print("self-test failed: a crate without a layer was not caught", file=sys.stderr)
            return 1
        print("layering self-test: wrong dependencies and an unplaced crate are all refused")
    for problem in problems:
        print(f"layering: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"layering: {len(edges)} dependencies between {len(names)} crates keep the layers "
          f"({len(KNOWN_EXCEPTIONS)} known exceptions, see docs/architecture.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
