"""What happens to a committed transaction's documents: the delivery modes.

- **direct** (default): written right after the commit. What Mongo does not confirm is kept
  pending, in the outbox when there is one, else in memory.
- **outbox**: when the transaction writes to the outbox's database, its documents are built
  just before its COMMIT and inserted into the outbox by the transaction itself; after the
  commit they are written to Mongo and their outbox rows deleted once confirmed.
- **strict**: written to Mongo before the COMMIT; if Mongo does not confirm them all, the
  commit raises ``AuditWriteError`` and does not happen. If the COMMIT itself then fails,
  "void" documents follow the ones written.
- **background**: after the commit, documents go to the background writer's queue.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from sqlalchemy.engine import Connection

from .background import BackgroundWriter
from .changes import RowChange
from .delivery import MongoWriter
from .document import Written, build_documents, build_voids, commit_time, new_transaction_id
from .encoding import Document, encode_all
from .outbox import Outbox
from .pending import CLAIM_DOCUMENTS, MemoryPending, Parcel, deliver_pending
from .safe_reads import read_guard

logger = logging.getLogger("audit_mongo")

WRITE_BATCH = 1000  # documents per insert_many: a 100,000-row commit is never built at once
KEEP_BYTES = 16 * 1024 * 1024  # documents of one commit kept in memory for the write after it


class AuditWriteError(Exception):
    """Strict mode: Mongo did not confirm a transaction's documents, so it was not committed."""


@dataclass
class Sealed:
    """A transaction's documents, dealt with just before its COMMIT."""

    parcels: list[Parcel] = field(default_factory=list)  # stored in the outbox
    written: list[Written] | None = None  # strict: already in Mongo
    overflow: bool = False  # some outbox rows are too big to keep: drained from the outbox


class CommitDelivery:
    """Delivers committed documents in the configured mode and keeps what Mongo refuses."""

    def __init__(
        self,
        writer: MongoWriter,
        *,
        outbox: Outbox | None = None,
        strict: bool = False,
        background: dict[str, Any] | None = None,
    ) -> None:
        self.writer = writer
        self.outbox = outbox
        self.strict = strict
        self.memory = MemoryPending()
        self.background = (
            BackgroundWriter(self._write_parcels, self._sweep, **background)
            if background is not None
            else None
        )
        self._backlog = outbox is not None and outbox.count() > 0
        self._backlog_lock = threading.Lock()
        self.closed = False
        atexit.register(_close_at_exit, weakref.ref(self))

    # -- around the COMMIT ----------------------------------------------------------

    def seal(
        self, connection: Connection, changes: Iterable[RowChange], user_id: Any
    ) -> Sealed | None:
        """Deal with a transaction's documents just before ``connection`` commits: strict
        mode writes them to Mongo (raising ``AuditWriteError`` if it cannot), outbox mode
        stores them in the transaction. None: nothing to do before the commit."""
        if self.strict:
            return Sealed(written=self._write_before_commit(changes, user_id))
        if self.outbox is None or not self.outbox.holds(connection):
            return None
        try:
            with read_guard(connection):  # a failed insert must not abort the transaction
                return self._store_in(connection, self.outbox, changes, user_id)
        except Exception:
            logger.exception(
                "audit_mongo: could not add a transaction's audit documents to the outbox; "
                "they are written after the commit instead"
            )
            return None

    def committed(self, changes: Iterable[RowChange], user_id: Any, sealed: Sealed | None) -> None:
        """The database has committed: deliver (or queue) the transaction's documents."""
        if sealed is None:
            self._send_all(Parcel(documents) for documents in self._build(changes, user_id))
        elif sealed.written is None:
            self._send_all(iter(sealed.parcels))
            if sealed.overflow and self.outbox is not None:
                deliver_pending(self.outbox, self.writer)

    def abandoned(self, sealed: Sealed) -> None:
        """The COMMIT failed after ``seal``: outbox rows went with it; strict documents
        already in Mongo are voided."""
        if sealed.written:
            self.void(sealed.written)

    def void(self, written: list[Written]) -> None:
        if not written:
            return
        logger.warning(
            "audit_mongo: %d audit documents were written for a transaction that did not "
            "commit; void documents follow them",
            len(written),
        )
        self._send_all(iter([Parcel(build_voids(written, commit_time()))]))

    def _write_before_commit(self, changes: Iterable[RowChange], user_id: Any) -> list[Written]:
        written: list[Written] = []
        try:
            for documents in self._build(changes, user_id, strict=True):
                failed = self.writer.send(documents).failed
                written.extend(Written.of(d) for i, d in enumerate(documents) if i not in failed)
                if failed:
                    raise AuditWriteError(
                        f"{len(failed)} audit documents could not be written to Mongo (see the "
                        "audit_mongo log); the transaction was not committed"
                    )
        except BaseException:
            self.void(written)
            raise
        return written

    def _store_in(
        self, connection: Connection, outbox: Outbox, changes: Iterable[RowChange], user_id: Any
    ) -> Sealed:
        sealed = Sealed()
        kept = 0
        for documents in self._build(changes, user_id):
            documents, data = encode_all(documents)
            key = outbox.insert(connection, data, len(documents))
            kept += len(data)
            if kept > KEEP_BYTES:
                sealed.overflow = True
                documents = []
            sealed.parcels.append(Parcel(documents, [key]))
        return sealed

    def _build(
        self, changes: Iterable[RowChange], user_id: Any, strict: bool = False
    ) -> Iterator[list[Document]]:
        """The transaction's documents, ``WRITE_BATCH`` at a time."""
        transaction_id, created_at = new_transaction_id(), commit_time()
        rows = iter(changes)
        while batch := list(islice(rows, WRITE_BATCH)):
            try:
                yield build_documents(
                    batch, user_id=user_id, transaction_id=transaction_id, created_at=created_at
                )
            except Exception as exc:
                if strict:
                    raise AuditWriteError("audit documents could not be built") from exc
                logger.exception("audit_mongo: %d audit documents could not be built", len(batch))

    # -- after the COMMIT -----------------------------------------------------------

    def _send_all(self, parcels: Iterator[Parcel]) -> None:
        """Queue or write each parcel. After one Mongo took none of, the rest are kept
        without trying, so an outage costs a commit one ``timeout``, not one per batch."""
        mongo_down = False
        for parcel in parcels:
            if not parcel.documents:  # too big to keep: drained from the outbox
                continue
            if mongo_down:
                self._keep(parcel)
            elif self.background is not None and self.background.submit(parcel):
                continue
            elif self.background is not None and parcel.outbox_keys:
                continue  # queue full: the outbox holds it; the writer's sweep sends it
            else:
                mongo_down = not self._write_parcels([parcel], confirmed_any=True)
                if not mongo_down and self._backlog:
                    self._retry_backlog()

    def _write_parcels(self, parcels: list[Parcel], confirmed_any: bool = False) -> bool:
        """Write ``parcels`` in one insert; forget confirmed outbox rows, keep refused
        documents. Returns whether all were confirmed (or, with ``confirmed_any``, any)."""
        documents = [document for parcel in parcels for document in parcel.documents]
        failed = self.writer.send(documents).failed
        delivered: list[int] = []
        start = 0
        for parcel in parcels:
            end = start + len(parcel.documents)
            refused = [parcel.documents[p - start] for p in range(start, end) if p in failed]
            if not refused:
                delivered.extend(parcel.outbox_keys)
            elif not parcel.outbox_keys:
                self._keep_documents(refused)
            start = end
        if self.outbox is not None:
            self.outbox.forget(delivered)
        if failed:
            self._backlog = True
        return len(failed) < len(documents) if confirmed_any else not failed

    def _keep(self, parcel: Parcel) -> None:
        if not parcel.outbox_keys:
            self._keep_documents(parcel.documents)

    def _keep_documents(self, documents: list[Document]) -> None:
        self._backlog = True
        if self.outbox is not None:
            try:
                self.outbox.store(documents)
                return
            except Exception:
                logger.exception("audit_mongo: the outbox could not take pending documents")
        self.memory.store(documents)
        logger.warning(
            "audit_mongo: %d audit documents are kept in memory until Mongo takes them; they "
            "are lost if this process ends first",
            len(documents),
        )

    def _retry_backlog(self) -> None:
        """Mongo is back: send one batch of earlier pending work along."""
        if not self._backlog_lock.acquire(blocking=False):
            return
        try:
            self._backlog = self.deliver_pending(limit=CLAIM_DOCUMENTS) >= CLAIM_DOCUMENTS
        finally:
            self._backlog_lock.release()

    # -- pending work -----------------------------------------------------------------

    def pending(self) -> int:
        """Documents committed and not yet confirmed by Mongo: in the outbox, in memory, and
        queued for the background writer and held nowhere else."""
        queued = self.background.queued() if self.background is not None else []
        in_queue = sum(len(p.documents) for p in queued if not p.outbox_keys)
        in_outbox = self.outbox.count() if self.outbox is not None else 0
        return in_outbox + self.memory.count() + in_queue

    def deliver_pending(self, limit: int | None = None) -> int:
        confirmed = 0
        if self.outbox is not None:
            confirmed += deliver_pending(self.outbox, self.writer, limit)
        return confirmed + deliver_pending(self.memory, self.writer, limit)

    def flush(self, timeout: float | None = None) -> bool:
        return self.background.flush(timeout) if self.background is not None else True

    def _sweep(self) -> int:
        self.deliver_pending()
        return self.pending()

    def close(self) -> None:
        """Drain the background writer, try what is in memory once more, and say how many
        documents this process could not deliver and cannot keep."""
        if self.closed:
            return
        self.closed = True
        if self.background is not None:
            for parcel in self.background.close(timeout=max(self.writer.timeout * 2, 5.0)):
                self._keep(parcel)
        if self.memory.count():
            deliver_pending(self.memory, self.writer)
        lost = self.memory.count()
        if lost:
            logger.error(
                "audit_mongo: %d audit documents were never confirmed by Mongo and are lost "
                "with this process (an outbox would have kept them)",
                lost,
            )


def _close_at_exit(ref: weakref.ReferenceType[CommitDelivery]) -> None:
    delivery = ref()
    if delivery is not None:
        delivery.close()
