"""What the unit of work records of one mapped class, computed once per mapper, and how a
row's key is spelled in documents."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Mapper
from sqlalchemy.orm.exc import UnmappedColumnError
from sqlalchemy.types import CHAR, NCHAR, TypeDecorator, TypeEngine

from .masking import Masker, TableMask, recorded_masks


@dataclass(frozen=True, slots=True)
class TableInfo:
    """What capture needs to know about one mapped class, computed once per mapper."""

    table_name: str
    entity: str | None  # the class name, for a class in an inheritance hierarchy
    tables: frozenset[Any]  # every table the class's rows span
    keys: tuple[str, ...]
    key_set: frozenset[str]
    pk_keys: tuple[str, ...]
    decorated_types: Mapping[str, TypeEngine[Any]]
    insert_generated: frozenset[str]  # values the database may compute on INSERT
    update_generated: frozenset[str]  # ... and on UPDATE (onupdate, server_onupdate)
    collections: tuple[str, ...]  # many-to-many relationships, recorded as related keys
    padded: tuple[bool, ...]  # which key columns are CHAR: compared without trailing blanks
    mask: TableMask  # attributes recorded with their values hidden

    @classmethod
    def of(
        cls,
        mapper: Mapper[Any],
        exclude: Collection[str],
        masked: frozenset[str],
        masker: Masker,
    ) -> TableInfo:
        keys = tuple(p.key for p in mapper.column_attrs if p.key not in exclude)
        pk_keys = tuple(mapper.get_property_by_column(c).key for c in mapper.primary_key)
        decorated = {
            p.key: p.columns[0].type
            for p in mapper.column_attrs
            if isinstance(p.columns[0].type, TypeDecorator)
        }
        in_hierarchy = mapper.inherits is not None or mapper.polymorphic_on is not None
        entity = mapper.class_.__name__ if in_hierarchy and not mapper.concrete else None
        tables = frozenset(mapper.tables)
        on_insert = frozenset(
            p.key
            for p in mapper.column_attrs
            if p.key in keys and _computed_on_insert(p.columns[0])
        )
        on_update = frozenset(
            p.key
            for p in mapper.column_attrs
            if p.key in keys
            and (
                p.columns[0].onupdate
                or p.columns[0].server_onupdate
                or p.columns[0] is mapper.version_id_col
            )
        )
        collections = tuple(
            r.key
            for r in mapper.relationships
            if r.secondary is not None and not r.viewonly and r.key not in exclude
        )
        table_name = identity_table(mapper)
        kept = (*pk_keys, *_discriminator_key(mapper))
        mask = TableMask(
            table_name, recorded_masks(table_name, masked, (*keys, *collections), kept), masker
        )
        return cls(
            table_name,
            entity,
            tables,
            keys,
            frozenset(keys),
            pk_keys,
            decorated,
            on_insert,
            on_update,
            collections,
            padded_flags(mapper.primary_key),
            mask,
        )


def padded_flags(columns: Iterable[Any]) -> tuple[bool, ...]:
    return tuple(isinstance(c.type, (CHAR, NCHAR)) for c in columns)


def unpad(key: tuple[Any, ...], padded: tuple[bool, ...]) -> tuple[Any, ...]:
    """A key as the application spells it: a CHAR column's value without the blanks the
    database pads it with (SQL compares CHAR values that way too), so a row read back from
    the database and the same row created in the session are one row."""
    if not any(padded):
        return key
    return tuple(
        v.rstrip(" ") if flag and isinstance(v, str) else v
        for v, flag in zip(key, padded, strict=True)
    )


def _discriminator_key(mapper: Mapper[Any]) -> tuple[str, ...]:
    """The attribute holding the polymorphic discriminator, if it is a mapped column."""
    column = mapper.polymorphic_on
    if column is None:
        return ()
    try:
        return (str(mapper.get_property_by_column(column).key),)
    except UnmappedColumnError:
        return ()


def _computed_on_insert(column: Any) -> bool:
    default = column.default
    return column.server_default is not None or bool(default and default.is_clause_element)


def identity_table(mapper: Mapper[Any]) -> str:
    """The table documents name for a mapped class's rows.

    A row of a joined- or single-table inheritance hierarchy is one row whatever class
    loads it, so its documents name the hierarchy's base table; a concrete-table class
    keeps its own table (and its own keys).
    """
    while mapper.inherits is not None and not mapper.concrete:
        mapper = mapper.inherits
    table = mapper.local_table
    return str(getattr(table, "fullname", None) or getattr(table, "name", None) or table)
