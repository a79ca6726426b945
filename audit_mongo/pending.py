"""Pending work: documents that are committed in SQL but not yet confirmed in Mongo.

Two stores keep them: the ``Outbox`` (a table in the application's database, durable, shared
by every process) and ``MemoryPending`` (this process only, lost if it dies). Both hand out
batches through ``claim()``, and ``deliver_pending`` drains either one the same way: each
batch is sent with the ``_id`` it was built with, so a batch delivered twice (two processes,
or a crash after the write and before the batch was forgotten) is stored once.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from pymongo.errors import BulkWriteError

from .chain import CHAIN_FIELD
from .delivery import MongoWriter, Outcome
from .encoding import Document

logger = logging.getLogger("audit_mongo")

CLAIM_DOCUMENTS = 1000  # documents sent per insert_many while draining
T = TypeVar("T")


@dataclass
class Parcel:
    """Documents of one commit on their way to Mongo, and the outbox rows that hold them
    until Mongo confirms them (none when they are only in memory)."""

    documents: list[Document]
    outbox_keys: list[int] = field(default_factory=list)
    # The documents' BSON as stored in the outbox, before they were linked into a chain:
    # the seal appends their links to it instead of encoding them again.
    encoded: list[bytes] | None = None
    # Documents only in the outbox (their commit held too many to keep): read back in turn.
    stored: int = 0

    @property
    def size(self) -> int:
        """How many documents the parcel stands for, in memory or in its outbox rows."""
        return len(self.documents) or self.stored


@dataclass
class PendingBatch:
    """Documents stored together (one commit's, or part of a large one's)."""

    key: int
    documents: list[Document]


@dataclass
class Claim:
    """Batches taken for delivery; those listed in ``delivered`` are forgotten afterwards."""

    batches: list[PendingBatch]
    delivered: list[int] = field(default_factory=list)
    linked: list[PendingBatch] = field(default_factory=list)  # not delivered, now linked


class PendingStore(Protocol):
    def store(self, documents: Sequence[Document]) -> None: ...

    def count(self) -> int: ...

    def claim(self, after: int, limit: int) -> AbstractContextManager[Claim]: ...


class MemoryPending:
    """Pending documents in this process's memory, oldest first. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batches: dict[int, list[Document]] = {}
        self._claimed: set[int] = set()  # batches being delivered: no one else sends them
        self._keys = itertools.count(1)

    def store(self, documents: Sequence[Document]) -> None:
        if documents:
            with self._lock:
                self._batches[next(self._keys)] = list(documents)

    def count(self) -> int:
        with self._lock:
            return sum(len(documents) for documents in self._batches.values())

    @contextmanager
    def claim(self, after: int, limit: int) -> Iterator[Claim]:
        """Batches after ``after`` that no other thread is delivering (their documents are
        linked into the deliverer's chain in place: two threads must not share them)."""
        with self._lock:
            candidates = (
                (key, len(documents), documents)
                for key, documents in self._batches.items()
                if key > after and key not in self._claimed
            )
            claim = Claim(take_batches(candidates, limit, list))
            self._claimed.update(batch.key for batch in claim.batches)
        try:
            yield claim
        finally:
            with self._lock:
                self._claimed.difference_update(batch.key for batch in claim.batches)
                for key in claim.delivered:
                    self._batches.pop(key, None)


def take_batches(
    candidates: Iterable[tuple[int, int, T]], limit: int, load: Callable[[T], list[Document]]
) -> list[PendingBatch]:
    """The first of ``candidates`` (key, document count, stored form), about ``limit``
    documents and at least one batch; only those taken are loaded."""
    taken: list[PendingBatch] = []
    size = 0
    for key, count, stored in candidates:
        if taken and size + count > limit:
            break
        taken.append(PendingBatch(key, load(stored)))
        size += count
    return taken


@dataclass
class Drained:
    """What draining a store achieved."""

    confirmed: int = 0  # documents now confirmed in Mongo (duplicates included)
    outage: bool = False  # stopped because Mongo took none of a round (unreachable, refused)


def deliver_pending(store: PendingStore, writer: MongoWriter, limit: int | None = None) -> Drained:
    """Send ``store``'s documents, oldest first, forgetting each batch Mongo confirmed whole.

    Passes over each batch once: a document Mongo refuses on its own (a validator, say)
    stays pending without holding back the rest. Stops after a round Mongo took none of for
    a reason that is not one document's (unreachable, authentication), and after about
    ``limit`` documents.
    """
    drained = Drained()
    after = 0
    while limit is None or drained.confirmed < limit:
        with store.claim(after, CLAIM_DOCUMENTS) as claim:
            if not claim.batches:
                break
            sent, outcome = _send(claim, writer)
            after = claim.batches[-1].key
        drained.confirmed += sent
        if sent == 0 and not isinstance(outcome.error, BulkWriteError):
            drained.outage = True
            break
    return drained


def _send(claim: Claim, writer: MongoWriter) -> tuple[int, Outcome]:
    documents = [document for batch in claim.batches for document in batch.documents]
    outcome = writer.send(documents)
    start = 0
    for batch in claim.batches:
        end = start + len(batch.documents)
        if not any(position in outcome.failed for position in range(start, end)):
            claim.delivered.append(batch.key)
        elif any(CHAIN_FIELD in document for document in batch.documents):
            claim.linked.append(batch)  # to be sent again with the same links
        start = end
    return len(documents) - len(outcome.failed), outcome
