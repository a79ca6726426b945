"""Statement capture: rows changed by INSERT / UPDATE / DELETE statements the unit of work
did not emit.

ORM bulk statements (``session.execute(update(Model).where(...))``, ``insert(Model)`` with a
list of dicts), legacy ``Query.update()`` / ``Query.delete()``, ``bulk_insert_mappings``,
``bulk_update_mappings``, ``bulk_save_objects`` and Core statements fire no mapper event,
but every one of them reaches the Core ``before_execute`` / ``after_execute`` events with the
target table. Capture happens there, the one layer they all pass through, so each row change
is recorded once whichever API issued it.

Old values are read before the statement and new values after it, on the statement's own
connection, inside its transaction, so whatever the database computed (SQL expressions,
``onupdate``, server defaults, triggers) is recorded as committed. The rows waiting between
the two reads spill to disk past ``frame.SPILL_AT`` (see ``frame``); reads go in chunks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, Table, literal
from sqlalchemy.engine import Connection, CursorResult, Dialect
from sqlalchemy.sql import visitors
from sqlalchemy.sql.dml import Delete, Insert, Update, UpdateBase
from sqlalchemy.sql.elements import BindParameter, ColumnElement, TextClause
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.selectable import FromClause, ScalarSelect, SelectBase
from sqlalchemy.sql.util import find_tables
from sqlalchemy.types import TypeEngine

from . import statement_reads as reads
from .changes import Action, RowChange, RowKey, same
from .frame import SpillingList
from .log_safety import log_failure
from .masking import Masked, Masker
from .normalise import column_value_to_bson, kept_as_is
from .safe_reads import UNREADABLE, read_guard
from .table_info import unpad

logger = logging.getLogger("audit_mongo")

PkTuple = tuple[Any, ...]
READ_OPTIONS = ("schema_translate_map",)  # the statement's options its reads must share


@dataclass(frozen=True, slots=True)
class StatementTarget:
    """A tracked table as statements see it: what to read, and under which keys to record it.

    For a joined-inheritance subclass's own table, ``selectable`` is the subclass's join with
    its base tables, so a row's values (and its class's discriminator) come from every table
    it spans; ``pk_columns`` are then the base table's key.
    """

    table: Table
    selectable: FromClause
    tables: frozenset[Any]  # the tables ``selectable`` spans
    actions: frozenset[Action]  # the actions some class persisted to this table records
    table_name: str  # the name documents carry (an inheritance hierarchy's base table)
    keys: tuple[str, ...]  # recorded attribute keys, parallel to the first columns
    columns: tuple[ColumnElement[Any], ...]  # recorded columns, then the discriminator if apart
    pk_columns: tuple[Column[Any], ...]
    pk_keys: tuple[str, ...]
    own_pk_columns: tuple[Column[Any], ...]  # the table's own key, for RETURNING
    padded: tuple[bool, ...]  # which key columns are CHAR (see ``table_info.unpad``)
    decorated_types: Mapping[str, TypeEngine[Any]]
    discriminator: int | None  # where the polymorphic discriminator is among the values
    classes: Mapping[Any, tuple[str, frozenset[Action]]]  # discriminator -> (entity, actions)
    entity: str | None  # without a discriminator value: the table's class, in a hierarchy
    entity_actions: frozenset[Action]
    masker: Masker
    masked: Mapping[str | None, tuple[int, ...]]  # entity -> where its masked values are
    masked_otherwise: tuple[int, ...]  # for a row of no known class: every class's masks

    def row_class(self, values: tuple[Any, ...]) -> tuple[str | None, frozenset[Action]]:
        """The entity a row belongs to and the actions recorded for it."""
        if self.discriminator is not None:
            found = self.classes.get(values[self.discriminator])
            if found is not None:
                return found
        return self.entity, self.entity_actions

    def masked_indexes(self, values: tuple[Any, ...]) -> tuple[int, ...]:
        """Where the values its class masks are among a row's ``values``."""
        entity, _ = self.row_class(values)
        return self.masked.get(entity, self.masked_otherwise)


@dataclass(slots=True)
class PendingStatement:
    """What was learnt before a statement ran, to finish its capture after it."""

    target: StatementTarget
    action: Action
    dialect: Dialect
    options: dict[str, Any]
    old_rows: SpillingList = field(default_factory=SpillingList)  # (key, values, new key)
    conflict: tuple[list[Any], list[tuple[Any, ...]]] | None = None  # an upsert's target
    moves: bool = False  # an UPDATE that sets primary key columns
    readable: bool = True


class NotCapturable(Exception):
    """A statement whose row changes cannot be known for sure; the reason says why."""


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
    if not isinstance(statement, Insert) or _on_conflict(statement) is not None:
        return False
    try:
        return not statement.returning_column_descriptions
    except Exception:  # an ORM INSERT ... RETURNING describes its entity only once compiled
        return False


def before(
    target: StatementTarget,
    action: Action,
    statement: UpdateBase,
    statement_from: Any,
    param_sets: Sequence[Mapping[str, Any]],
    connection: Connection,
    execution_options: Mapping[str, Any],
) -> PendingStatement:
    """Read the rows a statement is about to change, before it runs."""
    options = {k: execution_options[k] for k in READ_OPTIONS if k in execution_options}
    pending = PendingStatement(target, action, connection.dialect, options)
    try:
        # a failed read must not abort the application's transaction
        with read_guard(connection):
            if action != "create":
                _read_matching_rows(pending, statement, statement_from, param_sets, connection)
            elif _on_conflict(statement) is not None:
                _read_conflicting_rows(pending, statement, param_sets, connection)
    except NotCapturable as exc:
        pending.readable = False
        logger.warning(
            "audit_mongo: a %s statement on %s is not recorded: %s", action, target.table_name, exc
        )
    except Exception as exc:
        pending.readable = False
        log_failure(
            logging.ERROR,
            exc,
            "audit_mongo: could not read the rows a %s statement on %s changes; "
            "its row changes are not recorded",
            action,
            target.table_name,
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
            yield from _deletes(pending, result, connection)
        elif pending.action == "update":
            yield from _updates(pending, connection)
        elif pending.conflict is not None:
            yield from _upserts(pending, connection)
        else:
            yield from _creates(pending, result, connection)
    finally:
        pending.old_rows.close()


# -- before: the rows a statement will change ---------------------------------------------


def _read_matching_rows(
    pending: PendingStatement,
    statement: UpdateBase,
    statement_from: Any,
    param_sets: Sequence[Mapping[str, Any]],
    connection: Connection,
) -> None:
    """Keep ``(key, values, new key)`` of each row the statement matches, once per row."""
    target = pending.target
    where = reads.on_target_table(getattr(statement, "whereclause", None), statement_from, target)
    new_key = _new_key_expressions(statement, statement_from, target)
    pending.moves = bool(new_key)
    # Lock the rows as the statement itself is about to: a transaction committing between
    # this read and the statement would otherwise go into these old values (ignored by SQLite).
    query = reads.base_query(target, new_key).with_for_update(of=list(target.tables))
    # A join (UPDATE ... FROM) or several parameter sets can match a row more than once.
    joins = where is not None and any(t not in target.tables for t in find_tables(where))
    seen: set[PkTuple] | None = set() if len(param_sets) > 1 or joins else None
    width, columns = len(target.pk_columns), len(target.columns)
    # SET expressions for the key may use the parameters: then one read per parameter set.
    batch = not new_key
    key_columns = target.own_pk_columns
    rows = reads.matching_rows(
        query, where, param_sets, batch, key_columns, connection, pending.options
    )
    for row in rows:
        key = tuple(row[:width])
        if seen is not None:
            if key in seen:
                continue
            seen.add(key)
        values = _masked(pending, tuple(row[width : width + columns]))
        moved = tuple(row[width + columns :]) if new_key else key
        pending.old_rows.append((key, values, moved))


def _new_key_expressions(
    statement: UpdateBase, statement_from: Any, target: StatementTarget
) -> list[Any]:
    """For an UPDATE that sets primary key columns, what each key column becomes (the SET
    expressions, evaluated by the same read that finds the rows); [] when the key stays."""
    if not isinstance(statement, Update):
        return []
    assigned = _set_clause(statement)
    own = target.own_pk_columns
    if not any(c.name in assigned for c in own):
        return []
    if target.selectable is not target.table:
        raise NotCapturable("it changes the primary key of a joined subclass's table")
    expressions = [
        reads.on_target_table(assigned.get(c.name, c), statement_from, target) for c in own
    ]
    if not all(_repeatable(e) for e in expressions):
        # Evaluating nextval() or random() in the audit's read would consume or differ.
        raise NotCapturable("it sets the primary key from a function or a subquery")
    return [e.label(f"k{i}") for i, e in enumerate(expressions)]


def _repeatable(expression: Any) -> bool:
    """Whether evaluating ``expression`` again gives the statement's value, side-effect free:
    only columns, parameters, literals and operators (no function, sequence or subquery)."""
    unsafe = (FunctionElement, SelectBase, ScalarSelect, TextClause)
    return not any(isinstance(e, unsafe) for e in visitors.iterate(expression))


def _set_clause(statement: UpdateBase) -> dict[str, Any]:
    """``{column name: value expression}`` of an UPDATE's SET (or an INSERT's VALUES) clause."""
    # No public accessor exists: SET values live in _values (or _ordered_values).
    values = getattr(statement, "_values", None) or dict(
        getattr(statement, "_ordered_values", None) or ()
    )
    table = statement.table
    assigned = {}
    for key, value in values.items():
        name = key if isinstance(key, str) else getattr(key, "name", None)
        if isinstance(key, str) and key in table.c:
            name = table.c[key].name
        if name is not None:
            assigned[name] = value if isinstance(value, ColumnElement) else literal(value)
    return assigned


def _on_conflict(statement: Any) -> Any:
    # INSERT ... ON CONFLICT (PostgreSQL, SQLite) keeps its clause in _post_values_clause.
    return getattr(statement, "_post_values_clause", None)


def _read_conflicting_rows(
    pending: PendingStatement,
    statement: UpdateBase,
    param_sets: Sequence[Mapping[str, Any]],
    connection: Connection,
) -> None:
    """For an upsert: the rows its conflict target already matches, by key."""
    target = pending.target
    clause = _on_conflict(statement)
    elements = list(getattr(clause, "inferred_target_elements", None) or ())
    names = [e if isinstance(e, str) else e.name for e in elements] or [
        c.name for c in target.own_pk_columns
    ]
    table = target.table
    by_name = {c.name: c for c in table.columns}
    columns = [by_name[n] for n in names if n in by_name]
    stated = {
        name: value.value
        for name, value in _set_clause(statement).items()
        if isinstance(value, BindParameter) and value.callable is None
    }
    inserted = [
        {**stated, **{table.c[k].name: v for k, v in p.items() if k in table.c}} for p in param_sets
    ]
    if len(columns) != len(names) or not all(all(c.name in r for c in columns) for r in inserted):
        raise NotCapturable(
            "an upsert needs index_elements= naming columns whose values it is given"
        )
    values = [tuple(row[c.name] for c in columns) for row in inserted]
    pending.conflict = (columns, values)
    for key, row_values in reads.rows_by_columns(
        target, columns, values, connection, pending.options
    ):
        pending.old_rows.append((key, _masked(pending, row_values), key))


# -- after: what changed --------------------------------------------------------------------


def _deletes(
    pending: PendingStatement, result: CursorResult[Any], connection: Connection
) -> Iterator[tuple[RowKey, RowChange]]:
    """The rows read before the DELETE, less any still there afterwards: criteria the ORM
    adds only when compiling (a single-table subclass, ``with_loader_criteria``) can make
    the statement delete fewer rows than its WHERE clause matched."""
    read = len(pending.old_rows)
    deleted = result.rowcount if result.rowcount is not None else -1
    verify = 0 <= deleted < read
    for rows in pending.old_rows.chunks():
        for chunk in reads.chunks(rows):
            kept = _read_back(pending, [key for key, _, _ in chunk], connection) if verify else {}
            for key, values, _ in chunk:
                if kept and unpad(key, pending.target.padded) in kept:
                    continue
                change = _change(pending, key, "delete", values, None)
                if change is not None:
                    yield change


def _updates(
    pending: PendingStatement, connection: Connection
) -> Iterator[tuple[RowKey, RowChange]]:
    """Read the updated rows back ``CHUNK`` at a time (by their new key if the statement
    changed it) and yield what changed in each."""
    target, missing = pending.target, 0
    chunks = (chunk for rows in pending.old_rows.chunks() for chunk in reads.chunks(rows))
    for chunk in chunks:
        new_rows = _read_back(pending, [moved for _, _, moved in chunk], connection)
        for key, values, moved in chunk:
            moved_key = unpad(moved, target.padded)
            new_values = new_rows.get(moved_key) if new_rows is not None else None
            if new_values is None:
                missing += new_rows is not None
                new_values = (UNREADABLE,) * len(values)
            change = _change(pending, key, "update", values, new_values, moved)
            if change is not None:
                yield change
    if missing:
        logger.warning(
            "audit_mongo: %d rows an update on %s changed could not be found again; their new "
            "values are recorded as %s",
            missing,
            target.table_name,
            UNREADABLE,
        )


def _read_back(
    pending: PendingStatement, keys: list[PkTuple], connection: Connection
) -> dict[PkTuple, tuple[Any, ...]] | None:
    target = pending.target
    try:
        with read_guard(connection):
            rows = reads.rows_by_key(target, keys, connection, pending.options)
            return {unpad(key, target.padded): _masked(pending, values) for key, values in rows}
    except Exception as exc:
        log_failure(
            logging.ERROR,
            exc,
            "audit_mongo: could not read back %d rows a statement on %s changed; their new "
            "values are recorded as %s",
            len(keys),
            target.table_name,
            UNREADABLE,
        )
        return None


def _creates(
    pending: PendingStatement, result: CursorResult[Any], connection: Connection
) -> Iterator[tuple[RowKey, RowChange]]:
    target = pending.target
    keys = _inserted_keys(result)
    identified = [k for k in keys or () if k and None not in k]
    inserted = result.rowcount if result.rowcount is not None and result.rowcount >= 0 else 0
    if keys is None or max(inserted, len(keys)) > len(identified):
        logger.warning(
            "audit_mongo: rows inserted into %s could not be identified (an INSERT ... SELECT, "
            "a multi-VALUES INSERT, or an INSERT with its own RETURNING); %d were recorded",
            target.table_name,
            len(identified),
        )
    # In insertion order, read back a chunk of keys at a time; a row whose stored key differs
    # from the key the application gave (a TypeDecorator rewrites it) is matched by the read.
    missing = 0
    for chunk in reads.chunks(list(dict.fromkeys(unpad(k, target.padded) for k in identified))):
        new_rows = _read_back(pending, chunk, connection) or {}
        asked = set(chunk)
        found = [k for k in chunk if k in new_rows] + [k for k in new_rows if k not in asked]
        missing += len(chunk) - len(new_rows)
        for key in found:
            change = _change(pending, key, "create", None, new_rows[key])
            if change is not None:
                yield change
    # A joined subclass's base-table INSERT comes before its own table's: those rows are
    # read (and recorded) after the second statement.
    if missing > 0 and target.selectable is target.table:
        logger.warning(
            "audit_mongo: %d rows inserted into %s were not found again; they are not recorded",
            missing,
            target.table_name,
        )


def _inserted_keys(result: CursorResult[Any]) -> list[PkTuple] | None:
    """The inserted rows' keys, None when the database did not say."""
    try:
        return [tuple(k or ()) for k in result.inserted_primary_key_rows]
    except Exception:  # not available for this statement's form or this database
        return None


def _upserts(
    pending: PendingStatement, connection: Connection
) -> Iterator[tuple[RowKey, RowChange]]:
    """An upsert's rows: created where no row held the conflict values, updated where one did."""
    assert pending.conflict is not None
    columns, values = pending.conflict
    before_rows = {key: row for rows in pending.old_rows.chunks() for key, row, _ in rows}
    found = reads.rows_by_columns(pending.target, columns, values, connection, pending.options)
    for key, row_values in found:
        old = before_rows.get(key)
        new = _masked(pending, row_values)
        change = _change(pending, key, "update" if old is not None else "create", old, new)
        if change is not None:
            yield change


# -- building the changes ---------------------------------------------------------------------


def _change(
    pending: PendingStatement,
    key: PkTuple,
    action: Action,
    old: tuple[Any, ...] | None,
    new: tuple[Any, ...] | None,
    moved: PkTuple | None = None,
) -> tuple[RowKey, RowChange] | None:
    """One row's change, or None when nothing changed or its class is not tracked for it."""
    target = pending.target
    row = new if action == "create" else old
    assert row is not None
    entity, actions = target.row_class(row)
    if action not in actions:
        return None
    width = len(target.keys)
    if action == "update":
        assert old is not None and new is not None
        changed = [i for i in range(width) if not same(old[i], new[i])]
        if not changed:
            return None
        old_values = _bson_values(pending, old, changed)
        new_values = _bson_values(pending, new, changed)
    elif action == "create":
        assert new is not None
        changed = [i for i in range(width) if new[i] is not None]
        old_values, new_values = {}, _bson_values(pending, new, changed)
    else:
        assert old is not None
        old_values, new_values = _bson_values(pending, old, range(width)), {}
    change = RowChange(target.table_name, None, action, old_values, new_values, entity=entity)
    key = unpad(key, target.padded)
    change.object_id = _object_id(pending, key)
    row_key: RowKey = (target.table_name, key)
    if moved is not None and unpad(moved, target.padded) != key:
        moved = unpad(moved, target.padded)
        change.previous_object_id, change.previous_key = change.object_id, row_key
        change.object_id, row_key = _object_id(pending, moved), (target.table_name, moved)
    return row_key, change


def _bson_values(
    pending: PendingStatement, values: tuple[Any, ...], indexes: Any
) -> dict[str, Any]:
    keys = pending.target.keys
    return {keys[i]: _bson(pending, keys[i], values[i]) for i in indexes}


def _masked(pending: PendingStatement, values: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row's values as read, with the masked columns' masked at once: the rows waiting for
    the statement spill to disk, and the real value must not go there. Masked values still
    compare equal exactly when the real values do."""
    target = pending.target
    if not target.masked_otherwise:  # no class masks anything here
        return values
    indexes = target.masked_indexes(values)
    masked = list(values)
    for i in indexes:
        if values[i] is not UNREADABLE:
            key = target.keys[i]
            masked[i] = target.masker.mask(target.table_name, key, _bson(pending, key, values[i]))
    return tuple(masked)


def _bson(pending: PendingStatement, key: str, value: Any) -> Any:
    if kept_as_is(value) or value is UNREADABLE or isinstance(value, Masked):
        return value
    column_type = pending.target.decorated_types.get(key)
    where = f"{pending.target.table_name}.{key}"
    return column_value_to_bson(value, column_type, pending.dialect, where)


def _object_id(pending: PendingStatement, key: PkTuple) -> Any:
    keys = pending.target.pk_keys
    values = [_bson(pending, k, v) for k, v in zip(keys, key, strict=True)]
    return values[0] if len(values) == 1 else values
