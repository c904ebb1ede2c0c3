"""Hourglass's Python SDK: send events and read reports over the gRPC contract in proto/hourglass/v1.

    from hourglass import Client, QueryClient

    with Client("127.0.0.1:50051", api_key=INGEST_KEY) as client:
        client.track("page_view", user_id="u-1", path="/pricing", load_ms=182.5)
        client.flush()

    with QueryClient("127.0.0.1:50051", api_key=QUERY_KEY) as reports:
        for row in reports.hourly_metrics(start, end, group_by_event_type=True):
            print(row.period_start, row.event_type, row.events, row.distinct_users)

:class:`Client` batches events and keeps many batches in flight over ``IngestStream``, resending what was
not acknowledged (same event ids) after throttling, an unavailable event log, a collector shutting down
or a lost connection; :class:`QueryClient` wraps ``QueryService`` in typed calls.
"""

from hourglass.errors import (
    AuthenticationError,
    BackpressureTimeout,
    CallError,
    ClientClosedError,
    FlushTimeout,
    HourglassError,
)
from hourglass.ingest import BatchResult, Client, ClientStats, Rejection
from hourglass.query import (
    EventTypeSummary,
    HourStatus,
    LedgerRow,
    MetricsRow,
    NumericStats,
    QueryClient,
    RawEvent,
)

__all__ = [
    "AuthenticationError",
    "BackpressureTimeout",
    "BatchResult",
    "CallError",
    "Client",
    "ClientClosedError",
    "ClientStats",
    "EventTypeSummary",
    "FlushTimeout",
    "HourStatus",
    "HourglassError",
    "LedgerRow",
    "MetricsRow",
    "NumericStats",
    "QueryClient",
    "RawEvent",
    "Rejection",
]
