"""Capture: read what SQLAlchemy's instance state holds about a row and turn it into a change.

Mapper events (``before_insert`` / ``before_update`` / ``before_delete``) only note the
instance; its values are read in the session's ``after_flush``, when inserted rows have their
primary keys and history still shows the flush's changes. The one thing that cannot wait is
an old value SQLAlchemy never loaded (an expired or deferred attribute): it is read from the
database in the ``before_*`` event, on the flush's own connection, before the statement
changes it, in one SELECT for all the flush's rows of a table that need one. Loaded objects,
the common case, cost no query.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect, select, tuple_
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Mapper
from sqlalchemy.orm.base import NO_VALUE, PASSIVE_NO_INITIALIZE
from sqlalchemy.orm.state import InstanceState
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.types import CHAR, NCHAR, TypeDecorator, TypeEngine

from .changes import Action, RowChange, RowKey, same
from .normalise import column_value_to_bson

logger = logging.getLogger("audit_mongo")

CHUNK = 500  # rows per SELECT ... WHERE key IN (...)


@dataclass(frozen=True, slots=True)
class TableInfo:
    """What capture needs to know about one mapped class, computed once per mapper."""

    table_name: str
    entity: str | None  # the class name, for a class in an inheritance hierarchy
    tables: frozenset[Any]  # every table the class's rows span
    keys: tuple[str, ...]
    key_set: frozenset[str]
    pk_keys: tuple[str, ...]
    decorated_types: Mapping[str, TypeEngine[Any]]
    insert_generated: frozenset[str]  # values the database may compute on INSERT
    update_generated: frozenset[str]  # ... and on UPDATE (onupdate, server_onupdate)
    collections: tuple[str, ...]  # many-to-many relationships, recorded as related keys
    padded: tuple[bool, ...]  # which key columns are CHAR: compared without trailing blanks

    @classmethod
    def of(cls, mapper: Mapper[Any], exclude: Collection[str]) -> TableInfo:
        keys = tuple(p.key for p in mapper.column_attrs if p.key not in exclude)
        pk_keys = tuple(mapper.get_property_by_column(c).key for c in mapper.primary_key)
        decorated = {
            p.key: p.columns[0].type
            for p in mapper.column_attrs
            if isinstance(p.columns[0].type, TypeDecorator)
        }
        in_hierarchy = mapper.inherits is not None or mapper.polymorphic_on is not None
        entity = mapper.class_.__name__ if in_hierarchy and not mapper.concrete else None
        tables = frozenset(mapper.tables)
        on_insert = frozenset(
            p.key
            for p in mapper.column_attrs
            if p.key in keys and _computed_on_insert(p.columns[0])
        )
        on_update = frozenset(
            p.key
            for p in mapper.column_attrs
            if p.key in keys
            and (
                p.columns[0].onupdate
                or p.columns[0].server_onupdate
                or p.columns[0] is mapper.version_id_col
            )
        )
        collections = tuple(
            r.key
            for r in mapper.relationships
            if r.secondary is not None and not r.viewonly and r.key not in exclude
        )
        return cls(
            identity_table(mapper),
            entity,
            tables,
            keys,
            frozenset(keys),
            pk_keys,
            decorated,
            on_insert,
            on_update,
            collections,
            padded_flags(mapper.primary_key),
        )


def padded_flags(columns: Iterable[Any]) -> tuple[bool, ...]:
    return tuple(isinstance(c.type, (CHAR, NCHAR)) for c in columns)


def unpad(key: tuple[Any, ...], padded: tuple[bool, ...]) -> tuple[Any, ...]:
    """A key as the application spells it: a CHAR column's value without the blanks the
    database pads it with (SQL compares CHAR values that way too), so a row read back from
    the database and the same row created in the session are one row."""
    if not any(padded):
        return key
    return tuple(
        v.rstrip(" ") if flag and isinstance(v, str) else v
        for v, flag in zip(key, padded, strict=True)
    )


def _computed_on_insert(column: Any) -> bool:
    default = column.default
    return column.server_default is not None or bool(default and default.is_clause_element)


def identity_table(mapper: Mapper[Any]) -> str:
    """The table documents name for a mapped class's rows.

    A row of a joined- or single-table inheritance hierarchy is one row whatever class
    loads it, so its documents name the hierarchy's base table; a concrete-table class
    keeps its own table (and its own keys).
    """
    while mapper.inherits is not None and not mapper.concrete:
        mapper = mapper.inherits
    table = mapper.local_table
    return str(getattr(table, "fullname", None) or getattr(table, "name", None) or table)


@dataclass(slots=True)
class Noted:
    """An instance noted by a mapper event, waiting for the end of the flush."""

    info: TableInfo
    action: Action
    loaded: dict[str, Any] | None  # old values read from the database
    connection: Connection
    computed: tuple[str, ...] = ()  # keys whose committed value the database computes
    before: dict[str, Any] | None = None  # their old values: the flush expires them


def note(
    info: TableInfo,
    state: InstanceState[Any],
    action: Action,
    connection: Connection,
    reader: OldValueReader,
) -> Noted:
    """Note an instance a mapper event reports, reading the old values it lacks."""
    unknown = UNKNOWN_OLD_VALUES[action](info, state)
    loaded = reader.read(info, state, action, unknown, connection) if unknown else None
    computed = _computed_keys(info, state, action)
    noted = Noted(info, action, loaded, connection, computed)
    if action == "update" and computed:
        noted.before = _held_values(state, computed)
    return noted


def _computed_keys(info: TableInfo, state: InstanceState[Any], action: Action) -> tuple[str, ...]:
    """Keys the statement sets to a SQL expression, or the database fills in itself."""
    if action == "delete":
        return ()
    generated = info.insert_generated if action == "create" else info.update_generated
    values = state.dict
    expressions = [k for k in info.keys if isinstance(values.get(k), ClauseElement)]
    return tuple(dict.fromkeys([*expressions, *generated]))


def _held_values(state: InstanceState[Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The old values SQLAlchemy holds for ``keys`` (committed, or loaded and unchanged)."""
    committed, values, held = state.committed_state, state.dict, {}
    for k in keys:
        if k in committed:
            if committed[k] is not NO_VALUE:
                held[k] = committed[k]
        elif k in values and not isinstance(values[k], ClauseElement):
            held[k] = values[k]
    return held


def _unknown_before_update(info: TableInfo, state: InstanceState[Any]) -> list[str]:
    """Changed attributes whose old value SQLAlchemy never loaded (set while expired), and
    computed ones it does not hold."""
    committed, values = state.committed_state, state.dict
    unknown = [k for k, v in committed.items() if v is NO_VALUE and k in info.key_set]
    unknown.extend(k for k in info.update_generated if k not in committed and k not in values)
    return unknown


def _unknown_before_delete(info: TableInfo, state: InstanceState[Any]) -> list[str]:
    """Recorded attributes whose stored value SQLAlchemy does not hold."""
    committed, values = state.committed_state, state.dict
    return [
        k for k in info.keys if (committed[k] is NO_VALUE if k in committed else k not in values)
    ]


def _nothing_unknown(info: TableInfo, state: InstanceState[Any]) -> list[str]:
    return []  # a new row has no old values


UNKNOWN_OLD_VALUES = {
    "create": _nothing_unknown,
    "update": _unknown_before_update,
    "delete": _unknown_before_delete,
}


UNREADABLE: dict[str, str] = {"omitted": "could not be read"}


class OldValueReader:
    """Reads the old values SQLAlchemy never loaded, on the flush's connection.

    The first instance of a mapper that needs a read brings along every other instance of
    that mapper the flush will update (or delete) and that needs one too: one SELECT per
    mapper per flush (per ``CHUNK`` rows), not one per row. SQLAlchemy fires a mapper's
    ``before_*`` events for all its rows before it runs their statements, so every row read
    still holds its old values. A row whose key the database returns in another form (a
    padded CHAR, a citext) is read again on its own, by ``=``.

    On PostgreSQL each read runs in a savepoint: a failed read (a column the app may update but
    not select, say) is logged and its values recorded as ``UNREADABLE``, and on PostgreSQL
    it does not abort the application's transaction.
    """

    CHUNK = CHUNK

    def __init__(self) -> None:
        self._rows: dict[InstanceState[Any], dict[str, Any]] = {}

    def clear(self) -> None:
        self._rows.clear()

    def read(
        self,
        info: TableInfo,
        state: InstanceState[Any],
        action: Action,
        keys: list[str],
        connection: Connection,
    ) -> dict[str, Any]:
        if state not in self._rows:
            batch = {state: keys, **self._others_needing_a_read(info, state, action)}
            items = list(batch.items())
            size = self.CHUNK
            for start in range(0, len(items), size):
                self._read_chunk(info, state.mapper, dict(items[start : start + size]), connection)
        return self._rows.get(state, {})

    def _others_needing_a_read(
        self, info: TableInfo, state: InstanceState[Any], action: Action
    ) -> dict[InstanceState[Any], list[str]]:
        session = state.session
        if session is None:
            return {}
        objects = session.deleted if action == "delete" else session.dirty
        unknown = UNKNOWN_OLD_VALUES[action]
        others = {}
        for obj in objects:
            other: InstanceState[Any] = inspect(obj)
            if other is state or other.mapper is not state.mapper or other in self._rows:
                continue
            keys = unknown(info, other)
            if keys:
                others[other] = keys
        return others

    def _read_chunk(
        self,
        info: TableInfo,
        mapper: Mapper[Any],
        chunk: dict[InstanceState[Any], list[str]],
        connection: Connection,
    ) -> None:
        keys = list(dict.fromkeys(k for wanted in chunk.values() for k in wanted))
        try:
            with read_guard(connection):
                self._select(mapper, chunk, keys, connection)
        except Exception as exc:
            logger.error(
                "audit_mongo: could not read the old values of %d rows of %s (%s); they are "
                "recorded as %s",
                len(chunk),
                info.table_name,
                type(exc).__name__,
                UNREADABLE,
            )
            for state in chunk:
                self._rows.setdefault(state, dict.fromkeys(keys, UNREADABLE))

    def _select(
        self,
        mapper: Mapper[Any],
        chunk: dict[InstanceState[Any], list[str]],
        keys: list[str],
        connection: Connection,
    ) -> None:
        by_identity = {state.key[1]: state for state in chunk if state.key is not None}
        rows = read_rows(mapper, connection, list(by_identity), keys, self.CHUNK)
        for identity, state in by_identity.items():
            self._rows[state] = rows.get(identity, {})


# Dialects where a failed statement aborts the whole transaction: reads there go in a savepoint.
ABORTING_DIALECTS = frozenset(("postgresql", "cockroachdb"))


@contextmanager
def read_guard(connection: Connection) -> Iterator[None]:
    """Where a failed read would abort the application's transaction (PostgreSQL), run it in
    a savepoint; elsewhere (and outside a transaction block: AUTOCOMMIT) a failed read harms
    nothing, and a savepoint would fail while a caller's RETURNING cursor is open (SQLite).

    Every read gets its savepoint: what makes a read fail (column privileges) can change
    within a connection (``SET ROLE``).
    """
    if connection.dialect.name not in ABORTING_DIALECTS or in_autocommit(connection):
        yield
        return
    with connection.begin_nested():
        yield


def in_autocommit(connection: Connection) -> bool:
    """Whether each statement on ``connection`` commits by itself (AUTOCOMMIT isolation)."""
    level = connection.get_execution_options().get("isolation_level")
    if level is None:
        # create_engine(isolation_level=...) is kept on the dialect, with no public accessor.
        level = getattr(connection.engine.dialect, "_on_connect_isolation_level", None)
    return bool(level == "AUTOCOMMIT")


def collect(
    noted: Mapping[InstanceState[Any], Noted], dialect: Dialect | None
) -> Iterator[tuple[RowKey, RowChange]]:
    """The row changes of a finished flush, in the order the rows were noted.

    Values the database computed (SQL expressions, server defaults SQLAlchemy did not fetch,
    ``onupdate``) are read back first, in one SELECT per mapper. A row that cannot be read
    (a defect, never expected) is logged and skipped; the others are still recorded, and
    the application's flush goes on.
    """
    computed = read_computed(noted)
    for state, note in noted.items():
        try:
            change = _row_change(state, note, computed.get(state, {}), dialect)
        except Exception:
            logger.exception(
                "audit_mongo: a %s in %s could not be captured; that row change is not recorded",
                note.action,
                note.info.table_name,
            )
            continue
        if change is not None:
            yield change


def read_computed(
    noted: Mapping[InstanceState[Any], Noted],
) -> dict[InstanceState[Any], dict[str, Any]]:
    """The committed values of computed keys the flush left expired, per row."""
    wanted: dict[tuple[Mapper[Any], Connection], dict[InstanceState[Any], list[str]]] = {}
    for state, note in noted.items():
        missing = [k for k in note.computed if k not in state.dict]
        if missing:
            wanted.setdefault((state.mapper, note.connection), {})[state] = missing
    found: dict[InstanceState[Any], dict[str, Any]] = {}
    for (mapper, connection), rows in wanted.items():
        identities = {state: _current_identity(mapper, state) for state in rows}
        keys = list(dict.fromkeys(k for missing in rows.values() for k in missing))
        try:
            with read_guard(connection):
                read = read_rows(mapper, connection, list(identities.values()), keys)
        except Exception as exc:
            logger.error(
                "audit_mongo: could not read back computed values of %d rows of %s (%s); "
                "they are recorded as %s",
                len(rows),
                mapper.class_.__name__,
                type(exc).__name__,
                UNREADABLE,
            )
            read = {}
        for state, identity in identities.items():
            found[state] = read.get(identity) or dict.fromkeys(keys, UNREADABLE)
    return found


def _current_identity(mapper: Mapper[Any], state: InstanceState[Any]) -> tuple[Any, ...]:
    return tuple(state.dict.get(mapper.get_property_by_column(c).key) for c in mapper.primary_key)


def read_rows(
    mapper: Mapper[Any],
    connection: Connection,
    identities: list[tuple[Any, ...]],
    keys: list[str],
    chunk_size: int = CHUNK,
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """``keys`` of the rows with these primary keys; one SELECT (per ``CHUNK``), then one
    per row whose key the database spells differently (a padded CHAR, a citext)."""
    columns = [mapper.column_attrs[k].columns[0] for k in keys]
    pk = list(mapper.primary_key)
    query = select(*pk, *columns).select_from(mapper.persist_selectable)
    width, rows = len(pk), {}
    for start in range(0, len(identities), chunk_size):
        chunk = set(identities[start : start + chunk_size])
        where = pk[0].in_([i[0] for i in chunk]) if width == 1 else tuple_(*pk).in_(chunk)
        for row in connection.execute(query.where(where)):
            identity = tuple(row[:width])
            if identity in chunk:
                chunk.discard(identity)
                rows[identity] = dict(zip(keys, row[width:], strict=True))
        for identity in chunk:
            equal = [c == v for c, v in zip(pk, identity, strict=True)]
            found = connection.execute(query.where(*equal)).first()
            if found is not None:
                rows[identity] = dict(zip(keys, found[width:], strict=True))
    return rows


def _row_change(
    state: InstanceState[Any], note: Noted, computed: dict[str, Any], dialect: Dialect | None
) -> tuple[RowKey, RowChange] | None:
    info = note.info
    values = {**state.dict, **computed} if computed else state.dict
    if note.action == "create":
        raw_id = tuple(values.get(k) for k in info.pk_keys)
        created = _created(info, values, dialect)
        created.collections = collection_changes(info, state, dialect)
        return _keyed(info, raw_id, created, dialect)
    raw_id = state.key[1] if state.key is not None else ()
    old_raw = _old_values(info, state, note)
    if note.action == "delete":
        old = {k: _bson(info, k, v, dialect) for k, v in old_raw.items()}
        return _keyed(info, raw_id, RowChange(info.table_name, None, "delete", old, {}), dialect)
    changed = {k: v for k, v in old_raw.items() if k in values and not same(v, values[k])}
    collections = collection_changes(info, state, dialect)
    if not changed and not collections:
        return None
    old = {k: _bson(info, k, v, dialect) for k, v in changed.items()}
    new = {k: _bson(info, k, values[k], dialect) for k in changed}
    updated = RowChange(info.table_name, None, "update", old, new, collections=collections)
    keyed = _keyed(info, raw_id, updated, dialect)
    new_id = tuple(values.get(k) for k in info.pk_keys)
    return keyed if new_id == raw_id else _rekeyed(info, keyed, new_id, dialect)


def collection_changes(
    info: TableInfo, state: InstanceState[Any], dialect: Dialect | None
) -> dict[str, tuple[list[Any], list[Any]]]:
    """Keys of the rows added to and removed from each many-to-many collection."""
    found = {}
    for name in info.collections:
        history = state.get_history(name, PASSIVE_NO_INITIALIZE)
        added = [_related_key(obj, dialect) for obj in history.added or ()]
        deleted = [_related_key(obj, dialect) for obj in history.deleted or ()]
        if added or deleted:
            found[name] = (added, deleted)
    return found


def _related_key(obj: Any, dialect: Dialect | None) -> Any:
    related: InstanceState[Any] = inspect(obj)
    mapper = related.mapper
    # A row inserted by this flush has no identity key yet: its key is in its dict.
    raw = related.key[1] if related.key is not None else _current_identity(mapper, related)
    where = f"{identity_table(mapper)} key"
    values = [column_value_to_bson(v, None, dialect, where) for v in raw]
    return values[0] if len(values) == 1 else values


def _created(info: TableInfo, values: Mapping[str, Any], dialect: Dialect | None) -> RowChange:
    new = {k: _bson(info, k, v, dialect) for k in info.keys if (v := values.get(k)) is not None}
    return RowChange(info.table_name, None, "create", {}, new)


def _keyed(
    info: TableInfo, raw_id: tuple[Any, ...], change: RowChange, dialect: Dialect | None
) -> tuple[RowKey, RowChange]:
    raw_id = unpad(raw_id, info.padded)
    change.object_id = _object_id(info, raw_id, dialect)
    change.entity = info.entity
    return (info.table_name, raw_id), change


def _rekeyed(
    info: TableInfo,
    keyed: tuple[RowKey, RowChange],
    new_id: tuple[Any, ...],
    dialect: Dialect | None,
) -> tuple[RowKey, RowChange]:
    """An update of the primary key itself: the document names the new key and the old."""
    old_key, change = keyed
    new_id = unpad(new_id, info.padded)
    change.previous_object_id, change.previous_key = change.object_id, old_key
    change.object_id = _object_id(info, new_id, dialect)
    return (info.table_name, new_id), change


def _old_values(info: TableInfo, state: InstanceState[Any], note: Noted) -> dict[str, Any]:
    committed, values = state.committed_state, state.dict
    loaded, before = note.loaded or {}, note.before or {}
    if note.action == "delete":
        keys: Iterable[str] = info.keys
    else:
        keys = dict.fromkeys([*(k for k in committed if k in info.key_set), *note.computed])
    old: dict[str, Any] = {}
    for k in keys:
        if k in before:
            old[k] = before[k]
        elif k in loaded:
            old[k] = loaded[k]
        elif committed.get(k, NO_VALUE) is not NO_VALUE:
            old[k] = committed[k]
        elif k in values and not isinstance(values[k], ClauseElement):
            old[k] = values[k]
        elif note.action == "delete":
            old[k] = None
    return old


def _bson(info: TableInfo, key: str, value: Any, dialect: Dialect | None) -> Any:
    if isinstance(value, ClauseElement):  # a SQL expression whose result could not be read
        return UNREADABLE
    column_type = info.decorated_types.get(key)
    return column_value_to_bson(value, column_type, dialect, f"{info.table_name}.{key}")


def _object_id(info: TableInfo, raw_id: tuple[Any, ...], dialect: Dialect | None) -> Any:
    """A primary key as stored: the value itself, or a list for a composite key."""
    values = [_bson(info, k, v, dialect) for k, v in zip(info.pk_keys, raw_id, strict=True)]
    return values[0] if len(values) == 1 else values
