"""The approach of the blog post audit_mongo grew from: mapper listeners that read each
changed attribute's history and insert one document per row into ``user_logs``.

One ``insert_one`` round trip per row, from inside the flush (so before the COMMIT, and
also for work that is rolled back); deletes record nothing (a deleted object has no
attribute history) and neither do bulk statements (no mapper event fires). Unlike the
post, errors are not swallowed here: a benchmark must fail loudly.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Engine, event, inspect
from sqlalchemy.orm import Mapper
from sqlalchemy.orm.attributes import PASSIVE_NO_INITIALIZE, get_history

from benchmarks.auditing import Auditing, Records
from benchmarks.models import Models

EVENTS = {"after_insert": "create", "after_update": "update"}


class BlogPostAuditing(Auditing):
    """``after_insert`` / ``after_update`` listeners writing to the sink's collection."""

    def __init__(self, sink: Any) -> None:
        super().__init__(sink)
        self.listeners: list[tuple[type, str, Any]] = []

    @property
    def sink_label(self) -> str:  # type: ignore[override]
        return self.sink.label

    def attach(self, engine: Engine, models: Models) -> None:
        for model in (models.client, models.item):
            for name, action in EVENTS.items():
                receiver = self._receiver(action)
                event.listen(model, name, receiver)
                self.listeners.append((model, name, receiver))

    def _receiver(self, action: str) -> Any:
        def receive(mapper: Mapper[Any], connection: Any, target: Any) -> None:
            self._save(mapper, target, action)

        return receive

    def _save(self, mapper: Mapper[Any], target: Any, action: str) -> None:
        changes = attribute_changes(target)
        if not changes:
            return
        key = mapper.primary_key_from_instance(target)
        self.sink.collection.insert_one(
            {
                "current_user_id": None,  # the post's current_user.id (nobody logs in here)
                "action": action,
                "table_name": mapper.local_table.name,
                "object_id": key[0] if len(key) == 1 else key,
                "changes": changes,
                "created_at": dt.datetime.now(dt.timezone.utc),
            }
        )

    def records(self, engine: Engine, models: Models) -> Records:
        twice = self.sink.duplicates()
        return Records(self.sink.count(), f"{twice:,} sent more than once" if twice else "")

    def close(self) -> None:
        for model, name, receiver in self.listeners:
            event.remove(model, name, receiver)
        self.listeners.clear()


def attribute_changes(target: Any) -> dict[str, dict[str, list[Any]]]:
    """``{key: {"added": [...], "deleted": [...]}}`` for each attribute whose history says
    it changed (read without loading anything)."""
    changes = {}
    for attribute in inspect(target).attrs:
        history = get_history(target, attribute.key, passive=PASSIVE_NO_INITIALIZE)
        if not history.has_changes():
            continue
        added, deleted = list(history.added), list(history.deleted)
        if added != deleted:
            changes[attribute.key] = {"added": added, "deleted": deleted}
    return changes
