"""The indexes ``AuditLog.ensure_indexes()`` creates, one per question the log is asked."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel

INDEXES: tuple[IndexModel, ...] = (
    # A row's history, newest first: for_object / history.
    IndexModel(
        [
            ("table_name", ASCENDING),
            ("object_id", ASCENDING),
            ("created_at", DESCENDING),
            ("_id", DESCENDING),
        ],
        name="audit_row_history",
    ),
    # What one user did, newest first.
    IndexModel(
        [("current_user_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
        name="audit_user_history",
    ),
    # Everything in a time range, in order (ties broken by _id).
    IndexModel([("created_at", ASCENDING), ("_id", ASCENDING)], name="audit_created_at"),
    # Everything one commit did.
    IndexModel([("transaction_id", ASCENDING)], name="audit_transaction"),
)


def ensure_indexes(collection: Any) -> list[str]:
    """Create the indexes; a no-op for those that already exist with the same keys."""
    return list(collection.create_indexes(list(INDEXES)))
