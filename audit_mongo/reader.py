"""``AuditReader``: the questions people ask an audit log, without writing Mongo queries.

::

    reader = AuditReader(db.user_logs, models=[Base])   # AuditLog has the same methods
    for entry in reader.history(client):                 # newest first
        print(entry.action, entry.user_id, entry.changes["name"].new)

Every method streams from one index scan (see ``query``); void documents and the
documents they void (strict mode) are left out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm.state import InstanceState

from .catalog import ModelCatalog, TableModel
from .entry import AuditEntry
from .query import (
    Candidates,
    Query,
    check_actions,
    check_field,
    check_fields,
    check_id,
    check_limit,
    check_name,
    check_order,
    check_user_id,
    decode_cursor,
    encode_cursor,
    time_bound,
)
from .state import state_at

CHUNK = 500  # documents read (and checked for voids) at a time
PAGE_LIMIT = 10_000  # the largest page find() returns


class _Anyone:
    def __repr__(self) -> str:
        return "ANYONE"


ANYONE: Any = _Anyone()  # find(user_id=...) left out: any user, or nobody known


@dataclass(frozen=True)
class Page:
    """One page of ``find()``: ``entries`` and the cursor of the next page (None: last)."""

    entries: list[AuditEntry]
    next_cursor: str | None

    def __iter__(self) -> Iterator[AuditEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


class AuditReader:
    """Queries on an audit collection.

    :param collection: the pymongo (or mongomock) ``Collection`` the log writes.
    :param models: mapped classes or declarative bases. With them, table and field names
        are checked (a misspelling raises ``ValueError`` instead of finding nothing), ids
        given as text are converted to the key's type and values come back as the model's
        Python types; without them, values come back as stored.
    """

    def __init__(self, collection: Any, *, models: Iterable[type] = ()) -> None:
        self.collection = collection
        self._catalog = ModelCatalog.of_models(models)

    # -- one row -------------------------------------------------------------------

    def history(self, obj: Any, *, limit: int | None = None) -> Iterator[AuditEntry]:
        """A loaded (or deleted) object's entries, newest first, across primary key changes;
        a row that had its key before (deleted, or moved to another key) is not part of it."""
        model, key = self._object(obj)
        return self._row(model.table_name, key, model, Query(), check_limit(limit))

    def for_object(
        self,
        model: type | str,
        object_id: Any,
        *,
        actions: str | Iterable[str] | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int | None = None,
    ) -> Iterator[AuditEntry]:
        """A row's entries, newest first, as ``history()`` gives them for the row that holds
        the key (or held it last); ``model`` is a mapped class or a table name and
        ``object_id`` its key (a tuple for a composite key), or the key's text."""
        table, known, _ = self._table(model)
        key = known.stored_key(object_id) if known is not None else _any_form(object_id)
        query = Query(
            actions=check_actions(actions),
            since=time_bound(since, "since"),
            until=time_bound(until, "until"),
        )
        return self._row(table, key, known, query, check_limit(limit))

    def updated_at(self, obj: Any, attribute: str) -> dt.datetime | None:
        """When ``attribute`` of ``obj`` last changed (its create included); None if never."""
        entry = self.last_change(obj, attribute)
        return entry.created_at if entry is not None else None

    def changed_by(self, obj: Any, attribute: str) -> Any:
        """Who made the last change to ``attribute`` of ``obj`` (None if never changed, or
        if nobody was known)."""
        entry = self.last_change(obj, attribute)
        return entry.user_id if entry is not None else None

    def last_change(self, obj: Any, attribute: str) -> AuditEntry | None:
        """The newest entry that changed ``attribute`` of ``obj``."""
        model, key = self._object(obj)
        model.check_field(check_field(attribute))
        query = Query(fields=(attribute,))
        return next(self._row(model.table_name, key, model, query, 1), None)

    def state_at(
        self, model: type | str, object_id: Any, when: dt.datetime
    ) -> dict[str, Any] | None:
        """The column values of the row that held the key at ``when`` (deleted rows
        included): None before its create and after its delete. A row whose key was changed
        to ``object_id`` is followed back to its earlier key. If the log began after the row
        existed, only the attributes the log knows at ``when`` are present (see the README)."""
        table, known, _ = self._table(model)
        key = known.stored_key(object_id) if known is not None else _any_form(object_id)
        moment = time_bound(when, "when", round_up=False)  # entries up to it, inclusive
        if moment is None:
            raise ValueError("when is required")
        entries = list(self._row_entries(table, key, known, Query(), whole_key=True))
        return state_at(entries, moment, known)

    # -- many rows -----------------------------------------------------------------

    def by_user(
        self,
        user_id: Any,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        table: type | str | None = None,
        actions: str | Iterable[str] | None = None,
        limit: int | None = None,
    ) -> Iterator[AuditEntry]:
        """What one user did, newest first (``None``: changes nobody was known for). Text
        that reads as an integer matches both forms: ``"42"`` finds ``42`` and ``"42"``."""
        query = self._query(table=table, actions=actions, since=since, until=until)
        query.equal["current_user_id"] = _user_forms(user_id)
        return self._entries(query, check_limit(limit))

    def for_table(
        self,
        model: type | str,
        *,
        actions: str | Iterable[str] | None = None,
        fields: str | Iterable[str] | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int | None = None,
    ) -> Iterator[AuditEntry]:
        """A table's entries, newest first; ``fields``: only entries changing one of them.
        For a subclass in an inheritance hierarchy, only rows of that class."""
        query = self._query(table=model, actions=actions, fields=fields, since=since, until=until)
        return self._entries(query, check_limit(limit))

    def for_transaction(self, transaction_id: str) -> Iterator[AuditEntry]:
        """Everything one commit did, across tables, in the order it was done."""
        query = Query(newest_first=False)
        query.equal["transaction_id"] = check_name(transaction_id, "transaction id")
        return self._entries(query, None)

    def for_request(self, request_id: str) -> Iterator[AuditEntry]:
        """Everything the commits of one request did (``context.request_id``), in order."""
        query = Query(newest_first=False)
        query.equal["context.request_id"] = check_id(request_id, "request id")
        return self._entries(query, None)

    def find(
        self,
        *,
        table: type | str | None = None,
        object_id: Any = None,
        user_id: Any = ANYONE,
        actions: str | Iterable[str] | None = None,
        fields: str | Iterable[str] | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = 100,
        after: str | None = None,
        order: str = "newest",
    ) -> Page:
        """One page of the entries matching every filter given; pass ``page.next_cursor``
        as ``after`` for the next. Pages continue from a position, not an offset, so entries
        committed while paging never repeat or shift an entry (newest first, they are
        before page one; oldest first, they come last)."""
        size = check_limit(limit, PAGE_LIMIT)
        if size is None:
            raise ValueError(f"find() returns pages: limit must be 1 to {PAGE_LIMIT}")
        query = self._query(
            table=table, actions=actions, fields=fields, since=since, until=until, order=order
        )
        if object_id is not None:
            if table is None:
                raise ValueError("object_id needs a table")
            known = self._table(table)[1]
            query.equal["object_id"] = (
                known.stored_key(object_id) if known is not None else _any_form(object_id)
            )
        if user_id is not ANYONE:
            query.equal["current_user_id"] = _user_forms(user_id)
        if after is not None:
            query.after = decode_cursor(after)
        entries = list(self._entries(query, size + 1))
        if len(entries) <= size:
            return Page(entries, None)
        last = entries[size - 1]
        return Page(entries[:size], encode_cursor(last.created_at, last.id))

    # -- building and running queries ------------------------------------------------

    def _query(
        self,
        *,
        table: type | str | None = None,
        actions: str | Iterable[str] | None = None,
        fields: str | Iterable[str] | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        order: str = "newest",
    ) -> Query:
        query = Query(
            actions=check_actions(actions),
            fields=check_fields(fields),
            since=time_bound(since, "since"),
            until=time_bound(until, "until"),
            newest_first=check_order(order),
        )
        if table is not None:
            name, known, entities = self._table(table)
            query.equal["table_name"] = name
            query.entities = entities
            if known is not None:
                for field in query.fields or ():
                    known.check_field(field)
        return query

    def _table(self, model: type | str) -> tuple[str, TableModel | None, list[str] | None]:
        """A table's name, its model if known, and the entities a subclass stands for."""
        if isinstance(model, str):
            name = check_name(model, "table name")
            return name, self._catalog.table(name), None
        known, mapper = self._catalog.of_class(model)
        return known.table_name, known, known.entities(mapper)

    def _object(self, obj: Any) -> tuple[TableModel, Any]:
        state = inspect(obj, raiseerr=False)
        if not isinstance(state, InstanceState):
            raise TypeError(f"{obj!r} is not an instance of a mapped class")
        if state.identity is None:
            raise ValueError(f"{obj!r} has no primary key yet: flush it before asking its history")
        model = self._catalog.model(state.mapper)
        # The object's own key: no input to check (a key may well start with "$").
        return model, model.stored_key(state.identity, checked=False)

    def _row(
        self,
        table: str,
        key: Any,
        model: TableModel | None,
        query: Query,
        limit: int | None,
    ) -> Iterator[AuditEntry]:
        """A row's entries newest first, following primary key changes back: the entries
        before an update that changed the key are under the key it had."""
        return islice(self._row_entries(table, key, model, query), limit)

    def _row_entries(
        self,
        table: str,
        key: Any,
        model: TableModel | None,
        query: Query,
        *,
        whole_key: bool = False,
    ) -> Iterator[AuditEntry]:
        """One row's entries, newest first, and not those of another row that had the key
        before or took it: the walk ends at the row's create, or before an earlier row's
        delete, and goes on under the old key at an update that changed the key.
        ``whole_key``: every entry under ``key`` itself, earlier rows included
        (``state_at``)."""
        query.equal = {"table_name": table, "object_id": key}
        query.keep_boundaries = True
        bounded = not whole_key
        seen = False  # an entry of the row was met: an older delete ended another row
        while True:
            for document in self._documents(query, CHUNK):
                entry = AuditEntry.from_document(document, model)
                if bounded and seen and entry.action == "delete":
                    return
                seen = True
                if query.wants(entry):
                    yield entry
                if bounded and entry.action == "create":
                    return
                if document.get("previous_object_id") is not None:
                    bounded = True
                    query.equal["object_id"] = document["previous_object_id"]
                    query.after = (entry.created_at, entry.id)
                    break
            else:
                return

    def _entries(self, query: Query, limit: int | None) -> Iterator[AuditEntry]:
        chunk = CHUNK if limit is None else min(CHUNK, limit)
        models: dict[str, TableModel | None] = {}
        for document in islice(self._documents(query, chunk), limit):
            name = document.get("table_name", "")
            if name not in models:
                models[name] = self._catalog.lookup(name)
            yield AuditEntry.from_document(document, models[name])

    def _documents(self, query: Query, chunk: int) -> Iterator[dict[str, Any]]:
        cursor = self.collection.find(query.filter(), sort=query.sort(), batch_size=chunk)
        try:
            while batch := list(islice(cursor, chunk)):
                voided = self._voided([d["_id"] for d in batch])
                yield from (d for d in batch if d["_id"] not in voided)
        finally:
            cursor.close()

    def _voided(self, ids: list[Any]) -> set[Any]:
        """Which of ``ids`` a void document (strict mode: its commit failed) cancels."""
        found = self.collection.find(
            {"voids": {"$in": ids, "$exists": True}}, {"voids": 1, "_id": 0}
        )
        return {d["voids"] for d in found}


def _user_forms(user_id: Any) -> Any:
    """A user id as stored. The log does not know the user model: text that reads as an
    integer (a URL parameter) matches either form, as a key of unknown type does."""
    return None if check_user_id(user_id) is None else _any_form(user_id)


def _any_form(object_id: Any) -> Any:
    """A key whose type is unknown: text that reads as an integer matches either form."""
    stored = check_id(object_id)
    if isinstance(stored, str) and _is_integer(stored):
        return Candidates([int(stored), stored])
    return stored


def _is_integer(text: str) -> bool:
    body = text[1:] if text[:1] == "-" else text
    return body.isdigit() and body.isascii() and len(body) < 19
