"""Capture: read what SQLAlchemy's instance state holds about a row and turn it into a change.

Mapper events (``before_insert`` / ``before_update`` / ``before_delete``) only note the
instance; its values are read in the session's ``after_flush``, when inserted rows have their
primary keys and history still shows the flush's changes. The one thing that cannot wait is
an old value SQLAlchemy never loaded (an expired or deferred attribute): it is read from the
database in the ``before_*`` event, on the flush's own connection, before the statement
changes it. Loaded objects, the common case, cost no query.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Mapper
from sqlalchemy.orm.base import NO_VALUE
from sqlalchemy.orm.state import InstanceState
from sqlalchemy.types import TypeDecorator, TypeEngine

from .changes import Action, RowChange, RowKey, same
from .normalise import column_value_to_bson


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


def note_update(info: TableInfo, state: InstanceState[Any], connection: Connection) -> Noted:
    committed = state.committed_state
    unknown = [k for k, v in committed.items() if v is NO_VALUE and k in info.key_set]
    loaded = read_row(state, connection, unknown) if unknown else None
    return Noted(info, "update", loaded)


def note_delete(info: TableInfo, state: InstanceState[Any], connection: Connection) -> Noted:
    committed, values = state.committed_state, state.dict
    unknown = [
        k for k in info.keys if (committed[k] is NO_VALUE if k in committed else k not in values)
    ]
    loaded = read_row(state, connection, unknown) if unknown else None
    return Noted(info, "delete", loaded)


def read_row(state: InstanceState[Any], connection: Connection, keys: list[str]) -> dict[str, Any]:
    """Read the current database values of ``keys`` for a persistent instance."""
    mapper = state.mapper
    columns = [mapper.column_attrs[k].columns[0] for k in keys]
    identity = state.key[1] if state.key is not None else ()
    query = (
        select(*columns)
        .select_from(mapper.persist_selectable)
        .where(*[c == v for c, v in zip(mapper.primary_key, identity, strict=True)])
    )
    row = connection.execute(query).first()
    return dict(zip(keys, row, strict=True)) if row is not None else {}


def collect(
    noted: Mapping[InstanceState[Any], Noted], dialect: Dialect | None
) -> Iterator[tuple[RowKey, RowChange]]:
    """The row changes of a finished flush, in the order the rows were noted."""
    for state, note in noted.items():
        change = _row_change(state, note, dialect)
        if change is not None:
            yield change[0], change[1]


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
