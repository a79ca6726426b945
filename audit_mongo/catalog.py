"""What the query side knows of the mapped classes behind a ``table_name``: key columns and
attribute types (to coerce ids and bring values back as the model's Python types) and the
attribute names (to refuse a misspelt table or field instead of answering "nothing")."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import Mapper
from sqlalchemy.types import CHAR, NCHAR, TypeDecorator, TypeEngine

from .inputs import check_id
from .normalise import column_value_to_bson
from .table_info import identity_table

NO_EXCLUSIONS: frozenset[str] = frozenset()


@dataclass(frozen=True)
class TableModel:
    """The mapped classes whose rows a ``table_name`` names, as the query side needs them."""

    table_name: str
    base: Mapper[Any]  # the class documents are keyed by (the hierarchy's base)
    key_columns: tuple[Any, ...]
    attribute_types: Mapping[str, TypeEngine[Any]]  # every column attribute of the hierarchy
    collections: frozenset[str]  # many-to-many relationships, recorded as related keys
    excluded: frozenset[str]  # attributes the log never records
    entity_attributes: Mapping[str, frozenset[str]]  # class name -> its recorded columns

    @classmethod
    def of(cls, mapper: Mapper[Any], excluded: frozenset[str] = NO_EXCLUSIONS) -> TableModel:
        base = _document_base(mapper)
        types: dict[str, TypeEngine[Any]] = {}
        collections: set[str] = set()
        entities: dict[str, frozenset[str]] = {}
        for each in base.self_and_descendants:
            for prop in each.column_attrs:
                types.setdefault(prop.key, prop.columns[0].type)
            collections.update(r.key for r in each.relationships if r.secondary is not None)
            entities[each.class_.__name__] = frozenset(
                p.key for p in each.column_attrs if p.key not in excluded
            )
        return cls(
            identity_table(base),
            base,
            tuple(base.primary_key),
            types,
            frozenset(collections),
            excluded,
            entities,
        )

    def columns_of(self, entity: str | None) -> frozenset[str]:
        """The column attributes recorded for a row of class ``entity`` (None: the base)."""
        return self.entity_attributes.get(entity or self.base.class_.__name__, frozenset())

    def stored_key(self, value: Any, *, checked: bool = True) -> Any:
        """A primary key as documents store it, from the Python value or its text (a URL
        parameter): ``"5"`` becomes ``5`` for an integer key. A composite key is a tuple.
        ``checked=False``: a loaded object's own key, not refused for a leading "$"."""
        parts = list(value) if isinstance(value, (tuple, list)) else [value]
        if len(parts) != len(self.key_columns):
            names = ", ".join(c.key for c in self.key_columns)
            raise ValueError(
                f"{self.table_name} has a key of {len(self.key_columns)} column(s) ({names}); "
                f"got {value!r}"
            )
        stored = [
            self._stored_part(p, c, checked) for p, c in zip(parts, self.key_columns, strict=True)
        ]
        return stored[0] if len(stored) == 1 else stored

    def _stored_part(self, value: Any, column: Any, checked: bool) -> Any:
        if checked:
            check_id(value)  # refuse an operator before anything else looks at it
        where = f"{self.table_name}.{column.key}"
        if isinstance(value, str):
            value = _parse(value, column.type, where)
            if isinstance(column.type, (CHAR, NCHAR)) and isinstance(value, str):
                value = value.rstrip(" ")  # as capture stores a CHAR key
        decorated = column.type if isinstance(column.type, TypeDecorator) else None
        return column_value_to_bson(value, decorated, None, where)

    def entities(self, mapper: Mapper[Any]) -> list[str] | None:
        """The ``entity`` values of ``mapper``'s rows (it and its subclasses), or None when
        every row of the table is one of them."""
        if mapper is self.base or (mapper.inherits is None and mapper.polymorphic_on is None):
            return None
        return sorted(m.class_.__name__ for m in mapper.self_and_descendants)

    def check_field(self, name: str, entity: str | None = None) -> None:
        """Raise ``ValueError`` unless the log records attribute ``name`` of these rows (of
        class ``entity`` and its subclasses, when given)."""
        if name in self.excluded:
            raise ValueError(
                f"{self.table_name}.{name} is excluded from the audit log: it is never recorded"
            )
        names = set(self.collections)
        if entity is None:
            names.update(self.attribute_types)
        else:
            mapper = next(m for m in self.base.self_and_descendants if m.class_.__name__ == entity)
            for each in mapper.self_and_descendants:
                names.update(self.columns_of(each.class_.__name__))
        if name not in names:
            base = self.base.class_.__name__
            where = self.table_name if entity in (None, base) else f"{entity} ({self.table_name})"
            raise ValueError(
                f"{where} has no attribute {name!r} (it has: {', '.join(sorted(names))})"
            )


def _parse(text: str, column_type: TypeEngine[Any], where: str) -> Any:
    """A key given as text, converted to the column's Python type."""
    enum_class = getattr(column_type, "enum_class", None)
    if isinstance(enum_class, type) and issubclass(enum_class, enum.Enum):
        try:
            return enum_class[text]
        except KeyError:
            raise ValueError(
                f"{text!r} is not a member of {enum_class.__name__} ({where})"
            ) from None
    try:
        python_type = column_type.python_type
    except NotImplementedError:
        return text
    parser = _PARSERS.get(python_type)
    if parser is None:
        return text
    try:
        return parser(text)
    except (ValueError, InvalidOperation):
        raise ValueError(
            f"{text!r} is not a valid {python_type.__name__}, the type of {where}"
        ) from None


def _int(text: str) -> int:
    """Plain ASCII digits with an optional minus sign (int() would take "1_0" and " 5 ")."""
    body = text[1:] if text[:1] == "-" else text
    if not (body.isascii() and body.isdigit()):
        raise ValueError(text)
    return int(text)


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered not in ("true", "false", "1", "0"):
        raise ValueError(text)
    return lowered in ("true", "1")


_PARSERS: dict[type, Callable[[str], Any]] = {
    int: _int,
    float: float,
    bool: _bool,
    Decimal: Decimal,
    uuid.UUID: uuid.UUID,
    dt.datetime: dt.datetime.fromisoformat,
    dt.date: dt.date.fromisoformat,
    dt.time: dt.time.fromisoformat,
}


def _document_base(mapper: Mapper[Any]) -> Mapper[Any]:
    while mapper.inherits is not None and not mapper.concrete:
        mapper = mapper.inherits
    return mapper


class ModelCatalog:
    """Table names to ``TableModel``s, over the mapped classes of some registries.

    Built lazily, and rebuilt when the mappings may have changed (``generation()`` moved
    on) or a name is not found: a class wired with ``event.listen`` after the first query
    is found by the next.
    """

    def __init__(
        self,
        registries: Callable[[], Iterable[Any]],
        *,
        preferred: Callable[[Mapper[Any]], bool] = lambda mapper: True,
        excluded: Callable[[Mapper[Any]], frozenset[str]] = lambda mapper: NO_EXCLUSIONS,
        generation: Callable[[], int] = lambda: 0,
    ) -> None:
        self._registries = registries
        self._preferred = preferred
        self._excluded = excluded
        self._generation = generation  # changes when the mappings may have changed
        self._built_at = -1
        self._models_at = -1
        self._tables: dict[str, Mapper[Any]] | None = None
        self._models: dict[Mapper[Any], TableModel] = {}

    @classmethod
    def of_models(cls, models: Iterable[type]) -> ModelCatalog:
        """A catalog over the registries of ``models`` (mapped classes or declarative bases)."""
        registries = {_registry(model) for model in models}
        return cls(lambda: registries)

    def table(self, name: str) -> TableModel | None:
        """The model behind ``name``; None when no class is known at all. Raises
        ``ValueError`` for a name no known class maps when some are known."""
        mapper = self._table_mappers().get(name)
        if mapper is None:
            mapper = self._table_mappers(rebuild=True).get(name)
        if mapper is not None:
            return self.model(mapper)
        tables = self._table_mappers()
        if not tables:
            return None
        raise ValueError(
            f"unknown table {name!r}: the audit log's models map {', '.join(sorted(tables))}"
        )

    def lookup(self, name: str) -> TableModel | None:
        """The model behind ``name`` if known (no rebuild, no error): for reading documents,
        which may name tables the models no longer map."""
        mapper = self._table_mappers().get(name)
        return self.model(mapper) if mapper is not None else None

    def model(self, mapper: Mapper[Any]) -> TableModel:
        if self._generation() != self._models_at:  # new mappers or exclusions since
            self._models.clear()
            self._models_at = self._generation()
        base = _document_base(mapper)
        model = self._models.get(base)
        if model is None:
            # An exclusion named for a subclass applies to that subclass's rows.
            excluded = frozenset().union(*(self._excluded(m) for m in base.self_and_descendants))
            model = self._models[base] = TableModel.of(base, excluded)
        return model

    def of_class(self, model: type) -> tuple[TableModel, Mapper[Any]]:
        """The ``TableModel`` of a mapped class, and its mapper."""
        mapper: Any = inspect(model, raiseerr=False)
        if not isinstance(mapper, Mapper):
            raise TypeError(f"{model!r} is not a mapped class")
        return self.model(mapper), mapper

    def _table_mappers(self, rebuild: bool = False) -> dict[str, Mapper[Any]]:
        if self._tables is None or rebuild or self._generation() != self._built_at:
            self._models.clear()
            self._built_at = self._generation()
            self._tables = self._build()
        return self._tables

    def _build(self) -> dict[str, Mapper[Any]]:
        """Each table name's base class; where two registries map one name (tests, a
        migration's copy of the models), a class the log tracks wins."""
        tables: dict[str, Mapper[Any]] = {}
        preferred: set[str] = set()
        for registry in list(self._registries()):
            for mapper in list(registry.mappers):
                base = _document_base(mapper)
                name = identity_table(base)
                if name not in tables or (name not in preferred and self._preferred(mapper)):
                    tables[name] = base
                if self._preferred(mapper):
                    preferred.add(name)
        return tables


def _registry(model: type) -> Any:
    mapper: Any = inspect(model, raiseerr=False)
    if isinstance(mapper, Mapper):
        return mapper.registry
    registry = getattr(model, "registry", None)  # a declarative base
    if registry is None:
        raise TypeError(f"{model!r} is neither a mapped class nor a declarative base")
    return registry
