"""The figures every scenario prints and the invariants it asserts (docs/architecture.md):

* sent: events the clients were given; acked: those the collectors acknowledged as durable (plus the
  deliberately invalid ones, rejected);
* stored: distinct events in the raw store, listed one by one through the balancer (``ListRawEvents``,
  the SDK's ``raw_events``) and recounted by ``hourglass verify``;
* counted: events in the hourly rollups (``GetHourlyMetrics``) and in the ledger;
* the ledger: received = accepted + rejected + throttled, per customer-hour.

Asserted: every acked event is stored (invariant 1: nothing acknowledged is lost), nothing is stored that
was not sent, and counted = stored exactly, per customer-hour (invariant 2: each event counted once, also
after redeliveries and resends).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Dict, List, Set, Tuple

from hourglass import QueryClient

from hourglass_e2e.load import Traffic
from hourglass_e2e.platform import Platform

HOUR = timedelta(hours=1)


@dataclass
class Figures:
    sent: int = 0
    invalid_sent: int = 0
    acked: int = 0
    rejected: int = 0
    stored_listed: int = 0
    stored_verified: int = 0
    counted_rollups: int = 0
    counted_verified: int = 0
    ledger_received: int = 0
    ledger_accepted: int = 0
    ledger_rejected: int = 0
    ledger_throttled: int = 0
    ledger_stored: int = 0
    ledger_counted: int = 0
    customer_hours: int = 0
    failures: List[str] = field(default_factory=list)

    def lines(self) -> List[str]:
        return [
            f"sent     {self.sent} events ({self.invalid_sent} of them invalid on purpose) "
            f"to {self.customer_hours} customer-hours",
            f"acked    {self.acked} accepted, {self.rejected} rejected",
            f"stored   {self.stored_listed} distinct (ListRawEvents through the balancer), "
            f"{self.stored_verified} (hourglass verify's recount)",
            f"counted  {self.counted_rollups} (GetHourlyMetrics), {self.counted_verified} (verify), "
            f"{self.ledger_counted} (ledger)",
            f"ledger   received {self.ledger_received} = accepted {self.ledger_accepted} + rejected "
            f"{self.ledger_rejected} + throttled {self.ledger_throttled}; stored {self.ledger_stored} = counted "
            f"{self.ledger_counted}",
        ]


def _expected(traffic: Traffic) -> Dict[Tuple[str, datetime], Set[str]]:
    """(customer, hour) -> the ids acknowledged as accepted."""
    expected: Dict[Tuple[str, datetime], Set[str]] = defaultdict(set)
    for customer in traffic.customers:
        for event_id in customer.accepted:
            expected[(customer.customer.name, customer.sent[event_id])].add(event_id)
    return expected


def settle(platform: Platform, traffic: Traffic, say, timeout_secs: float = 300.0) -> float:
    """Waits until every customer-hour's ledger counts exactly its acked events, with no re-aggregation
    pending; returns the seconds it took. On timeout it returns, and the checks say what is missing."""
    expected = _expected(traffic)
    by_customer: Dict[str, Dict[datetime, int]] = defaultdict(dict)
    for (customer, hour), ids in expected.items():
        by_customer[customer][hour] = len(ids)
    keys = {customer.customer.name: customer.customer.query_key for customer in traffic.customers}
    hours = sorted({hour for hour, _ in traffic.hours})
    start, end = hours[0], hours[-1] + HOUR
    started = time.monotonic()
    next_note = started + 10
    clients = {name: QueryClient(platform.query_target, key) for name, key in keys.items()}
    try:
        while True:
            done, total_counted = True, 0
            for customer, wanted in by_customer.items():
                rows = {row.hour_start: row for row in clients[customer].ledger(start, end)}
                pending = {status.hour_start for status in clients[customer].hour_status(start, end) if status.reaggregation_pending}
                for hour, count in wanted.items():
                    row = rows.get(hour)
                    counted = row.counted if row else 0
                    total_counted += min(counted, count)
                    if counted != count or row.stored != count or hour in pending:
                        done = False
            elapsed = time.monotonic() - started
            if done:
                return elapsed
            if elapsed > timeout_secs:
                say(f"    settling: gave up after {timeout_secs:.0f} s")
                return elapsed
            if time.monotonic() > next_note:
                wanted_total = sum(sum(hours.values()) for hours in by_customer.values())
                say(f"    ... settling: {total_counted} of {wanted_total} acked events counted ({elapsed:.0f} s)")
                next_note = time.monotonic() + 10
            time.sleep(1.0)
    finally:
        for client in clients.values():
            client.close()


def check(platform: Platform, traffic: Traffic, expect_throttled_exact: bool = True) -> Figures:
    """Collects the figures and checks the invariants; ``figures.failures`` lists what does not hold."""
    figures = Figures()
    expected = _expected(traffic)
    hours = sorted({hour for hour, _ in traffic.hours})
    start, end = hours[0], hours[-1] + HOUR
    stats_by_customer = {customer.customer.name: customer.client.stats() for customer in traffic.customers}
    verified = [row for row in platform.verify(start, end)]
    names = {customer.customer.name for customer in traffic.customers}
    verified_by_hour = {(row["customer"], row["hour"]): row for row in verified if row["customer"] in names}
    for customer in traffic.customers:
        name = customer.customer.name
        figures.sent += len(customer.sent)
        figures.invalid_sent += len(customer.invalid)
        figures.acked += len(customer.accepted)
        figures.rejected += len(customer.rejected)
        undecided = set(customer.sent) - customer.accepted - set(customer.rejected)
        if undecided:
            figures.failures.append(f"{name}: {len(undecided)} events sent were never acknowledged")
        if set(customer.rejected) != customer.invalid:
            figures.failures.append(
                f"{name}: rejected {len(customer.rejected)} events, sent {len(customer.invalid)} invalid ones "
                f"(reasons: {sorted(set(customer.rejected.values()))})"
            )
        with QueryClient(platform.query_target, customer.customer.query_key) as reports:
            ledger = {row.hour_start: row for row in reports.ledger(start, end)}
            rollups = {row.period_start: row.events for row in reports.hourly_metrics(start, end)}
            sent_hours = sorted(set(customer.sent.values()))
            for hour in sent_hours:
                acked = expected.get((name, hour), set())
                listed = [event.event_id for event in reports.raw_events(hour)]
                stored = set(listed)
                figures.customer_hours += 1
                figures.stored_listed += len(stored)
                counted = rollups.get(hour, 0)
                figures.counted_rollups += counted
                where = f"{name} {hour:%Y-%m-%dT%H}h"
                if len(listed) != len(stored):
                    figures.failures.append(f"{where}: the raw store lists {len(listed) - len(stored)} ids twice")
                lost = acked - stored
                if lost:
                    figures.failures.append(f"{where}: {len(lost)} acked events not stored, e.g. {sorted(lost)[:3]}")
                phantom = stored - set(customer.sent)
                if phantom:
                    figures.failures.append(f"{where}: {len(phantom)} stored events were never sent")
                if counted != len(stored):
                    figures.failures.append(f"{where}: counted {counted} in the rollups, stored {len(stored)}")
                row = ledger.get(hour)
                if row is None:
                    if acked:
                        figures.failures.append(f"{where}: no ledger row")
                    continue
                figures.ledger_received += row.received
                figures.ledger_accepted += row.accepted
                figures.ledger_rejected += row.rejected
                figures.ledger_throttled += row.throttled
                figures.ledger_stored += row.stored
                figures.ledger_counted += row.counted
                if row.received != row.accepted + row.rejected + row.throttled:
                    figures.failures.append(
                        f"{where}: ledger received {row.received} != accepted {row.accepted} + rejected "
                        f"{row.rejected} + throttled {row.throttled}"
                    )
                if not (row.stored == row.counted == len(stored)):
                    figures.failures.append(
                        f"{where}: ledger stored {row.stored}, counted {row.counted}; the raw store lists {len(stored)}"
                    )
                if row.accepted < len(acked):
                    figures.failures.append(f"{where}: ledger accepted {row.accepted} < {len(acked)} acked")
                verified_row = verified_by_hour.get((name, hour))
                if verified_row is None:
                    figures.failures.append(f"{where}: hourglass verify has no row")
                else:
                    figures.stored_verified += int(verified_row["stored"])
                    figures.counted_verified += int(verified_row["counted"])
                    if verified_row["stored"] != len(stored) or verified_row["counted"] != len(stored):
                        figures.failures.append(
                            f"{where}: verify recounted {verified_row['stored']} stored, {verified_row['counted']} "
                            f"counted ({verified_row['status']}); the raw store lists {len(stored)}"
                        )
        stats = stats_by_customer[name]
        # A throttled batch is resent whole, its invalid events too: each send's invalid events count as
        # rejected in the ledger and its valid ones as throttled (README: resends are counted again), while
        # its ack says only THROTTLED. So per customer: rejected + throttled in the ledger = the rejections
        # the client got + the events of its throttled acks.
        customer_rejected = sum(row.rejected for row in ledger.values())
        customer_throttled = sum(row.throttled for row in ledger.values())
        if customer_rejected < len(customer.invalid):
            figures.failures.append(f"{name}: the ledger rejected {customer_rejected}, {len(customer.invalid)} sent invalid")
        if expect_throttled_exact and customer_rejected + customer_throttled != len(customer.rejected) + stats.throttled_events:
            figures.failures.append(
                f"{name}: the ledger has {customer_rejected} rejected + {customer_throttled} throttled; the client got "
                f"{len(customer.rejected)} rejections and {stats.throttled_events} events in throttled acks"
            )
    return figures
