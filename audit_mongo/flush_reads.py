"""The SELECTs unit-of-work capture runs: old values SQLAlchemy never loaded (before the
flush's statements) and values the database computed (after them), a chunk of rows at a time."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect, select, tuple_
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapper
from sqlalchemy.orm.base import NO_VALUE
from sqlalchemy.orm.state import InstanceState

from .changes import Action
from .log_safety import log_failure
from .safe_reads import UNREADABLE, read_guard
from .table_info import TableInfo

if TYPE_CHECKING:
    from .capture import Noted

logger = logging.getLogger("audit_mongo")

CHUNK = 500  # rows per SELECT ... WHERE key IN (...)


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
            log_failure(
                logging.ERROR,
                exc,
                "audit_mongo: could not read the old values of %d rows of %s; they are "
                "recorded as %s",
                len(chunk),
                info.table_name,
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
        identities = {state: current_identity(mapper, state) for state in rows}
        keys = list(dict.fromkeys(k for missing in rows.values() for k in missing))
        try:
            with read_guard(connection):
                read = read_rows(mapper, connection, list(identities.values()), keys)
        except Exception as exc:
            log_failure(
                logging.ERROR,
                exc,
                "audit_mongo: could not read back computed values of %d rows of %s; "
                "they are recorded as %s",
                len(rows),
                mapper.class_.__name__,
                UNREADABLE,
            )
            read = {}
        for state, identity in identities.items():
            found[state] = read.get(identity) or dict.fromkeys(keys, UNREADABLE)
    return found


def current_identity(mapper: Mapper[Any], state: InstanceState[Any]) -> tuple[Any, ...]:
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
