"""Which mapped classes and tables a log records, and what it records of them.

A class is tracked when ``AuditLog.track()`` named it (or a base class of it), or when the
application wired the log's ``receive_before_*`` receivers to it (or to a mapped base class)
with ``event.listen``. Statements name a ``Table``, not a class: a table is tracked when a
tracked class persists to it.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import Column, Table, event
from sqlalchemy.orm import Mapper, class_mapper
from sqlalchemy.orm.exc import UnmappedClassError, UnmappedColumnError
from sqlalchemy.sql.expression import Alias, TableClause
from sqlalchemy.sql.util import find_tables
from sqlalchemy.types import TypeDecorator

from .changes import Action
from .masking import Masker, default_masked
from .statements import StatementTarget
from .table_info import TableInfo, padded_flags

ALL_ACTIONS: frozenset[Action] = frozenset(("create", "update", "delete"))

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class MaskSettings:
    """A log's masking: the attributes masked for every model, whether names containing a
    secret word are masked by default, and how values are hidden."""

    names: frozenset[str]
    default: bool
    masker: Masker

    @classmethod
    def of(
        cls, mask: Collection[str], mask_key: bytes | str | None, default_mask: bool
    ) -> MaskSettings:
        """Settings from ``AuditLog``'s arguments, checked."""
        names = frozenset(attribute_names(mask, "mask"))
        return cls(names, checked_flag(default_mask, "default_mask"), Masker(mask_key))


class Tracking:
    """The log's tracked classes, their exclusions and masks, with per-mapper and per-table
    caches."""

    def __init__(
        self,
        exclude: Collection[str],
        receivers: Mapping[Action, tuple[str, Callable[..., None]]],
        masks: MaskSettings,
    ) -> None:
        self._exclude = frozenset(attribute_names(exclude, "exclude"))
        self._receivers = receivers  # action -> (mapper event, the log's public receiver)
        self._masks = masks
        self._models: dict[type, frozenset[str]] = {}  # tracked class -> its exclusions
        self._model_masks: dict[type, frozenset[str]] = {}
        self._default_masks: dict[type, bool] = {}  # set for a class and its subclasses
        self._infos: dict[Mapper[Any], TableInfo] = {}
        self._table_mappers: dict[Any, tuple[list[Mapper[Any]], list[Mapper[Any]]]] = {}
        self._tables_by_name: dict[tuple[str | None, str], list[Table]] = {}
        self._unmapped: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
        self._targets: dict[Any, tuple[tuple[frozenset[Action], ...], StatementTarget | None]] = {}
        self._registries: set[Any] = set()
        # How many off() blocks the current thread or asyncio task is in.
        self._off: ContextVar[int] = ContextVar(f"audit_mongo_off_{id(self)}", default=0)
        self.generation = 0  # bumped whenever derived knowledge is dropped
        # The engines whose work is recorded, compared by pool: an engine made with
        # execution_options() is another object on the same pool. None: every engine.
        self.engines: tuple[Any, ...] | None = None

    @property
    def recording(self) -> bool:
        """False inside an ``off()`` block of the current thread or asyncio task."""
        return not self._off.get()

    def records(self, connection: Any) -> bool:
        """Whether work on ``connection`` is recorded now: not inside an ``off()`` block,
        and on one of the log's engines when it was given some."""
        if self._off.get():
            return False
        engines = self.engines
        if engines is None:
            return True
        pool = connection.engine.pool  # an engine's pool changes when it is disposed
        return any(engine.pool is pool for engine in engines)

    def off(self) -> Off:
        """Recording off: a ``with`` or ``async with`` block, or a function's decorator."""
        return Off(self._off)

    def listen(self) -> None:
        """Forget derived knowledge whenever SQLAlchemy configures new mappers."""
        event.listen(Mapper, "after_configured", self.forget)

    def close(self) -> None:
        if event.contains(Mapper, "after_configured", self.forget):
            event.remove(Mapper, "after_configured", self.forget)

    def add(
        self,
        model: type,
        exclude: Collection[str],
        mask: Collection[str] = (),
        default_mask: bool | None = None,
    ) -> None:
        exclude = attribute_names(exclude, "exclude")
        mask = attribute_names(mask, "mask")
        if default_mask is not None:
            self._default_masks[model] = checked_flag(default_mask, "default_mask")
        self._models[model] = self._models.get(model, frozenset()) | set(exclude)
        self._model_masks[model] = self._model_masks.get(model, frozenset()) | set(mask)
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
        self._table_mappers.clear()
        self._tables_by_name.clear()
        self._unmapped = weakref.WeakKeyDictionary()
        self._targets.clear()
        self.generation += 1

    def known_registries(self) -> set[Any]:
        """The registries of tracked classes: named by ``track()``, seen by capture, or
        holding a class wired with ``event.listen``."""
        wired = {
            registry
            for registry in _all_registries()
            if any(self.tracked_actions(m) for m in list(registry.mappers))
        }
        return self._registries | wired

    def is_tracked(self, mapper: Mapper[Any]) -> bool:
        return bool(self.tracked_actions(mapper))

    def info(self, mapper: Mapper[Any]) -> TableInfo:
        """What the unit of work records of ``mapper``'s rows."""
        info = self._infos.get(mapper)
        if info is None:
            self._registries.add(mapper.registry)
            excluded = self.excluded(mapper)
            masked = self.masked(mapper) - excluded
            info = TableInfo.of(mapper, excluded, masked, self._masks.masker)
            self._infos[mapper] = info
        return info

    def excluded(self, mapper: Mapper[Any]) -> frozenset[str]:
        excluded = self._exclude
        for cls in mapper.class_.__mro__:
            excluded |= self._models.get(cls, frozenset())
        return excluded

    def masked(self, mapper: Mapper[Any]) -> frozenset[str]:
        """Attributes of ``mapper``'s rows recorded with their values hidden: those the log,
        the class or a base class masks, and, unless the default mask is off for it, the
        column attributes whose names contain a secret word."""
        masked = self._masks.names
        for cls in mapper.class_.__mro__:
            masked |= self._model_masks.get(cls, frozenset())
        if self._default_mask(mapper):
            masked |= default_masked(p.key for p in mapper.column_attrs)
        return masked

    def _default_mask(self, mapper: Mapper[Any]) -> bool:
        """The nearest setting along the class's bases, else the log's."""
        for cls in mapper.class_.__mro__:
            setting = self._default_masks.get(cls)
            if setting is not None:
                return setting
        return self._masks.default

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

    def statement_table(self, from_: Any) -> tuple[Table | None, Any]:
        """The mapped ``Table`` a statement writes, and the statement's own FROM when its
        criteria name something else (an alias, a ``table()`` construct, a reflected copy
        of the table), else None; (None, None) for a table no class is mapped to."""
        if isinstance(from_, Alias):
            table, _ = self.statement_table(from_.element)
            return (table, from_) if table is not None else (None, None)
        if isinstance(from_, Table) and self._mappers_of(from_) is not None:
            return from_, None
        if isinstance(from_, TableClause):
            table = self._mapped_table_named(from_.schema, from_.name)
            return (table, from_) if table is not None else (None, None)
        return None, None

    def _mapped_table_named(self, schema: str | None, name: str) -> Table | None:
        """The mapped table a name designates; where several metadata map that name (two
        applications, a migration's copy of the models), the one a tracked class persists
        to, if only one is."""
        if (schema, name) not in self._tables_by_name:
            tables = {m.local_table for m in self._mappers()}
            self._tables_by_name[(schema, name)] = [
                t for t in tables if isinstance(t, Table) and (t.schema, t.name) == (schema, name)
            ]
        found = self._tables_by_name[(schema, name)]
        if len(found) > 1:
            found = [t for t in found if self.target(t) is not None]
        return found[0] if len(found) == 1 else None

    def _mappers_of(self, table: Table) -> tuple[list[Mapper[Any]], list[Mapper[Any]]] | None:
        """The classes persisted to ``table`` and their subclasses; None when unmapped."""
        mappers = self._table_mappers.get(table)
        if mappers is None and table not in self._unmapped:
            # == and not "is": an ORM statement names an annotated copy of the table.
            owners = [m for m in self._mappers() if m.local_table == table]
            if not owners:
                self._unmapped[table] = True
                return None
            descendants = {d for m in owners for d in m.self_and_descendants}
            mappers = self._table_mappers[table] = (owners, sorted(descendants, key=_depth))
        return mappers

    def target(self, table: Table) -> StatementTarget | None:
        """What statements on ``table`` record, or None when no tracked class persists to it.

        The classes mapped to a table are found once; whether they are tracked is asked at
        every statement (cheaply), since wiring with ``event.listen`` can come at any time.
        """
        mappers = self._mappers_of(table)
        if mappers is None:
            return None
        owners, related = mappers
        wiring = tuple(self.tracked_actions(m) for m in related)
        cached = self._targets.get(table)
        if cached is not None and cached[0] == wiring:
            return cached[1]
        actions = dict(zip(related, wiring, strict=True))
        target = _statement_target(owners, actions, self) if any(wiring) else None
        self._targets[table] = (wiring, target)
        return target

    def _mappers(self) -> Iterator[Mapper[Any]]:
        for registry in list(self._registries | _all_registries()):
            yield from registry.mappers


class Off:
    """Recording off for the current thread or asyncio task: as a ``with`` or ``async with``
    block, or as the decorator of a function or of a coroutine function (whose body runs in
    the task awaiting it: recording is off there until it returns, across its awaits).

    It counts the blocks entered rather than keeping a token, so one ``Off`` can be entered
    by several threads or tasks at once, and nested or reused freely; an asyncio task
    started inside the block copies the count, and records nothing either.
    """

    __slots__ = ("_depth",)

    def __init__(self, depth: ContextVar[int]) -> None:
        self._depth = depth

    def __enter__(self) -> None:
        self._depth.set(self._depth.get() + 1)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._depth.set(max(self._depth.get() - 1, 0))

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)

    def __call__(self, func: F) -> F:
        if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
            # Their bodies run piecemeal, between the caller's own steps: a decorator could
            # only switch recording off around the call that creates the generator.
            raise TypeError(
                f"disabled() cannot decorate the generator function {func.__qualname__}: "
                "use a `with` block inside it"
            )
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def off_while_awaited(*args: Any, **kwargs: Any) -> Any:
                with self:  # entered by the task that awaits, when it starts awaiting
                    return await func(*args, **kwargs)

            return off_while_awaited  # type: ignore[return-value]

        @functools.wraps(func)
        def off_while_called(*args: Any, **kwargs: Any) -> Any:
            with self:
                result = func(*args, **kwargs)
            if inspect.iscoroutine(result):  # a coroutine function not marked as one
                return self._awaited(result)
            return result

        return off_while_called  # type: ignore[return-value]

    async def _awaited(self, awaitable: Awaitable[Any]) -> Any:
        with self:
            return await awaitable


def _all_registries() -> set[Any]:
    # Statements name only a Table; finding the classes mapped to it needs every registry,
    # including those of classes wired with event.listen that the log has not seen yet.
    try:
        from sqlalchemy.orm.mapper import _all_registries as every_registry
    except ImportError:  # pragma: no cover - a future SQLAlchemy: fall back to those seen
        return set()
    return set(every_registry())


def _depth(mapper: Mapper[Any]) -> int:
    return len(list(mapper.iterate_to_root()))


def _statement_target(
    owners: list[Mapper[Any]], actions: dict[Mapper[Any], frozenset[Action]], tracking: Tracking
) -> StatementTarget:
    owners = sorted(owners, key=_depth)
    base = owners[0]
    table: Any = base.local_table  # the plain Table, not a statement's annotated copy
    joined = (
        base.inherits is not None and not base.concrete and base.persist_selectable is not table
    )
    excluded = frozenset().union(*(tracking.excluded(m) for m in owners))
    pairs: list[tuple[str, Any]]
    pk_columns: tuple[Any, ...]
    if joined:  # a subclass's own table: read its rows through the join with its bases
        selectable = base.persist_selectable
        pairs = [(p.key, p.columns[0]) for p in base.column_attrs]
        pk_columns = tuple(base.primary_key)
    else:
        selectable = table
        pairs = [(_attribute_key(owners, c), c) for c in table.columns]
        pk_columns = tuple(table.primary_key.columns)
    keys: list[str] = []
    columns: list[Any] = []
    for key, column in pairs:
        if key not in excluded and key not in keys:
            keys.append(key)
            columns.append(column)
    discriminator = _discriminator(base, selectable, columns)
    if discriminator is not None and discriminator == len(columns):
        columns.append(base.polymorphic_on)
    info = tracking.info(base)
    masked = _masked_indexes(keys, [tracking.info(m) for m in actions])
    return StatementTarget(
        table=table,
        selectable=selectable,
        tables=frozenset(find_tables(selectable)),
        actions=frozenset().union(*actions.values()),
        table_name=info.table_name,
        keys=tuple(keys),
        columns=tuple(columns),
        pk_columns=pk_columns,
        pk_keys=tuple(_attribute_key([base], c) for c in pk_columns),
        own_pk_columns=tuple(table.primary_key.columns),
        padded=padded_flags(pk_columns),
        decorated_types={k: c.type for k, c in pairs if isinstance(c.type, TypeDecorator)},
        discriminator=discriminator,
        classes={
            value: (mapper.class_.__name__, actions.get(mapper, frozenset()))
            for value, mapper in base.polymorphic_map.items()
            if mapper.isa(base)
        },
        entity=info.entity,
        entity_actions=actions.get(base, frozenset()),
        masker=info.mask.masker,
        masked=masked,
        # A row whose class is not known is masked as every class would mask it.
        masked_otherwise=tuple(sorted({i for indexes in masked.values() for i in indexes})),
    )


def _masked_indexes(keys: list[str], infos: list[TableInfo]) -> dict[str | None, tuple[int, ...]]:
    """Per class (``entity``), where the values it masks are among the keys read."""
    found: dict[str | None, set[int]] = {}
    for info in infos:  # classes sharing an entity name (None) share their masks
        masked = found.setdefault(info.entity, set())
        masked.update(i for i, key in enumerate(keys) if key in info.mask.names)
    return {entity: tuple(sorted(indexes)) for entity, indexes in found.items()}


def _discriminator(base: Mapper[Any], selectable: Any, columns: list[Any]) -> int | None:
    """Where the polymorphic discriminator will be among the values read, if readable."""
    column = base.polymorphic_on
    if not isinstance(column, Column) or selectable.corresponding_column(column) is None:
        return None
    for index, candidate in enumerate(columns):
        if candidate is column:
            return index
    return len(columns)  # read after the recorded columns


def _attribute_key(owners: list[Mapper[Any]], column: Any) -> str:
    """The attribute a column is mapped to (its key in documents), else the column's key."""
    for mapper in owners:
        try:
            return str(mapper.get_property_by_column(column).key)
        except UnmappedColumnError:
            continue
    return str(column.key)


def attribute_names(names: Collection[str], argument: str) -> Collection[str]:
    """``names`` checked: a plain string would be taken for a set of one-letter names (and
    the attribute it names recorded, or unmasked, after all)."""
    if isinstance(names, str):
        raise TypeError(
            f"{argument} is a collection of attribute names, not a string: ({names!r},)"
        )
    return names


def checked_flag(value: Any, argument: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{argument} is True or False, not {value!r}")
    return value
