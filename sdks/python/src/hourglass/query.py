"""Reading reports: :class:`QueryClient`, typed calls over ``hourglass.v1.QueryService``.

Every call is a read, so a call answered UNAVAILABLE (a replica shutting down or not ready, a balancer with
no healthy replica for a moment), or whose answer could not be parsed (a replica killed in the middle of
answering), is retried with backoff, ``retries`` times; other errors raise
:class:`~hourglass.errors.CallError`. Times are aware UTC datetimes; ranges are half-open ``[start, end)``
on whole hours.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import grpc

from hourglass._convert import TimeLike, event_properties, from_timestamp, to_timestamp
from hourglass._grpc import Backoff, call_error, key_metadata, open_channel
from hourglass.v1 import ingest_pb2, query_pb2, query_pb2_grpc

#: Statuses a read is retried on.
_RETRIED_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})

#: What grpc-python itself says (as INTERNAL) when a response it received does not parse. No Hourglass
#: server sends it: it has been seen once in e2e, through haproxy, when a query replica was SIGKILLed while
#: answering. A read is safe to ask again, and a server that really sent garbage fails every retry.
_UNPARSABLE_RESPONSE = "Exception deserializing response!"


def _is_retried(error: grpc.RpcError) -> bool:
    """Whether a failed read is worth asking again."""
    if error.code() in _RETRIED_CODES:
        return True
    return error.code() == grpc.StatusCode.INTERNAL and (error.details() or "") == _UNPARSABLE_RESPONSE


@dataclass(frozen=True)
class NumericStats:
    """Count, sum, minimum and maximum of one numeric property."""

    property: str
    count: int
    sum: float
    min: float
    max: float


@dataclass(frozen=True)
class MetricsRow:
    """The figures of one period (hour, day, week, month), for one event type or (``event_type`` empty)
    summed over all of them. ``complete`` is False for a period the range cut."""

    period_start: datetime
    event_type: str
    events: int
    distinct_users: int
    distinct_users_estimated: bool
    numeric: Dict[str, NumericStats]
    complete: bool = True


@dataclass(frozen=True)
class EventTypeSummary:
    """An event type seen in a range."""

    event_type: str
    events: int
    first_hour: datetime
    last_hour: datetime


@dataclass(frozen=True)
class HourStatus:
    """Where aggregation stands with an hour: ``state`` is ``pending``, ``provisional`` or ``final``."""

    hour_start: datetime
    state: str
    revision: int
    logic_version: int
    computed_at: Optional[datetime]
    final_as_of: Optional[datetime]
    events: int
    reaggregation_pending: bool
    refused_reason: str


@dataclass(frozen=True)
class LedgerRow:
    """One hour of the reconciliation ledger: received = accepted + rejected + throttled (resends
    counted again), and stored (distinct events in the raw store) = counted (in the rollups).
    ``rejected_by_reason`` breaks ``rejected`` down by reason (``RejectionReason`` without its prefix, e.g.
    ``"EVENT_TYPE_EMPTY"``, as :class:`~hourglass.ingest.Rejection` names it; a reason newer than this SDK by
    its number); its counts sum to ``rejected``."""

    hour_start: datetime
    received: int
    accepted: int
    rejected: int
    throttled: int
    stored: int
    counted: int
    final: bool
    balanced: bool
    rejected_by_reason: Dict[str, int]


def _reason_name(reason: int) -> str:
    """A rejection reason as the SDK names it; its number when the SDK's stubs do not know it."""
    try:
        return ingest_pb2.RejectionReason.Name(reason).removeprefix("REJECTION_REASON_")
    except ValueError:
        return str(reason)


@dataclass(frozen=True)
class RawEvent:
    """One stored event, as the collector accepted it."""

    event_id: str
    event_type: str
    occurred_at: datetime
    user_id: Optional[str]
    properties: Dict[str, Any]
    batch_id: str


_GRANULARITIES = {
    "day": query_pb2.GRANULARITY_DAY,
    "week": query_pb2.GRANULARITY_WEEK,
    "month": query_pb2.GRANULARITY_MONTH,
}


def _time_range(start: TimeLike, end: TimeLike) -> query_pb2.TimeRange:
    return query_pb2.TimeRange(start=to_timestamp(start), end=to_timestamp(end))


def _optional_time(message: Any, name: str) -> Optional[datetime]:
    return from_timestamp(getattr(message, name)) if message.HasField(name) else None


def _metrics_row(row: query_pb2.MetricsRow, complete: bool = True) -> MetricsRow:
    return MetricsRow(
        period_start=from_timestamp(row.period_start),
        event_type=row.event_type,
        events=row.events,
        distinct_users=row.distinct_users,
        distinct_users_estimated=row.distinct_users_estimated,
        numeric={
            stats.property: NumericStats(stats.property, stats.count, stats.sum, stats.min, stats.max)
            for stats in row.numeric
        },
        complete=complete,
    )


class QueryClient:
    """Typed reports from a query service (or a balancer in front of several, or standalone).

    ``api_key`` is a key with the ``query`` scope; it decides the customer whose data is read.
    """

    def __init__(
        self,
        target: str,
        api_key: str,
        *,
        timeout_secs: float = 30.0,
        retries: int = 3,
        max_backoff_secs: float = 2.0,
        credentials: Optional[grpc.ChannelCredentials] = None,
        channel_options: Sequence[Tuple[str, object]] = (),
    ):
        self._metadata = key_metadata(api_key)
        self._timeout_secs = timeout_secs
        self._retries = retries
        self._max_backoff_secs = max_backoff_secs
        self._channel = open_channel(target, credentials, channel_options)
        self._stub = query_pb2_grpc.QueryServiceStub(self._channel)
        #: Calls retried (after UNAVAILABLE or an unparsable answer), since the client started.
        self.retried_calls = 0

    def _call(self, method: str, request: Any) -> Any:
        backoff = Backoff(base_secs=0.05, max_secs=self._max_backoff_secs)
        attempt = 0
        while True:
            try:
                return getattr(self._stub, method)(request, metadata=self._metadata, timeout=self._timeout_secs)
            except grpc.RpcError as error:
                if not _is_retried(error) or attempt >= self._retries:
                    raise call_error(error, method) from error
            attempt += 1
            self.retried_calls += 1
            time.sleep(backoff.next_delay())

    def hourly_metrics(
        self,
        start: TimeLike,
        end: TimeLike,
        *,
        event_types: Sequence[str] = (),
        group_by_event_type: bool = False,
    ) -> List[MetricsRow]:
        """Hourly figures of ``[start, end)``: one row per hour (per event type with
        ``group_by_event_type``). Hours without data have no row."""
        request = query_pb2.GetHourlyMetricsRequest(
            range=_time_range(start, end), event_types=list(event_types), group_by_event_type=group_by_event_type
        )
        return [_metrics_row(row) for row in self._call("GetHourlyMetrics", request).rows]

    def period_metrics(
        self,
        start: TimeLike,
        end: TimeLike,
        granularity: str = "day",
        *,
        event_types: Sequence[str] = (),
        group_by_event_type: bool = False,
    ) -> List[MetricsRow]:
        """Daily, weekly (ISO) or monthly figures summed from the hourly rollups; distinct users of a
        period are estimated from merged sketches."""
        if granularity not in _GRANULARITIES:
            raise ValueError(f"granularity must be one of {', '.join(_GRANULARITIES)}, not {granularity!r}")
        request = query_pb2.GetPeriodMetricsRequest(
            range=_time_range(start, end),
            granularity=_GRANULARITIES[granularity],
            event_types=list(event_types),
            group_by_event_type=group_by_event_type,
        )
        response = self._call("GetPeriodMetrics", request)
        return [_metrics_row(row.metrics, row.complete) for row in response.rows]

    def event_types(self, start: TimeLike, end: TimeLike) -> List[EventTypeSummary]:
        """The event types with events in ``[start, end)``, by name."""
        response = self._call("ListEventTypes", query_pb2.ListEventTypesRequest(range=_time_range(start, end)))
        return [
            EventTypeSummary(
                summary.event_type, summary.events, from_timestamp(summary.first_hour), from_timestamp(summary.last_hour)
            )
            for summary in response.event_types
        ]

    def hour_status(self, start: TimeLike, end: TimeLike) -> List[HourStatus]:
        """Each hour of ``[start, end)`` that received data: pending, provisional or final."""
        response = self._call("GetHourStatus", query_pb2.GetHourStatusRequest(range=_time_range(start, end)))
        return [
            HourStatus(
                hour_start=from_timestamp(hour.hour_start),
                state=query_pb2.HourState.Name(hour.state).removeprefix("HOUR_STATE_").lower(),
                revision=hour.revision,
                logic_version=hour.logic_version,
                computed_at=_optional_time(hour, "computed_at"),
                final_as_of=_optional_time(hour, "final_as_of"),
                events=hour.events,
                reaggregation_pending=hour.reaggregation_pending,
                refused_reason=hour.refused_reason,
            )
            for hour in response.hours
        ]

    def ledger(self, start: TimeLike, end: TimeLike) -> List[LedgerRow]:
        """The reconciliation ledger of ``[start, end)``, oldest hour first."""
        response = self._call("GetLedger", query_pb2.GetLedgerRequest(range=_time_range(start, end)))
        return [
            LedgerRow(
                hour_start=from_timestamp(row.hour_start),
                received=row.received,
                accepted=row.accepted,
                rejected=row.rejected,
                throttled=row.throttled,
                stored=row.stored,
                counted=row.counted,
                final=row.final,
                balanced=row.balanced,
                rejected_by_reason={_reason_name(count.reason): count.events for count in row.rejected_by_reason},
            )
            for row in response.rows
        ]

    def raw_events(
        self, hour_start: TimeLike, *, event_type: Optional[str] = None, page_size: int = 1000
    ) -> Iterator[RawEvent]:
        """Every stored event of one hour (of one type, if given), fetched a page at a time."""
        page_token = ""
        while True:
            request = query_pb2.ListRawEventsRequest(
                hour_start=to_timestamp(hour_start),
                event_type=event_type or "",
                page_size=page_size,
                page_token=page_token,
            )
            response = self._call("ListRawEvents", request)
            for raw in response.events:
                event = raw.event
                yield RawEvent(
                    event_id=event.event_id,
                    event_type=event.event_type,
                    occurred_at=from_timestamp(event.occurred_at),
                    user_id=event.user_id if event.HasField("user_id") else None,
                    properties=event_properties(event),
                    batch_id=raw.batch_id,
                )
            page_token = response.next_page_token
            if not page_token:
                return

    def close(self) -> None:
        """Closes the connection."""
        self._channel.close()

    def __enter__(self) -> "QueryClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
