"""The seven scenarios of issue 22. Each sends seeded traffic through the balancer with the SDK, does
something to the platform meanwhile, waits until every customer-hour settles, and prints and checks the
figures (checks.py): acked ⊆ stored and counted = stored, exactly, whatever was done to it.

Loads are events per second over a fixed time (``--scale`` multiplies the rate, never the faults'
timing): a fault always happens while clients are sending. Each scenario has customers of its own, so its
figures are its own; the platform is shared and put back whole between scenarios.
"""

from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, List, Optional

import yaml
from hourglass import CallError, QueryClient

from hourglass_e2e import checks, console
from hourglass_e2e.load import Traffic, hour_start, zipf_weights
from hourglass_e2e.platform import Platform, Process, RssMonitor, metric, wait_until
from hourglass_e2e.servers import Servers


@dataclass
class Context:
    platform: Platform
    servers: Servers
    seed: int
    scale: float
    say: Callable[[str], None]
    repository: Path


@dataclass
class Outcome:
    figures: Optional[checks.Figures] = None
    notes: List[str] = field(default_factory=list)
    failures: List[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not self.failures and (self.figures is None or not self.figures.failures)


@dataclass
class Scenario:
    number: int
    name: str
    title: str
    run: Callable[[Context], Outcome]


SCENARIOS: List[Scenario] = []


def scenario(number: int, name: str, title: str):
    def register(function: Callable[[Context], Outcome]) -> Callable[[Context], Outcome]:
        SCENARIOS.append(Scenario(number, name, title, function))
        return function

    return register


def _hours(now: datetime):
    """Where events fall: the open hour (provisional rollups), the last one (provisional or final,
    depending on the minute), and one three hours ago (closed: final rollups, re-finalized by each
    late event)."""
    current = hour_start(now)
    return [(current, 0.6), (current - timedelta(hours=1), 0.25), (current - timedelta(hours=3), 0.15)]


def _customers(context: Context, number: int, count: int) -> list:
    return [context.platform.create_customer(f"s{number}-c{index}") for index in range(count)]


def _traffic(context: Context, name: str, customers, weights=None, **options) -> Traffic:
    return Traffic(
        context.platform.ingest_target,
        customers,
        seed=f"{context.seed}/{name}",
        hours=_hours(datetime.now(timezone.utc)),
        weights=weights,
        **options,
    )


def _settle_and_check(context: Context, traffic: Traffic, outcome: Outcome, exact_throttled: bool = True) -> Outcome:
    took = checks.settle(context.platform, traffic, context.say)
    outcome.notes.append(f"settled {took:.0f} s after the last ack (every customer-hour counted exactly)")
    outcome.figures = checks.check(context.platform, traffic, expect_throttled_exact=exact_throttled)
    return outcome


def _client_notes(traffic: Traffic) -> str:
    stats = traffic.stats()
    errors = ", ".join(f"{code} {count}" for code, count in sorted(stats.stream_errors.items())) or "none"
    return (
        f"clients: {stats.streams_opened} streams opened (stream errors: {errors}); acks THROTTLED "
        f"{stats.throttled_acks} ({stats.throttled_events} events), UNAVAILABLE {stats.unavailable_acks}; "
        f"{stats.resent_batches} batches resent; track() blocked {stats.backpressure_waits} times"
    )


def _at(started: float, seconds: float) -> None:
    """Sleeps until ``seconds`` after ``started``."""
    delay = started + seconds - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _rate(context: Context, events_per_second: float) -> float:
    return max(events_per_second * context.scale, 20.0)


# ---------------------------------------------------------------------------------------------------- 1


@scenario(1, "steady", "steady load from several clients and Zipf-skewed customers: exact counts")
def steady(context: Context) -> Outcome:
    outcome = Outcome()
    customers = _customers(context, 1, 6)
    # A seventh customer with a quota of 150 events/s per collector: its batches are throttled, and its
    # client resends them after retry_after_ms.
    throttled = context.platform.create_customer("s1-throttled", events_per_second=150)
    weights = [weight * 0.9 for weight in zipf_weights(6)] + [0.1]
    traffic = _traffic(context, "steady", customers + [throttled], weights)
    total = int(30_000 * context.scale)
    traffic.start(total, rate=None, invalid_every=500)
    took = traffic.finish()
    outcome.notes.append(f"{total} events from 7 clients, as fast as acked: {total / took:.0f} events/s acked")
    outcome.notes.append(_client_notes(traffic))
    if traffic.customers[-1].client.stats().throttled_events == 0:
        outcome.failures.append("the customer over its quota was never throttled")
    _settle_and_check(context, traffic, outcome)
    # The web console as a browser reaches it through the balancer (HTTP/1.1, gRPC-Web), on settled data.
    hours = sorted({hour for hour, _ in traffic.hours})
    notes, failures = console.check_console(
        context.platform.query_target, customers[0].query_key, hours[0], hours[-1] + timedelta(hours=1)
    )
    outcome.notes += notes
    outcome.failures += failures
    return outcome


# ---------------------------------------------------------------------------------------------------- 2


@scenario(2, "collector-rolling-restart", "rolling restart of both collectors under load: 0 acked lost")
def collector_rolling_restart(context: Context) -> Outcome:
    outcome = Outcome()
    platform = context.platform
    traffic = _traffic(context, "collector-rolling-restart", _customers(context, 2, 4))
    rate, seconds = _rate(context, 600), 45
    traffic.start(int(rate * seconds), rate=rate)
    started = time.monotonic()
    _at(started, 5)
    for collector in platform.collectors:
        # As Kubernetes does: SIGTERM, the pod's grace period (the chart's 45 s), the next pod once this one
        # is back and Ready.
        stopping = time.monotonic()
        status = collector.stop(timeout_secs=45)
        stopped = time.monotonic() - stopping
        took = platform.restart(collector)
        outcome.notes.append(
            f"{collector.name}: SIGTERM at {stopping - started:.1f} s, exited {status} after {stopped:.1f} s "
            f"(NOT_SERVING, drain, flush), back and UP in haproxy {took:.1f} s later"
        )
        if status != 0:
            outcome.failures.append(f"{collector.name} exited {status} on SIGTERM")
        time.sleep(2)
    if not traffic.sending():
        outcome.failures.append("the load ended before the restarts did: raise its duration")
    traffic.finish()
    stats = traffic.stats()
    outcome.notes.append(_client_notes(traffic))
    if not stats.stream_errors:
        outcome.failures.append("no client stream was ended by the restarts: the scenario did not test reconnects")
    return _settle_and_check(context, traffic, outcome)


# ---------------------------------------------------------------------------------------------------- 3


@scenario(3, "ingestor-kill", "kill -9 an ingestor at random points, many times, under load")
def ingestor_kill(context: Context) -> Outcome:
    outcome = Outcome()
    platform = context.platform
    traffic = _traffic(context, "ingestor-kill", _customers(context, 3, 4))
    rate, seconds, kills = _rate(context, 600), 50, 6
    rng = random.Random(f"{context.seed}/ingestor-kill/faults")
    moments = sorted(rng.uniform(3, seconds - 12) for _ in range(kills))
    traffic.start(int(rate * seconds), rate=rate)
    started = time.monotonic()
    for moment in moments:
        _at(started, moment)
        victim = rng.choice(platform.ingestors)
        down_secs = rng.uniform(0.2, 3.0)
        killed_at = time.monotonic() - started
        stored = metric(victim, "hourglass_ingestor_events_stored_total")
        victim.kill()
        time.sleep(down_secs)
        took = platform.restart(victim)
        outcome.notes.append(
            f"SIGKILL {victim.name} at {killed_at:.1f} s (it had stored {stored:.0f} events), restarted "
            f"{down_secs:.1f} s later, ready after {took:.1f} s"
        )
    if not traffic.sending():
        outcome.failures.append("the load ended before the last kill: raise its duration")
    traffic.finish()
    outcome.notes.append(_client_notes(traffic))
    outcome = _settle_and_check(context, traffic, outcome)
    try:
        took = wait_until("consumer lag 0", lambda: platform.consumer_lag() == 0, 60, context.say, every_secs=1.0)
        outcome.notes.append(f"consumer lag 0 {took:.0f} s after settling: every offset committed")
    except TimeoutError:
        outcome.failures.append(f"consumer lag still {platform.consumer_lag()} records a minute after settling")
    return outcome


# ---------------------------------------------------------------------------------------------------- 4


def _collector_memory_budget_kib(repository: Path) -> int:
    """The collector's memory limit in the chart (values.yaml): the budget its RSS must stay under."""
    values = yaml.safe_load((repository / "charts" / "hourglass" / "values.yaml").read_text())
    limit = values["collector"]["resources"]["limits"]["memory"]
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", limit).groups()
    return int(number) * (1024 if unit == "Mi" else 1024 * 1024)


@scenario(4, "broker-outage", "the broker stopped for 20 s under load: backpressure, bounded memory, nothing lost")
def broker_outage(context: Context) -> Outcome:
    outcome = Outcome()
    platform = context.platform
    rate, seconds = _rate(context, 500), 50
    # Each client holds at most 2 s of the whole load unacked: with nothing acked for 20 s, every client's
    # track() blocks, whatever the scale (the backpressure an application sees).
    traffic = _traffic(context, "broker-outage", _customers(context, 4, 3), max_queued_events=max(200, int(rate * 2)))
    budget_kib = _collector_memory_budget_kib(context.repository)
    with RssMonitor(platform.collectors) as memory:
        traffic.start(int(rate * seconds), rate=rate)
        started = time.monotonic()
        _at(started, 8)
        before = traffic.stats()
        context.servers.run("kafka", "stop")
        stopped_at = time.monotonic()
        outcome.notes.append(f"broker stopped at {stopped_at - started:.1f} s")
        waiting_peak = 0
        while time.monotonic() < stopped_at + 20:
            waiting_peak = max(waiting_peak, traffic.stats().pending_events)
            time.sleep(0.5)
        during = traffic.stats()
        context.servers.run("kafka", "start")
        outcome.notes.append(f"broker started again {time.monotonic() - stopped_at:.1f} s after it was stopped")
        if not traffic.sending():
            outcome.failures.append("the load ended before the broker came back: raise its duration")
        took = traffic.finish(timeout_secs=600)
        outcome.notes.append(f"the clients had every event acked {took - (stopped_at - started):.0f} s after the stop")
    after = traffic.stats()
    blocked = during.backpressure_waits - before.backpressure_waits
    outcome.notes.append(
        f"while the broker was down: up to {waiting_peak} events waited for acks and track() blocked {blocked} "
        f"times; from the stop to the last ack the clients got {after.unavailable_acks - before.unavailable_acks} "
        f"UNAVAILABLE acks and {sum(after.stream_errors.values()) - sum(before.stream_errors.values())} failed streams, "
        f"and resent {after.resent_batches - before.resent_batches} batches"
    )
    if blocked == 0:
        outcome.failures.append("no client was held back while the broker was down")
    outcome.notes.append(_client_notes(traffic))
    for name, peak in memory.peak_kib.items():
        outcome.notes.append(
            f"{name} peak RSS {peak / 1024:.0f} MiB (budget {budget_kib / 1024:.0f} MiB: the chart's memory limit)"
        )
        if peak >= budget_kib:
            outcome.failures.append(f"{name} peaked at {peak / 1024:.0f} MiB, over its {budget_kib / 1024:.0f} MiB budget")
    return _settle_and_check(context, traffic, outcome)


# ---------------------------------------------------------------------------------------------------- 5


def _leased_hours(platform: Platform, owner: Optional[str] = None) -> List[List[str]]:
    owner_clause = f"AND lease_owner = '{owner}'" if owner else "AND lease_owner IS NOT NULL"
    return platform.psql(
        "SELECT customer_id, hour_start, lease_owner, leased_until FROM dirty_hours "
        f"WHERE leased_until > now() {owner_clause} ORDER BY 1, 2"
    )


@scenario(5, "postgres-restart", "Postgres restarted during aggregation: rollups complete and exact")
def postgres_restart(context: Context) -> Outcome:
    outcome = Outcome()
    platform = context.platform
    traffic = _traffic(context, "postgres-restart", _customers(context, 5, 4))
    rate, seconds = _rate(context, 500), 40
    failed_before = sum(metric(process, "hourglass_aggregator_jobs_total", 'result="failed"') for process in platform.aggregators)
    traffic.start(int(rate * seconds), rate=rate)
    started = time.monotonic()
    _at(started, 8)
    leased: List[List[str]] = []
    deadline = time.monotonic() + 20
    while not leased and time.monotonic() < deadline:
        leased = _leased_hours(platform)
    restarting = time.monotonic()
    context.servers.run("postgres", "stop")
    context.servers.run("postgres", "start")
    outcome.notes.append(
        f"Postgres restarted at {restarting - started:.1f} s ({time.monotonic() - restarting:.1f} s down) while "
        f"{len(leased)} hours were leased by aggregators"
    )
    if not leased:
        outcome.failures.append("no hour was being aggregated when Postgres restarted")
    if not traffic.sending():
        outcome.failures.append("the load ended before Postgres was back: raise its duration")
    traffic.finish()
    outcome.notes.append(_client_notes(traffic))
    outcome = _settle_and_check(context, traffic, outcome)
    failed = sum(metric(process, "hourglass_aggregator_jobs_total", 'result="failed"') for process in platform.aggregators)
    outcome.notes.append(f"aggregator jobs failed by the restart and retried: {failed - failed_before:.0f}")
    return outcome


# ---------------------------------------------------------------------------------------------------- 6


@scenario(6, "cassandra-outage", "Cassandra stopped for 20 s: ingestion pauses, nothing lost, lag drains")
def cassandra_outage(context: Context) -> Outcome:
    outcome = Outcome()
    platform = context.platform
    traffic = _traffic(context, "cassandra-outage", _customers(context, 6, 3))
    rate, seconds = _rate(context, 500), 50
    traffic.start(int(rate * seconds), rate=rate)
    started = time.monotonic()
    _at(started, 8)
    lag_before = platform.consumer_lag()
    context.servers.run("cassandra", "stop")
    stopped_at = time.monotonic()
    lags = []
    while time.monotonic() < stopped_at + 20:
        lags.append(platform.consumer_lag())
        time.sleep(4)
    context.servers.run("cassandra", "start")
    back_at = time.monotonic()
    lag_at_restart = platform.consumer_lag()
    outcome.notes.append(
        f"Cassandra stopped at {stopped_at - started:.1f} s, answering again {back_at - stopped_at:.1f} s later; "
        f"consumer lag {lag_before} records before, {' -> '.join(map(str, lags))} while down, {lag_at_restart} at restart"
    )
    if max(lags + [lag_at_restart]) <= lag_before:
        outcome.failures.append("the consumer lag did not grow while Cassandra was down: ingestion did not pause")
    traffic.finish(timeout_secs=600)
    wait_until("consumer lag 0", lambda: platform.consumer_lag() == 0, 300, context.say, every_secs=1.0)
    outcome.notes.append(f"consumer lag drained to 0 {time.monotonic() - back_at:.0f} s after Cassandra was back")
    outcome.notes.append(_client_notes(traffic))
    return _settle_and_check(context, traffic, outcome)


# ---------------------------------------------------------------------------------------------------- 7


class QueryProbe:
    """Asks the query services, through the balancer, for a report every 100 ms; counts answers and
    failures (after the SDK's retries of UNAVAILABLE, which stand in for Envoy's)."""

    def __init__(self, target: str, query_key: str, start: datetime, end: datetime):
        self.client = QueryClient(target, query_key, retries=3)
        self.start, self.end = start, end
        self.answered = 0
        self.failed: List[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.client.hourly_metrics(self.start, self.end, group_by_event_type=True)
                self.client.ledger(self.start, self.end)
                self.answered += 1
            except CallError as error:
                self.failed.append(str(error))

    def __enter__(self) -> "QueryProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()


@scenario(7, "aggregator-query-kill", "one aggregator and one query service SIGKILLed: leases taken over, queries answered")
def aggregator_query_kill(context: Context) -> Outcome:
    outcome = Outcome()
    platform = context.platform
    customers = _customers(context, 7, 8)
    traffic = _traffic(context, "aggregator-query-kill", customers)
    rate, seconds = _rate(context, 600), 45
    victim_aggregator, survivor = platform.aggregators[0], platform.aggregators[1]
    victim_query = platform.queries[0]
    hours = sorted(hour for hour, _ in traffic.hours)
    probe_range = (hours[0], hours[-1] + timedelta(hours=1))
    with QueryProbe(platform.query_target, customers[0].query_key, *probe_range) as probe:
        traffic.start(int(rate * seconds), rate=rate)
        started = time.monotonic()
        _at(started, 6)
        orphans: List[List[str]] = []
        attempts = 0
        while not orphans and attempts < 4:
            attempts += 1
            if not victim_aggregator.alive():
                platform.restart(victim_aggregator)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not _leased_hours(platform, victim_aggregator_id(victim_aggregator)):
                time.sleep(0.02)
            victim_aggregator.kill()
            if attempts == 1:
                victim_query.kill()
                killed_at = time.monotonic() - started
            # The hours it held when it died: nobody else may take them before their leases expire.
            orphans = _leased_hours(platform, victim_aggregator_id(victim_aggregator))
        outcome.notes.append(
            f"SIGKILL {victim_aggregator.name} and {victim_query.name} at {killed_at:.1f} s "
            f"({attempts} attempt(s) to catch the aggregator holding leases); it held {len(orphans)} hours"
        )
        if not orphans:
            outcome.failures.append(f"{victim_aggregator.name} never died holding a lease: the take-over was not tested")
        # Each orphaned hour must be rolled up again by the survivor, after its lease expired.
        def taken_over() -> bool:
            for customer_id, hour, _, leased_until in orphans:
                rows = platform.psql(
                    "SELECT r.computed_at >= timestamptz '" + leased_until + "', d.lease_owner IS DISTINCT FROM "
                    f"'{victim_aggregator_id(victim_aggregator)}' FROM hour_revisions r JOIN dirty_hours d "
                    "USING (customer_id, hour_start) "
                    f"WHERE r.customer_id = '{customer_id}' AND r.hour_start = timestamptz '{hour}'"
                )
                if not rows or rows[0] != ["t", "t"]:
                    return False
            return True

        took = wait_until("the orphaned hours rolled up again", taken_over, 120, context.say, every_secs=0.5)
        outcome.notes.append(
            f"{survivor.name} rolled every orphaned hour up again after its lease expired "
            f"({took:.0f} s after the kill; lease {platform_lease_secs(platform)} s)"
        )
        if not traffic.sending():
            outcome.failures.append("the load ended before the take-over: raise its duration")
        traffic.finish()
    outcome.notes.append(
        f"queries through the balancer while {victim_query.name} was dead: {probe.answered} answered, "
        f"{len(probe.failed)} failed ({probe.client.retried_calls} calls retried after UNAVAILABLE or an unparsable answer)"
    )
    if probe.failed:
        outcome.failures.append(f"{len(probe.failed)} queries failed, e.g. {probe.failed[0]}")
    if probe.answered == 0:
        outcome.failures.append("no query was answered")
    outcome.notes.append(_client_notes(traffic))
    outcome = _settle_and_check(context, traffic, outcome)
    platform.restart(victim_query)
    platform.restart(victim_aggregator)
    return outcome


def victim_aggregator_id(process: Process) -> str:
    return process.argv[process.argv.index("--aggregator-worker-id") + 1]


def platform_lease_secs(platform: Platform) -> int:
    match = re.search(r"^aggregator-lease-secs = (\d+)", platform.config_path.read_text(), re.M)
    return int(match.group(1)) if match else 300


def select(names: List[str]) -> List[Scenario]:
    """The scenarios named (by name or number), in their order; all when none is named."""
    if not names:
        return list(SCENARIOS)
    chosen = []
    for name in names:
        matches = [item for item in SCENARIOS if name in (item.name, str(item.number))]
        if not matches:
            raise SystemExit(f"no scenario {name!r}; there are: " + ", ".join(f"{s.number} {s.name}" for s in SCENARIOS))
        chosen += matches
    unique = {item.number: item for item in chosen}
    return [unique[number] for number in sorted(unique)]
