"""The query helper against a real `hourglass standalone`: every call, typed."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from hourglass import AuthenticationError, CallError, Client, QueryClient
from support import free_port, hour_of, now, wait_for


def test_every_report_is_typed_and_matches_what_was_sent(standalone):
    current = hour_of(now())
    earlier = current - timedelta(hours=3)
    with Client(standalone.address, standalone.ingest_key) as client:
        for index in range(50):
            client.track("page_view", user_id=f"u-{index % 5}", timestamp=earlier + timedelta(minutes=index), load_ms=index)
        for index in range(30):
            client.track("click", user_id=f"u-{index % 3}", properties={"button id": "buy", "price": 2.5})
        # Rejected: an empty event type counts in the event's hour, a time in the future in the hour of sending.
        for index in range(2):
            client.track("", timestamp=earlier + timedelta(minutes=index))
        client.track("click", timestamp=now() + timedelta(days=1))
        client.flush(timeout=60)
    start, end = earlier - timedelta(hours=1), current + timedelta(hours=2)

    with QueryClient(standalone.address, standalone.query_key) as reports:
        statuses = wait_for(
            "the earlier hour final and the current one provisional",
            lambda: reports.hour_status(start, end),
            lambda hours: [(hour.hour_start, hour.state, hour.events) for hour in hours]
            == [(earlier, "final", 50), (current, "provisional", 30)],
        )
        assert statuses[0].final_as_of is not None and statuses[0].revision >= 1
        assert statuses[1].final_as_of is None and statuses[1].computed_at is not None

        hourly = reports.hourly_metrics(start, end, group_by_event_type=True)
        assert [(row.period_start, row.event_type, row.events, row.distinct_users) for row in hourly] == [
            (earlier, "page_view", 50, 5),
            (current, "click", 30, 3),
        ]
        load = hourly[0].numeric["load_ms"]
        assert (load.count, load.sum, load.min, load.max) == (50, sum(range(50)), 0, 49)
        assert hourly[1].numeric["price"].sum == 75.0
        only_clicks = reports.hourly_metrics(start, end, event_types=["click"])
        assert [(row.event_type, row.events) for row in only_clicks] == [("", 30)]

        days = reports.period_metrics(start, end, "day")
        assert sum(row.events for row in days) == 80
        assert all(not row.complete for row in days), "the range cuts its days"

        types = reports.event_types(start, end)
        assert [(summary.event_type, summary.events, summary.first_hour) for summary in types] == [
            ("click", 30, current),
            ("page_view", 50, earlier),
        ]

        raw = list(reports.raw_events(current, page_size=7))
        assert len(raw) == 30 and len({event.event_id for event in raw}) == 30, "pages neither skip nor repeat"
        assert raw[0].properties == {"button id": "buy", "price": 2.5} and raw[0].batch_id
        assert list(reports.raw_events(earlier, event_type="click")) == []

        # The rejections may reach the ledger in a later rollup than the accepted events of their hour.
        ledger = wait_for(
            "the ledger with the rejected events by reason",
            lambda: reports.ledger(start, end),
            lambda rows: [(row.hour_start, row.rejected, row.rejected_by_reason) for row in rows]
            == [(earlier, 2, {"EVENT_TYPE_EMPTY": 2}), (current, 1, {"OCCURRED_AT_IN_FUTURE": 1})],
        )
        assert [(row.hour_start, row.accepted, row.stored, row.counted, row.balanced) for row in ledger] == [
            (earlier, 50, 50, 50, True),
            (current, 30, 30, 30, True),
        ]
        assert [row.received for row in ledger] == [52, 31]
        with pytest.raises(ValueError):
            reports.period_metrics(start, end, "year")
        with pytest.raises(CallError) as raised:
            reports.hourly_metrics(start + timedelta(minutes=1), end)
        assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_an_ingest_key_cannot_read(standalone):
    with QueryClient(standalone.address, standalone.ingest_key) as reports:
        with pytest.raises(AuthenticationError) as raised:
            reports.ledger(hour_of(now()), hour_of(now()) + timedelta(hours=1))
    assert raised.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_unavailable_reads_are_retried_then_raised():
    with QueryClient(f"127.0.0.1:{free_port()}", "hgk_AAAAAAAA_" + "A" * 38, retries=2, timeout_secs=5) as reports:
        with pytest.raises(CallError) as raised:
            reports.event_types(hour_of(now()), hour_of(now()) + timedelta(hours=1))
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert reports.retried_calls == 2
