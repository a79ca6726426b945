"""Delivery: ``insert_many(ordered=False)`` of documents whose ``_id`` is already fixed.

Everything a write can raise is handled here: pymongo's ``PyMongoError`` family, and bson's
``InvalidDocument`` / ``DocumentTooLarge``, ``ValueError`` and ``OverflowError``, which are
not ``PyMongoError``s. A document that BSON cannot carry, or that exceeds the 16 MiB limit,
is repaired and sent again; a duplicate key is a document already there (an earlier
delivery of it), which counts as delivered. Errors pymongo marks retryable (network errors,
"RetryableWriteError") are retried with backoff while the write's time budget lasts; others
are not. Failures are logged with the number of documents affected, never their values.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pymongo
from bson.errors import BSONError
from pymongo.errors import BulkWriteError, ConnectionFailure, PyMongoError
from pymongo.write_concern import WriteConcern

from .encoding import Document, log_repaired, repair

logger = logging.getLogger("audit_mongo")

DUPLICATE_KEY = 11000
FIRST_BACKOFF = 0.05  # seconds before the first retry; doubled for each next one


@dataclass
class Outcome:
    """What a write achieved: the positions of the documents Mongo has not confirmed."""

    failed: set[int] = field(default_factory=set)
    error: BaseException | None = None

    @property
    def retryable(self) -> bool:
        return retryable(self.error)


def retryable(error: BaseException | None) -> bool:
    """Whether pymongo says trying again may succeed: a network error, or a server error
    labelled "RetryableWriteError". Authentication, authorization, validation and encoding
    errors are not."""
    if isinstance(error, ConnectionFailure):
        return True
    return isinstance(error, PyMongoError) and error.has_error_label("RetryableWriteError")


class MongoWriter:
    """Writes documents to the audit collection, each call within ``timeout`` seconds."""

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
        return len(documents) - len(self.send(documents).failed)

    def send(self, documents: Sequence[Document]) -> Outcome:
        """Insert ``documents``, retrying retryable errors with backoff until ``timeout``
        has passed; failures are logged. Never raises."""
        if not documents:
            return Outcome()
        deadline = time.monotonic() + self.timeout
        positions = list(range(len(documents)))
        backoff = FIRST_BACKOFF
        while True:
            outcome = self._attempt([documents[p] for p in positions], deadline)
            positions = [positions[i] for i in sorted(outcome.failed)]
            if not positions or not outcome.retryable:
                break
            if time.monotonic() + backoff >= deadline:
                break
            time.sleep(backoff)
            backoff *= 2
        if positions:
            _log_failure(len(positions), len(documents), outcome.error)
        return Outcome(set(positions), outcome.error if positions else None)

    def _attempt(self, documents: Sequence[Document], deadline: float) -> Outcome:
        try:
            with pymongo.timeout(max(deadline - time.monotonic(), 0.001)):
                return self._send(documents, may_repair=True)
        except Exception as exc:  # a driver or a stand-in raising something unexpected
            return Outcome(set(range(len(documents))), exc)

    def _send(self, documents: Sequence[Document], may_repair: bool) -> Outcome:
        """Insert once; documents that could not be encoded or were rejected by the server
        are repaired and sent once more."""
        try:
            self.collection.insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            _warn_unsatisfied_write_concern(exc)
            return self._resend_rejected(documents, _rejected(exc), exc, may_repair)
        except (BSONError, ValueError, OverflowError, TypeError) as exc:  # while encoding
            if not may_repair:
                return Outcome(set(range(len(documents))), exc)
            repaired = [repair(document) for document in documents]
            log_repaired(sum(1 for i, new in enumerate(repaired) if new is not documents[i]))
            return self._send(repaired, may_repair=False)
        except PyMongoError as exc:
            return Outcome(set(range(len(documents))), exc)
        return Outcome()

    def _resend_rejected(
        self,
        documents: Sequence[Document],
        rejected: set[int],
        exc: BulkWriteError,
        may_repair: bool,
    ) -> Outcome:
        if not rejected:
            return Outcome()
        fixes = {}
        if may_repair:
            fixes = {i: new for i in rejected if (new := repair(documents[i])) is not documents[i]}
        if not fixes:
            return Outcome(rejected, exc)
        log_repaired(len(fixes))
        order = sorted(fixes)
        again = self._send([fixes[i] for i in order], may_repair=False)
        failed = {order[i] for i in again.failed} | (rejected - set(fixes))
        return Outcome(failed, (again.error or exc) if failed else None)


def _rejected(exc: BulkWriteError) -> set[int]:
    """Positions of the documents a bulk insert refused; a duplicate key means already there."""
    errors = exc.details.get("writeErrors", [])
    return {e["index"] for e in errors if e.get("code") != DUPLICATE_KEY}


def _warn_unsatisfied_write_concern(exc: BulkWriteError) -> None:
    errors = exc.details.get("writeConcernErrors") or []
    if errors:
        logger.warning(
            "audit_mongo: audit documents written but the write concern was not satisfied "
            "(codes %s)",
            sorted({e.get("code") for e in errors}),
        )


def _log_failure(failed: int, attempted: int, exc: BaseException | None) -> None:
    logger.error(
        "audit_mongo: %d of %d audit documents were not written (%s: %s)",
        failed,
        attempted,
        type(exc).__name__ if exc is not None else "unknown error",
        describe(exc),
    )


def describe(exc: BaseException | None) -> str:
    """An error's message without document values (``str(BulkWriteError)`` and bson's
    messages can embed them)."""
    if isinstance(exc, BulkWriteError):
        codes = {e.get("code") for e in exc.details.get("writeErrors", [])}
        return f"write error codes {sorted(c for c in codes if c != DUPLICATE_KEY)}"
    if isinstance(exc, PyMongoError):
        return str(exc)[:500]
    return "values not shown"
