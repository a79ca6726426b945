"""``AuditEntry``: one audit document as the query API returns it, with values brought
back to the model's Python types when the model is known."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .catalog import TableModel
from .reify import plain, reify, unescape_keys


@dataclass(frozen=True, slots=True)
class Change:
    """What one attribute went from and to: ``added`` and ``deleted`` as stored (lists),
    ``old`` and ``new`` as single values (None where a side is empty)."""

    added: list[Any]
    deleted: list[Any]
    collection: bool = False  # a many-to-many collection: keys of related rows

    @property
    def old(self) -> Any:
        """The value before the change (None for a create)."""
        return self._single(self.deleted, "old")

    @property
    def new(self) -> Any:
        """The value after the change (None for a delete)."""
        return self._single(self.added, "new")

    def _single(self, values: list[Any], side: str) -> Any:
        if self.collection:
            raise TypeError(
                f"a collection change has no single {side} value: read .added and .deleted"
            )
        return values[0] if values else None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row change of one committed transaction."""

    id: Any  # the document's _id (an ObjectId)
    table_name: str
    object_id: Any  # a tuple for a composite key
    action: str  # "create" | "update" | "delete"
    user_id: Any
    created_at: dt.datetime  # timezone-aware UTC
    transaction_id: str | None
    context: Mapping[str, Any]
    changes: Mapping[str, Change]
    entity: str | None = None  # the mapped class, for a row of an inheritance hierarchy
    previous_object_id: Any = None  # the key before this change, if it changed the key
    # The marker that stands for all of ``changes`` when the document had to be shrunk
    # below 16 MiB that far (``{"omitted": "too many fields", ...}``); ``changes`` is empty.
    changes_omitted: Mapping[str, Any] | None = None

    @classmethod
    def from_document(cls, document: Mapping[str, Any], model: TableModel | None) -> AuditEntry:
        """An entry from a stored document; ``model`` (when known) types its values."""
        return cls(
            id=document.get("_id"),
            table_name=document.get("table_name", ""),
            object_id=_key(document.get("object_id"), model),
            action=document.get("action", ""),
            user_id=plain(document.get("current_user_id")),
            created_at=utc(document["created_at"]),
            transaction_id=document.get("transaction_id"),
            context=MappingProxyType(unescape_keys(plain(document.get("context") or {}))),
            changes=MappingProxyType(_changes(document.get("changes") or {}, model)),
            entity=document.get("entity"),
            previous_object_id=_key(document.get("previous_object_id"), model),
            changes_omitted=_omitted(document.get("changes")),
        )

    def describe(self) -> str:
        """One line a person can read: ``update clients 5 by 42 at ...: name 'A' → 'B'``."""
        who = "nobody known" if self.user_id is None else repr(self.user_id)
        fields = "; ".join(f"{name} {describe_change(c)}" for name, c in self.changes.items())
        when = self.created_at.isoformat(sep=" ", timespec="milliseconds")
        return f"{self.action} {self.table_name} {self.object_id!r} by {who} at {when}: {fields}"


def describe_change(change: Change) -> str:
    if change.collection:
        return f"+{change.added!r} -{change.deleted!r}"
    return f"{short(change.old)} → {short(change.new)}"


def short(value: Any, width: int = 60) -> str:
    """``repr(value)``, folded to ``width`` characters: stored values are user input and may
    be long; ``repr`` also shows control characters escaped, never raw."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def utc(value: dt.datetime) -> dt.datetime:
    """A stored date as aware UTC, whatever the client's ``tz_aware`` setting."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def _key(stored: Any, model: TableModel | None) -> Any:
    if stored is None:
        return None
    if isinstance(stored, list):
        types = [c.type for c in model.key_columns] if model is not None else []
        if len(types) != len(stored):
            types = [None] * len(stored)
        return tuple(reify(v, t) for v, t in zip(stored, types, strict=True))
    if model is not None and len(model.key_columns) == 1:
        return reify(stored, model.key_columns[0].type)
    return plain(stored)


def _omitted(stored: Any) -> Mapping[str, Any] | None:
    if isinstance(stored, Mapping) and isinstance(stored.get("omitted"), str):
        return MappingProxyType(plain(dict(stored)))
    return None


def _changes(stored: Mapping[str, Any], model: TableModel | None) -> dict[str, Change]:
    if _omitted(stored) is not None:
        return {}
    changes: dict[str, Change] = {}
    for name, sides in stored.items():
        if not isinstance(sides, Mapping):
            continue  # not written by this library
        if isinstance(sides.get("omitted"), str):  # the whole field shrunk to a marker
            marker = plain(dict(sides))
            changes[name] = Change([marker], [marker])
            continue
        added, deleted = list(sides.get("added") or []), list(sides.get("deleted") or [])
        if model is not None and name in model.collections:
            changes[name] = Change(plain(added), plain(deleted), collection=True)
            continue
        column_type = model.attribute_types.get(name) if model is not None else None
        collection = model is None and (len(added) > 1 or len(deleted) > 1)
        changes[name] = Change(
            [reify(v, column_type) for v in added],
            [reify(v, column_type) for v in deleted],
            collection,
        )
    return changes
