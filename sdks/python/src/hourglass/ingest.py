"""Sending events: :class:`Client` batches tracked events and streams them over ``IngestStream``.

How an event travels (README, "Sending events"):

* ``track`` builds the event (a fresh UUID as its id, now as its time, unless given) and appends it to the
  open batch. A batch is sealed when it holds ``batch_size`` events or is ``linger_ms`` old, or on
  ``flush``/``close``.
* ``streams`` worker threads each keep one bidirectional ``IngestStream`` call open (several calls share
  one HTTP/2 connection; a balancer spreads the calls over collectors) with up to
  ``max_in_flight_batches`` unacknowledged batches, each sent with a sequence number of its stream.
* Each ack decides its batch: ACCEPTED ends it (its rejected events are reported, never resent);
  THROTTLED and UNAVAILABLE put it back after the ack's ``retry_after_ms``; INVALID splits it in two (a
  single event that is still too big is reported as rejected).
* When a stream fails (the collector drains and ends it with UNAVAILABLE, a GOAWAY or a reset from a
  balancer, a connection lost) its unacknowledged batches go back to the front of the queue and are sent
  again on a new stream, with the same event ids, after the status's RetryInfo delay or a backoff. The
  event id is the idempotency key, so a batch that was stored but whose ack was lost is stored and counted
  once.
* ``flush`` and ``close`` return once every tracked event was acknowledged (accepted or rejected).
  UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT and UNIMPLEMENTED stop the client: ``flush`` and
  ``track`` then raise.

Memory is bounded: at most ``max_queued_events`` tracked events wait for their acks; beyond that
``track`` blocks (up to ``max_block_secs``), which passes the collectors' backpressure on to the caller.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple

import grpc

from hourglass._convert import PropertyLike, TimeLike, make_event
from hourglass._grpc import FATAL_CODES, Backoff, call_error, key_metadata, open_channel, retry_delay_secs
from hourglass.errors import BackpressureTimeout, ClientClosedError, FlushTimeout, HourglassError
from hourglass.v1 import event_pb2, ingest_pb2, ingest_pb2_grpc

logger = logging.getLogger("hourglass")

_ACCEPTED = ingest_pb2.BATCH_STATUS_ACCEPTED
_THROTTLED = ingest_pb2.BATCH_STATUS_THROTTLED
_INVALID = ingest_pb2.BATCH_STATUS_INVALID
_UNAVAILABLE = ingest_pb2.BATCH_STATUS_UNAVAILABLE


@dataclass(frozen=True)
class Rejection:
    """An event the collector refused, with the reason (``RejectionReason`` without its prefix, e.g.
    ``OCCURRED_AT_TOO_OLD``). Rejected events are never stored; resending them changes nothing."""

    event_id: str
    reason: str
    message: str


@dataclass(frozen=True)
class BatchResult:
    """What became of one batch, for ``on_ack``: the ids of its events now durable, and its rejections."""

    accepted_ids: Tuple[str, ...]
    rejections: Tuple[Rejection, ...]


@dataclass
class ClientStats:
    """Counters since the client started (a snapshot: :meth:`Client.stats`)."""

    #: Events given to ``track``.
    tracked_events: int = 0
    #: Events acknowledged as durable.
    accepted_events: int = 0
    #: Events the collectors rejected (never stored).
    rejected_events: int = 0
    #: Events tracked and not acknowledged yet.
    pending_events: int = 0
    #: Acks saying THROTTLED (the batch was resent after ``retry_after_ms``).
    throttled_acks: int = 0
    #: Events in those acks (each resend counted again, as the ledger's ``throttled`` does).
    throttled_events: int = 0
    #: Acks saying UNAVAILABLE (the event log did not confirm in time; the batch was resent).
    unavailable_acks: int = 0
    #: Events in those acks.
    unavailable_events: int = 0
    #: Batches refused as INVALID and split in two.
    split_batches: int = 0
    #: Batch sends after the first (after a throttled or unavailable ack, or a failed stream).
    resent_batches: int = 0
    #: IngestStream calls opened.
    streams_opened: int = 0
    #: Streams that failed, by status code name (``UNAVAILABLE``, ...).
    stream_errors: Dict[str, int] = field(default_factory=dict)
    #: ``track`` calls that had to wait for room (``max_queued_events``).
    backpressure_waits: int = 0


class _Batch:
    """Events sent and resent together until acknowledged; they keep their ids across resends."""

    __slots__ = ("events", "sends")

    def __init__(self, events: List[event_pb2.Event]):
        self.events = events
        self.sends = 0


class _Stream:
    """One IngestStream call: its batches in flight by sequence number, with when each was sent."""

    def __init__(self) -> None:
        self.in_flight: Dict[int, Tuple[_Batch, float]] = {}
        self.next_sequence = 0
        self.done = False
        self.call: Optional[grpc.Future] = None
        self.timed_out = False


class Client:
    """Sends events to Hourglass: ``track`` them, then ``flush`` or ``close``.

    ``target`` is a collector (or a balancer in front of collectors, or ``hourglass standalone``):
    ``host:port``, ``http://host:port``, or ``https://host:port`` for TLS with the system's roots
    (``credentials`` for others). ``api_key`` is a key with the ``ingest`` scope.

    ``on_ack`` is called with a :class:`BatchResult` for every batch once it is decided, from the
    client's worker threads: keep it short, and never call ``flush`` or ``close`` from it.

    Thread-safe: any number of threads may ``track`` at once. Use it as a context manager, or call
    ``close`` before exiting: events still buffered are otherwise lost with the process.
    """

    def __init__(
        self,
        target: str,
        api_key: str,
        *,
        batch_size: int = 100,
        linger_ms: int = 50,
        streams: int = 2,
        max_in_flight_batches: int = 32,
        max_queued_events: int = 100_000,
        max_block_secs: Optional[float] = 60.0,
        ack_timeout_secs: float = 120.0,
        max_backoff_secs: float = 10.0,
        idle_stream_secs: float = 60.0,
        on_ack: Optional[Callable[[BatchResult], None]] = None,
        credentials: Optional[grpc.ChannelCredentials] = None,
        channel_options: Sequence[Tuple[str, object]] = (),
    ):
        if batch_size < 1 or streams < 1 or max_in_flight_batches < 1:
            raise ValueError("batch_size, streams and max_in_flight_batches must be at least 1")
        if max_queued_events < batch_size:
            raise ValueError("max_queued_events must hold at least one batch")
        self._metadata = key_metadata(api_key)
        self._batch_size = batch_size
        self._linger_secs = linger_ms / 1000.0
        self._max_in_flight = max_in_flight_batches
        self._max_queued_events = max_queued_events
        self._max_block_secs = max_block_secs
        # Above the collector's worst case for an ack (Kafka's 30 s delivery timeout plus a quota wait):
        # a batch unacknowledged this long is on a stream that is stuck, which is cancelled and resent.
        self._ack_timeout_secs = ack_timeout_secs
        self._max_backoff_secs = max_backoff_secs
        # Below the collector's --idle-stream-timeout-secs (120 s): an idle stream is ended by the client,
        # cleanly, and opened again when there is something to send.
        self._idle_stream_secs = idle_stream_secs
        self._on_ack = on_ack

        self._cond = threading.Condition()
        self._buffer: List[event_pb2.Event] = []
        self._buffer_started = 0.0
        self._ready: Deque[_Batch] = deque()
        self._delayed: List[Tuple[float, int, _Batch]] = []
        self._delayed_order = itertools.count()
        self._pending_events = 0
        self._flushing = 0
        self._closing = False
        self._stopping = False
        self._fatal: Optional[BaseException] = None
        self._streams: Set[_Stream] = set()
        self._stats = ClientStats()

        self._channel = open_channel(target, credentials, channel_options)
        self._stub = ingest_pb2_grpc.IngestServiceStub(self._channel)
        self._threads = [
            threading.Thread(target=self._stream_worker, name=f"hourglass-stream-{index}", daemon=True)
            for index in range(streams)
        ]
        self._threads.append(threading.Thread(target=self._watchdog, name="hourglass-watchdog", daemon=True))
        for thread in self._threads:
            thread.start()

    # ------------------------------------------------------------------------------------------ public

    def track(
        self,
        event_type: str,
        user_id: Optional[str] = None,
        *,
        event_id: Optional[str] = None,
        timestamp: Optional[TimeLike] = None,
        properties: Optional[Dict[str, PropertyLike]] = None,
        **props: PropertyLike,
    ) -> str:
        """Queues one event and returns its id. Keyword arguments other than these are properties
        (``str``, ``int``, ``float`` or ``bool``); ``properties`` takes a dict for names that are not
        Python identifiers or clash with these parameters.

        ``timestamp`` is when it happened (an aware datetime, or seconds since the epoch); now if omitted.
        ``event_id`` is the idempotency key: set it to resend an event of your own (same id, same hour).
        Blocks while ``max_queued_events`` events await their acks; raises :class:`BackpressureTimeout`
        after ``max_block_secs``.
        """
        merged = dict(properties or {})
        merged.update(props)
        event = make_event(event_type, user_id=user_id, event_id=event_id, timestamp=timestamp, properties=merged)
        with self._cond:
            self._raise_if_unusable_locked()
            if self._pending_events >= self._max_queued_events:
                self._stats.backpressure_waits += 1
                deadline = None if self._max_block_secs is None else time.monotonic() + self._max_block_secs
                while self._pending_events >= self._max_queued_events:
                    self._raise_if_unusable_locked()
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise BackpressureTimeout(
                            f"{self._pending_events} events await their acks (max_queued_events); "
                            f"waited {self._max_block_secs} s for room"
                        )
                    self._cond.wait(timeout=1.0 if remaining is None else min(remaining, 1.0))
            if not self._buffer:
                self._buffer_started = time.monotonic()
            self._buffer.append(event)
            self._pending_events += 1
            self._stats.tracked_events += 1
            if len(self._buffer) >= self._batch_size:
                self._seal_locked()
                self._cond.notify_all()
            elif len(self._buffer) == 1:
                self._cond.notify_all()  # a waiting stream learns when this batch's linger ends
        return event.event_id

    def flush(self, timeout: Optional[float] = None) -> None:
        """Sends what is buffered and waits until every event tracked so far is acknowledged (accepted or
        rejected). Raises :class:`FlushTimeout` after ``timeout`` seconds (the client keeps sending), or
        :class:`ClientClosedError` if the client stopped on an error."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._pending_events > 0:
                    if self._fatal is not None:
                        raise ClientClosedError(
                            f"the client stopped on an error; {self._pending_events} events were not acknowledged",
                            self._fatal,
                        )
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise FlushTimeout(
                            f"{self._pending_events} events not acknowledged after {timeout} s", self._pending_events
                        )
                    self._cond.wait(timeout=1.0 if remaining is None else min(remaining, 1.0))
            finally:
                self._flushing -= 1

    def close(self, timeout: Optional[float] = None) -> None:
        """Flushes (see :meth:`flush`), then ends the streams and the connection. Whatever ``flush``
        raises, the client is closed afterwards and unacknowledged events are given up."""
        try:
            if self._fatal is None:
                self.flush(timeout)
        finally:
            with self._cond:
                already = self._stopping
                self._closing = True
                self._stopping = True
                unfinished = self._pending_events > 0
                if unfinished and self._fatal is None:
                    # Given up: no thread sends again, and track and flush say why.
                    self._fatal = ClientClosedError(
                        f"closed with {self._pending_events} events not acknowledged"
                    )
                streams = list(self._streams)
                self._cond.notify_all()
            if not already:
                if unfinished:
                    for stream in streams:
                        if stream.call is not None:
                            stream.call.cancel()
                for thread in self._threads:
                    thread.join(timeout=10.0)
                self._channel.close()

    def stats(self) -> ClientStats:
        """A snapshot of the client's counters."""
        with self._cond:
            snapshot = ClientStats(**{name: getattr(self._stats, name) for name in ClientStats.__dataclass_fields__})
            snapshot.stream_errors = dict(self._stats.stream_errors)
            snapshot.pending_events = self._pending_events
            return snapshot

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------- batches

    def _raise_if_unusable_locked(self) -> None:
        if self._fatal is not None:
            raise ClientClosedError("the client stopped on an error", self._fatal)
        if self._closing:
            raise ClientClosedError("the client is closed")

    def _seal_locked(self) -> None:
        self._ready.append(_Batch(self._buffer))
        self._buffer = []

    def _promote_due_locked(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            _, _, batch = heapq.heappop(self._delayed)
            self._ready.append(batch)

    def _take_batch_locked(self, now: float) -> Optional[_Batch]:
        self._promote_due_locked(now)
        if self._ready:
            return self._ready.popleft()
        linger_over = now - self._buffer_started >= self._linger_secs
        if self._buffer and (linger_over or self._flushing or self._closing):
            self._seal_locked()
            return self._ready.popleft()
        return None

    def _has_work_locked(self) -> bool:
        return bool(self._ready or self._delayed or self._buffer)

    def _next_wake_locked(self, now: float) -> float:
        """How long a stream with nothing to send may wait before something may be due."""
        wake = 1.0
        if self._delayed:
            wake = min(wake, self._delayed[0][0] - now)
        if self._buffer:
            wake = min(wake, self._buffer_started + self._linger_secs - now)
        return max(wake, 0.001)

    def _finish_locked(self, batch: _Batch) -> None:
        self._pending_events -= len(batch.events)

    def _retry_later_locked(self, batch: _Batch, delay_secs: float) -> None:
        heapq.heappush(self._delayed, (time.monotonic() + delay_secs, next(self._delayed_order), batch))

    # ------------------------------------------------------------------------------------- streams

    def _requests(self, stream: _Stream):
        """The request side of one IngestStream call (grpc consumes it on a thread of its own)."""
        idle_since = time.monotonic()
        while True:
            with self._cond:
                while True:
                    if stream.done or self._fatal is not None:
                        return
                    now = time.monotonic()
                    if len(stream.in_flight) < self._max_in_flight:
                        batch = self._take_batch_locked(now)
                        if batch is not None:
                            # Registered before it is sent, under the lock the stream's end takes too:
                            # a batch is always either in flight on a live stream or queued again.
                            sequence = stream.next_sequence
                            stream.next_sequence += 1
                            stream.in_flight[sequence] = (batch, now)
                            if batch.sends:
                                self._stats.resent_batches += 1
                            batch.sends += 1
                            break
                    if not stream.in_flight:
                        if self._closing and not self._has_work_locked():
                            return  # half-close: the collector ends the stream once it has acked
                        if now - idle_since >= self._idle_stream_secs and not self._has_work_locked():
                            return
                    self._cond.wait(timeout=self._next_wake_locked(now))
            idle_since = time.monotonic()
            yield ingest_pb2.IngestStreamRequest(sequence=sequence, events=batch.events)

    def _stream_worker(self) -> None:
        backoff = Backoff(base_secs=0.1, max_secs=self._max_backoff_secs)
        while True:
            with self._cond:
                while not self._stopping and self._fatal is None and not self._has_work_locked():
                    self._cond.wait(timeout=1.0)
                if self._fatal is not None or (self._stopping and not self._has_work_locked()):
                    return
                stream = _Stream()
                self._streams.add(stream)
                self._stats.streams_opened += 1
            error: Optional[grpc.RpcError] = None
            try:
                call = self._stub.IngestStream(self._requests(stream), metadata=self._metadata)
                stream.call = call
                for response in call:
                    if self._handle_ack(stream, response.ack):
                        backoff.reset()
            except grpc.RpcError as rpc_error:
                error = rpc_error
            finally:
                with self._cond:
                    stream.done = True
                    self._streams.discard(stream)
                    unacked = [batch for batch, _ in sorted(stream.in_flight.values(), key=lambda entry: entry[1])]
                    stream.in_flight.clear()
                    # Sent first again, with their events' ids: they may have been stored already.
                    self._ready.extendleft(reversed(unacked))
                    self._cond.notify_all()
            if error is None:
                if unacked:
                    logger.warning("an ingest stream ended with %d batches unacknowledged; resending", len(unacked))
                    self._pause(backoff.next_delay())
                continue
            code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
            with self._cond:
                self._stats.stream_errors[code.name] = self._stats.stream_errors.get(code.name, 0) + 1
                stopping = self._stopping
            if code == grpc.StatusCode.CANCELLED and stopping:
                return
            if code in FATAL_CODES and not stream.timed_out:
                self._fail(call_error(error, "IngestStream"))
                return
            delay = retry_delay_secs(error)
            if delay is None:
                delay = backoff.next_delay()
            details = error.details() if hasattr(error, "details") else ""
            logger.info(
                "ingest stream ended (%s: %s); %d batches to resend, reconnecting in %.2f s",
                code.name,
                details,
                len(unacked),
                delay,
            )
            self._pause(delay)

    def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with self._cond:
            while not self._stopping and self._fatal is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(timeout=remaining)

    def _handle_ack(self, stream: _Stream, ack: ingest_pb2.BatchAck) -> bool:
        """Decides the acked batch; True if the collector took it (accepted, or refused for good)."""
        result: Optional[BatchResult] = None
        with self._cond:
            entry = stream.in_flight.pop(ack.sequence, None)
            if entry is None:
                logger.warning("ack for unknown sequence %d ignored", ack.sequence)
                return False
            batch, _ = entry
            if ack.status == _ACCEPTED:
                rejected = {rejection.index: rejection for rejection in ack.rejections}
                accepted_ids = tuple(
                    event.event_id for index, event in enumerate(batch.events) if index not in rejected
                )
                rejections = tuple(
                    Rejection(
                        batch.events[index].event_id,
                        ingest_pb2.RejectionReason.Name(rejection.reason).removeprefix("REJECTION_REASON_"),
                        rejection.message,
                    )
                    for index, rejection in sorted(rejected.items())
                    if index < len(batch.events)
                )
                self._stats.accepted_events += len(accepted_ids)
                self._stats.rejected_events += len(rejections)
                self._finish_locked(batch)
                result = BatchResult(accepted_ids, rejections)
            elif ack.status == _INVALID and len(batch.events) > 1:
                middle = len(batch.events) // 2
                self._stats.split_batches += 1
                self._ready.appendleft(_Batch(batch.events[middle:]))
                self._ready.appendleft(_Batch(batch.events[:middle]))
            elif ack.status == _INVALID:
                event = batch.events[0]
                self._stats.rejected_events += 1
                self._finish_locked(batch)
                result = BatchResult((), (Rejection(event.event_id, "BATCH_INVALID", ack.error_message),))
            else:
                # THROTTLED, UNAVAILABLE (or a status this SDK does not know): nothing was accepted; the
                # same batch goes again after the collector's delay.
                if ack.status == _THROTTLED:
                    self._stats.throttled_acks += 1
                    self._stats.throttled_events += len(batch.events)
                else:
                    self._stats.unavailable_acks += 1
                    self._stats.unavailable_events += len(batch.events)
                delay = ack.retry_after_ms / 1000.0 if ack.retry_after_ms else 0.1
                self._retry_later_locked(batch, delay)
            self._cond.notify_all()
        if result is not None and self._on_ack is not None:
            try:
                self._on_ack(result)
            except Exception:  # noqa: BLE001 - the application's callback must not stop the stream
                logger.exception("on_ack callback failed")
        return result is not None

    def _fail(self, error: HourglassError) -> None:
        logger.error("hourglass client stopped: %s", error)
        with self._cond:
            if self._fatal is None:
                self._fatal = error
            streams = list(self._streams)
            self._cond.notify_all()
        for stream in streams:
            if stream.call is not None:
                stream.call.cancel()

    def _watchdog(self) -> None:
        """Cancels a stream whose oldest batch waited ``ack_timeout_secs`` for its ack (its batches are
        resent on a new stream)."""
        while True:
            with self._cond:
                if self._stopping and not self._streams:
                    return
                if self._fatal is not None:
                    return
                self._cond.wait(timeout=1.0)
                now = time.monotonic()
                stuck = [
                    stream
                    for stream in self._streams
                    if stream.in_flight
                    and now - min(sent for _, sent in stream.in_flight.values()) > self._ack_timeout_secs
                ]
                for stream in stuck:
                    stream.timed_out = True
            for stream in stuck:
                logger.warning("no ack for %.0f s on an ingest stream: cancelling it to resend", self._ack_timeout_secs)
                if stream.call is not None:
                    stream.call.cancel()
