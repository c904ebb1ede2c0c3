"""HTTP/2 abuse suite (issue 25): attacks on a running `hourglass standalone`, each shed within its limits.

usage: python -m hourglass_e2e.abuse [--binary PATH] [--attack-secs N] [ATTACK...]   (e2e/abuse.sh runs it)

Starts `hourglass standalone` on a free loopback port with a temporary data directory and small limits
(below), then runs each attack for a bounded time or count while a well-behaved client sends ingest
batches over one bidirectional stream (ack latency measured per batch) and queries. Per attack it prints
what the attacker achieved, the server's RSS and open file descriptors (from /proc) before, at most
during, and after, the good client's ack latency p50/p99 under attack against its baseline, and whether
health still answered on a new connection afterwards. At the end the good client's acked events must all
be counted by a query.

The attacks write raw HTTP/2 frames (no client library misbehaves this way on purpose):
  rapid-reset        HEADERS then RST_STREAM, thousands per connection, on several connections at once
                     (CVE-2023-44487): each connection must get GOAWAY before it has sent them all
  continuation-flood HEADERS without END_HEADERS, then CONTINUATION frames without end: each connection
                     must be closed after a bounded number of bytes
  idle-connections   thousands of connections that send their preface and nothing else: at most
                     --max-connections kept, the rest closed at once, all closed after the idle timeout
  idle-streams       many ingest streams per connection that send nothing: at most
                     --max-concurrent-streams open per connection, all ended by --idle-stream-timeout-secs
  unread-acks        ingest streams whose client advertises a zero flow-control window, so no ack can be
                     written: each ended by --ack-write-timeout-secs
  slow-sender        a request's bytes trickled one per second, headers or body: cut by the idle
                     connection timeout (headers) or the idle stream timeout (body)

Exit status 1 only for functional failures: the server died, health lost after an attack, acked events
not counted, a limit not enforced (more connections kept than the maximum, a stream or connection still
open past its timeout, a flood taken whole, RSS beyond a generous bound). Latency figures are printed,
never judged.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hourglass.v1 import event_pb2, ingest_pb2, ingest_pb2_grpc, query_pb2, query_pb2_grpc

# The server's limits for the run: small, so each is reached within seconds.
MAX_CONNECTIONS = 256
MAX_CONCURRENT_STREAMS = 128
IDLE_CONNECTION_TIMEOUT_SECS = 4
IDLE_STREAM_TIMEOUT_SECS = 4
ACK_WRITE_TIMEOUT_SECS = 4
MAX_HEADER_LIST_BYTES = 16 * 1024
# Generous bounds whose crossing is a failure, not a slowness.
MAX_RSS_BYTES = 1024 * 1024 * 1024
CONTINUATION_FLOOD_BOUND_BYTES = 32 * 1024 * 1024
GRACE_SECS = 10.0

FRAME_DATA, FRAME_HEADERS, FRAME_RST_STREAM, FRAME_SETTINGS = 0x0, 0x1, 0x3, 0x4
FRAME_PING, FRAME_GOAWAY, FRAME_WINDOW_UPDATE, FRAME_CONTINUATION = 0x6, 0x7, 0x8, 0x9
FLAG_END_STREAM, FLAG_ACK, FLAG_END_HEADERS = 0x1, 0x1, 0x4
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
CANCEL, REFUSED_STREAM, ENHANCE_YOUR_CALM = 0x8, 0x7, 0xB
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GOOD_EVENT_TYPE = "abuse_good_client"


# ---- HTTP/2 frames, written by hand -------------------------------------------------------------------

def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


def hpack_integer(value: int, prefix_bits: int, first_byte: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte | value])
    out = [first_byte | limit]
    value -= limit
    while value >= 128:
        out.append((value % 128) | 0x80)
        value //= 128
    out.append(value)
    return bytes(out)


def hpack_string(value: str) -> bytes:
    data = value.encode()
    return hpack_integer(len(data), 7, 0) + data


def request_headers(path: str, authorization: Optional[str] = None) -> bytes:
    """An HPACK block for a gRPC POST to `path`, with no dynamic table (literals without indexing)."""
    block = b"\x83\x86"  # :method POST, :scheme http
    block += b"\x04" + hpack_string(path)  # :path
    block += b"\x01" + hpack_string("localhost")  # :authority
    block += hpack_integer(31, 4, 0) + hpack_string("application/grpc")  # content-type
    block += b"\x00" + hpack_string("te") + hpack_string("trailers")
    if authorization:
        block += hpack_integer(23, 4, 0) + hpack_string(authorization)  # authorization
    return block


def grpc_message(serialized: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(serialized)) + serialized


class RawConnection:
    """One HTTP/2 connection written frame by frame; a reader task records what the server sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.settings_received = asyncio.Event()
        self.closed = asyncio.Event()
        self.goaway_code: Optional[int] = None
        self.streams_ended: Dict[int, str] = {}  # stream id -> "end" (trailers) | "reset:<code>"
        self.data: Dict[int, bytearray] = {}  # stream id -> DATA payloads received
        self.closed_at: Optional[float] = None
        self._reading = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, address: Tuple[str, int], initial_window: Optional[int] = None) -> "RawConnection":
        reader, writer = await asyncio.open_connection(*address, limit=1 << 20)
        payload = b"" if initial_window is None else struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, initial_window)
        writer.write(PREFACE + frame(FRAME_SETTINGS, 0, 0, payload))
        return cls(reader, writer)

    async def _read(self) -> None:
        try:
            while True:
                header = await self.reader.readexactly(9)
                length = int.from_bytes(header[:3], "big")
                kind, flags = header[3], header[4]
                stream_id = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
                payload = await self.reader.readexactly(length)
                if kind == FRAME_SETTINGS and not flags & FLAG_ACK:
                    self.settings_received.set()
                    self.writer.write(frame(FRAME_SETTINGS, FLAG_ACK, 0))
                elif kind == FRAME_PING and not flags & FLAG_ACK:
                    self.writer.write(frame(FRAME_PING, FLAG_ACK, 0, payload))
                elif kind == FRAME_GOAWAY:
                    self.goaway_code = int.from_bytes(payload[4:8], "big")
                elif kind == FRAME_RST_STREAM:
                    self.streams_ended[stream_id] = f"reset:{int.from_bytes(payload[:4], 'big')}"
                elif kind in (FRAME_HEADERS, FRAME_DATA) and stream_id:
                    if kind == FRAME_DATA:
                        self.data.setdefault(stream_id, bytearray()).extend(payload)
                    if flags & FLAG_END_STREAM:
                        self.streams_ended[stream_id] = "end"
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self.closed_at = time.monotonic()
            self.closed.set()

    def messages_received(self, stream_id: int) -> int:
        """The gRPC messages (5-byte prefix, then the message) among the stream's DATA."""
        data, offset, count = self.data.get(stream_id, b""), 0, 0
        while offset + 5 <= len(data):
            offset += 5 + int.from_bytes(data[offset + 1:offset + 5], "big")
            count += offset <= len(data)
        return count

    async def send(self, data: bytes) -> bool:
        """Writes `data`; False once the server has closed the connection."""
        if self.closed.is_set():
            return False
        try:
            self.writer.write(data)
            await self.writer.drain()
            return True
        except (ConnectionError, OSError):
            return False

    async def accepted(self, timeout: float) -> bool:
        """Whether the server answered with its SETTINGS (it holds the connection) before closing it."""
        done, _ = await asyncio.wait(
            [asyncio.ensure_future(self.settings_received.wait()), asyncio.ensure_future(self.closed.wait())],
            timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for task in _:
            task.cancel()
        return self.settings_received.is_set() and not self.closed.is_set()

    async def closed_within(self, secs: float) -> bool:
        """Whether the server closes the connection within `secs`."""
        try:
            await asyncio.wait_for(self.closed.wait(), secs)
        except asyncio.TimeoutError:
            pass
        return self.closed.is_set()

    def close(self) -> None:
        self.writer.transport.abort()
        self._reading.cancel()


# ---- the server, and what /proc says of it ------------------------------------------------------------

@dataclass
class Standalone:
    binary: Path
    data_dir: Path
    log_path: Path
    process: Optional[subprocess.Popen] = None
    address: str = ""
    ingest_key: str = ""
    query_key: str = ""

    def start(self) -> "Standalone":
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [str(self.binary), "standalone", "--data-dir", str(self.data_dir), "--listen-addr", "127.0.0.1:0",
             "--provisional-interval-secs", "1",
             "--max-connections", str(MAX_CONNECTIONS),
             "--max-concurrent-streams", str(MAX_CONCURRENT_STREAMS),
             "--idle-connection-timeout-secs", str(IDLE_CONNECTION_TIMEOUT_SECS),
             "--idle-stream-timeout-secs", str(IDLE_STREAM_TIMEOUT_SECS),
             "--ack-write-timeout-secs", str(ACK_WRITE_TIMEOUT_SECS),
             "--max-header-list-bytes", str(MAX_HEADER_LIST_BYTES)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            match = re.search(r"gRPC \([^)]*\): (\S+)", text)
            if match:
                self.address = match.group(1)
                break
            if self.process.poll() is not None:
                raise RuntimeError(f"standalone exited with {self.process.returncode}:\n{text[-3000:]}")
            time.sleep(0.05)
        else:
            raise RuntimeError(f"standalone printed no address within 120 s (log: {self.log_path})")
        keys = (self.data_dir / "demo-keys.txt").read_text()
        self.ingest_key = re.search(r"^ingest: (\S+)$", keys, re.M).group(1)
        self.query_key = re.search(r"^query: (\S+)$", keys, re.M).group(1)
        return self

    @property
    def host_port(self) -> Tuple[str, int]:
        host, port = self.address.rsplit(":", 1)
        return host, int(port)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def proc_sample(pid: int) -> Tuple[int, int]:
    """(RSS bytes, open fds) of `pid`."""
    with open(f"/proc/{pid}/status") as status:
        rss_kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return rss_kib * 1024, len(os.listdir(f"/proc/{pid}/fd"))


class Sampler(threading.Thread):
    """Samples the server's RSS and fds every 100 ms; `window()` gives the maxima since `mark()`."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.stop_event, self.lock = pid, threading.Event(), threading.Lock()
        self.max_rss, self.max_fds = 0, 0

    def run(self) -> None:
        while not self.stop_event.wait(0.1):
            try:
                rss, fds = proc_sample(self.pid)
            except (FileNotFoundError, ProcessLookupError, StopIteration):
                return  # the server has exited (a zombie has no VmRSS)
            with self.lock:
                self.max_rss, self.max_fds = max(self.max_rss, rss), max(self.max_fds, fds)

    def mark(self) -> None:
        with self.lock:
            self.max_rss, self.max_fds = proc_sample(self.pid)

    def window(self) -> Tuple[int, int]:
        with self.lock:
            return self.max_rss, self.max_fds


# ---- the well-behaved client --------------------------------------------------------------------------

class GoodClient:
    """Ingest batches of 10 events every 50 ms on one bidirectional stream (its ack latency recorded under
    the current phase), and a query every second, all on one connection opened before the attacks."""

    BATCH_EVENTS, INTERVAL_SECS = 10, 0.05

    def __init__(self, server: Standalone):
        self.server = server
        self.channel = grpc.insecure_channel(server.address)
        self.ingest = ingest_pb2_grpc.IngestServiceStub(self.channel)
        self.query = query_pb2_grpc.QueryServiceStub(self.channel)
        self.phase = "baseline"
        self.latencies: Dict[str, List[float]] = {}
        self.query_latencies: Dict[str, List[float]] = {}
        self.acked_events = 0
        self.stream_errors: List[str] = []
        self.query_errors: List[str] = []
        self.stop_event = threading.Event()
        self.started = datetime.now(timezone.utc)
        self.threads = [threading.Thread(target=self._ingest, daemon=True),
                        threading.Thread(target=self._query, daemon=True)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _batch(self, sequence: int) -> ingest_pb2.IngestStreamRequest:
        now = Timestamp()
        now.FromDatetime(datetime.now(timezone.utc))
        events = [event_pb2.Event(event_id=uuid.uuid4().hex, event_type=GOOD_EVENT_TYPE, occurred_at=now,
                                  user_id=f"user-{sequence % 50}") for _ in range(self.BATCH_EVENTS)]
        return ingest_pb2.IngestStreamRequest(sequence=sequence, events=events)

    def _ingest(self) -> None:
        sequence = 0
        metadata = [("authorization", f"Bearer {self.server.ingest_key}")]
        while not self.stop_event.is_set():
            requests: "queue.Queue[Optional[ingest_pb2.IngestStreamRequest]]" = queue.Queue()
            sent_at: Dict[int, Tuple[float, str]] = {}

            def send() -> None:
                nonlocal sequence
                while not self.stop_event.is_set():
                    sent_at[sequence] = (time.monotonic(), self.phase)
                    requests.put(self._batch(sequence))
                    sequence += 1
                    time.sleep(self.INTERVAL_SECS)
                requests.put(None)

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            try:
                for response in self.ingest.IngestStream(iter(requests.get, None), metadata=metadata):
                    sent = sent_at.pop(response.ack.sequence, None)
                    if response.ack.status == ingest_pb2.BATCH_STATUS_ACCEPTED:
                        self.acked_events += response.ack.accepted_count
                    if sent:
                        self.latencies.setdefault(sent[1], []).append(time.monotonic() - sent[0])
            except grpc.RpcError as error:
                self.stream_errors.append(f"{self.phase}: {error.code().name} {error.details()}")
                self.stop_event.wait(0.5)
            sender.join(timeout=5)

    def _query(self) -> None:
        metadata = [("authorization", f"Bearer {self.server.query_key}")]
        while not self.stop_event.wait(1.0):
            started = time.monotonic()
            try:
                self.query.GetHourlyMetrics(metrics_request(self.started), metadata=metadata, timeout=10)
                self.query_latencies.setdefault(self.phase, []).append(time.monotonic() - started)
            except grpc.RpcError as error:
                self.query_errors.append(f"{self.phase}: {error.code().name} {error.details()}")


def metrics_request(started: datetime) -> query_pb2.GetHourlyMetricsRequest:
    start_hour = started.replace(minute=0, second=0, microsecond=0)
    end_hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start, end = Timestamp(), Timestamp()
    start.FromDatetime(start_hour)
    end.FromDatetime(end_hour)
    return query_pb2.GetHourlyMetricsRequest(range=query_pb2.TimeRange(start=start, end=end),
                                             event_types=[GOOD_EVENT_TYPE])


def counted_events(server: Standalone, started: datetime) -> int:
    channel = grpc.insecure_channel(server.address)
    try:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        response = stub.GetHourlyMetrics(metrics_request(started), timeout=10,
                                         metadata=[("authorization", f"Bearer {server.query_key}")])
        return sum(row.events for row in response.rows)
    finally:
        channel.close()


def healthy(server: Standalone) -> bool:
    """A health check on a new connection (so connection limits apply to it)."""
    channel = grpc.insecure_channel(server.address)
    try:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return response.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False
    finally:
        channel.close()


# ---- the attacks --------------------------------------------------------------------------------------

@dataclass
class Outcome:
    """What an attack achieved (printed as is) and the limits it found not enforced (failures)."""

    achieved: List[str] = field(default_factory=list)
    failures: List[str] = field(default_factory=list)


async def gather_bounded(coroutines, limit: int):
    semaphore = asyncio.Semaphore(limit)

    async def bounded(coroutine):
        async with semaphore:
            return await coroutine

    return await asyncio.gather(*(bounded(coroutine) for coroutine in coroutines))


async def in_waves_until(deadline: float, one_connection, width: int = 8) -> list:
    """Runs `one_connection` `width` at a time, wave after wave, until `deadline`; every wave's results."""
    results: list = []
    while time.monotonic() < deadline:
        results += await asyncio.gather(*(one_connection() for _ in range(width)))
    return results


async def rapid_reset(server: Standalone, secs: float) -> Outcome:
    """HEADERS + RST_STREAM pairs, up to 10,000 per connection, 8 connections at a time, for `secs`."""
    headers = request_headers("/grpc.health.v1.Health/Check")
    per_connection = 10_000
    deadline = time.monotonic() + secs

    async def one_connection() -> Tuple[int, bool, Optional[int]]:
        connection = await RawConnection.open(server.host_port)
        sent = 0
        try:
            if not await connection.accepted(10):
                return 0, True, connection.goaway_code
            for index in range(per_connection // 100):
                chunk = b""
                for offset in range(100):
                    stream_id = 2 * (index * 100 + offset) + 1
                    chunk += frame(FRAME_HEADERS, FLAG_END_HEADERS, stream_id, headers)
                    chunk += frame(FRAME_RST_STREAM, 0, stream_id, struct.pack(">I", CANCEL))
                if not await connection.send(chunk):
                    break
                sent += 100
            return sent, await connection.closed_within(GRACE_SECS), connection.goaway_code
        finally:
            connection.close()

    results = await in_waves_until(deadline, one_connection)
    outcome = Outcome()
    streams = sum(sent for sent, _, _ in results)
    codes: Dict[str, int] = {}
    for _, closed, code in results:
        name = {ENHANCE_YOUR_CALM: "ENHANCE_YOUR_CALM", None: "none readable"}.get(code, str(code))
        codes[name] = codes.get(name, 0) + 1
    outcome.achieved.append(f"{len(results)} connections, {streams} streams opened and reset "
                            f"(written: the server reads fewer before closing; mean "
                            f"{streams // max(1, len(results))} per connection)")
    outcome.achieved.append(f"closed by the server: {sum(1 for _, closed, _ in results if closed)} of "
                            f"{len(results)}; GOAWAY codes: {codes} (a GOAWAY is lost when the close resets "
                            "the connection before it is read)")
    still_open = sum(1 for _, closed, _ in results if not closed)
    if still_open:
        outcome.failures.append(f"{still_open} rapid-reset connections still open {GRACE_SECS:.0f} s after their "
                                "last reset")
    return outcome


async def continuation_flood(server: Standalone, secs: float) -> Outcome:
    """HEADERS without END_HEADERS, then 1 KB CONTINUATION frames until the server closes, 8 at a time."""
    literal = b"\x00" + hpack_string("x-flood") + hpack_string("a" * 1000)
    continuation = frame(FRAME_CONTINUATION, 0, 1, literal * 16)
    deadline = time.monotonic() + secs

    async def one_connection() -> Tuple[int, bool, Optional[int]]:
        connection = await RawConnection.open(server.host_port)
        sent = 0
        try:
            if not await connection.accepted(10):
                return 0, True, connection.goaway_code
            if not await connection.send(frame(FRAME_HEADERS, 0, 1, request_headers("/grpc.health.v1.Health/Check"))):
                return 0, True, connection.goaway_code
            while sent < CONTINUATION_FLOOD_BOUND_BYTES:
                if not await connection.send(continuation):
                    break
                sent += len(continuation)
            return sent, await connection.closed_within(GRACE_SECS), connection.goaway_code
        finally:
            connection.close()

    results = await in_waves_until(deadline, one_connection)
    outcome = Outcome()
    codes = sorted({code for _, _, code in results if code is not None})
    outcome.achieved.append(f"{len(results)} connections; CONTINUATION bytes written before the cut: "
                            f"max {max(sent for sent, _, _ in results) // 1024} KiB "
                            f"(header list limit {MAX_HEADER_LIST_BYTES // 1024} KiB, socket buffers included)")
    outcome.achieved.append(f"GOAWAY codes seen: {codes or 'none (closed)'}")
    taken = [sent for sent, closed, _ in results if not closed]
    if taken:
        outcome.failures.append(f"{len(taken)} connections took {CONTINUATION_FLOOD_BOUND_BYTES >> 20} MiB "
                                "of CONTINUATION frames without being closed")
    return outcome


async def idle_connections(server: Standalone, secs: float) -> Outcome:
    """2,000 connections that send their preface and then nothing."""
    count = 2000
    opened: List[RawConnection] = []

    async def open_one() -> Optional[RawConnection]:
        try:
            return await RawConnection.open(server.host_port)
        except OSError:
            return None

    opened = [connection for connection in await gather_bounded((open_one() for _ in range(count)), 200) if connection]
    accepted_flags = await asyncio.gather(*(connection.accepted(10) for connection in opened))
    kept_at_once = sum(1 for connection in opened if not connection.closed.is_set())
    accepted = sum(accepted_flags)
    started = time.monotonic()
    outcome = Outcome()
    outcome.achieved.append(f"{len(opened)} TCP connections opened, {accepted} served (SETTINGS), "
                            f"{len(opened) - kept_at_once} closed at once; max {MAX_CONNECTIONS} "
                            "(the good client holds one)")
    if kept_at_once > MAX_CONNECTIONS:
        outcome.failures.append(f"{kept_at_once} connections kept open, more than --max-connections {MAX_CONNECTIONS}")
    limit = IDLE_CONNECTION_TIMEOUT_SECS + GRACE_SECS
    while time.monotonic() - started < limit and not all(connection.closed.is_set() for connection in opened):
        await asyncio.sleep(0.2)
    still_open = sum(1 for connection in opened if not connection.closed.is_set())
    closed_times = [connection.closed_at - started for connection in opened
                    if connection.closed_at and connection.closed_at > started]
    outcome.achieved.append(f"the kept ones closed by the server {max(closed_times, default=0):.1f} s after the last "
                            f"was served (idle timeout {IDLE_CONNECTION_TIMEOUT_SECS} s from each one's accept); "
                            f"still open: {still_open}")
    if still_open:
        outcome.failures.append(f"{still_open} idle connections still open {limit:.0f} s later")
    for connection in opened:
        connection.close()
    return outcome


async def idle_streams(server: Standalone, secs: float) -> Outcome:
    """On 4 connections, 200 ingest streams each (headers only, nothing sent after)."""
    per_connection = 200
    headers = request_headers("/hourglass.v1.IngestService/IngestStream", f"Bearer {server.ingest_key}")
    connections = [await RawConnection.open(server.host_port) for _ in range(4)]
    outcome = Outcome()
    for connection in connections:
        await connection.accepted(10)
        chunk = b"".join(frame(FRAME_HEADERS, FLAG_END_HEADERS, 2 * index + 1, headers) for index in range(per_connection))
        await connection.send(chunk)
    started = time.monotonic()
    await asyncio.sleep(1.0)
    refused = [sum(1 for how in connection.streams_ended.values() if how == f"reset:{REFUSED_STREAM}")
               for connection in connections]
    open_at_once = [per_connection - refused_here for refused_here in refused]
    outcome.achieved.append(f"{4 * per_connection} streams on 4 connections; refused (REFUSED_STREAM): {sum(refused)}; "
                            f"open at once per connection: max {max(open_at_once)} (limit {MAX_CONCURRENT_STREAMS})")
    if max(open_at_once) > MAX_CONCURRENT_STREAMS:
        outcome.failures.append(f"{max(open_at_once)} streams open on one connection, more than "
                                f"--max-concurrent-streams {MAX_CONCURRENT_STREAMS}")
    limit = IDLE_STREAM_TIMEOUT_SECS + GRACE_SECS

    def open_streams() -> int:
        return sum(per_connection - len(connection.streams_ended) for connection in connections
                   if not connection.closed.is_set())

    while time.monotonic() - started < limit and open_streams():
        await asyncio.sleep(0.2)
    outcome.achieved.append(f"every accepted stream ended by the server within {time.monotonic() - started:.1f} s "
                            f"(idle stream timeout {IDLE_STREAM_TIMEOUT_SECS} s)" if not open_streams()
                            else f"{open_streams()} streams still open")
    if open_streams():
        outcome.failures.append(f"{open_streams()} idle streams still open {limit:.0f} s later")
    for connection in connections:
        connection.close()
    return outcome


async def unread_acks(server: Standalone, secs: float) -> Outcome:
    """8 connections advertising a zero stream window, each with one ingest stream of 400 batches (more than
    the acks a stream queues), so no ack can be written. After the ack write timeout, the window is opened:
    a stream the collector gave up on delivers only the acks it had queued, then ends; one it still
    served would ack every batch."""
    batches_per_stream = 400
    headers = request_headers("/hourglass.v1.IngestService/IngestStream", f"Bearer {server.ingest_key}")
    outcome = Outcome()
    connections = [await RawConnection.open(server.host_port, initial_window=0) for _ in range(8)]
    now = Timestamp()
    now.FromDatetime(datetime.now(timezone.utc))
    for connection in connections:
        await connection.accepted(10)
        data = b""
        for sequence in range(batches_per_stream):
            batch = ingest_pb2.IngestStreamRequest(sequence=sequence, events=[
                event_pb2.Event(event_id=uuid.uuid4().hex, event_type="abuse_unread_acks", occurred_at=now)])
            data += grpc_message(batch.SerializeToString())
        await connection.send(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, headers))
        for offset in range(0, len(data), 16_000):
            await connection.send(frame(FRAME_DATA, 0, 1, data[offset:offset + 16_000]))
    started = time.monotonic()
    await asyncio.sleep(ACK_WRITE_TIMEOUT_SECS + 2.0)
    for connection in connections:
        await connection.send(frame(FRAME_WINDOW_UPDATE, 0, 1, struct.pack(">I", 1 << 24)))
    limit = IDLE_STREAM_TIMEOUT_SECS + GRACE_SECS

    def ended() -> List[RawConnection]:
        return [connection for connection in connections if 1 in connection.streams_ended or connection.closed.is_set()]

    opened = time.monotonic()
    while time.monotonic() - opened < limit and len(ended()) < len(connections):
        await asyncio.sleep(0.2)
    acks = [connection.messages_received(1) for connection in connections]
    cut = sum(1 for count in acks if count < batches_per_stream)
    outcome.achieved.append(f"{len(connections)} streams of {batches_per_stream} batches, window 0 for "
                            f"{opened - started:.1f} s (ack write timeout {ACK_WRITE_TIMEOUT_SECS} s); then "
                            f"opened: acks delivered per stream {min(acks)}..{max(acks)}, "
                            f"{len(ended())} streams ended, {cut} cut short by the collector")
    if cut < len(connections):
        outcome.failures.append(f"{len(connections) - cut} streams that read no acks were still served after "
                                "the ack write timeout")
    if len(ended()) < len(connections):
        outcome.failures.append(f"{len(connections) - len(ended())} streams not ended {limit:.0f} s after the "
                                "window opened")
    for connection in connections:
        connection.close()
    return outcome


async def slow_sender(server: Standalone, secs: float) -> Outcome:
    """20 connections trickling a HEADERS frame a byte a second, 20 trickling a batch's DATA likewise."""
    headers = request_headers("/hourglass.v1.IngestService/IngestStream", f"Bearer {server.ingest_key}")
    batch = ingest_pb2.IngestStreamRequest(sequence=0, events=[event_pb2.Event(event_id="slow", event_type="slow")])
    outcome = Outcome()
    limit = max(IDLE_CONNECTION_TIMEOUT_SECS, IDLE_STREAM_TIMEOUT_SECS) + GRACE_SECS

    async def trickle(connection: RawConnection, prefix: bytes, trickled: bytes) -> Tuple[int, float]:
        started = time.monotonic()
        await connection.accepted(10)
        if prefix and not await connection.send(prefix):
            return 0, time.monotonic() - started
        sent = 0
        for byte in trickled:
            if time.monotonic() - started > limit or connection.closed.is_set() or 1 in connection.streams_ended:
                break
            if not await connection.send(bytes([byte])):
                break
            sent += 1
            await asyncio.sleep(1.0)
        cut = connection.closed.is_set() or 1 in connection.streams_ended
        return (sent if cut else -1), time.monotonic() - started

    header_frame = frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, headers + b"\x00" * 4000)
    data_frame = frame(FRAME_DATA, 0, 1, grpc_message(batch.SerializeToString()) * 100)
    header_trickles = [trickle(await RawConnection.open(server.host_port), b"", header_frame) for _ in range(20)]
    body_trickles = [trickle(await RawConnection.open(server.host_port),
                             frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, headers), data_frame) for _ in range(20)]
    results = await asyncio.gather(*header_trickles, *body_trickles)
    for name, part in (("headers", results[:20]), ("body", results[20:])):
        cut = [entry for entry in part if entry[0] >= 0]
        outcome.achieved.append(f"{name} trickled on {len(part)} connections: {len(cut)} cut after "
                                f"{max((entry[1] for entry in cut), default=0):.1f} s at most, "
                                f"{max((entry[0] for entry in cut), default=0)} bytes at most")
        if len(cut) < len(part):
            outcome.failures.append(f"{len(part) - len(cut)} {name} trickles still served {limit:.0f} s later")
    return outcome


ATTACKS: Dict[str, Callable] = {
    "rapid-reset": rapid_reset,
    "continuation-flood": continuation_flood,
    "idle-connections": idle_connections,
    "idle-streams": idle_streams,
    "unread-acks": unread_acks,
    "slow-sender": slow_sender,
}


# ---- the run ------------------------------------------------------------------------------------------

def percentile(values: List[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def mib(value: int) -> str:
    return f"{value / (1024 * 1024):.0f} MiB"


def wait_settled(server: Standalone, baseline_fds: int, timeout: float) -> None:
    """Waits (bounded) until the server's fds are back near their baseline: the attack's connections gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc_sample(server.process.pid)[1] > baseline_fds + 8:
        time.sleep(0.2)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def main() -> int:
    parser = argparse.ArgumentParser(prog="e2e/abuse.sh", description=__doc__.split("\n")[0])
    parser.add_argument("attacks", nargs="*", help="which (default: all): " + ", ".join(ATTACKS))
    parser.add_argument("--binary", default=os.environ.get("HOURGLASS_BIN"), help="hourglass (or HOURGLASS_BIN)")
    parser.add_argument("--attack-secs", type=float, default=8.0, help="how long the flood attacks last (default 8)")
    arguments = parser.parse_args()
    unknown = [name for name in arguments.attacks if name not in ATTACKS]
    if unknown or not arguments.binary:
        parser.error(f"unknown attacks {unknown}" if unknown else "no binary: --binary or HOURGLASS_BIN")
    selected = arguments.attacks or list(ATTACKS)
    # The server inherits this limit: room for the idle-connections attack on both sides.
    raise_fd_limit()

    work_dir = Path(tempfile.mkdtemp(prefix="hourglass-abuse-"))
    server = Standalone(binary=Path(arguments.binary), data_dir=work_dir / "data", log_path=work_dir / "standalone.log")
    failures: List[str] = []
    rows: List[List[str]] = []
    sampler: Optional[Sampler] = None
    baseline_row = "| baseline | - | | | | | | | |"
    try:
        server.start()
        print(f"standalone at {server.address} (log {server.log_path}); limits: --max-connections {MAX_CONNECTIONS}, "
              f"--max-concurrent-streams {MAX_CONCURRENT_STREAMS}, --idle-connection-timeout-secs "
              f"{IDLE_CONNECTION_TIMEOUT_SECS}, --idle-stream-timeout-secs {IDLE_STREAM_TIMEOUT_SECS}, "
              f"--ack-write-timeout-secs {ACK_WRITE_TIMEOUT_SECS}, --max-header-list-bytes {MAX_HEADER_LIST_BYTES}",
              flush=True)
        sampler = Sampler(server.process.pid)
        sampler.start()
        good = GoodClient(server)
        good.start()
        time.sleep(5.0)
        baseline = good.latencies.get("baseline", [])
        base_p50, base_p99 = percentile(baseline, 0.5), percentile(baseline, 0.99)
        base_rss, base_fds = proc_sample(server.process.pid)
        baseline_row = (f"| baseline | {base_p50 * 1000:.1f} | 1.00 | {base_p99 * 1000:.1f} | 1.00 | {mib(base_rss)} "
                        f"| {base_fds} | yes | |")
        print(f"baseline: {len(baseline)} batches acked, ack latency p50 {base_p50 * 1000:.1f} ms, "
              f"p99 {base_p99 * 1000:.1f} ms; RSS {mib(base_rss)}, fds {base_fds}", flush=True)
        for name in selected:
            before_rss, before_fds = proc_sample(server.process.pid)
            sampler.mark()
            good.phase = name
            outcome = asyncio.run(ATTACKS[name](server, arguments.attack_secs))
            during_rss, during_fds = sampler.window()
            good.phase = f"after {name}"
            if not server.alive():
                failures.append(f"{name}: the server died (exit {server.process.returncode})")
                break
            wait_settled(server, base_fds, 15)
            after_rss, after_fds = proc_sample(server.process.pid)
            health = healthy(server)
            latencies = good.latencies.get(name, [])
            p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
            failures += [f"{name}: {failure}" for failure in outcome.failures]
            if not health:
                failures.append(f"{name}: health did not answer SERVING on a new connection after the attack")
            if during_rss > MAX_RSS_BYTES:
                failures.append(f"{name}: RSS reached {mib(during_rss)}, beyond {mib(MAX_RSS_BYTES)}")
            print(f"\n== {name}", flush=True)
            for line in outcome.achieved:
                print(f"   attacker: {line}")
            print(f"   server: RSS {mib(before_rss)} before, {mib(during_rss)} at most during, {mib(after_rss)} after; "
                  f"fds {before_fds} / {during_fds} / {after_fds}; health after: {'SERVING' if health else 'LOST'}")
            print(f"   good client: {len(latencies)} batches acked during; ack latency p50 {p50 * 1000:.1f} ms "
                  f"(x{p50 / base_p50:.2f} baseline), p99 {p99 * 1000:.1f} ms (x{p99 / base_p99:.2f})", flush=True)
            for failure in outcome.failures:
                print(f"   FAILED: {failure}", flush=True)
            rows.append([name, f"{p50 * 1000:.1f}", f"{p50 / base_p50:.2f}", f"{p99 * 1000:.1f}",
                         f"{p99 / base_p99:.2f}", f"{mib(during_rss)}", str(during_fds),
                         "yes" if health else "no", "ok" if not outcome.failures else "FAILED"])
        good.stop()
        if server.alive():
            counted, deadline = -1, time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    counted = counted_events(server, good.started)
                except grpc.RpcError:
                    pass
                if counted >= good.acked_events:
                    break
                time.sleep(1.0)
            print(f"\ngood client: {good.acked_events} events acked, {counted} counted by the query; "
                  f"stream errors {len(good.stream_errors)}, query errors {len(good.query_errors)}")
            for error in good.stream_errors[:5] + good.query_errors[:5]:
                print(f"   {error}")
            if counted < good.acked_events:
                failures.append(f"{good.acked_events - counted} acked events of the good client not counted")
            if not good.latencies.get("baseline"):
                failures.append("the good client got no ack before the attacks")
    finally:
        if sampler:
            sampler.stop_event.set()
            sampler.join(timeout=5)
        server.stop()
    print("\n| attack | ack p50 ms | ×baseline | ack p99 ms | ×baseline | RSS max | fds max | health after | limits |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(baseline_row)
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if failures:
        print("\nabuse suite FAILED:")
        for failure in failures:
            print(f"  - {failure}")
        print(f"(server log: {server.log_path})")
        return 1
    shutil.rmtree(work_dir, ignore_errors=True)
    print("\nabuse suite passed: every attack was shed within its limits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
