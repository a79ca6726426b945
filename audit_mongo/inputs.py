"""Input to the query API, checked before it reaches a filter: ids and names that could
carry an operator or a field path, actions, limits and time bounds."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from typing import Any

from .normalise import INT64_MAX, INT64_MIN, to_bson

ACTIONS = ("create", "update", "delete")
ORDERS = ("newest", "oldest")


def check_id(value: Any, what: str = "object id") -> Any:
    """``value`` as stored, after refusing what could smuggle an operator into a filter: a
    dict, or a string starting with ``$``, at any depth of a composite key."""
    if value is None:
        raise ValueError(f"{what} is required")
    if isinstance(value, Mapping):
        raise ValueError(f"{what} must be a value, not a mapping")
    if isinstance(value, str) and value.startswith("$"):
        raise ValueError(f"{what} may not start with '$'")
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"{what} is an empty sequence")
        return [check_id(v, what) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    try:
        stored = to_bson(value)
    except Exception:
        raise ValueError(f"{what} of type {type(value).__name__} cannot be stored") from None
    if isinstance(stored, (dict, list)):
        raise ValueError(f"{what} must be a single value, got a {type(value).__name__}")
    return stored


def check_user_id(value: Any) -> Any:
    """A user id as stored; None stands for "nobody known"."""
    return None if value is None else check_id(value, "user id")


def check_name(value: Any, what: str) -> str:
    """A table, field or transaction name: a plain string, usable as (part of) a field path."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    if value.startswith("$") or "\x00" in value:
        raise ValueError(f"{what} may not start with '$' or contain NUL: {value!r}")
    return value


def check_field(value: Any) -> str:
    name = check_name(value, "field name")
    if "." in name:
        raise ValueError(f"field names have no '.': {name!r}")
    return name


def check_actions(actions: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if actions is None:
        return None
    chosen = (actions,) if isinstance(actions, str) else tuple(actions)
    unknown = [a for a in chosen if a not in ACTIONS]
    if unknown or not chosen:
        raise ValueError(f"actions must be among {', '.join(ACTIONS)}; got {chosen!r}")
    return chosen


def check_fields(fields: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if fields is None:
        return None
    chosen = (fields,) if isinstance(fields, str) else tuple(fields)
    if not chosen:
        raise ValueError("fields is empty: pass None to match every entry")
    return tuple(check_field(f) for f in chosen)


def check_order(order: str) -> bool:
    """True for newest first."""
    if order not in ORDERS:
        raise ValueError(f"order must be 'newest' or 'oldest', got {order!r}")
    return order == "newest"


def check_limit(limit: int | None, most: int | None = None) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    if most is not None and limit > most:
        raise ValueError(f"limit may be at most {most}, got {limit}")
    return limit


def time_bound(
    value: dt.datetime | dt.date | None, what: str, *, round_up: bool = True
) -> dt.datetime | None:
    """A ``since``/``until`` bound as aware UTC, rounded up to the millisecond BSON keeps (so
    ``since`` stays inclusive and ``until`` exclusive); with ``round_up=False``, down (an
    inclusive upper bound: ``state_at``'s moment). A naive datetime is taken as UTC, a date
    as its midnight UTC."""
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        if not isinstance(value, dt.date):
            raise TypeError(f"{what} must be a datetime or a date, not {type(value).__name__}")
        value = dt.datetime.combine(value, dt.time())
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    value = value.astimezone(dt.timezone.utc)
    extra = value.microsecond % 1000
    if extra:
        value -= dt.timedelta(microseconds=extra)
        if round_up:
            value += dt.timedelta(milliseconds=1)
    return value


def integer_text(text: str) -> int | None:
    """The integer a text spells in plain ASCII digits (an optional minus sign), if it fits
    the 64 bits a BSON integer has; else None."""
    body = text[1:] if text[:1] == "-" else text
    if not (body.isascii() and body.isdigit()):
        return None
    number = int(text)
    return number if INT64_MIN <= number <= INT64_MAX else None
