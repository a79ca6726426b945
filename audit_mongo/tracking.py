"""Which mapped classes and tables a log records, and what it records of them.

A class is tracked when ``AuditLog.track()`` named it (or a base class of it), or when the
application wired the log's ``receive_before_*`` receivers to it (or to a mapped base class)
with ``event.listen``. Statements name a ``Table``, not a class: a table is tracked when a
tracked class persists to it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from sqlalchemy import Column, Table, event
from sqlalchemy.orm import Mapper, class_mapper
from sqlalchemy.orm.exc import UnmappedClassError, UnmappedColumnError
from sqlalchemy.types import TypeDecorator

from .capture import TableInfo, identity_table
from .changes import Action
from .statements import StatementTarget

ALL_ACTIONS: frozenset[Action] = frozenset(("create", "update", "delete"))


class Tracking:
    """The log's tracked classes and their exclusions, with per-mapper and per-table caches."""

    def __init__(
        self,
        exclude: Collection[str],
        receivers: Mapping[Action, tuple[str, Callable[..., None]]],
    ) -> None:
        self._exclude = frozenset(exclude)
        self._receivers = receivers  # action -> (mapper event, the log's public receiver)
        self._models: dict[type, frozenset[str]] = {}
        self._infos: dict[Mapper[Any], TableInfo] = {}
        self._targets: dict[Table, StatementTarget | None] = {}
        self._registries: set[Any] = set()

    def add(self, model: type, exclude: Collection[str]) -> None:
        self._models[model] = self._models.get(model, frozenset()) | set(exclude)
        try:
            self._registries.add(class_mapper(model).registry)
        except UnmappedClassError:  # a declarative base: its registry is on the class
            registry = getattr(model, "registry", None)
            if registry is not None:
                self._registries.add(registry)
        self.forget()

    def forget(self) -> None:
        """Drop what was derived from the mappings (new mappers, new exclusions)."""
        self._infos.clear()
        self._targets.clear()

    def info(self, mapper: Mapper[Any]) -> TableInfo:
        """What the unit of work records of ``mapper``'s rows."""
        info = self._infos.get(mapper)
        if info is None:
            self._registries.add(mapper.registry)
            info = self._infos[mapper] = TableInfo.of(mapper, self.excluded(mapper))
        return info

    def excluded(self, mapper: Mapper[Any]) -> frozenset[str]:
        excluded = self._exclude
        for cls in mapper.class_.__mro__:
            excluded |= self._models.get(cls, frozenset())
        return excluded

    def tracked_actions(self, mapper: Mapper[Any]) -> frozenset[Action]:
        """The actions recorded for ``mapper``'s rows: all when tracked, else those wired."""
        if any(cls in self._models for cls in mapper.class_.__mro__):
            return ALL_ACTIONS
        wired: set[Action] = set()
        ancestor: Mapper[Any] | None = mapper
        while ancestor is not None:
            for action, (name, receiver) in self._receivers.items():
                if event.contains(ancestor.class_, name, receiver):
                    wired.add(action)
            ancestor = ancestor.inherits
        return frozenset(wired)

    def target(self, table: Table) -> StatementTarget | None:
        """What statements on ``table`` record, or None when no tracked class persists to it."""
        if table in self._targets:
            return self._targets[table]
        # == and not "is": an ORM statement names an annotated copy of the table, equal to it.
        owners = {m: self.tracked_actions(m) for m in self._mappers() if m.local_table == table}
        actions = frozenset().union(*owners.values())
        tracked = [m for m, wired in owners.items() if wired]
        target = _statement_target(table, tracked, actions, self) if tracked else None
        self._targets[table] = target
        return target

    def _mappers(self) -> Iterator[Mapper[Any]]:
        for registry in list(self._registries | _all_registries()):
            yield from registry.mappers


def _all_registries() -> set[Any]:
    # Statements name only a Table; finding the classes mapped to it needs every registry,
    # including those of classes wired with event.listen that the log has not seen yet.
    try:
        from sqlalchemy.orm.mapper import _all_registries as every_registry
    except ImportError:  # pragma: no cover - a future SQLAlchemy: fall back to those seen
        return set()
    return set(every_registry())


def _statement_target(
    table: Any, owners: list[Mapper[Any]], actions: frozenset[Action], tracking: Tracking
) -> StatementTarget:
    owners.sort(key=lambda m: len(list(m.iterate_to_root())))
    base = owners[0]
    table = base.local_table  # the plain Table, not a statement's annotated copy
    excluded = frozenset().union(*(tracking.excluded(m) for m in owners))
    keys: list[str] = []
    columns: list[Column[Any]] = []
    for column in table.columns:
        key = _attribute_key(owners, column)
        if key not in excluded and key not in keys:
            keys.append(key)
            columns.append(column)
    pk_columns = tuple(table.primary_key.columns)
    pk_keys = tuple(_attribute_key(owners, c) for c in pk_columns)
    decorated = {
        _attribute_key(owners, c): c.type
        for c in table.columns
        if isinstance(c.type, TypeDecorator)
    }
    info = tracking.info(base)
    return StatementTarget(
        table=table,
        actions=actions,
        table_name=identity_table(base),
        entity=info.entity,
        keys=tuple(keys),
        columns=tuple(columns),
        pk_columns=pk_columns,
        pk_keys=pk_keys,
        decorated_types=decorated,
    )


def _attribute_key(owners: list[Mapper[Any]], column: Column[Any]) -> str:
    """The attribute a column is mapped to (its key in documents), else the column's key."""
    for mapper in owners:
        try:
            return str(mapper.get_property_by_column(column).key)
        except UnmappedColumnError:
            continue
    return str(column.key)
