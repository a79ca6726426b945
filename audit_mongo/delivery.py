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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pymongo
from bson.errors import BSONError
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)
from pymongo.write_concern import WriteConcern

from .chain import Chains
from .encoding import Document, log_repaired, repair
from .log_safety import error_detail, log_failure
from .signing import SigningKeys

logger = logging.getLogger("audit_mongo")

DUPLICATE_KEY = 11000
FIRST_BACKOFF = 0.05  # seconds before the first retry; doubled for each next one


@dataclass
class Outcome:
    """What a write achieved: the positions of the documents Mongo has not confirmed, and
    of those it already held (an earlier delivery of theirs)."""

    failed: set[int] = field(default_factory=set)
    error: BaseException | None = None
    duplicates: set[int] = field(default_factory=set)
    maybe_stored: bool = False  # an earlier attempt of the same write was cut off

    @property
    def certain(self) -> bool:
        """Whether the documents not confirmed are surely not in Mongo: none could be sent
        (no server), or the server refused each one. After a connection lost mid-write
        they may have been stored."""
        if self.maybe_stored:
            return False
        return self.error is None or isinstance(
            self.error, (ServerSelectionTimeoutError, BulkWriteError)
        )

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
    """Writes documents to the audit collection, each call within ``timeout`` seconds,
    linking each one into this thread's chain (``chain``) as it is first sent."""

    def __init__(
        self,
        collection: Any,
        *,
        timeout: float = 2.0,
        write_concern: WriteConcern | None = None,
        keys: SigningKeys | None = None,
    ) -> None:
        if write_concern is not None:
            collection = collection.with_options(write_concern=write_concern)
        self.collection = collection
        self.timeout = timeout
        self.chains = Chains(keys if keys is not None else SigningKeys())

    def write(self, documents: Sequence[Document]) -> int:
        """Insert ``documents``; return how many are confirmed in Mongo. Never raises."""
        return len(documents) - len(self.send(documents).failed)

    def send(
        self, documents: Sequence[Document], encoded: Sequence[bytes | None] | None = None
    ) -> Outcome:
        """Insert ``documents``, retrying retryable errors with backoff until ``timeout``
        has passed; failures are logged. Never raises. ``encoded``: the BSON of some of
        ``documents`` as they are now (unlinked), by position, when it is already known."""
        if not documents:
            return Outcome()
        sent = self.chains.seal(documents, encoded)
        fresh = set(sent)
        outgoing = _outgoing(documents, sent, isinstance(self.collection, Collection))
        deadline = time.monotonic() + self.timeout
        positions = list(range(len(documents)))
        duplicates: set[int] = set()
        elsewhere: set[int] = set()  # held under an earlier link, not under this write's
        certain = True
        backoff = FIRST_BACKOFF
        while True:
            outcome = self._attempt([outgoing[p] for p in positions], deadline)
            duplicates.update(positions[i] for i in outcome.duplicates)
            if certain:  # after a cut-off attempt, a duplicate may be that attempt's
                elsewhere.update(positions[i] for i in outcome.duplicates)
            certain = certain and outcome.certain
            positions = [positions[i] for i in sorted(outcome.failed)]
            if not positions or not outcome.retryable:
                break
            if time.monotonic() + backoff >= deadline:
                break
            time.sleep(backoff)
            backoff *= 2
        if positions:
            _log_failure(len(positions), len(documents), outcome.error)
        failed = set(positions) & fresh if certain else set()
        ambiguous = (duplicates - elsewhere) & fresh
        fillers = self.chains.settle(documents, failed, elsewhere & fresh, ambiguous)
        if fillers:  # Mongo just answered: a failure here is logged, and leaves a gap
            self.send(fillers)
        error = outcome.error if positions else None
        return Outcome(set(positions), error, duplicates, maybe_stored=not certain)

    def release(
        self, documents: Sequence[Document], *, maybe_stored: bool, dropped: bool
    ) -> list[Document]:
        """``documents`` were sent and will never be sent again under their links (strict
        mode dropped them with their transaction, or an outbox row keeps them unlinked):
        their chain positions are given back, or the fillers returned must be delivered
        like any document."""
        return self.chains.release(documents, maybe_stored=maybe_stored, dropped=dropped)

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
            outcome = self._resend_rejected(documents, _rejected(exc), exc, may_repair)
            outcome.duplicates |= _duplicates(exc)
            return outcome
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
        duplicates = {order[i] for i in again.duplicates}
        return Outcome(failed, (again.error or exc) if failed else None, duplicates)


class _Encoded(dict[str, Any]):
    """A document with its BSON already made, for a collection that is not pymongo's
    (mongomock, a stand-in): it reads the dict, while ``bson.encode`` takes ``raw`` as it is,
    by the marker of ``RawBSONDocument``. pymongo's own insert path is given a
    ``RawBSONDocument`` instead: it encodes a dict subclass field by field."""

    __slots__ = ("raw",)
    _type_marker = 101  # bson's RAW_BSON_DOCUMENT_TYPE
    raw: bytes


def _outgoing(documents: Sequence[Document], sent: dict[int, bytes], to_pymongo: bool) -> list[Any]:
    """``documents`` as handed to the driver: those whose BSON the seal made, as those
    bytes (so that they are not encoded a second time)."""
    outgoing: list[Any] = []
    for position, document in enumerate(documents):
        raw = sent.get(position)
        if raw is None:
            outgoing.append(document)
        elif to_pymongo:
            outgoing.append(RawBSONDocument(raw))
        else:
            wrapped = _Encoded(document)
            wrapped.raw = raw
            outgoing.append(wrapped)
    return outgoing


def _rejected(exc: BulkWriteError) -> set[int]:
    """Positions of the documents a bulk insert refused; a duplicate ``_id`` means already
    there (an earlier delivery), not refused."""
    errors = exc.details.get("writeErrors", [])
    return {e["index"] for e in errors if not _already_there(e)}


def _duplicates(exc: BulkWriteError) -> set[int]:
    errors = exc.details.get("writeErrors", [])
    return {e["index"] for e in errors if _already_there(e)}


def _already_there(error: Mapping[str, Any]) -> bool:
    """A duplicate key on ``_id``: this very document was stored before. A duplicate on
    another unique index (one the application added) is a refusal like any other."""
    if error.get("code") != DUPLICATE_KEY:
        return False
    pattern = error.get("keyPattern")
    if pattern is not None:
        return list(pattern) == ["_id"]
    message = str(error.get("errmsg", ""))
    return "index: " not in message or "index: _id_ " in message


def _warn_unsatisfied_write_concern(exc: BulkWriteError) -> None:
    errors = exc.details.get("writeConcernErrors") or []
    if errors:
        logger.warning(
            "audit_mongo: audit documents written but the write concern was not satisfied "
            "(codes %s)",
            sorted({e.get("code") for e in errors}),
        )


def _log_failure(failed: int, attempted: int, exc: BaseException | None) -> None:
    message = "audit_mongo: %d of %d audit documents were not written"
    if exc is None:
        logger.error(f"{message} (unknown error)", failed, attempted)
        return
    summary = f"{type(exc).__name__}: {describe(exc)}"
    log_failure(logging.ERROR, exc, message, failed, attempted, summary=summary)


def describe(exc: BaseException | None) -> str:
    """What a write error says that holds no document value: a bulk write's codes (but a
    duplicate key's, which is a document already there), a server error's code, a
    connection error's message. Messages that can embed values (``str(BulkWriteError)``,
    ``dup key: {...}``, bson's ``cannot encode object: ...``) are never shown."""
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors", [])
        codes = {e.get("code") for e in errors if not _already_there(e)}
        return f"write error codes {sorted(codes)}"
    detail = error_detail(exc) if exc is not None else None
    return detail or "details not shown"
