"""A row's change within one transaction, and how two changes to one row net out.

Values held here are already BSON-safe (see ``normalise``), so a change is a snapshot that
later mutation of the application's objects cannot alter.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .normalise import is_nan

Action = Literal["create", "update", "delete"]
RowKey = tuple[str, Hashable]


@dataclass(slots=True)
class RowChange:
    """The net change to one row.

    ``old`` holds values before the change (update: the changed attributes; delete: every
    recorded column), ``new`` the values after it (create: every non-null column; update:
    the changed attributes).
    """

    table_name: str
    object_id: Any
    action: Action
    old: dict[str, Any]
    new: dict[str, Any]
    entity: str | None = None  # the mapped class, for a row of an inheritance hierarchy
    previous_object_id: Any = None  # the key before an update changed it
    previous_key: RowKey | None = field(default=None, repr=False)  # the same, as a buffer key
    # many-to-many collections: name -> (keys of related rows added, keys removed)
    collections: dict[str, tuple[list[Any], list[Any]]] = field(default_factory=dict)


def same(a: Any, b: Any) -> bool:
    """SQLAlchemy's own test for a changed value (``==``: ``Decimal("10.00")`` equals ``10``),
    except that NaN equals NaN, as it does for a stored value."""
    if a is b:
        return True
    try:
        if a == b:
            return True
    except Exception:  # an exotic __eq__: treat as changed rather than fail
        return False
    return is_nan(a) and is_nan(b)


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Attributes whose value differs between ``old`` and ``new`` (missing means null)."""
    keys = list(old)
    keys.extend(k for k in new if k not in old)
    return [k for k in keys if not same(old.get(k), new.get(k))]


def update(
    table_name: str, object_id: Any, old: dict[str, Any], new: dict[str, Any]
) -> RowChange | None:
    """An update keeping only the attributes that really changed, or None if none did."""
    keys = changed_keys(old, new)
    if not keys:
        return None
    return RowChange(
        table_name,
        object_id,
        "update",
        {k: old.get(k) for k in keys},
        {k: new.get(k) for k in keys},
    )


def merge(earlier: RowChange, later: RowChange) -> RowChange | None:
    """The net effect of ``earlier`` followed by ``later`` on the same row (None: nothing)."""
    merged = _merge_actions(earlier, later)
    if merged is not None and merged.action != "delete":
        merged.collections = merge_collections(earlier.collections, later.collections)
    if merged is None or (merged.action == "update" and not merged.old and not merged.collections):
        return None
    merged.entity = earlier.entity if earlier.entity is not None else later.entity
    original = earlier.previous_object_id
    if original is None and later.previous_object_id is not None:
        original = earlier.object_id  # the key the row had before ``later`` changed it
    merged.previous_key = earlier.previous_key or later.previous_key
    if merged.action == "update" and original is not None and original != merged.object_id:
        merged.previous_object_id = original
    elif merged.action == "delete" and original is not None:
        merged.object_id = original  # the row the database held before the transaction
    return merged


def _merge_actions(earlier: RowChange, later: RowChange) -> RowChange | None:
    first, then = earlier.action, later.action
    if first == "create":
        if then == "delete":
            return None
        new = {k: v for k, v in {**earlier.new, **later.new}.items() if v is not None}
        return RowChange(later.table_name, later.object_id, "create", {}, new)
    if first == "update":
        old = {**later.old, **earlier.old}
        if then == "delete":
            return RowChange(later.table_name, later.object_id, "delete", old, {})
        net = update(later.table_name, later.object_id, old, {**earlier.new, **later.new})
        return net or RowChange(later.table_name, later.object_id, "update", {}, {})
    # first == "delete": only a re-insert of the same key can follow
    if then == "create":
        return update(later.table_name, later.object_id, earlier.old, later.new)
    return later


def merge_collections(
    earlier: dict[str, tuple[list[Any], list[Any]]], later: dict[str, tuple[list[Any], list[Any]]]
) -> dict[str, tuple[list[Any], list[Any]]]:
    """Net collection changes: a key added then removed (or removed then added) cancels."""
    merged: dict[str, tuple[list[Any], list[Any]]] = {}
    for name in dict.fromkeys([*earlier, *later]):
        added = {_hashable(k): k for k in earlier.get(name, ([], []))[0]}
        deleted = {_hashable(k): k for k in earlier.get(name, ([], []))[1]}
        later_added, later_deleted = later.get(name, ([], []))
        for key in later_added:
            _cancel_or_add(deleted, added, key)
        for key in later_deleted:
            _cancel_or_add(added, deleted, key)
        if added or deleted:
            merged[name] = (list(added.values()), list(deleted.values()))
    return merged


def _cancel_or_add(opposite: dict[Any, Any], same_side: dict[Any, Any], key: Any) -> None:
    hashable = _hashable(key)
    if hashable in opposite:
        del opposite[hashable]
    else:
        same_side.setdefault(hashable, key)


def _hashable(key: Any) -> Any:
    """A related row's key as a dict key (a composite key is stored as a list)."""
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key
