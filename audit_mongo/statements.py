"""Statement capture: rows changed by INSERT / UPDATE / DELETE statements the unit of work
did not emit.

ORM bulk statements (``session.execute(update(Model).where(...))``, ``insert(Model)`` with a
list of dicts), legacy ``Query.update()`` / ``Query.delete()``, ``bulk_insert_mappings``,
``bulk_update_mappings``, ``bulk_save_objects`` and Core statements fire no mapper event,
but every one of them reaches the Core ``before_execute`` / ``after_execute`` events with the
target ``Table``. Capture happens there, the one layer they all pass through, so each row
change is recorded once whichever API issued it.

Old values are read before the statement and new values after it, on the statement's own
connection, inside its transaction, so whatever the database computed (SQL expressions,
``onupdate``, server defaults, triggers) is recorded as committed. Reads go in chunks of
``CHUNK`` rows; a row is kept as a compact tuple between the two reads.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, Table, select, tuple_
from sqlalchemy.engine import Connection, CursorResult, Dialect
from sqlalchemy.sql import operators
from sqlalchemy.sql.dml import Delete, Insert, Update, UpdateBase
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, BooleanClauseList
from sqlalchemy.types import TypeEngine

from .capture import UNREADABLE
from .changes import Action, RowChange, RowKey, same, update
from .frame import SpillingList
from .normalise import column_value_to_bson

logger = logging.getLogger("audit_mongo")

CHUNK = 500
PkTuple = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class StatementTarget:
    """A tracked table as statements see it: its columns under the attribute keys recorded."""

    table: Table
    actions: frozenset[Action]  # the actions recorded on this table
    table_name: str  # the name documents carry (an inheritance hierarchy's base table)
    entity: str | None
    keys: tuple[str, ...]  # recorded attribute keys, parallel to ``columns``
    columns: tuple[Column[Any], ...]
    pk_columns: tuple[Column[Any], ...]
    pk_keys: tuple[str, ...]
    decorated_types: Mapping[str, TypeEngine[Any]]


@dataclass(slots=True)
class PendingStatement:
    """What was learnt before a statement ran, to finish its capture after it."""

    target: StatementTarget
    action: Action
    dialect: Dialect
    old_rows: SpillingList = field(default_factory=SpillingList)  # (key, values), in order
    readable: bool = True


def statement_action(statement: Any) -> Action | None:
    """The row change a DML statement makes, None for anything else (SELECT, text, DDL)."""
    if isinstance(statement, Insert):
        return "create"
    if isinstance(statement, Update):
        return "update"
    if isinstance(statement, Delete):
        return "delete"
    return None


def needs_inserted_keys(statement: UpdateBase) -> bool:
    """Whether to ask the database for the inserted rows' keys (``return_defaults``).

    A statement with its own RETURNING keeps it untouched: its result is the caller's.
    """
    if not isinstance(statement, Insert):
        return False
    try:
        return not statement.returning_column_descriptions
    except Exception:  # an ORM INSERT ... RETURNING describes its entity only once compiled
        return False


def before(
    target: StatementTarget,
    action: Action,
    statement: UpdateBase,
    param_sets: Sequence[Mapping[str, Any]],
    connection: Connection,
) -> PendingStatement:
    """Read the rows an UPDATE or DELETE is about to change, before it runs."""
    pending = PendingStatement(target, action, connection.dialect)
    if action == "create":
        return pending
    try:
        with connection.begin_nested():  # a failed read must not abort the app's transaction
            _read_matching_rows(pending, statement, param_sets, connection)
    except Exception as exc:
        pending.readable = False
        logger.error(
            "audit_mongo: could not read the rows a %s statement on %s changes (%s); "
            "its row changes are not recorded",
            action,
            target.table_name,
            type(exc).__name__,
        )
    return pending


def after(
    pending: PendingStatement, result: CursorResult[Any], connection: Connection
) -> Iterator[tuple[RowKey, RowChange]]:
    """The row changes a finished statement made, read back chunk by chunk."""
    try:
        if not pending.readable:
            return
        if pending.action == "delete":
            yield from _deletes(pending)
        elif pending.action == "update":
            yield from _updates(pending, connection)
        else:
            yield from _creates(pending, result, connection)
    finally:
        pending.old_rows.close()


def _read_matching_rows(
    pending: PendingStatement,
    statement: UpdateBase,
    param_sets: Sequence[Mapping[str, Any]],
    connection: Connection,
) -> None:
    """Keep ``(key, values)`` of each row the statement matches, once per row."""
    target, where = pending.target, getattr(statement, "whereclause", None)
    if len(param_sets) > 1:
        by_key = _pk_bind_names(where, target)
        if by_key is not None:  # ORM bulk UPDATE by primary key: one read per chunk
            keys = [tuple(params[name] for name in by_key) for params in param_sets]
            for row in rows_by_key(target, keys, connection):
                pending.old_rows.append(row)
            return
    query = select(*target.pk_columns, *target.columns).select_from(target.table)
    if where is not None:
        query = query.where(where)
    # A join (UPDATE ... FROM) or several parameter sets can match a row more than once.
    seen: set[PkTuple] | None = (
        set() if len(param_sets) > 1 or len(query.get_final_froms()) > 1 else None
    )
    query = query.execution_options(stream_results=True, yield_per=CHUNK)
    width = len(target.pk_columns)
    for params in param_sets:
        for row in connection.execute(query, dict(params)):
            key = tuple(row[:width])
            if seen is not None:
                if key in seen:
                    continue
                seen.add(key)
            pending.old_rows.append((key, tuple(row[width:])))


def _pk_bind_names(where: Any, target: StatementTarget) -> list[str] | None:
    """The bind names of ``pk == :bind`` criteria covering the whole key, in key order."""
    if where is None:
        return None
    clauses = where.clauses if isinstance(where, BooleanClauseList) else [where]
    if isinstance(where, BooleanClauseList) and where.operator is not operators.and_:
        return None
    names: dict[str, str] = {}
    for clause in clauses:
        if not (
            isinstance(clause, BinaryExpression)
            and clause.operator is operators.eq
            and isinstance(clause.right, BindParameter)
            and getattr(clause.left, "table", None) == target.table
        ):
            return None
        names[clause.left.name] = clause.right.key
    wanted = [c.name for c in target.pk_columns]
    if sorted(names) != sorted(wanted):
        return None
    return [names[name] for name in wanted]


def rows_by_key(
    target: StatementTarget, keys: Iterable[PkTuple], connection: Connection
) -> Iterator[tuple[PkTuple, tuple[Any, ...]]]:
    """``(key, values)`` of the rows with these primary keys, one SELECT per ``CHUNK``."""
    pk = target.pk_columns
    query = select(*pk, *target.columns).select_from(target.table)
    width = len(pk)
    for chunk in _chunks(list(dict.fromkeys(keys)), CHUNK):
        where = pk[0].in_([k[0] for k in chunk]) if width == 1 else tuple_(*pk).in_(chunk)
        for row in connection.execute(query.where(where)):
            yield tuple(row[:width]), tuple(row[width:])


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _deletes(pending: PendingStatement) -> Iterator[tuple[RowKey, RowChange]]:
    target = pending.target
    for rows in pending.old_rows.chunks():
        for key, values in rows:
            old = _bson_values(target, values, pending.dialect)
            yield _row_key(target, key), _change(pending, key, "delete", old, {})


def _updates(
    pending: PendingStatement, connection: Connection
) -> Iterator[tuple[RowKey, RowChange]]:
    """Read the updated rows back ``CHUNK`` at a time and yield what changed in each."""
    target, missing = pending.target, 0
    chunks = (chunk for rows in pending.old_rows.chunks() for chunk in _chunks(rows, CHUNK))
    for chunk in chunks:
        new_rows = _read_back(target, [key for key, _ in chunk], connection)
        for key, values in chunk:
            new_values = new_rows.get(key) if new_rows is not None else None
            if new_values is None:
                missing += new_rows is not None  # its primary key changed
                change = _unreadable_update(pending, key, values)
            else:
                change = _update(pending, key, values, new_values)
            if change is not None:
                yield _row_key(target, key), change
    if missing:
        logger.warning(
            "audit_mongo: %d rows an update on %s changed were not found again by their old "
            "primary key (an UPDATE of the key itself); their new values are recorded as %s",
            missing,
            target.table_name,
            UNREADABLE,
        )


def _update(
    pending: PendingStatement, key: PkTuple, old: tuple[Any, ...], new: tuple[Any, ...]
) -> RowChange | None:
    """The changed columns only, compared as SQLAlchemy does before normalising any value."""
    target, dialect = pending.target, pending.dialect
    changed = [i for i, (o, n) in enumerate(zip(old, new, strict=True)) if not same(o, n)]
    if not changed:
        return None
    keys = [target.keys[i] for i in changed]
    old_values = {k: _bson(target, k, old[i], dialect) for k, i in zip(keys, changed, strict=True)}
    new_values = {k: _bson(target, k, new[i], dialect) for k, i in zip(keys, changed, strict=True)}
    return _change(pending, key, "update", old_values, new_values)


def _unreadable_update(
    pending: PendingStatement, key: PkTuple, old: tuple[Any, ...]
) -> RowChange | None:
    old_values = _bson_values(pending.target, old, pending.dialect)
    new_values = dict.fromkeys(pending.target.keys, UNREADABLE)
    change = update(pending.target.table_name, None, old_values, new_values)
    if change is not None:
        change.object_id = _object_id(pending.target, key, pending.dialect)
        change.entity = pending.target.entity
    return change


def _read_back(
    target: StatementTarget, keys: list[PkTuple], connection: Connection
) -> dict[PkTuple, tuple[Any, ...]] | None:
    try:
        with connection.begin_nested():
            return dict(rows_by_key(target, keys, connection))
    except Exception as exc:
        logger.error(
            "audit_mongo: could not read back %d rows an update on %s changed (%s); their new "
            "values are recorded as %s",
            len(keys),
            target.table_name,
            type(exc).__name__,
            UNREADABLE,
        )
        return None


def _creates(
    pending: PendingStatement, result: CursorResult[Any], connection: Connection
) -> Iterator[tuple[RowKey, RowChange]]:
    target = pending.target
    try:
        keys = [tuple(k or ()) for k in result.inserted_primary_key_rows]
    except Exception as exc:
        keys = []
        logger.error(
            "audit_mongo: the database did not say which rows an insert into %s created (%s); "
            "they are not recorded",
            target.table_name,
            type(exc).__name__,
        )
    keys = [k for k in keys if k and None not in k]
    try:
        with connection.begin_nested():
            rows = list(rows_by_key(target, keys, connection))
    except Exception as exc:
        logger.error(
            "audit_mongo: could not read back %d rows inserted into %s (%s); they are not recorded",
            len(keys),
            target.table_name,
            type(exc).__name__,
        )
        return
    for key, values in rows:
        new = _bson_values(target, values, pending.dialect)
        new = {k: v for k, v in new.items() if v is not None}
        yield _row_key(target, key), _change(pending, key, "create", {}, new)


def _change(
    pending: PendingStatement,
    key: PkTuple,
    action: Action,
    old: dict[str, Any],
    new: dict[str, Any],
) -> RowChange:
    target = pending.target
    object_id = _object_id(target, key, pending.dialect)
    return RowChange(target.table_name, object_id, action, old, new, entity=target.entity)


def _row_key(target: StatementTarget, key: PkTuple) -> RowKey:
    return target.table_name, key


def _bson_values(
    target: StatementTarget, values: tuple[Any, ...], dialect: Dialect
) -> dict[str, Any]:
    return {
        key: _bson(target, key, value, dialect)
        for key, value in zip(target.keys, values, strict=True)
    }


def _bson(target: StatementTarget, key: str, value: Any, dialect: Dialect) -> Any:
    column_type = target.decorated_types.get(key)
    return column_value_to_bson(value, column_type, dialect, f"{target.table_name}.{key}")


def _object_id(target: StatementTarget, key: PkTuple, dialect: Dialect) -> Any:
    values = [_bson(target, k, v, dialect) for k, v in zip(target.pk_keys, key, strict=True)]
    return values[0] if len(values) == 1 else values
