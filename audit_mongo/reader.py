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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any, NamedTuple

from sqlalchemy import inspect
from sqlalchemy.orm.state import InstanceState

from .catalog import ModelCatalog, TableModel
from .entry import AuditEntry
from .erase import Erasure, Redaction, erase
from .inputs import (
    check_actions,
    check_field,
    check_fields,
    check_id,
    check_limit,
    check_name,
    check_order,
    check_user_id,
    integer_text,
    time_bound,
)
from .query import Candidates, Query, decode_cursor, encode_cursor
from .row_history import RowHistory, scalar_fields
from .signing import SigningKeys
from .verify import Head, Verification, verify

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


class TableRef(NamedTuple):
    """A table named by a class or a name: its model if known, and for a subclass in an
    inheritance hierarchy, the class and the entities (class names) its rows may have."""

    name: str
    model: TableModel | None
    entity: str | None = None
    entities: list[str] | None = None


class AuditReader:
    """Queries on an audit collection.

    :param collection: the pymongo (or mongomock) ``Collection`` the log writes.
    :param signing_keys: the secrets documents were signed with, by name, for ``verify()``
        and ``erase()`` (see ``AuditLog``).
    :param signing_key_id: which of them signs erasures, when there are several.
    :param models: mapped classes or declarative bases. With them, table and field names
        are checked (a misspelling raises ``ValueError`` instead of finding nothing), ids
        given as text are converted to the key's type and values come back as the model's
        Python types; without them, values come back as stored.
    """

    def __init__(
        self,
        collection: Any,
        *,
        models: Iterable[type] = (),
        signing_keys: Mapping[str, bytes | str] | None = None,
        signing_key_id: str | None = None,
    ) -> None:
        self.collection = collection
        self.signing_keys = SigningKeys(signing_keys, signing_key_id, signs=False)
        self._catalog = self._model_catalog(models)

    def _model_catalog(self, models: Iterable[type]) -> ModelCatalog:
        return ModelCatalog.of_models(models)

    # -- one row -------------------------------------------------------------------

    def history(self, obj: Any, *, limit: int | None = None) -> Iterator[AuditEntry]:
        """A loaded (or deleted) object's entries, newest first, across primary key changes;
        a row that had its key before (deleted, or moved to another key) is not part of it,
        nor, for a deleted object, a newer row that took its key."""
        model, key, deleted = self._object(obj)
        size = check_limit(limit)
        walk = self._rows(model.table_name, model).walk(
            key, Query(), _chunk(size), from_delete=deleted
        )
        return islice(walk, size)

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
        table = self._table(model)
        query = Query(
            actions=check_actions(actions),
            since=time_bound(since, "since"),
            until=time_bound(until, "until"),
            entities=table.entities,
        )
        size = check_limit(limit)
        walk = self._rows(table.name, table.model).walk(
            self._key(table, object_id), query, _chunk(size)
        )
        return islice(walk, size)

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
        """The newest create or update that set ``attribute`` of ``obj``."""
        model, key, deleted = self._object(obj)
        model.check_field(check_field(attribute), type(obj).__name__)
        rows = self._rows(model.table_name, model)
        changes = Query(fields=(attribute,), actions=("create", "update"))  # not a delete
        walk = rows.walk(key, changes, 1, from_delete=deleted)
        return next(walk, None)

    def state_at(
        self, model: type | str, object_id: Any, when: dt.datetime
    ) -> dict[str, Any] | None:
        """The column values of the row that held the key at ``when`` (deleted rows
        included): None before its create, after its delete, or after it moved to another
        key. If the log began after the row existed, only the attributes the log knows at
        ``when`` are present (see the README)."""
        table = self._table(model)
        key = self._key(table, object_id)
        moment = time_bound(when, "when", round_up=False)  # entries up to it, inclusive
        if moment is None:
            raise ValueError("when is required")
        return self._rows(table.name, table.model).state_at(key, moment)

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
        self._match_user(query, user_id)
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
            key = query.equal["object_id"] = self._key(self._table(table), object_id)
            query.scalar |= scalar_fields("object_id", key)
        if user_id is not ANYONE:
            self._match_user(query, user_id)
        if after is not None:
            query.after = decode_cursor(after)
        entries = list(self._entries(query, size + 1))
        if len(entries) <= size:
            return Page(entries, None)
        last = entries[size - 1]
        return Page(entries[:size], encode_cursor(last.created_at, last.id))

    # -- building and running queries ------------------------------------------------

    # -- evidence ----------------------------------------------------------------------

    def verify(
        self, *, since: dt.datetime | None = None, heads: Mapping[str, Head] | None = None
    ) -> Verification:
        """Check that no document was changed, removed or forged since it was written:
        the problems found, an empty list when the log is intact. ``since`` checks only
        documents created then or later (a log with retention: newer than its window);
        ``heads``, the ``heads`` of an earlier run, also finds chains cut short since.

        ::

            result = audit.verify()
            assert result == [], "\n".join(map(str, result))
            save(result.heads)   # for the next run: verify(heads=...)
        """
        bound = time_bound(since, "since") if since is not None else None
        return verify(self.collection, self.signing_keys, since=bound, heads=heads)

    def erase(
        self, model: type | str, object_id: Any, *, fields: str | Iterable[str] | None = None
    ) -> Erasure:
        """Replace the values recorded for one row (``fields`` only, when given) by
        ``{"erased": true}``, in its history as ``for_object`` finds it (across primary key
        changes) and in void documents, keeping ``verify()`` passing; needs update privileges on the
        collection. Documents that do not verify are left alone and listed in ``refused``.

        ::

            audit.erase(User, 7, fields=["email", "phone"])   # GDPR erasure of user 7
        """
        self.signing_keys.check_signer()
        table = self._table(model)
        names = check_fields(fields)
        if names is not None and table.model is not None:
            for name in names:
                table.model.check_field(name)
        key = self._key(table, object_id)
        walked = [entry.id for entry in self.for_object(model, key)]  # back across key changes
        here = {"table_name": table.name, "object_id": key}  # voided documents too
        query = {"$or": [{"_id": {"$in": walked}}, here]}
        return erase(self.collection, self.signing_keys, query, Redaction(fields=names))

    def erase_actor(self, user_id: Any, *, context: str | Iterable[str] | None = None) -> Erasure:
        """Replace the ``context`` values (those named, or all) of every entry ``user_id``
        made by ``{"erased": true}``: what the log says of a person as the one who acted
        (address, browser...), beside ``erase()`` of the rows that are about them.

        ::

            audit.erase_actor(7, context=["remote_addr", "user_agent"])
        """
        self.signing_keys.check_signer()
        if user_id is None:
            raise ValueError("erase_actor() needs a user id (None would be everyone unknown)")
        chosen = None if context is None else check_fields(context)
        query = {"current_user_id": check_user_id(user_id)}
        return erase(self.collection, self.signing_keys, query, Redaction((), chosen))

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
            ref = self._table(table)
            query.equal["table_name"] = ref.name
            query.entities = ref.entities
            if ref.model is not None:
                for field in query.fields or ():
                    ref.model.check_field(field, ref.entity)
        return query

    def _table(self, model: type | str) -> TableRef:
        if isinstance(model, str):
            name = check_name(model, "table name")
            return TableRef(name, self._catalog.table(name))
        known, mapper = self._catalog.of_class(model)
        entities = known.entities(mapper)
        entity = mapper.class_.__name__ if entities is not None else None
        return TableRef(known.table_name, known, entity, entities)

    def _key(self, table: TableRef, object_id: Any) -> Any:
        """A key as stored: converted to the key's type when the model is known."""
        if table.model is not None:
            return table.model.stored_key(object_id)
        return _any_form(object_id)

    def _object(self, obj: Any) -> tuple[TableModel, Any, bool]:
        """A mapped object's model, its key as stored, and whether it was deleted."""
        state = inspect(obj, raiseerr=False)
        if not isinstance(state, InstanceState):
            raise TypeError(f"a {type(obj).__qualname__} is not an instance of a mapped class")
        if state.identity is None:
            raise ValueError(
                f"this {type(obj).__qualname__} has no primary key yet: flush it before asking "
                "its history"
            )
        model = self._catalog.model(state.mapper)
        # The object's own key: no input to check (a key may well start with "$").
        return model, model.stored_key(state.identity, checked=False), state.was_deleted

    def _match_user(self, query: Query, user_id: Any) -> None:
        forms = query.equal["current_user_id"] = _user_forms(user_id)
        if forms is not None:
            query.scalar |= scalar_fields("current_user_id", forms)

    def _rows(self, table: str, model: TableModel | None) -> RowHistory:
        return RowHistory(self._documents, table, model)

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
    number = integer_text(stored) if isinstance(stored, str) else None
    return stored if number is None else Candidates([number, stored])


def _chunk(limit: int | None) -> int:
    return CHUNK if limit is None else min(CHUNK, limit)
