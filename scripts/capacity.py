#!/usr/bin/env python3
"""The capacity plan of docs/capacity.md, computed from a `hourglass bench all` result, and its drift check.

usage: capacity.py [--bench FILE] [--events-per-day N ...] [--write | --check]

Reads the measured figures (CPU-s per million events of each stage, Cassandra's CPU per million events
written, bytes on disk) from FILE (default docs/capacity-bench.json, the run the document quotes; a fresh
run writes target/bench/bench.json) and prints, for each daily volume, what to deploy: Kafka partitions,
brokers and disk, ScyllaDB nodes and disk, Postgres size, and the replicas of each role. Every input that is
not measured is a named assumption below, printed with the plan.

--write replaces the generated part of docs/capacity.md; --check (CI) fails when it differs, so the document
cannot drift from the figures it quotes.
"""

import argparse
import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "capacity.md"
DEFAULT_BENCH = ROOT / "docs" / "capacity-bench.json"
START = "<!-- capacity-plan:start (scripts/capacity.py --write) -->"
END = "<!-- capacity-plan:end -->"

# Assumptions (not measured here), each with its reason.
ASSUMPTIONS = {
    # The client's figure: 1 billion events a day is 13,800 events/s at the base rate, and peaks are 3x that.
    "base_rate_per_billion": 13_800,
    "peak_factor": 3,
    # Event size on the wire and in Kafka records (the benchmarks' events are ~190-200 B).
    "event_bytes": 200,
    "events_per_record": 100,
    # Replication everywhere: 3 copies, one per zone.
    "replication": 3,
    "kafka_retention_days": 7,
    "raw_retention_days": 30,
    # A service core runs at most this busy at peak, leaving room for a zone's loss (its load moves to
    # the other two: 1.5x) and for GC-free but bursty work.
    "core_utilization": 0.5,
    # Cores per ScyllaDB node and per Kafka broker when sized by CPU.
    "scylla_node_cores": 8,
    # Usable disk per ScyllaDB node and per Kafka broker (an i3en.3xlarge's 7.5 TB NVMe; 8 TB of EBS),
    # kept at most 70% full for compaction and rebalancing.
    "scylla_node_disk_tb": 7.5,
    "kafka_broker_disk_tb": 8.0,
    "disk_fill": 0.7,
    # lz4 on Kafka record batches of these events (measured ratio of the bench's events, conservative).
    "kafka_compression_ratio": 2.0,
    # Postgres: event types per customer and hour (the benchmarks' 20), bytes per rollup row measured on
    # the query benchmark's data (964 B: HLL sketches are sparse below ~1,400 users an hour, 4 KiB dense).
    "event_types_per_customer_hour": 20,
    "rollup_row_bytes": 964,
    "rollup_row_bytes_dense": 4_200,
    # Raw events on ScyllaDB's disk, per replica: LZ4 blocks of ~6 events (a record's events in one bucket)
    # measured at 64 B per event (docs/architecture.md, "The raw store's layout"), plus the row's key and
    # cell overhead spread over its events.
    "raw_bytes_per_event": 75,
}


def measured(bench):
    """The figures the plan needs, from a bench all result; fails naming what is missing."""
    rows = {row["name"]: row for row in bench["rows"]}

    def row(name):
        if name not in rows:
            sys.exit(f"capacity: the bench result has no {name!r} row")
        return rows[name]

    def note(name, pattern):
        for text in row(name)["notes"]:
            found = re.search(pattern, text)
            if found:
                return float(found.group(1).replace(",", ""))
        sys.exit(f"capacity: no note matching {pattern!r} in the {name!r} row: {row(name)['notes']}")

    def cpu(name):
        value = row(name)["cpu_seconds_per_million"]
        if value is None:
            sys.exit(f"capacity: the {name!r} row has no CPU per million events")
        return value

    return {
        "machine": bench["machine"],
        "scale": bench["scale"],
        "collector_cpu": cpu("collector"),
        "ingestor_cpu": cpu("ingestor"),
        "aggregator_cpu": cpu("aggregator"),
        "cassandra_write_cpu": note("ingestor", r"Cassandra ([\d.]+) CPU-s/M written"),
        "cassandra_read_cpu": note("aggregator", r"Cassandra ([\d.]+) CPU-s/M read"),
        "raw_bytes_per_event": note("ingestor", r"([\d.,]+) B/event on disk")
        if any("B/event on disk" in text for text in row("ingestor")["notes"])
        else None,
        "kafka_producer_mb_per_s": note("floor: kafka producer", r"([\d.]+) MB/s"),
        "query_cpu_ms": note("query, summed", r"service CPU ([\d.]+) ms/request"),
    }


def plan(figures, events_per_day):
    a = ASSUMPTIONS
    base = events_per_day / 1e9 * a["base_rate_per_billion"]
    peak = base * a["peak_factor"]
    average = events_per_day / 86_400

    def cores(cpu_per_million, rate=peak):
        return rate * cpu_per_million / 1e6

    def replicas(busy_cores, minimum=3):
        return max(minimum, math.ceil(busy_cores / a["core_utilization"]))

    collector_cores = cores(figures["collector_cpu"])
    ingestor_cores = cores(figures["ingestor_cpu"])
    # Aggregation reads each event once for its provisional and once for its final rollup.
    aggregator_cores = cores(figures["aggregator_cpu"], average * 2)
    ingestors = replicas(ingestor_cores, minimum=2)
    # Partitions bound ingestor parallelism; leave 4x room to grow without repartitioning (which moves
    # customers between partitions and breaks their order during the change).
    partitions = max(12, 2 ** math.ceil(math.log2(ingestors * 4)))
    kafka_in_mb = peak * a["event_bytes"] / 1e6 / a["kafka_compression_ratio"]
    kafka_disk_tb = (
        average * a["event_bytes"] / a["kafka_compression_ratio"] * 86_400 * a["kafka_retention_days"]
        * a["replication"] / 1e12
    )
    # A broker takes in at most half of what the measured producer floor pushed through one broker here.
    brokers = max(
        3,
        math.ceil(kafka_in_mb * a["replication"] / (figures["kafka_producer_mb_per_s"] / 2)),
        math.ceil(kafka_disk_tb / (a["kafka_broker_disk_tb"] * a["disk_fill"])),
    )
    scylla_cores = cores(figures["cassandra_write_cpu"]) * a["replication"] + cores(
        figures["cassandra_read_cpu"], average * 2
    ) * a["replication"]
    raw_bytes = figures["raw_bytes_per_event"] or a["raw_bytes_per_event"]
    raw_per_day_tb = average * 86_400 * raw_bytes * a["replication"] / 1e12
    scylla_nodes = max(
        3,
        math.ceil(scylla_cores / (a["scylla_node_cores"] * a["core_utilization"])),
        math.ceil(raw_per_day_tb * a["raw_retention_days"] / (a["scylla_node_disk_tb"] * a["disk_fill"])),
    )
    rows_per_customer_year = 24 * 365 * a["event_types_per_customer_hour"]
    return {
        "events/day": events_per_day,
        "base/peak events/s": (base, peak),
        "collector cores / replicas": (collector_cores, replicas(collector_cores)),
        "ingestor cores / replicas": (ingestor_cores, ingestors),
        "aggregator cores / replicas": (aggregator_cores, replicas(aggregator_cores, minimum=2)),
        "kafka partitions": partitions,
        "kafka MB/s in at peak (compressed)": kafka_in_mb,
        "kafka brokers": brokers,
        "kafka disk TB (all replicas)": kafka_disk_tb,
        "scylla cores (RF 3)": scylla_cores,
        "scylla nodes": scylla_nodes,
        "raw TB per retained day (RF 3)": raw_per_day_tb,
        "raw TB for the retention (RF 3)": raw_per_day_tb * a["raw_retention_days"],
        "postgres GB per customer-year": (
            rows_per_customer_year * a["rollup_row_bytes"] / 1e9,
            rows_per_customer_year * a["rollup_row_bytes_dense"] / 1e9,
        ),
    }


def render(figures, volumes):
    plans = [plan(figures, volume) for volume in volumes]
    a = ASSUMPTIONS
    lines = [
        START,
        "",
        f"Measured by `hourglass bench all --scale {figures['scale']}` ({figures['machine']}): collector "
        f"{figures['collector_cpu']:.2f}, ingestor {figures['ingestor_cpu']:.2f}, aggregator "
        f"{figures['aggregator_cpu']:.2f} CPU-s per million events; Cassandra {figures['cassandra_write_cpu']:.1f} "
        f"CPU-s per million events written and {figures['cassandra_read_cpu']:.1f} read; "
        + (
            f"{figures['raw_bytes_per_event']:.0f} B per event on Cassandra's disk; "
            if figures["raw_bytes_per_event"]
            else ""
        )
        + f"the Kafka producer floor {figures['kafka_producer_mb_per_s']:.1f} MB/s through one broker.",
        "",
        "| | " + " | ".join(f"{p['events/day'] / 1e9:g} B events/day" for p in plans) + " |",
        "|---|" + "---:|" * len(plans),
    ]

    def row(label, cells):
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("base / peak events/s", [f"{p['base/peak events/s'][0]:,.0f} / {p['base/peak events/s'][1]:,.0f}" for p in plans])
    for key, label in [
        ("collector cores / replicas", "collector: busy cores at peak → replicas"),
        ("ingestor cores / replicas", "ingestor: busy cores at peak → replicas"),
        ("aggregator cores / replicas", "aggregator: busy cores (average, each event read twice) → replicas"),
    ]:
        row(label, [f"{p[key][0]:.2f} → **{p[key][1]}**" for p in plans])
    row("query replicas", ["**3** (load-bound by reports, not events)" for _ in plans])
    row("Kafka: partitions of the events topic", [f"**{p['kafka partitions']}**" for p in plans])
    row("Kafka: MB/s in at peak (lz4) → brokers (by throughput or disk)", [f"{p['kafka MB/s in at peak (compressed)']:.1f} → **{p['kafka brokers']}**" for p in plans])
    row(f"Kafka: disk for {a['kafka_retention_days']} days, all replicas", [f"{p['kafka disk TB (all replicas)']:.2f} TB" for p in plans])
    row(
        "ScyllaDB: busy cores at peak (RF 3) → nodes (8 cores, 7.5 TB; by CPU or disk)",
        [f"{p['scylla cores (RF 3)']:.1f} → **{p['scylla nodes']}**" for p in plans],
    )
    row("ScyllaDB: disk per retained day (RF 3)", [f"{p['raw TB per retained day (RF 3)']:.2f} TB" for p in plans])
    row(f"ScyllaDB: disk for {a['raw_retention_days']} days (RF 3)", [f"{p['raw TB for the retention (RF 3)']:.1f} TB" for p in plans])
    row(
        f"Postgres per customer-year ({a['event_types_per_customer_hour']} event types)",
        [f"{p['postgres GB per customer-year'][0]:.2f}–{p['postgres GB per customer-year'][1]:.2f} GB" for p in plans],
    )
    lines += [
        "",
        "Assumptions (not measured): "
        + "; ".join(f"`{name}` = {value:,}" if isinstance(value, int) else f"`{name}` = {value}" for name, value in a.items())
        + ".",
        "",
        END,
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=DEFAULT_BENCH)
    parser.add_argument("--events-per-day", type=float, action="append")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = parser.parse_args()
    figures = measured(json.loads(args.bench.read_text()))
    generated = render(figures, args.events_per_day or [1e9, 1e10])
    if not (args.write or args.check):
        print(generated)
        return 0
    doc = DOC.read_text()
    if START not in doc or END not in doc:
        sys.exit(f"{DOC}: the markers {START} and {END} are missing")
    current = doc[doc.index(START) : doc.index(END) + len(END)]
    if args.write:
        DOC.write_text(doc.replace(current, generated))
        print(f"wrote the capacity plan of {DOC}")
        return 0
    if current != generated:
        print(f"{DOC}: the capacity plan differs from {args.bench.name}: run scripts/capacity.py --write", file=sys.stderr)
        return 1
    print(f"capacity: docs/capacity.md's plan matches {args.bench.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
