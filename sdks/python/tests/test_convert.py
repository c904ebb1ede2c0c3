"""Python values to the contract's messages and back (no server)."""

import math
from datetime import datetime, timedelta, timezone

import grpc
import pytest

from hourglass._convert import (
    event_properties,
    from_timestamp,
    make_event,
    to_property_value,
    to_timestamp,
)
from hourglass._grpc import grpc_target


def test_property_values_keep_their_python_type():
    assert to_property_value("trial", True).WhichOneof("kind") == "bool_value"
    assert to_property_value("seats", 3).number_value == 3.0
    assert to_property_value("price", 9.5).number_value == 9.5
    assert to_property_value("plan", "pro").string_value == "pro"
    with pytest.raises(ValueError, match="finite"):
        to_property_value("price", math.nan)
    with pytest.raises(TypeError, match="tags"):
        to_property_value("tags", ["a"])
    with pytest.raises(ValueError, match="name"):
        to_property_value("", 1)


def test_times_are_utc_whatever_their_form():
    moment = datetime(2026, 11, 25, 10, 30, 15, 250000, tzinfo=timezone.utc)
    assert from_timestamp(to_timestamp(moment)) == moment
    assert to_timestamp(moment.replace(tzinfo=None)) == to_timestamp(moment), "naive is UTC"
    paris = moment.astimezone(timezone(timedelta(hours=1)))
    assert to_timestamp(paris) == to_timestamp(moment)
    assert from_timestamp(to_timestamp(moment.timestamp())) == moment
    assert to_timestamp(1_795_600_800).seconds == 1_795_600_800
    with pytest.raises(TypeError):
        to_timestamp("2026-11-25")


def test_events_get_an_id_and_a_time_unless_given():
    first, second = make_event("click"), make_event("click")
    assert first.event_id and first.event_id != second.event_id
    assert abs(from_timestamp(first.occurred_at) - datetime.now(timezone.utc)) < timedelta(minutes=1)
    given = make_event("click", event_id="e-1", timestamp=0, user_id="u-1", properties={"n": 2, "ok": False})
    assert (given.event_id, given.occurred_at.seconds, given.user_id) == ("e-1", 0, "u-1")
    assert event_properties(given) == {"n": 2.0, "ok": False}
    assert not make_event("click").HasField("user_id")


def test_targets_may_be_urls():
    assert grpc_target("http://127.0.0.1:50051") == "127.0.0.1:50051"
    assert grpc_target("https://hourglass.example:443/") == "hourglass.example:443"
    assert grpc_target("127.0.0.1:50051") == "127.0.0.1:50051"


class _FailedRead(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


def test_a_read_is_retried_when_unavailable_or_unparsable_and_not_otherwise():
    from hourglass.query import _is_retried

    assert _is_retried(_FailedRead(grpc.StatusCode.UNAVAILABLE, "connection reset"))
    # grpc-python's own words for an answer cut short by a replica killed while answering.
    assert _is_retried(_FailedRead(grpc.StatusCode.INTERNAL, "Exception deserializing response!"))
    assert not _is_retried(_FailedRead(grpc.StatusCode.INTERNAL, "stored rollup is unreadable"))
    assert not _is_retried(_FailedRead(grpc.StatusCode.INVALID_ARGUMENT, "range: is required"))
    assert not _is_retried(_FailedRead(grpc.StatusCode.UNAUTHENTICATED, "unknown API key"))
