"""Delivery: one ``insert_many(ordered=False)`` per commit, bounded in time, never raising.

Everything a write can raise is handled here: pymongo's ``PyMongoError`` family, and bson's
``InvalidDocument`` / ``DocumentTooLarge``, ``ValueError`` and ``OverflowError``, which are
not ``PyMongoError``s. A document that BSON cannot carry, or that exceeds the 16 MiB limit,
is repaired (its offending values replaced by a marker) and sent again; a duplicate key is a
document that is already there, which counts as delivered. Failures are logged with the
number of documents affected, never with their values.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import bson
import pymongo
from bson.errors import BSONError
from pymongo.errors import BulkWriteError, PyMongoError
from pymongo.write_concern import WriteConcern

from .normalise import fallback

logger = logging.getLogger("audit_mongo")

DUPLICATE_KEY = 11000
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
Document = dict[str, Any]


class MongoWriter:
    """Writes a commit's documents to the audit collection."""

    def __init__(
        self,
        collection: Any,
        *,
        timeout: float = 2.0,
        write_concern: WriteConcern | None = None,
    ) -> None:
        if write_concern is not None:
            collection = collection.with_options(write_concern=write_concern)
        self.collection = collection
        self.timeout = timeout

    def write(self, documents: Sequence[Document]) -> int:
        """Insert ``documents``; return how many are confirmed in Mongo. Never raises."""
        if not documents:
            return 0
        error: BaseException | None
        try:
            with pymongo.timeout(self.timeout):
                confirmed, error = self._send(documents, may_repair=True)
        except Exception as exc:  # a driver or a stand-in raising something unexpected
            confirmed, error = 0, exc
        if confirmed < len(documents):
            _log_failure(len(documents) - confirmed, len(documents), error)
        return confirmed

    def _send(self, documents: Sequence[Document], may_repair: bool) -> Outcome:
        """Insert once; documents that could not be encoded or were rejected by the server
        are repaired and sent once more."""
        try:
            self.collection.insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            _warn_unsatisfied_write_concern(exc)
            rejected = _rejected(exc, documents)
            accepted = len(documents) - len(rejected)
            fixed = _repaired(rejected) if may_repair else []
            if not fixed:
                return accepted, (exc if rejected else None)
            confirmed, error = self._send(fixed, may_repair=False)
            unfixable = len(fixed) < len(rejected)
            return accepted + confirmed, error or (exc if unfixable else None)
        except (BSONError, ValueError, OverflowError, TypeError) as exc:  # while encoding
            if not may_repair:
                return 0, exc
            _repaired(documents)
            return self._send([repair(doc) for doc in documents], may_repair=False)
        except PyMongoError as exc:
            return 0, exc
        return len(documents), None


Outcome = tuple[int, BaseException | None]


def _rejected(exc: BulkWriteError, documents: Sequence[Document]) -> list[Document]:
    """The documents a bulk insert refused; a duplicate key means already there."""
    errors = exc.details.get("writeErrors", [])
    return [documents[e["index"]] for e in errors if e.get("code") != DUPLICATE_KEY]


def _repaired(documents: Sequence[Document]) -> list[Document]:
    """Repaired copies of those of ``documents`` that needed repair."""
    fixed = [r for doc in documents if (r := repair(doc)) is not doc]
    if fixed:
        logger.warning(
            "audit_mongo: %d audit documents could not be encoded or exceeded 16 MiB; their "
            "offending values were replaced by markers",
            len(fixed),
        )
    return fixed


def _warn_unsatisfied_write_concern(exc: BulkWriteError) -> None:
    errors = exc.details.get("writeConcernErrors") or []
    if errors:
        logger.warning(
            "audit_mongo: audit documents written but the write concern was not satisfied "
            "(codes %s)",
            sorted({e.get("code") for e in errors}),
        )


def log_not_attempted(count: int) -> None:
    logger.error(
        "audit_mongo: %d more audit documents of the same commit were not written: Mongo "
        "took none of the batch before them",
        count,
    )


def _log_failure(failed: int, attempted: int, exc: BaseException | None) -> None:
    logger.error(
        "audit_mongo: %d of %d audit documents were not written (%s: %s)",
        failed,
        attempted,
        type(exc).__name__ if exc is not None else "unknown error",
        _describe(exc),
    )


def _describe(exc: BaseException | None) -> str:
    # str(BulkWriteError) and bson's messages can embed document values: never logged.
    if isinstance(exc, BulkWriteError):
        codes = {e.get("code") for e in exc.details.get("writeErrors", [])}
        return f"write error codes {sorted(c for c in codes if c != DUPLICATE_KEY)}"
    if isinstance(exc, PyMongoError):
        return str(exc)[:500]
    return "values not shown"


def repair(document: Document) -> Document:
    """``document`` itself if it encodes within the size limit, else a copy that does.

    In the copy, each change value that cannot be encoded becomes the ``unrepresentable``
    fallback; then, while the document is over 16 MiB, the largest values, one by one,
    become ``{"omitted": "too large", "bson_bytes": n}``.
    """
    try:
        if len(bson.encode(document)) <= MAX_DOCUMENT_BYTES:
            return document
    except Exception:
        pass
    where = f"{document.get('table_name')}.changes"
    changes = {
        attribute: {
            side: [_encodable(value, f"{where}.{attribute}") for value in values]
            for side, values in change.items()
        }
        for attribute, change in document.get("changes", {}).items()
    }
    repaired = {**document, "changes": changes}
    excess = len(bson.encode(repaired)) - MAX_DOCUMENT_BYTES
    if excess > 0:
        _omit_largest_values(changes, excess)
    return repaired


def _encodable(value: Any, where: str) -> Any:
    try:
        bson.encode({"v": value})
    except Exception:
        return fallback(value, where)
    return value


def _omit_largest_values(changes: dict[str, dict[str, list[Any]]], excess: int) -> None:
    slots = [
        (len(bson.encode({"v": value})), values, index)
        for change in changes.values()
        for values in change.values()
        for index, value in enumerate(values)
    ]
    for size, values, index in sorted(slots, key=lambda slot: slot[0], reverse=True):
        if excess <= 0:
            return
        values[index] = marker = {"omitted": "too large", "bson_bytes": size}
        excess -= size - len(bson.encode({"v": marker}))
