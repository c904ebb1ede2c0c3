"""The exceptions the SDK raises. Every one is a :class:`HourglassError`."""

from __future__ import annotations

from typing import Optional

import grpc


class HourglassError(Exception):
    """Base class of every error of this SDK."""


class CallError(HourglassError):
    """A gRPC call failed with a status the SDK does not retry (or retried as often as it may)."""

    def __init__(self, code: grpc.StatusCode, details: str, method: str = ""):
        self.code = code
        self.details = details
        self.method = method
        where = f" {method}" if method else ""
        super().__init__(f"{code.name}{where}: {details}")


class AuthenticationError(CallError):
    """The API key was refused: unknown, revoked or malformed (UNAUTHENTICATED), or of the wrong scope
    (PERMISSION_DENIED). Retrying does not help; the client stops sending."""


class ClientClosedError(HourglassError):
    """The client was closed, or stopped on an error it cannot recover from."""

    def __init__(self, message: str, cause: Optional[BaseException] = None):
        super().__init__(message)
        self.__cause__ = cause


class BackpressureTimeout(HourglassError, TimeoutError):
    """``track`` waited ``max_block_secs`` for room in the client's buffer (``max_queued_events``): the
    collectors take events more slowly than they are tracked."""


class FlushTimeout(HourglassError, TimeoutError):
    """``flush`` or ``close`` returned before every tracked event was acknowledged. Nothing is lost while
    the client stays open: it keeps resending."""

    def __init__(self, message: str, pending_events: int):
        super().__init__(message)
        self.pending_events = pending_events
