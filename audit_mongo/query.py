"""A query on the audit collection: the Mongo filter and sort, the index from
``indexes.INDEXES`` that serves it, and the cursor of a position in its results.

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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from bson.errors import InvalidId

from .inputs import ACTIONS

if TYPE_CHECKING:
    from .entry import AuditEntry

# Equality fields, most selective first: a query is served by the index of the first one
# it compares (see indexes.INDEXES).
INDEX_BY_FIELDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("voids",), "audit_voids"),  # the reader's look-up of voided documents
    (("transaction_id",), "audit_transaction_order"),
    (("context.request_id",), "audit_request"),
    (("table_name", "object_id"), "audit_row_history"),
    (("table_name", "previous_object_id"), "audit_row_departures"),
    (("current_user_id",), "audit_user_history"),
    (("table_name",), "audit_table_history"),
    ((), "audit_created_at"),
)

# Fields of indexes that hold only documents having the field (partialFilterExpression).
PARTIALLY_INDEXED = frozenset(("context.request_id", "previous_object_id"))

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
    scalar: frozenset[str] = frozenset()  # fields compared to a single value, never an array
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    actions: tuple[str, ...] | None = None
    fields: tuple[str, ...] | None = None
    entities: list[str] | None = None
    newest_first: bool = True
    after: tuple[dt.datetime, ObjectId] | None = None
    inclusive: bool = False  # the entry at ``after`` itself too
    # A row walk: also find the row's creates, deletes and key changes (ROW_BOUNDARIES),
    # with ``until`` checked by ``wants()`` for them.
    keep_boundaries: bool = False

    def sort(self) -> list[tuple[str, int]]:
        direction = -1 if self.newest_first else 1
        return [("created_at", direction), ("_id", direction)]

    def filter(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, value in self.equal.items():
            found[name] = {"$in": value} if isinstance(value, Candidates) else {"$eq": value}
            if name in PARTIALLY_INDEXED:  # what lets MongoDB use the partial index
                found[name]["$exists"] = True
            if name in self.scalar:  # a composite key is an array: 7 would match [7, "a"]
                found[name]["$not"] = {"$type": "array"}
        created = self._time_range()
        if created:
            found["created_at"] = created
        if self.after is not None:
            moment, last = self.after
            # The same millisecond as the last entry: only those past it by _id.
            if self.newest_first:
                seen = "$gt" if self.inclusive else "$gte"
            else:
                seen = "$lt" if self.inclusive else "$lte"
            found["$nor"] = [{"created_at": moment, "_id": {seen: last}}]
        found.update(self._narrowing())
        if self.entities is not None and not self.keep_boundaries:
            found["entity"] = {"$in": self.entities}
        return found

    def wants(self, entry: AuditEntry) -> bool:
        """Whether an entry found with ``keep_boundaries`` is one the query asked for."""
        if self.actions is not None and entry.action not in self.actions:
            return False
        if self.entities is not None and entry.entity not in self.entities:
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
