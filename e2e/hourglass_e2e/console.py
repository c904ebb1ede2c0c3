"""The web console through the balancer, as a browser without TLS reaches it: HTTP/1.1 to the query frontend.

The chart's Envoy takes HTTP/1.1 besides h2c on its query listener (codec AUTO), and so does the haproxy
generated from it (balancer.py); both forward over HTTP/2 to the query services, which answer gRPC-Web
themselves. This loads the page and its script, then makes the console's call, gRPC-Web
``GetHourlyMetrics`` in both of its encodings (binary and base64 text), and compares the report with the
one gRPC (h2c) returns through the same frontend.
"""

from __future__ import annotations

import base64
import http.client
import struct
from datetime import datetime
from typing import Dict, List, Optional, Tuple

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from hourglass.v1 import query_pb2, query_pb2_grpc

GET_HOURLY_METRICS = "/hourglass.v1.QueryService/GetHourlyMetrics"
# The gRPC-Web frame flag of the frame that carries the trailers.
TRAILERS_FLAG = 0x80


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _http1(
    address: str, method: str, path: str, body: bytes = b"", headers: Optional[Dict[str, str]] = None
) -> Tuple[int, Dict[str, str], bytes]:
    """One HTTP/1.1 request (http.client speaks nothing else), its status, headers (lowercase) and body."""
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(method, path, body=body or None, headers=headers or {})
        response = connection.getresponse()
        if response.version != 11:
            raise RuntimeError(f"{method} {path}: answered over HTTP/{response.version / 10}, not HTTP/1.1")
        return response.status, {name.lower(): value for name, value in response.getheaders()}, response.read()
    finally:
        connection.close()


def _from_text(body: bytes) -> bytes:
    """A grpc-web-text body decoded: the server encodes each frame on its own, so padding may end any group
    of four characters, not only the last."""
    return b"".join(base64.b64decode(body[offset : offset + 4]) for offset in range(0, len(body), 4))


def _grpc_web_frames(body: bytes) -> Tuple[List[bytes], Dict[str, str]]:
    """The messages and the trailers of a gRPC-Web response body."""
    messages, trailers, offset = [], {}, 0
    while offset < len(body):
        if offset + 5 > len(body):
            raise RuntimeError(f"a gRPC-Web frame cut short at byte {offset} of {len(body)}")
        flag, length = struct.unpack(">BI", body[offset : offset + 5])
        payload = body[offset + 5 : offset + 5 + length]
        if len(payload) != length:
            raise RuntimeError(f"a gRPC-Web frame of {length} bytes has {len(payload)}")
        offset += 5 + length
        if flag & TRAILERS_FLAG:
            for line in payload.decode().split("\r\n"):
                if line:
                    name, value = line.split(":", 1)
                    trailers[name.strip().lower()] = value.strip()
        elif flag == 0:
            messages.append(payload)
        else:
            raise RuntimeError(f"a gRPC-Web frame with flags {flag:#x} (compressed: the console never asks for that)")
    return messages, trailers


def _grpc_web_call(
    address: str, key: str, request: query_pb2.GetHourlyMetricsRequest, text: bool
) -> query_pb2.GetHourlyMetricsResponse:
    """GetHourlyMetrics over gRPC-Web and HTTP/1.1, as the console calls it (``text``: grpc-web-text)."""
    framed = struct.pack(">BI", 0, request.ByteSize()) + request.SerializeToString()
    content_type = "application/grpc-web-text" if text else "application/grpc-web+proto"
    status, headers, body = _http1(
        address,
        "POST",
        GET_HOURLY_METRICS,
        base64.b64encode(framed) if text else framed,
        # The answer is encoded as the accept header asks (tonic-web), binary otherwise.
        {"content-type": content_type, "accept": content_type, "x-grpc-web": "1", "authorization": f"Bearer {key}"},
    )
    if status != 200:
        raise RuntimeError(f"gRPC-Web ({content_type}): HTTP {status}: {body[:200]!r}")
    if not headers.get("content-type", "").startswith(content_type.split("+")[0]):
        raise RuntimeError(f"gRPC-Web ({content_type}): answered as {headers.get('content-type')}")
    messages, trailers = _grpc_web_frames(_from_text(body) if text else body)
    # A trailers-only answer (an error) carries its status in the headers.
    code = trailers.get("grpc-status", headers.get("grpc-status"))
    if code != "0":
        message = trailers.get("grpc-message", headers.get("grpc-message", ""))
        raise RuntimeError(f"gRPC-Web ({content_type}): grpc-status {code} {message}")
    if len(messages) != 1:
        raise RuntimeError(f"gRPC-Web ({content_type}): {len(messages)} messages for a unary call")
    return query_pb2.GetHourlyMetricsResponse.FromString(messages[0])


def check_console(address: str, query_key: str, start: datetime, end: datetime) -> Tuple[List[str], List[str]]:
    """Notes and failures of the console through the query frontend at ``address`` (host:port), for a
    customer whose query key is ``query_key`` and whose data lies in ``[start, end)``. A refused or broken
    connection is a failure, not an exception: the scenario's other figures stay reported."""
    try:
        return _check_console(address, query_key, start, end)
    except (OSError, http.client.HTTPException, RuntimeError, grpc.RpcError) as error:
        return [], [f"the console through the balancer: {type(error).__name__}: {error}"]


def _check_console(address: str, query_key: str, start: datetime, end: datetime) -> Tuple[List[str], List[str]]:
    notes: List[str] = []
    failures: List[str] = []
    status, headers, page = _http1(address, "GET", "/console/")
    is_page = headers.get("content-type", "").startswith("text/html") and b"/console/console.js" in page
    if status != 200 or not is_page:
        failures.append(f"GET /console/ over HTTP/1.1: HTTP {status}, {headers.get('content-type')}, {len(page)} bytes")
        return notes, failures
    status, headers, script = _http1(address, "GET", "/console/console.js")
    if status != 200 or not script:
        failures.append(f"GET /console/console.js over HTTP/1.1: HTTP {status}, {len(script)} bytes")
        return notes, failures
    request = query_pb2.GetHourlyMetricsRequest(
        range=query_pb2.TimeRange(start=_timestamp(start), end=_timestamp(end)), group_by_event_type=True
    )
    with grpc.insecure_channel(address) as channel:
        over_grpc = query_pb2_grpc.QueryServiceStub(channel).GetHourlyMetrics(
            request, metadata=[("authorization", f"Bearer {query_key}")], timeout=30
        )
    for text in (False, True):
        try:
            over_web = _grpc_web_call(address, query_key, request, text)
        except RuntimeError as error:
            failures.append(str(error))
            continue
        if list(over_web.rows) != list(over_grpc.rows):
            failures.append(
                f"gRPC-Web ({'text' if text else 'binary'}) over HTTP/1.1 reported {len(over_web.rows)} rows "
                f"({sum(row.events for row in over_web.rows)} events), gRPC {len(over_grpc.rows)} rows "
                f"({sum(row.events for row in over_grpc.rows)} events)"
            )
    if not over_grpc.rows:
        failures.append("the report compared has no rows: nothing was compared")
    if not failures:
        notes.append(
            f"console through the balancer over HTTP/1.1: the page ({len(page)} bytes) and script "
            f"({len(script)} bytes) load; gRPC-Web GetHourlyMetrics, binary and text, equal gRPC's "
            f"{len(over_grpc.rows)} rows ({sum(row.events for row in over_grpc.rows)} events)"
        )
    return notes, failures
