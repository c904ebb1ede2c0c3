"""What both clients share: targets, channels, the key's metadata, statuses and their retry delays."""

from __future__ import annotations

import random
from typing import Optional, Sequence, Tuple

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from hourglass.errors import AuthenticationError, CallError

USER_AGENT = "hourglass-python/0.1"

#: Statuses no retry can fix: the key (UNAUTHENTICATED, PERMISSION_DENIED), a request the server will
#: always refuse (INVALID_ARGUMENT), a service the target does not serve (UNIMPLEMENTED).
FATAL_CODES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


def grpc_target(target: str) -> str:
    """``host:port`` from ``host:port``, ``http://host:port`` or ``https://host:port``."""
    for scheme in ("http://", "https://"):
        if target.startswith(scheme):
            return target[len(scheme) :].rstrip("/")
    return target


def open_channel(
    target: str,
    credentials: Optional[grpc.ChannelCredentials],
    options: Sequence[Tuple[str, object]] = (),
) -> grpc.Channel:
    """A channel to ``target`` (TLS when ``credentials`` or an https:// target)."""
    base_options = [
        ("grpc.primary_user_agent", USER_AGENT),
        # Pings find a dead connection (a collector killed without closing it) within ~40 s when no ack
        # arrives; the servers allow pings this often (--keepalive-interval-secs is theirs, 30 s).
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        # Every resend is the SDK's own decision, made with the acks it has seen.
        ("grpc.enable_retries", 0),
    ]
    address = grpc_target(target)
    if credentials is None and target.startswith("https://"):
        credentials = grpc.ssl_channel_credentials()
    all_options = base_options + list(options)
    if credentials is not None:
        return grpc.secure_channel(address, credentials, options=all_options)
    return grpc.insecure_channel(address, options=all_options)


def key_metadata(api_key: str) -> Tuple[Tuple[str, str], ...]:
    """The call metadata that carries the API key."""
    if not api_key or not isinstance(api_key, str):
        raise ValueError("an API key (hgk_...) is required")
    return (("authorization", f"Bearer {api_key}"),)


def retry_delay_secs(error: grpc.RpcError) -> Optional[float]:
    """The RetryInfo delay of a failed call's status, when the server sent one."""
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except (ValueError, AttributeError):
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def call_error(error: grpc.RpcError, method: str = "") -> CallError:
    """The SDK's exception for a failed call."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else str(error)) or ""
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return AuthenticationError(code, details, method)
    return CallError(code, details, method)


class Backoff:
    """Exponential backoff with full jitter: attempt n waits a random time up to base × 2^n, capped."""

    def __init__(self, base_secs: float, max_secs: float, rng: Optional[random.Random] = None):
        self.base_secs = base_secs
        self.max_secs = max_secs
        self.attempt = 0
        self._random = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.max_secs, self.base_secs * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return self._random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0
