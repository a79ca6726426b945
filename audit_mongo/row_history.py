"""One row's entries across time, though its key may have had other rows before or after it.

Under a key, a row's history begins at its create and ends at its delete; when the log began
after the row existed, it ends (going back) at an earlier row's delete, or where an earlier
row left the key by an update of its primary key (found through ``previous_object_id``,
which names the key a row left). An update that changed the row's own key continues the
history under the key it had.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

from bson import ObjectId

from .catalog import TableModel
from .entry import AuditEntry, utc
from .query import Candidates, Query
from .state import state_at

Read = Callable[[Query, int], Iterator[dict[str, Any]]]
Position = tuple[dt.datetime, Any]

CHUNK = 500
LAST_ID = ObjectId("f" * 24)  # sorts after every _id: a position at the end of a millisecond
MILLISECOND = dt.timedelta(milliseconds=1)
NO_FLOOR: Position = (dt.datetime.min.replace(tzinfo=dt.timezone.utc), ObjectId("0" * 24))


def position(entry: AuditEntry) -> Position:
    return entry.created_at, entry.id


def scalar_fields(name: str, value: Any) -> frozenset[str]:
    """``{name}`` when ``value`` is a single value: then an array (a composite key holding
    it) must not match."""
    composite = isinstance(value, list) and not isinstance(value, Candidates)
    return frozenset() if composite else frozenset((name,))


class RowHistory:
    """The entries of the rows of one table, read through ``read`` (which leaves voided
    documents out), with values typed by ``model`` when known."""

    def __init__(self, read: Read, table: str, model: TableModel | None) -> None:
        self._read = read
        self._table = table
        self._model = model

    def walk(
        self,
        key: Any,
        query: Query,
        chunk: int | None = None,
        *,
        start: Position | None = None,
        inclusive: bool = False,
        from_delete: bool = False,
    ) -> Iterator[AuditEntry]:
        """The row's entries that ``query`` wants, newest first, from the newest entry under
        ``key`` (or from ``start``, that entry included if ``inclusive``; or from the newest
        delete when ``from_delete``: a deleted object, whose key a newer row may hold)."""
        query.keep_boundaries = True
        chunk = chunk or CHUNK
        seen = False  # an entry of the row was met: an older delete ended another row
        skipping = from_delete
        while key is not None:
            under, floor = key, None
            query.equal = {"table_name": self._table, "object_id": key}
            query.scalar = scalar_fields("object_id", key)
            query.after, query.inclusive, key = start, inclusive, None
            for document in self._read(query, chunk):
                entry = AuditEntry.from_document(document, self._model)
                if skipping and entry.action != "delete":
                    continue
                skipping = False
                if floor is None:  # where another row left this key before the row's entry
                    floor = self.departure(under, before=position(entry)) or NO_FLOOR
                if position(entry) <= floor:
                    return  # the row that left this key
                if seen and entry.action == "delete":
                    return
                seen = True
                if query.wants(entry):
                    yield entry
                if entry.action == "create":
                    return
                if document.get("previous_object_id") is not None:
                    key, start = document["previous_object_id"], position(entry)
                    inclusive = False
                    break

    def departure(self, key: Any, before: Position | None) -> Position | None:
        """Where the newest row to leave ``key`` (before ``before``) left it."""
        query = Query(
            equal={"table_name": self._table, "previous_object_id": key},
            scalar=scalar_fields("previous_object_id", key),
            after=before,
        )
        document = next(self._read(query, 1), None)
        return (utc(document["created_at"]), document["_id"]) if document else None

    def state_at(self, key: Any, moment: dt.datetime) -> dict[str, Any] | None:
        """The values of the row that held ``key`` at ``moment`` or, when none did, of the
        row an update of its primary key brought to ``key`` later (see ``state``)."""
        holder = self._holder(key, moment)
        left = self.departure(key, before=(moment, LAST_ID))
        if left is not None and (holder is None or left > position(holder)):
            return None  # the key's last holder had left it by then
        if holder is not None and holder.action == "delete":
            return None
        if holder is None:
            arrival = self._arrival(key, moment)
            if arrival is not None:  # a row came to the key later: answer for it, as it was
                entries = self.walk(key, Query(), start=position(arrival), inclusive=True)
                return state_at(list(entries), moment, self._model)
            before: list[AuditEntry] = []
        else:
            before = list(self.walk(key, Query(), start=position(holder), inclusive=True))
        later = list(self._later(key, moment))
        return state_at([*reversed(later), *before], moment, self._model)

    def _arrival(self, key: Any, moment: dt.datetime) -> AuditEntry | None:
        """The first entry under ``key`` after ``moment`` if it is an update that moved a
        row there from another key."""
        query = Query(
            equal={"table_name": self._table, "object_id": key},
            scalar=scalar_fields("object_id", key),
            since=moment + MILLISECOND,
            newest_first=False,
        )
        document = next(self._read(query, 1), None)
        if document is None or document.get("previous_object_id") is None:
            return None
        return AuditEntry.from_document(document, self._model)

    def _holder(self, key: Any, moment: dt.datetime) -> AuditEntry | None:
        """The newest entry under ``key`` at or before ``moment``."""
        query = Query(
            equal={"table_name": self._table, "object_id": key}, until=moment + MILLISECOND
        )
        query.scalar = scalar_fields("object_id", key)
        document = next(self._read(query, 1), None)
        return AuditEntry.from_document(document, self._model) if document else None

    def _later(self, key: Any, moment: dt.datetime) -> Iterator[AuditEntry]:
        """The entries of the row holding ``key`` after ``moment``, oldest first, up to its
        delete, or up to the update that moved it to another key (included: it holds the
        old values of what it changed)."""
        since = moment + MILLISECOND
        leaving = self._first_departure(key, since)
        query = Query(
            equal={"table_name": self._table, "object_id": key},
            scalar=scalar_fields("object_id", key),
            since=since,
            newest_first=False,
        )
        for document in self._read(query, CHUNK):
            entry = AuditEntry.from_document(document, self._model)
            if leaving is not None and position(entry) > position(leaving):
                break
            if entry.action == "create" or entry.previous_object_id is not None:
                return  # a row came to the key then: it was free until then
            yield entry
            if entry.action == "delete":
                return
        if leaving is not None:
            yield leaving

    def _first_departure(self, key: Any, since: dt.datetime) -> AuditEntry | None:
        query = Query(
            equal={"table_name": self._table, "previous_object_id": key},
            scalar=scalar_fields("previous_object_id", key),
            since=since,
            newest_first=False,
        )
        document = next(self._read(query, 1), None)
        return AuditEntry.from_document(document, self._model) if document else None
