"""The indexes ``AuditLog.ensure_indexes()`` creates, one per question the log is asked,
and the optional retention (TTL) index that makes MongoDB delete documents past a given age."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.collection import Collection

logger = logging.getLogger("audit_mongo")

# Each index is equality fields, then (created_at, _id): a query compares the first and
# sorts by the rest (query.INDEX_BY_FIELDS picks the index; tests check each query's shape).
INDEXES: tuple[IndexModel, ...] = (
    # A row's history, newest first: history, for_object, state_at, updated_at.
    IndexModel(
        [
            ("table_name", ASCENDING),
            ("object_id", ASCENDING),
            ("created_at", DESCENDING),
            ("_id", DESCENDING),
        ],
        name="audit_row_history",
    ),
    # What one user did, newest first: by_user.
    IndexModel(
        [("current_user_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
        name="audit_user_history",
    ),
    # A table's changes, newest first: for_table, recent --table.
    IndexModel(
        [("table_name", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
        name="audit_table_history",
    ),
    # Everything in a time range, in order (ties broken by _id): find, recent, tail.
    IndexModel([("created_at", ASCENDING), ("_id", ASCENDING)], name="audit_created_at"),
    # Where rows left a key (an update of the primary key names the key it left): a row's
    # history ends where another row left its key; state_at finds a key vacated.
    IndexModel(
        [
            ("table_name", ASCENDING),
            ("previous_object_id", ASCENDING),
            ("created_at", DESCENDING),
            ("_id", DESCENDING),
        ],
        name="audit_row_departures",
        partialFilterExpression={"previous_object_id": {"$exists": True}},
    ),
    # Everything one commit did, in the order it was done.
    IndexModel(
        [("transaction_id", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)],
        name="audit_transaction_order",
    ),
    # Everything one web request did; only documents written in a request are indexed.
    IndexModel(
        [("context.request_id", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)],
        name="audit_request",
        partialFilterExpression={"context.request_id": {"$exists": True}},
    ),
    # Void documents (strict mode), found by the document they void; only they are indexed.
    IndexModel(
        [("voids", ASCENDING)],
        name="audit_voids",
        partialFilterExpression={"voids": {"$exists": True}},
    ),
    # Each writer's chain in order: verify walks them one after the other.
    IndexModel(
        [("chain.id", ASCENDING), ("chain.seq", ASCENDING), ("_id", ASCENDING)],
        name="audit_chain",
    ),
)

# MongoDB only expires documents through a single-field index (a compound index ignores
# expireAfterSeconds), so retention gets its own index beside audit_created_at.
RETENTION_INDEX = "audit_retention"
# Earlier versions' index on transaction_id alone, which audit_transaction_order supersedes.
SUPERSEDED = {"audit_transaction": [("transaction_id", ASCENDING)]}
RETENTION_KEYS = [("created_at", ASCENDING)]
MAX_EXPIRE_AFTER_SECONDS = 2**31 - 1  # the largest expireAfterSeconds MongoDB accepts


def retention_seconds(retention: dt.timedelta | None) -> int | None:
    """Check a retention and return it as the TTL index's ``expireAfterSeconds``: its whole
    seconds (a fraction of a second is dropped). ``None`` (keep forever) gives ``None``.

    Raises ``TypeError`` for anything but a ``timedelta`` and ``ValueError`` for a retention
    under one second (zero, negative or sub-second: MongoDB expires in whole seconds, and 0
    would expire every document at once) or over 2**31 - 1 seconds (about 68 years).
    """
    if retention is None:
        return None
    if not isinstance(retention, dt.timedelta):
        raise TypeError(
            f"retention must be a datetime.timedelta or None, not {type(retention).__name__}"
        )
    if retention <= dt.timedelta(0):
        raise ValueError(f"retention must be positive, got {retention!r}")
    seconds = retention // dt.timedelta(seconds=1)
    if seconds < 1:
        raise ValueError(
            f"retention must be at least one second (MongoDB expires documents in whole "
            f"seconds), got {retention!r}"
        )
    if seconds > MAX_EXPIRE_AFTER_SECONDS:
        raise ValueError(
            f"retention must be at most {MAX_EXPIRE_AFTER_SECONDS} seconds (about 68 years, "
            f"MongoDB's limit for expireAfterSeconds), got {retention!r}"
        )
    return seconds


def ensure_indexes(collection: Any, retention: dt.timedelta | None = None) -> list[str]:
    """Create the indexes; a no-op for those that already exist with the same keys.

    With a ``retention``, also a TTL index on ``created_at`` (``audit_retention``): MongoDB
    deletes documents older than the retention. If that index exists with another
    ``expireAfterSeconds``, it is changed in place (``collMod``). Without a retention, an
    existing TTL index is left alone, with a warning: documents keep expiring until it is
    dropped. Returns the names of the indexes ensured.
    """
    expire_after = retention_seconds(retention)
    information = collection.index_information()
    existing = information.get(RETENTION_INDEX)
    _warn_superseded(collection, information)
    models = list(INDEXES)
    if expire_after is not None and existing is None:
        models.append(
            IndexModel(RETENTION_KEYS, name=RETENTION_INDEX, expireAfterSeconds=expire_after)
        )
    names = list(collection.create_indexes(models))
    if expire_after is None:
        if existing is not None and "expireAfterSeconds" in existing:
            logger.warning(
                "audit_mongo: %s has a retention index (%s, expireAfterSeconds=%s) but this "
                "log has no retention: MongoDB still deletes older audit documents. Drop the "
                "index to keep them: db.%s.dropIndex(%r)",
                collection.full_name,
                RETENTION_INDEX,
                existing["expireAfterSeconds"],
                collection.name,
                RETENTION_INDEX,
            )
        return names
    if existing is not None:
        previous = existing.get("expireAfterSeconds")
        if previous != expire_after:
            _change_expiry(collection, expire_after)
            logger.info(
                "audit_mongo: retention of %s changed from %s to %s seconds",
                collection.full_name,
                previous,
                expire_after,
            )
        names.append(RETENTION_INDEX)
    return names


def _warn_superseded(collection: Any, information: dict[str, Any]) -> None:
    for name, keys in SUPERSEDED.items():
        if name in information and list(information[name]["key"]) == keys:
            logger.warning(
                "audit_mongo: index %s on %s is no longer used (replaced by a newer index); "
                "drop it to save space: db.%s.dropIndex(%r)",
                name,
                collection.full_name,
                collection.name,
                name,
            )


def _change_expiry(collection: Any, expire_after: int) -> None:
    if isinstance(collection, Collection):
        collection.database.command(
            {
                "collMod": collection.name,
                "index": {"name": RETENTION_INDEX, "expireAfterSeconds": expire_after},
            }
        )
        return
    # mongomock has no collMod: rebuild the index (in memory, nothing runs in between).
    collection.drop_index(RETENTION_INDEX)
    collection.create_indexes(
        [IndexModel(RETENTION_KEYS, name=RETENTION_INDEX, expireAfterSeconds=expire_after)]
    )
