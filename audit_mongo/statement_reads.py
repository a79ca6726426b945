"""The SELECTs statement capture runs: the rows a statement will change, and the same rows
afterwards, in chunks.

A target's rows are read from its ``selectable`` (the table, or a joined-inheritance
subclass's join with its base tables) as ``(key, values)``: ``key`` the primary key tuple,
``values`` the target's columns in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, tuple_
from sqlalchemy.engine import Connection
from sqlalchemy.sql import operators, visitors
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, BooleanClauseList

from .flush_reads import CHUNK  # one chunk size for every SELECT ... IN
from .safe_reads import in_autocommit

if TYPE_CHECKING:
    from .statements import StatementTarget

Row = tuple[tuple[Any, ...], tuple[Any, ...]]


def base_query(target: StatementTarget, extra: Sequence[Any] = ()) -> Any:
    """SELECT key, columns[, extra] FROM the target."""
    return select(*target.pk_columns, *target.columns, *extra).select_from(target.selectable)


def on_target_table(clause: Any, statement_from: Any, target: StatementTarget) -> Any:
    """``clause`` with the columns of the statement's own FROM (an alias, a ``table()``
    construct) replaced by the tracked table's, so a read selects from the real table."""
    if clause is None or statement_from is None:
        return clause
    by_name = {c.name: c for c in target.table.columns}  # .c is keyed by key, not name

    def replace(element: Any) -> Any:
        if getattr(element, "table", None) == statement_from and element.name in by_name:
            return by_name[element.name]
        return None

    return visitors.replacement_traverse(clause, {}, replace)  # type: ignore[call-overload]


def matching_rows(
    query: Any,
    where: Any,
    param_sets: Sequence[Mapping[str, Any]],
    batch: bool,
    key_columns: Sequence[Any],
    connection: Connection,
    options: Mapping[str, Any],
) -> Iterator[tuple[Any, ...]]:
    """Rows the statement's WHERE clause matches, for each parameter set.

    An executemany whose criteria are all ``column = :bind`` (a bulk UPDATE by primary key,
    a versioned update, ``WHERE name = :name``) is read ``CHUNK`` parameter sets per SELECT
    with ``(columns) IN (...)``; any other shape, one SELECT per parameter set.
    """
    binds = equality_binds(where)
    if binds is not None and batch and len(param_sets) > 1:
        columns = [column for column, _ in binds]
        for chunk in chunks(list(param_sets), CHUNK):
            values = [tuple(_bound(params, bind) for _, bind in binds) for params in chunk]
            criterion = _in(columns, values)
            yield from connection.execute(query.where(criterion), execution_options=options)
        return
    if where is not None:
        query = query.where(where)
    one_row = binds is not None and _covers_key(binds, key_columns)
    # Stream a read that may be large; a server-side cursor needs a transaction block.
    if not one_row and not in_autocommit(connection):
        query = query.execution_options(stream_results=True, yield_per=CHUNK)
    for params in param_sets:
        yield from connection.execute(query, dict(params), execution_options=options)


def equality_binds(where: Any) -> list[tuple[Any, BindParameter[Any]]] | None:
    """``[(column, bind), ...]`` when ``where`` is only ``column = :bind`` terms ANDed."""
    if where is None:
        return None
    if isinstance(where, BooleanClauseList):
        if where.operator is not operators.and_:
            return None
        clauses = list(where.clauses)
    else:
        clauses = [where]
    binds = []
    for clause in clauses:
        if not (
            isinstance(clause, BinaryExpression)
            and clause.operator is operators.eq
            and isinstance(clause.right, BindParameter)
            and getattr(clause.left, "table", None) is not None
        ):
            return None
        binds.append((clause.left, clause.right))
    return binds


def _covers_key(binds: list[tuple[Any, BindParameter[Any]]], key_columns: Sequence[Any]) -> bool:
    """Whether ``column = :bind`` terms pin every key column (at most one row matches)."""
    pinned = {(getattr(column, "table", None), column.name) for column, _ in binds}
    return all(any(c.name == name and c.table == t for t, name in pinned) for c in key_columns)


def _bound(params: Mapping[str, Any], bind: BindParameter[Any]) -> Any:
    return params.get(bind.key, bind.value)


def rows_by_key(
    target: StatementTarget,
    keys: Iterable[tuple[Any, ...]],
    connection: Connection,
    options: Mapping[str, Any],
) -> Iterator[Row]:
    """``(key, values)`` of the rows with these primary keys, one SELECT per ``CHUNK``."""
    query = base_query(target)
    width = len(target.pk_columns)
    for chunk in chunks(list(dict.fromkeys(keys)), CHUNK):
        criterion = _in(list(target.pk_columns), chunk)
        for row in connection.execute(query.where(criterion), execution_options=options):
            yield tuple(row[:width]), tuple(row[width:])


def rows_by_columns(
    target: StatementTarget,
    columns: Sequence[Any],
    values: Sequence[tuple[Any, ...]],
    connection: Connection,
    options: Mapping[str, Any],
) -> Iterator[Row]:
    """``(key, values)`` of the rows whose ``columns`` hold one of ``values`` (an upsert's
    conflict target), one SELECT per ``CHUNK``."""
    query = base_query(target)
    width = len(target.pk_columns)
    for chunk in chunks(list(dict.fromkeys(values)), CHUNK):
        for row in connection.execute(query.where(_in(columns, chunk)), execution_options=options):
            yield tuple(row[:width]), tuple(row[width:])


def _in(columns: Sequence[Any], values: Sequence[tuple[Any, ...]]) -> Any:
    if len(columns) == 1:
        return columns[0].in_([v[0] for v in values])
    return tuple_(*columns).in_(values)


def chunks(items: list[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
