"""The ingest client against a real `hourglass standalone`: what it tracks is acknowledged, stored once
and counted, through throttling, refused batches, refused events and server restarts."""

from __future__ import annotations

import random
import signal
import threading
from datetime import timedelta
from typing import List, Set

import grpc
import pytest

from hourglass import (
    AuthenticationError,
    BackpressureTimeout,
    BatchResult,
    Client,
    ClientClosedError,
    FlushTimeout,
    QueryClient,
)
from support import around, free_port, hour_of, now, wait_for


class Acks:
    """Collects the client's ``on_ack`` results."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.accepted: List[str] = []
        self.rejected: List[tuple] = []

    def __call__(self, result: BatchResult) -> None:
        with self._lock:
            self.accepted.extend(result.accepted_ids)
            self.rejected.extend((rejection.event_id, rejection.reason) for rejection in result.rejections)


def stored_ids(reports: QueryClient, hours) -> List[str]:
    return [event.event_id for hour in hours for event in reports.raw_events(hour, page_size=1000)]


def counted(reports: QueryClient, start, end) -> int:
    return sum(row.events for row in reports.hourly_metrics(start, end))


def test_tracked_events_are_acknowledged_stored_and_counted(standalone):
    acks = Acks()
    moment = now()
    tracked: Set[str] = set()
    with Client(standalone.address, standalone.ingest_key, batch_size=50, on_ack=acks) as client:
        for index in range(1000):
            event_type = ("page_view", "click", "signup")[index % 3]
            tracked.add(client.track(event_type, user_id=f"u-{index % 37}", load_ms=index % 100, plan="pro"))
        client.flush(timeout=60)
        stats = client.stats()
    assert (stats.tracked_events, stats.accepted_events, stats.rejected_events, stats.pending_events) == (1000, 1000, 0, 0)
    assert sorted(acks.accepted) == sorted(tracked), "every tracked id is acknowledged once"

    start, end = around(moment)
    with QueryClient(standalone.address, standalone.query_key) as reports:
        wait_for("1000 events counted", lambda: counted(reports, start, end), lambda n: n == 1000)
        assert sorted(stored_ids(reports, [hour_of(moment)])) == sorted(tracked)
        by_type = {row.event_type: row for row in reports.hourly_metrics(start, end, group_by_event_type=True)}
        assert {name: row.events for name, row in by_type.items()} == {"page_view": 334, "click": 333, "signup": 333}
        assert by_type["click"].numeric["load_ms"].count == 333
        ledger = wait_for("a balanced ledger", lambda: reports.ledger(start, end), lambda rows: rows and rows[0].balanced)
        assert (ledger[0].received, ledger[0].accepted, ledger[0].stored, ledger[0].counted) == (1000, 1000, 1000, 1000)


def test_rejected_events_are_reported_and_never_resent(standalone):
    acks = Acks()
    with Client(standalone.address, standalone.ingest_key, on_ack=acks) as client:
        good = [client.track("click", user_id="u-1") for _ in range(20)]
        too_old = [client.track("click", timestamp=now() - timedelta(days=30)) for _ in range(3)]
        no_type = [client.track("") for _ in range(2)]
        client.flush(timeout=60)
        stats = client.stats()
    assert sorted(acks.accepted) == sorted(good)
    assert sorted(acks.rejected) == sorted(
        [(event_id, "OCCURRED_AT_TOO_OLD") for event_id in too_old] + [(event_id, "EVENT_TYPE_EMPTY") for event_id in no_type]
    )
    assert (stats.accepted_events, stats.rejected_events, stats.resent_batches) == (20, 5, 0)


def test_throttled_batches_are_resent_after_retry_after(standalone_factory):
    # The collector waits at most 10 ms for quota before answering THROTTLED with a retry_after_ms.
    standalone = standalone_factory("--quota-max-wait-ms", "10")
    standalone.keys("limits", "--customer", "demo", "--events-per-second", "1000", "--burst-events", "1000")
    moment = now()
    with Client(standalone.address, standalone.ingest_key, batch_size=100, streams=2) as client:
        tracked = {client.track("click", user_id=f"u-{index}") for index in range(4000)}
        client.flush(timeout=120)
        stats = client.stats()
    assert stats.accepted_events == 4000 and stats.pending_events == 0
    assert stats.throttled_acks > 0, "4000 events at 1000/s must be throttled"
    assert stats.resent_batches >= stats.throttled_acks
    start, end = around(moment)
    with QueryClient(standalone.address, standalone.query_key) as reports:
        wait_for("4000 events counted", lambda: counted(reports, start, end), lambda n: n == 4000)
        assert sorted(stored_ids(reports, [hour_of(moment)])) == sorted(tracked)
        ledger = wait_for("a balanced ledger", lambda: reports.ledger(start, end), lambda rows: rows and rows[0].balanced)
        row = ledger[0]
        assert row.throttled == stats.throttled_events == stats.throttled_acks * 100, "throttled events are in the ledger"
        assert row.received == row.accepted + row.rejected + row.throttled
        assert (row.accepted, row.stored, row.counted) == (4000, 4000, 4000)


def test_batches_refused_as_too_large_are_split(standalone_factory):
    standalone = standalone_factory("--max-batch-events", "10")
    acks = Acks()
    with Client(standalone.address, standalone.ingest_key, batch_size=64, on_ack=acks) as client:
        tracked = [client.track("click") for _ in range(200)]
        client.flush(timeout=60)
        stats = client.stats()
    assert sorted(acks.accepted) == sorted(tracked)
    assert stats.split_batches > 0 and stats.rejected_events == 0


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_the_client_reconnects_and_resends_when_the_server_restarts(standalone_factory, stop_signal):
    standalone = standalone_factory()
    port = standalone.address.rsplit(":", 1)[1]
    moment = now()
    tracked: List[str] = []
    restarted = threading.Event()
    with Client(standalone.address, standalone.ingest_key, batch_size=20, streams=2, max_backoff_secs=1.0) as client:
        def send() -> None:
            rng = random.Random(7)
            for index in range(6000):
                tracked.append(client.track("click", user_id=f"u-{rng.randrange(500)}"))
                if index == 2000:
                    restarted.wait(timeout=120)

        sender = threading.Thread(target=send)
        sender.start()
        wait_for("acks before the restart", lambda: client.stats().accepted_events, lambda n: n >= 1000)
        standalone.stop(stop_signal)
        standalone.start(listen_addr=f"127.0.0.1:{port}")
        restarted.set()
        sender.join(timeout=120)
        client.flush(timeout=120)
        stats = client.stats()
    assert stats.accepted_events == 6000 and stats.pending_events == 0
    assert stats.stream_errors, "the restart ended the streams"
    start, end = around(moment)
    with QueryClient(standalone.address, standalone.query_key) as reports:
        wait_for("6000 events counted", lambda: counted(reports, start, end), lambda n: n == 6000)
        hours = sorted({hour_of(moment), hour_of(now())})
        stored = stored_ids(reports, hours)
        assert len(stored) == len(set(stored)) == 6000, "each event stored once, resends included"
        assert set(stored) == set(tracked)


def test_a_refused_key_stops_the_client(standalone):
    client = Client(standalone.address, "hgk_AAAAAAAA_" + "A" * 38)
    client.track("click")
    with pytest.raises(ClientClosedError) as raised:
        client.flush(timeout=30)
    assert isinstance(raised.value.__cause__, AuthenticationError)
    assert raised.value.__cause__.code == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(ClientClosedError):
        client.track("click")
    client.close()


def test_close_waits_for_every_ack(standalone):
    acks = Acks()
    client = Client(standalone.address, standalone.ingest_key, batch_size=30, linger_ms=5000, on_ack=acks)
    tracked = [client.track("click") for _ in range(500)]
    client.close(timeout=60)
    assert sorted(acks.accepted) == sorted(tracked)
    with pytest.raises(ClientClosedError):
        client.track("click")


def test_with_no_collector_the_buffer_fills_and_track_blocks_then_times_out():
    target = f"127.0.0.1:{free_port()}"  # nothing listens there
    client = Client(target, "hgk_AAAAAAAA_" + "A" * 38, batch_size=50, max_queued_events=200, max_block_secs=0.5)
    for _ in range(200):
        client.track("click")
    with pytest.raises(BackpressureTimeout):
        client.track("click")
    with pytest.raises(FlushTimeout) as raised:
        client.flush(timeout=0.5)
    assert raised.value.pending_events == 200
    stats = client.stats()
    assert stats.stream_errors.get("UNAVAILABLE", 0) > 0 and stats.backpressure_waits == 1
    with pytest.raises(FlushTimeout):
        client.close(timeout=0.2)
