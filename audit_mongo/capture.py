"""Capture: read what SQLAlchemy's instance state holds about a row and turn it into a change.

Mapper events (``before_insert`` / ``before_update`` / ``before_delete``) only note the
instance; its values are read in the session's ``after_flush``, when inserted rows have their
primary keys and history still shows the flush's changes. The one thing that cannot wait is
an old value SQLAlchemy never loaded (an expired or deferred attribute): it is read from the
database in the ``before_*`` event, on the flush's own connection, before the statement
changes it, in one SELECT for all the flush's rows of a table that need one (see
``flush_reads``). Loaded objects, the common case, cost no query.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm.base import NO_VALUE, PASSIVE_NO_INITIALIZE
from sqlalchemy.orm.state import InstanceState
from sqlalchemy.sql.elements import ClauseElement

from .changes import Action, RowChange, RowKey, same
from .flush_reads import UNKNOWN_OLD_VALUES, OldValueReader, current_identity, read_computed
from .log_safety import log_failure
from .normalise import column_value_to_bson, kept_as_is
from .safe_reads import UNREADABLE
from .table_info import TableInfo, identity_table, unpad

logger = logging.getLogger("audit_mongo")


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
    if computed and action == "update":
        noted.before = _held_values(state, computed)
    return noted


def _computed_keys(info: TableInfo, state: InstanceState[Any], action: Action) -> tuple[str, ...]:
    """Keys the statement sets to a SQL expression, or the database fills in itself."""
    if action == "delete":
        return ()
    if action == "create":
        generated, set_now = info.insert_generated, state.dict
    else:  # an attribute set to an expression is a change: it is in committed_state
        generated, set_now = info.update_generated, state.committed_state
    values = state.dict
    expressions = [
        k for k in set_now if isinstance(values.get(k), ClauseElement) and k in info.key_set
    ]
    if not expressions and not generated:
        return ()
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
        except Exception as exc:
            log_failure(
                logging.ERROR,
                exc,
                "audit_mongo: a %s in %s could not be captured; that row change is not recorded",
                note.action,
                note.info.table_name,
            )
            continue
        if change is not None:
            yield change


def _row_change(
    state: InstanceState[Any], note: Noted, computed: dict[str, Any], dialect: Dialect | None
) -> tuple[RowKey, RowChange] | None:
    info = note.info
    values = {**state.dict, **computed} if computed else state.dict
    if note.action == "create":
        raw_id = tuple([values.get(k) for k in info.pk_keys])
        new = _recorded(
            info, [(k, v) for k in info.keys if (v := values.get(k)) is not None], dialect
        )
        created = RowChange(info.table_name, None, "create", {}, new)
        if info.collections:
            created.collections = collection_changes(info, state, dialect)
        return _keyed(info, raw_id, created, dialect)
    raw_id = state.key[1] if state.key is not None else ()
    old_raw = _old_values(info, state, note)
    if note.action == "delete":
        old = _recorded(info, old_raw.items(), dialect)
        return _keyed(info, raw_id, RowChange(info.table_name, None, "delete", old, {}), dialect)
    changed = {k: v for k, v in old_raw.items() if k in values and not same(v, values[k])}
    collections = collection_changes(info, state, dialect) if info.collections else {}
    if not changed and not collections:
        return None
    old = _recorded(info, changed.items(), dialect)
    new = _recorded(info, [(k, values[k]) for k in changed], dialect)
    updated = RowChange(info.table_name, None, "update", old, new, collections=collections)
    keyed = _keyed(info, raw_id, updated, dialect)
    new_id = tuple([values.get(k) for k in info.pk_keys])
    return keyed if new_id == raw_id else _rekeyed(info, keyed, new_id, dialect)


def collection_changes(
    info: TableInfo, state: InstanceState[Any], dialect: Dialect | None
) -> dict[str, tuple[list[Any], list[Any]]]:
    """Keys of the rows added to and removed from each many-to-many collection."""
    found = {}
    for name in info.collections:
        history = state.get_history(name, PASSIVE_NO_INITIALIZE)
        added = [info.mask.apply(name, _related_key(o, dialect)) for o in history.added or ()]
        deleted = [info.mask.apply(name, _related_key(o, dialect)) for o in history.deleted or ()]
        if added or deleted:
            found[name] = (added, deleted)
    return found


def _related_key(obj: Any, dialect: Dialect | None) -> Any:
    related: InstanceState[Any] = inspect(obj)
    mapper = related.mapper
    # A row inserted by this flush has no identity key yet: its key is in its dict.
    raw = related.key[1] if related.key is not None else current_identity(mapper, related)
    where = f"{identity_table(mapper)} key"
    values = [column_value_to_bson(v, None, dialect, where) for v in raw]
    return values[0] if len(values) == 1 else values


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


def _recorded(
    info: TableInfo, items: Iterable[tuple[str, Any]], dialect: Dialect | None
) -> dict[str, Any]:
    """Values as recorded (see ``_bson``); a plain value of an unmasked attribute, the
    common case, is kept as it is without converting it."""
    masked = info.mask.names
    return {
        key: value if kept_as_is(value) and key not in masked else _bson(info, key, value, dialect)
        for key, value in items
    }


def _bson(info: TableInfo, key: str, value: Any, dialect: Dialect | None) -> Any:
    """A value as recorded: normalised, then masked if its attribute is (so the real value
    never joins the transaction's buffer)."""
    normalised = _normalised(info, key, value, dialect)
    if value is UNREADABLE or normalised is UNREADABLE:  # a marker, not the row's value
        return normalised
    return info.mask.apply(key, normalised)


def _normalised(info: TableInfo, key: str, value: Any, dialect: Dialect | None) -> Any:
    if isinstance(value, ClauseElement):  # a SQL expression whose result could not be read
        return UNREADABLE
    column_type = info.decorated_types.get(key)
    return column_value_to_bson(value, column_type, dialect, f"{info.table_name}.{key}")


def _object_id(info: TableInfo, raw_id: tuple[Any, ...], dialect: Dialect | None) -> Any:
    """A primary key as stored: the value itself, or a list for a composite key."""
    if len(raw_id) == 1:
        value = raw_id[0]
        return value if kept_as_is(value) else _normalised(info, info.pk_keys[0], value, dialect)
    return [_normalised(info, k, v, dialect) for k, v in zip(info.pk_keys, raw_id, strict=True)]
