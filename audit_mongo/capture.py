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
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect, select, tuple_
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Mapper
from sqlalchemy.orm.base import NO_VALUE
from sqlalchemy.orm.state import InstanceState
from sqlalchemy.types import TypeDecorator, TypeEngine

from .changes import Action, RowChange, RowKey, same
from .normalise import column_value_to_bson

logger = logging.getLogger("audit_mongo")


@dataclass(frozen=True, slots=True)
class TableInfo:
    """What capture needs to know about one mapped class, computed once per mapper."""

    table_name: str
    keys: tuple[str, ...]
    key_set: frozenset[str]
    pk_keys: tuple[str, ...]
    decorated_types: Mapping[str, TypeEngine[Any]]

    @classmethod
    def of(cls, mapper: Mapper[Any], exclude: Collection[str]) -> TableInfo:
        keys = tuple(p.key for p in mapper.column_attrs if p.key not in exclude)
        pk_keys = tuple(mapper.get_property_by_column(c).key for c in mapper.primary_key)
        decorated = {
            p.key: p.columns[0].type
            for p in mapper.column_attrs
            if isinstance(p.columns[0].type, TypeDecorator)
        }
        table = mapper.local_table
        name = getattr(table, "fullname", None) or getattr(table, "name", None) or str(table)
        return cls(name, keys, frozenset(keys), pk_keys, decorated)


@dataclass(slots=True)
class Noted:
    """An instance noted by a mapper event, waiting for the end of the flush."""

    info: TableInfo
    action: Action
    loaded: dict[str, Any] | None  # old values read from the database


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
    return Noted(info, action, loaded)


def _unknown_before_update(info: TableInfo, state: InstanceState[Any]) -> list[str]:
    """Changed attributes whose old value SQLAlchemy never loaded (set while expired)."""
    return [k for k, v in state.committed_state.items() if v is NO_VALUE and k in info.key_set]


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

    Each read runs in a savepoint: a failed read (a column the application may update but
    not select, say) is logged and its values recorded as ``UNREADABLE``, and on PostgreSQL
    it does not abort the application's transaction.
    """

    CHUNK = 500

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
            for start in range(0, len(items), self.CHUNK):
                self._read_chunk(
                    info, state.mapper, dict(items[start : start + self.CHUNK]), connection
                )
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
            with connection.begin_nested():
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
        columns = [mapper.column_attrs[k].columns[0] for k in keys]
        pk = list(mapper.primary_key)
        by_identity = {state.key[1]: state for state in chunk if state.key is not None}
        identities = list(by_identity)
        where = (
            pk[0].in_([i[0] for i in identities]) if len(pk) == 1 else tuple_(*pk).in_(identities)
        )
        query = select(*pk, *columns).select_from(mapper.persist_selectable)
        for row in connection.execute(query.where(where)):
            state = by_identity.pop(tuple(row[: len(pk)]), None)
            if state is not None:
                self._rows[state] = dict(zip(keys, row[len(pk) :], strict=True))
        for identity, state in by_identity.items():  # keys the database spells differently
            equal = [c == v for c, v in zip(pk, identity, strict=True)]
            found = connection.execute(query.where(*equal)).first()
            self._rows[state] = dict(zip(keys, found[len(pk) :], strict=True)) if found else {}


def collect(
    noted: Mapping[InstanceState[Any], Noted], dialect: Dialect | None
) -> Iterator[tuple[RowKey, RowChange]]:
    """The row changes of a finished flush, in the order the rows were noted.

    A row that cannot be read (a defect, never expected) is logged and skipped; the others
    are still recorded, and the application's flush goes on.
    """
    for state, note in noted.items():
        try:
            change = _row_change(state, note, dialect)
        except Exception:
            logger.exception(
                "audit_mongo: a %s in %s could not be captured; that row change is not recorded",
                note.action,
                note.info.table_name,
            )
            continue
        if change is not None:
            yield change


def _row_change(
    state: InstanceState[Any], note: Noted, dialect: Dialect | None
) -> tuple[RowKey, RowChange] | None:
    info, values = note.info, state.dict
    if note.action == "create":
        raw_id = tuple(values.get(k) for k in info.pk_keys)
        new = {k: _bson(info, k, v, dialect) for k in info.keys if (v := values.get(k)) is not None}
        old: dict[str, Any] = {}
    else:
        raw_id = state.key[1] if state.key is not None else ()
        old_raw = _old_values(info, state, note)
        if note.action == "update":
            old_raw = {k: v for k, v in old_raw.items() if k in values and not same(v, values[k])}
            if not old_raw:
                return None
        old = {k: _bson(info, k, v, dialect) for k, v in old_raw.items()}
        new = (
            {k: _bson(info, k, values[k], dialect) for k in old_raw}
            if note.action == "update"
            else {}
        )
    object_id = _object_id(info, raw_id, dialect)
    return (info.table_name, raw_id), RowChange(info.table_name, object_id, note.action, old, new)


def _old_values(info: TableInfo, state: InstanceState[Any], note: Noted) -> dict[str, Any]:
    committed, values, loaded = state.committed_state, state.dict, note.loaded or {}
    keys = info.keys if note.action == "delete" else [k for k in committed if k in info.key_set]
    old: dict[str, Any] = {}
    for k in keys:
        value = committed.get(k, NO_VALUE)
        if value is NO_VALUE:
            value = loaded[k] if k in loaded else values.get(k)
        old[k] = value
    return old


def _bson(info: TableInfo, key: str, value: Any, dialect: Dialect | None) -> Any:
    column_type = info.decorated_types.get(key)
    return column_value_to_bson(value, column_type, dialect, f"{info.table_name}.{key}")


def _object_id(info: TableInfo, raw_id: tuple[Any, ...], dialect: Dialect | None) -> Any:
    """A primary key as stored: the value itself, or a list for a composite key."""
    values = [_bson(info, k, v, dialect) for k, v in zip(info.pk_keys, raw_id, strict=True)]
    return values[0] if len(values) == 1 else values
