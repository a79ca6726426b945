"""What the history pages show of an entry: every stored value turned into text (quoted,
folded when long) before it reaches a template, which escapes it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import url_for

from ..entry import AuditEntry, Change

FOLD = 80  # characters of a value shown before it is folded into a <details>
CONTEXT_FIRST = ("request_id", "remote_addr", "method", "path", "endpoint", "user_agent")


@dataclass(frozen=True)
class Shown:
    """A stored value as a person reads it: its whole ``text`` and, for a long one, the
    ``folded`` start shown until the reader unfolds it (None: short enough to show)."""

    text: str
    folded: str | None
    kind: str  # a CSS class: "text", "null" or "value"


@dataclass(frozen=True)
class FieldChange:
    """One attribute of an entry: ``old`` → ``new`` (None: the side the entry doesn't
    have), or for a collection the related keys ``added`` and ``removed``."""

    name: str
    old: Shown | None
    new: Shown | None
    collection: bool
    added: list[Shown]
    removed: list[Shown]


@dataclass(frozen=True)
class EntryView:
    """An ``AuditEntry`` ready for the templates: every stored value as ``Shown`` text."""

    id: str  # the document's _id, for an anchor
    when: str  # 2026-11-23 14:05:09 UTC
    when_iso: str
    action: str
    who: str | None  # None: nobody known
    who_url: str | None
    table: str
    object_id: str
    row_url: str | None  # None: the key can't be put in a URL
    entity: str | None
    previous_id: str | None  # the key before this change, if it changed the key
    fields: list[FieldChange]
    context: list[tuple[str, Shown]]

    @property
    def deleted(self) -> bool:
        return self.action == "delete"


def readable_time(moment: dt.datetime) -> str:
    """``2026-11-23 14:05:09 UTC``: entries' times are aware UTC."""
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def value_text(value: Any) -> str:
    """A value as text: strings quoted (``repr``: an empty or blank string, ``"5"`` and
    ``5``, ``"None"`` and NULL stay apart), JSON as JSON, dates in ISO form."""
    if value is None:
        return "NULL"
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, (dict, list)):
        try:
            return json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            return repr(value)
    if isinstance(value, str):
        return repr(value)
    return str(value)


def shown(value: Any, *, quoted: bool = True) -> Shown:
    """``value`` as text, folded when long; ``quoted=False``: a string as it is."""
    text = value if isinstance(value, str) and not quoted else value_text(value)
    folded = text[:FOLD] + "…" if len(text) > FOLD else None
    kind = "null" if value is None else "text" if isinstance(value, str) else "value"
    return Shown(text, folded, kind)


def key_text(key: Any) -> str:
    """A key or user id as the pages write it (and read it back, see ``parse_key``): a
    composite key as a JSON array, anything else as its text."""
    if isinstance(key, (tuple, list)):
        return json.dumps(list(key), ensure_ascii=False, default=str)
    return str(key)


def url_safe(text: str) -> bool:
    """Whether a key's text survives as a path segment (no empty, "." or ".." part)."""
    return all(part not in ("", ".", "..") for part in text.split("/"))


def field_change(name: str, change: Change) -> FieldChange:
    if change.collection:
        added, removed = [shown(v) for v in change.added], [shown(v) for v in change.deleted]
        return FieldChange(name, None, None, True, added, removed)
    old = shown(change.deleted[0]) if change.deleted else None
    new = shown(change.added[0]) if change.added else None
    return FieldChange(name, old, new, False, [], [])


def context_items(context: Mapping[str, Any]) -> list[tuple[str, Shown]]:
    """The request context, the usual keys first, then the rest in name order."""
    names = [k for k in CONTEXT_FIRST if k in context]
    names += sorted(k for k in context if k not in CONTEXT_FIRST)
    return [
        (name, shown(context[name], quoted=False)) for name in names if context[name] is not None
    ]


def entry_view(entry: AuditEntry) -> EntryView:
    object_id = key_text(entry.object_id) if entry.object_id is not None else ""
    who = key_text(entry.user_id) if entry.user_id is not None else None
    linkable = bool(entry.table_name) and "/" not in entry.table_name and url_safe(object_id)
    previous = entry.previous_object_id
    return EntryView(
        id=str(entry.id),
        when=readable_time(entry.created_at),
        when_iso=entry.created_at.isoformat(),
        action=entry.action,
        who=who,
        who_url=url_for(".recent", user=who) if who else None,
        table=entry.table_name,
        object_id=object_id,
        row_url=(
            url_for(".timeline", table=entry.table_name, object_id=object_id) if linkable else None
        ),
        entity=entry.entity,
        previous_id=key_text(previous) if previous is not None else None,
        fields=[field_change(name, change) for name, change in entry.changes.items()],
        context=context_items(entry.context),
    )
