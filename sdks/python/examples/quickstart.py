"""Send events to Hourglass and read them back: the Python SDK's quickstart (README, "The Python SDK").

    HOURGLASS_TARGET=127.0.0.1:50051 HOURGLASS_INGEST_KEY=hgk_... HOURGLASS_QUERY_KEY=hgk_... \
        python sdks/python/examples/quickstart.py
"""

import os
import time
from datetime import datetime, timedelta, timezone

from hourglass import Client, QueryClient

target = os.environ.get("HOURGLASS_TARGET", "127.0.0.1:50051")
now = datetime.now(timezone.utc)
this_hour = now.replace(minute=0, second=0, microsecond=0)

# Send: track() queues an event and returns at once; batches go out in the background. Each event gets a
# fresh id and the current time unless given (here one instant for all, so they fall in one hour). flush()
# returns once every event tracked so far is durable (acked after Kafka has it).
with Client(target, api_key=os.environ["HOURGLASS_INGEST_KEY"]) as client:
    for n in range(1000):
        client.track("page_view", user_id=f"user-{n % 50}", timestamp=now, path="/pricing", load_ms=100 + n % 80)
    client.track("signup", user_id="user-7", timestamp=now, plan="pro", trial=True)
    client.flush()
    print(f"acked: {client.stats().accepted_events} events")

# Query: the hour's rollup appears within seconds (provisional while the hour is open).
with QueryClient(target, api_key=os.environ["HOURGLASS_QUERY_KEY"]) as reports:
    start, end = this_hour, this_hour + timedelta(hours=1)
    deadline = time.monotonic() + 60
    while sum(row.events for row in reports.hourly_metrics(start, end)) < 1001 and time.monotonic() < deadline:
        time.sleep(1)
    for row in reports.hourly_metrics(start, end, group_by_event_type=True):
        load = row.numeric.get("load_ms")
        mean = f", mean load_ms {load.sum / load.count:.1f}" if load else ""
        print(f"{row.period_start:%H:%M} {row.event_type}: {row.events} events, {row.distinct_users} users{mean}")
    for ledger in reports.ledger(start, end):
        print(f"ledger: received {ledger.received}, stored {ledger.stored}, counted {ledger.counted}")
