"""Python values to and from the contract's messages: events, properties, timestamps."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timezone
from typing import Any, Dict, Mapping, Optional, Union

from google.protobuf.timestamp_pb2 import Timestamp

from hourglass.v1 import event_pb2

#: What ``track`` and the query helper take as a time: an aware datetime (a naive one is read as UTC,
#: never as local time), or seconds since the Unix epoch.
TimeLike = Union[datetime, int, float]

#: A property value: text, a finite number or a boolean.
PropertyLike = Union[str, int, float, bool]


def to_timestamp(value: TimeLike) -> Timestamp:
    """``value`` as a protobuf Timestamp."""
    timestamp = Timestamp()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        timestamp.FromDatetime(value.astimezone(timezone.utc))
        return timestamp
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"a time must be a datetime or seconds since the epoch, not {type(value).__name__}")
    if isinstance(value, int):
        timestamp.seconds = value
        return timestamp
    if not math.isfinite(value):
        raise ValueError(f"a time must be finite, not {value}")
    seconds = math.floor(value)
    timestamp.seconds = seconds
    timestamp.nanos = min(int(round((value - seconds) * 1e9)), 999_999_999)
    return timestamp


def from_timestamp(timestamp: Timestamp) -> datetime:
    """A Timestamp as an aware UTC datetime."""
    return datetime.fromtimestamp(timestamp.seconds, tz=timezone.utc).replace(microsecond=timestamp.nanos // 1000)


def to_property_value(name: str, value: PropertyLike) -> event_pb2.PropertyValue:
    """One property as the contract's PropertyValue; refuses what the collector would reject anyway."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a property name must be a non-empty string, not {name!r}")
    # bool before int: True is an int in Python, and must stay a boolean.
    if isinstance(value, bool):
        return event_pb2.PropertyValue(bool_value=value)
    if isinstance(value, (int, float)):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"property {name}: numbers must be finite, not {value}")
        return event_pb2.PropertyValue(number_value=number)
    if isinstance(value, str):
        return event_pb2.PropertyValue(string_value=value)
    raise TypeError(f"property {name}: a value must be a str, int, float or bool, not {type(value).__name__}")


def from_property_value(value: event_pb2.PropertyValue) -> Optional[PropertyLike]:
    """A PropertyValue as a Python value (None if none of its kinds is set)."""
    kind = value.WhichOneof("kind")
    return None if kind is None else getattr(value, kind)


def new_event_id() -> str:
    """A fresh event id: a random UUID, unique without coordination between clients."""
    return str(uuid.uuid4())


def make_event(
    event_type: str,
    *,
    user_id: Optional[str] = None,
    event_id: Optional[str] = None,
    timestamp: Optional[TimeLike] = None,
    properties: Optional[Mapping[str, PropertyLike]] = None,
) -> event_pb2.Event:
    """An Event message. A missing id is a fresh UUID; a missing time is now."""
    if not isinstance(event_type, str):
        raise TypeError(f"event_type must be a str, not {type(event_type).__name__}")
    event = event_pb2.Event(event_id=event_id or new_event_id(), event_type=event_type)
    if timestamp is None:
        event.occurred_at.GetCurrentTime()
    else:
        event.occurred_at.CopyFrom(to_timestamp(timestamp))
    if user_id is not None:
        event.user_id = str(user_id)
    for name, value in (properties or {}).items():
        event.properties[name].CopyFrom(to_property_value(name, value))
    return event


def event_properties(event: event_pb2.Event) -> Dict[str, Any]:
    """An event's properties as a plain dict."""
    return {name: from_property_value(value) for name, value in event.properties.items()}
