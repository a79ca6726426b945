"""The audit document, schema version 1: one per row per committed transaction.

Field names are fixed; they are what people query from the Mongo shell::

    {
      "_id": ObjectId(...),            # assigned here, kept on every redelivery
      "current_user_id": 42,           # null when nobody is known
      "action": "update",              # "create" | "update" | "delete"
      "table_name": "clients",
      "object_id": 5,                  # a list for a composite primary key
      "changes": {"name": {"added": ["New"], "deleted": ["Old"]}},
      "created_at": ISODate(...),      # UTC, the same for every document of one commit
      "transaction_id": "0b6f...",     # the same for every document of one commit
      "schema_version": 1
    }
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

from bson import ObjectId

from .changes import RowChange

SCHEMA_VERSION = 1


def new_transaction_id() -> str:
    return str(uuid.uuid4())


def commit_time() -> dt.datetime:
    """Now in UTC, cut to the millisecond BSON keeps, so a read-back equals what was built."""
    now = dt.datetime.now(dt.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def build_documents(
    row_changes: Iterable[RowChange],
    *,
    user_id: Any,
    transaction_id: str,
    created_at: dt.datetime,
) -> list[dict[str, Any]]:
    """One document per row change, in the order the changes happened."""
    return [
        {
            "_id": ObjectId(),
            "current_user_id": user_id,
            "action": change.action,
            "table_name": change.table_name,
            "object_id": change.object_id,
            "changes": changes_field(change),
            "created_at": created_at,
            "transaction_id": transaction_id,
            "schema_version": SCHEMA_VERSION,
        }
        for change in row_changes
    ]


def changes_field(change: RowChange) -> dict[str, dict[str, list[Any]]]:
    """``{attribute: {"added": [...], "deleted": [...]}}``, as the blog post stored it."""
    if change.action == "create":
        return {k: {"added": [v], "deleted": []} for k, v in change.new.items()}
    if change.action == "delete":
        return {k: {"added": [], "deleted": [v]} for k, v in change.old.items()}
    return {k: {"added": [change.new[k]], "deleted": [v]} for k, v in change.old.items()}
