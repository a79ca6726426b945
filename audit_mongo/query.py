"""A query on the audit collection: checked input, the Mongo filter and sort, and the index
from ``indexes.INDEXES`` that serves it.

Every query is equality on an index's leading fields, then ``created_at`` and ``_id`` in
the index's order (or exactly reversed): the "equality, sort, range" shape MongoDB serves
from one index scan without sorting in memory. Everything else a query asks (actions,
fields, entity) is a filter on the documents that scan reaches.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

from .normalise import to_bson

ACTIONS = ("create", "update", "delete")
ORDERS = ("newest", "oldest")

# Equality fields, most selective first: a query is served by the index of the first one
# it compares (see indexes.INDEXES).
INDEX_BY_FIELDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("voids",), "audit_voids"),  # the reader's look-up of voided documents
    (("transaction_id",), "audit_transaction"),
    (("context.request_id",), "audit_request"),
    (("table_name", "object_id"), "audit_row_history"),
    (("current_user_id",), "audit_user_history"),
    (("table_name",), "audit_table_history"),
    ((), "audit_created_at"),
)

# Fields of indexes that hold only documents having the field (partialFilterExpression).
PARTIALLY_INDEXED = frozenset(("context.request_id",))

# The entries a row walk (a row's history) needs whatever else it asks, to know where the
# row begins and ends and to follow it across primary key changes.
ROW_BOUNDARIES: tuple[dict[str, Any], ...] = (
    {"action": {"$in": ["create", "delete"]}},
    {"action": "update", "previous_object_id": {"$exists": True}},
)


@dataclass
class Query:
    """What to find. ``equal`` maps a field to a value or to a list of candidate values
    (``$in``); ``after`` is the position (``created_at``, ``_id``) to continue after."""

    equal: dict[str, Any] = field(default_factory=dict)
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    actions: tuple[str, ...] | None = None
    fields: tuple[str, ...] | None = None
    entities: list[str] | None = None
    newest_first: bool = True
    after: tuple[dt.datetime, ObjectId] | None = None
    # A row walk: also find the row's creates, deletes and key changes (ROW_BOUNDARIES),
    # with ``until`` checked by ``wants()`` for them.
    keep_boundaries: bool = False

    @property
    def index(self) -> str:
        """The name of the index that serves this query."""
        return next(name for keys, name in INDEX_BY_FIELDS if set(keys) <= set(self.equal))

    def sort(self) -> list[tuple[str, int]]:
        direction = -1 if self.newest_first else 1
        return [("created_at", direction), ("_id", direction)]

    def filter(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, value in self.equal.items():
            found[name] = {"$in": value} if isinstance(value, Candidates) else {"$eq": value}
            if name in PARTIALLY_INDEXED:  # what lets MongoDB use the partial index
                found[name]["$exists"] = True
        created = self._time_range()
        if created:
            found["created_at"] = created
        if self.after is not None:
            moment, last = self.after
            # The same millisecond as the last entry: only those past it by _id.
            seen = "$gte" if self.newest_first else "$lte"
            found["$nor"] = [{"created_at": moment, "_id": {seen: last}}]
        found.update(self._narrowing())
        if self.entities is not None:
            found["entity"] = {"$in": self.entities}
        return found

    def wants(self, entry: Any) -> bool:
        """Whether an entry found with ``keep_boundaries`` is one the query asked for."""
        if self.actions is not None and entry.action not in self.actions:
            return False
        if self.until is not None and entry.created_at >= self.until:
            return False
        return self.fields is None or any(name in entry.changes for name in self.fields)

    def _narrowing(self) -> dict[str, Any]:
        """Actions and fields: filters on the documents the index scan reaches."""
        wanted: dict[str, Any] = {"action": {"$in": list(self.actions or ACTIONS)}}
        if self.fields:
            wanted["$or"] = [{f"changes.{name}": {"$exists": True}} for name in self.fields]
        if not self.keep_boundaries:
            return wanted
        if self.until is not None:
            wanted["created_at"] = {"$lt": self.until}
        elif self.actions is None and not self.fields:
            return wanted  # every entry: the boundaries among them
        return {"$or": [wanted, *ROW_BOUNDARIES]}

    def _time_range(self) -> dict[str, Any]:
        created: dict[str, Any] = {}
        if self.since is not None:
            created["$gte"] = self.since
        if self.until is not None and not self.keep_boundaries:
            created["$lt"] = self.until
        if self.after is not None:
            moment = self.after[0]
            if self.newest_first:
                created["$lte"] = moment
            else:
                created["$gte"] = max(created.get("$gte", moment), moment)
        return created


class Candidates(list[Any]):
    """Values any of which the field may equal (``$in``)."""


# -- checking input ------------------------------------------------------------------


def check_id(value: Any, what: str = "object id") -> Any:
    """``value`` as stored, after refusing what could smuggle an operator into a filter: a
    dict, or a string starting with ``$``, at any depth of a composite key."""
    if value is None:
        raise ValueError(f"{what} is required")
    if isinstance(value, Mapping):
        raise ValueError(f"{what} must be a value, not a mapping: {value!r}")
    if isinstance(value, str) and value.startswith("$"):
        raise ValueError(f"{what} may not start with '$': {value!r}")
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
        raise ValueError(f"{what} must be a single value, got {value!r}")
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


# -- page cursors --------------------------------------------------------------------


def encode_cursor(created_at: dt.datetime, _id: ObjectId) -> str:
    """An opaque page cursor: the position of a page's last entry."""
    millis = (created_at - EPOCH) // dt.timedelta(milliseconds=1)
    raw = json.dumps([millis, str(_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, ObjectId]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        millis, oid = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if isinstance(millis, bool) or not isinstance(millis, int):
            raise TypeError
        return EPOCH + dt.timedelta(milliseconds=millis), ObjectId(oid)
    except (ValueError, TypeError, InvalidId, binascii.Error, OverflowError, AttributeError):
        raise ValueError(f"not a page cursor from find(): {cursor!r}") from None


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
