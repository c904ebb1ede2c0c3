"""Helpers of the tests: waiting for a condition (never a bare sleep), free ports, time ranges."""

from __future__ import annotations

import socket
import time
from datetime import datetime, timedelta, timezone
from typing import Callable, Tuple, TypeVar

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T], done: Callable[[T], bool], timeout_secs: float = 90.0) -> T:
    """Calls ``probe`` until ``done(result)``; fails naming ``what`` and the last result after the timeout."""
    deadline = time.monotonic() + timeout_secs
    while True:
        result = probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout_secs} s; last: {result!r}")
        time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def around(moment: datetime, hours_before: int = 1, hours_after: int = 2) -> Tuple[datetime, datetime]:
    """A whole-hour range around ``moment``."""
    start = hour_of(moment) - timedelta(hours=hours_before)
    return start, hour_of(moment) + timedelta(hours=hours_after)


def now() -> datetime:
    return datetime.now(timezone.utc)
