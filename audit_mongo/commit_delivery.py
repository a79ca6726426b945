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
import datetime as dt
import logging
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from sqlalchemy.engine import Connection

from .actor import Acting
from .background import BackgroundWriter
from .changes import RowChange
from .delivery import MongoWriter
from .document import Written, build_documents, build_voids, commit_time, new_transaction_id
from .encoding import Document, encode_all
from .log_safety import error_summary, log_failure
from .outbox import Outbox
from .pending import CLAIM_DOCUMENTS, Drained, MemoryPending, Parcel, deliver_pending
from .safe_reads import guarded, in_autocommit, read_guard

logger = logging.getLogger("audit_mongo")

WRITE_BATCH = 1000  # documents per insert_many: a 100,000-row commit is never built at once
KEEP_BYTES = 8 * 1024 * 1024  # documents of one commit kept in memory for the write after it


class AuditWriteError(Exception):
    """Strict mode: Mongo did not confirm a transaction's documents, so it was not committed."""


@dataclass
class Sealed:
    """A transaction's documents, dealt with just before its COMMIT."""

    transaction_id: str
    created_at: dt.datetime
    parcels: list[Parcel] = field(default_factory=list)  # stored in the outbox
    built: int = 0  # row changes whose documents are in ``parcels``
    complete: bool = True  # False: the rest are built, with the same ids, after the commit
    overflow: bool = False  # past KEEP_BYTES: the later parcels stay only in the outbox
    written: list[Written] | None = None  # strict: already in Mongo
    forgotten: list[int] = field(default_factory=list)  # delivered rows this commit deletes
    fillers: list[Document] = field(default_factory=list)  # for strict documents dropped


class CommitDelivery:
    """Delivers committed documents in the configured mode and keeps what Mongo refuses.

    ``safe`` says whether the caller may open connections of its own: not inside a Core
    event, where the application's connection is still checked out and may hold locks.
    """

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
        self._lock = threading.Lock()
        self._to_forget: list[int] = []  # delivered outbox rows not yet deleted
        # An outbox not reachable yet may hold work: look when a commit next succeeds.
        self._backlog = outbox is not None and (outbox.missing or outbox.count() > 0)
        self.background = (
            BackgroundWriter(
                self._write_in_background, self._sweep, sweep_at_start=self._backlog, **background
            )
            if background is not None
            else None
        )
        self._failures = 0  # counts failed writes, so a backlog retry sees new ones
        self._retrying = threading.Lock()
        self.closed = False
        atexit.register(_close_at_exit, weakref.ref(self))

    # -- around the COMMIT ----------------------------------------------------------

    def seal(
        self,
        connection: Connection,
        changes: Iterable[RowChange],
        acting: Acting,
        before_prepare: bool = False,
    ) -> Sealed | None:
        """Deal with a transaction's documents just before ``connection`` commits (or, for
        two-phase, prepares): strict mode writes them to Mongo (raising ``AuditWriteError``
        if it cannot), outbox mode stores them in the transaction. None: nothing to do
        before the commit."""
        if in_autocommit(connection):  # each statement committed as it ran
            return None
        if self.strict:
            return self._seal_strict(connection, changes, acting, before_prepare)
        if self.outbox is not None and self.outbox.holds(connection):
            return self._seal_in_outbox(connection, self.outbox, changes, acting)
        return None  # direct delivery: nothing to do before the commit

    def _seal_strict(
        self,
        connection: Connection,
        changes: Iterable[RowChange],
        acting: Acting,
        before_prepare: bool,
    ) -> Sealed:
        sealed = Sealed(new_transaction_id(), commit_time())
        try:
            self._write_before_commit(changes, acting, sealed)
        except BaseException as exc:
            if not before_prepare:  # a failed PREPARE is rolled back by SQLAlchemy
                _roll_back(connection)
            exc.sealed = sealed  # type: ignore[attr-defined]  # to abandon: void
            raise
        return sealed

    def _seal_in_outbox(
        self, connection: Connection, outbox: Outbox, changes: Iterable[RowChange], acting: Acting
    ) -> Sealed:
        sealed = Sealed(new_transaction_id(), commit_time())
        try:
            with read_guard(connection):  # a failed insert must not abort the transaction
                self._store_in(connection, outbox, changes, acting, sealed)
        except Exception as exc:
            log_failure(
                logging.ERROR,
                exc,
                "audit_mongo: could not add a transaction's audit documents to the outbox; "
                "they are written after the commit instead",
            )
            sealed.complete = False
            self._forget_later(sealed.forgotten)  # that delete may have rolled back
            sealed.forgotten = []
            if guarded(connection):  # its savepoint took the rows stored so far with it
                sealed.parcels = [parcel for parcel in sealed.parcels if parcel.documents]
                sealed.built = sum(len(parcel.documents) for parcel in sealed.parcels)
        return sealed

    def committed(
        self, changes: Iterable[RowChange], acting: Acting, sealed: Sealed | None, safe: bool
    ) -> None:
        """The database has committed: deliver (or queue) the transaction's documents.
        Never raises: the commit is done, whatever happens to its audit documents."""
        try:
            self._committed(changes, acting, sealed, safe)
        except Exception as exc:
            self._note_failure()
            message = "audit_mongo: delivering a committed transaction's documents failed"
            log_failure(logging.ERROR, exc, message)

    def _committed(
        self, changes: Iterable[RowChange], acting: Acting, sealed: Sealed | None, safe: bool
    ) -> None:
        if sealed is None:
            built = self._build(changes, acting, new_transaction_id(), commit_time())
            self._send_all((Parcel(documents) for documents in built), safe)
            return
        if sealed.written is not None:
            return
        self._send_all(iter(sealed.parcels), safe)
        if not sealed.complete:
            rest = islice(changes, sealed.built, None)
            built = self._build(rest, acting, sealed.transaction_id, sealed.created_at)
            self._send_all((Parcel(documents) for documents in built), safe)

    def abandoned(self, sealed: Sealed, safe: bool) -> None:
        """The COMMIT failed after ``seal``: outbox rows went with it (and the rows it was to
        delete stay to be deleted); strict documents already in Mongo are voided."""
        self._forget_later(sealed.forgotten)
        self._void(sealed.written or [], safe, sealed.fillers)

    def _void(self, written: list[Written], safe: bool, fillers: Sequence[Document]) -> None:
        """Void documents for ``written``, sent with the ``fillers`` of dropped documents."""
        if written:
            logger.warning(
                "audit_mongo: %d audit documents were written for a transaction that did not "
                "commit; void documents follow them",
                len(written),
            )
        documents = build_voids(written, commit_time()) + list(fillers)
        if documents:
            self._send_all(iter([Parcel(documents)]), safe)

    def _write_before_commit(
        self, changes: Iterable[RowChange], acting: Acting, sealed: Sealed
    ) -> None:
        """Write every document, noting in ``sealed.written`` those that may be in Mongo."""
        sealed.written = []
        built = self._build(changes, acting, sealed.transaction_id, sealed.created_at, True)
        for documents in built:
            outcome = self.writer.send(documents)
            failed = outcome.failed if outcome.certain else set()
            sealed.written.extend(Written.of(d) for i, d in enumerate(documents) if i not in failed)
            if outcome.failed:
                dropped = [documents[i] for i in sorted(outcome.failed)]
                sealed.fillers = self.writer.release(
                    dropped, maybe_stored=not outcome.certain, dropped=True
                )
                raise AuditWriteError(
                    f"{len(outcome.failed)} audit documents could not be written to Mongo "
                    "(see the audit_mongo log); the transaction was not committed"
                )

    def _store_in(
        self,
        connection: Connection,
        outbox: Outbox,
        changes: Iterable[RowChange],
        acting: Acting,
        sealed: Sealed,
    ) -> None:
        sealed.forgotten = self._take_forgotten()
        if sealed.forgotten:  # rows delivered earlier go in the same transaction: no extra one
            outbox.delete(connection, sealed.forgotten)
        kept = 0
        for documents in self._build(changes, acting, sealed.transaction_id, sealed.created_at):
            documents, encoded = encode_all(documents)
            data = b"".join(encoded)
            key = outbox.insert(connection, data, len(documents))
            kept += len(data)
            if kept > KEEP_BYTES:
                sealed.overflow = True
            if sealed.overflow:
                parcel = Parcel([], [key], stored=len(documents))
            else:
                parcel = Parcel(documents, [key], encoded)
            sealed.parcels.append(parcel)
            sealed.built += len(documents)

    def _build(
        self,
        changes: Iterable[RowChange],
        acting: Acting,
        transaction_id: str,
        created_at: dt.datetime,
        strict: bool = False,
    ) -> Iterator[list[Document]]:
        """The transaction's documents, ``WRITE_BATCH`` at a time."""
        rows = iter(changes)
        while batch := list(islice(rows, WRITE_BATCH)):
            try:
                documents = build_documents(
                    batch, acting, transaction_id=transaction_id, created_at=created_at
                )
            except Exception as exc:
                message = "audit_mongo: %d audit documents could not be built"
                log_failure(logging.ERROR, exc, message, len(batch))
                failure = error_summary(exc)
            else:
                yield documents
                continue
            if strict:  # raised here, not in the except block: exc's message may hold values
                raise AuditWriteError(
                    f"{len(batch)} audit documents could not be built ({failure}); the "
                    "transaction was not committed"
                )

    # -- after the COMMIT -----------------------------------------------------------

    def _send_all(self, parcels: Iterator[Parcel], safe: bool) -> None:
        """Queue or write each parcel. After one Mongo took none of, the rest are kept
        without trying, so an outage costs a commit one ``timeout``, not one per batch."""
        mongo_down = False
        for parcel in parcels:
            if not parcel.documents and not parcel.outbox_keys:
                continue
            if mongo_down:
                self._keep(parcel, safe)
            elif self.background is not None and self.background.submit(parcel):
                continue
            elif self.background is not None and parcel.outbox_keys:
                continue  # queue full: the outbox holds it; the writer's sweep sends it
            elif not parcel.documents:
                mongo_down = not self._write_stored(parcel, safe)
            else:
                mongo_down = not self._write_parcels([parcel], safe, confirmed_any=True)
                if not mongo_down and safe and self._backlog:
                    self._retry_backlog()

    def _write_parcels(
        self, parcels: list[Parcel], safe: bool, confirmed_any: bool = False
    ) -> bool:
        """Write ``parcels`` in one insert; note confirmed outbox rows for deletion, keep
        refused documents. Returns whether all were confirmed (or, with ``confirmed_any``,
        any)."""
        documents = [document for parcel in parcels for document in parcel.documents]
        encoded: list[bytes | None] = []
        for parcel in parcels:
            encoded.extend(parcel.encoded or [None] * len(parcel.documents))
        failed = self.writer.send(documents, encoded).failed
        start = 0
        for parcel in parcels:
            end = start + len(parcel.documents)
            refused = [parcel.documents[p - start] for p in range(start, end) if p in failed]
            if not refused:
                self._forget_later(parcel.outbox_keys)
            elif not parcel.outbox_keys:
                self._keep_documents(refused, safe)
            elif not (safe and self._keep_links(parcel)):
                # The outbox row keeps them unlinked: linked anew when sent again, so their
                # positions here are filled (they may be in Mongo already under them).
                fillers = self.writer.release(refused, maybe_stored=True, dropped=False)
                self._keep(Parcel(fillers), safe)
            start = end
        if failed:
            self._note_failure()
        return len(failed) < len(documents) if confirmed_any else not failed

    def _keep_links(self, parcel: Parcel) -> bool:
        """Rewrite the parcel's outbox row with its documents as sent, links included."""
        return self.outbox is not None and self.outbox.keep_links(
            parcel.outbox_keys[0], parcel.documents
        )

    def _write_stored(self, parcel: Parcel, safe: bool) -> bool:
        """Write a parcel kept only in the outbox (its commit's documents were too many to
        keep in memory): its rows are claimed and delivered as pending work is, so a row
        another process is delivering is skipped, and each is deleted once confirmed.
        False when Mongo could not be reached."""
        if not safe or self.outbox is None:  # no connection of our own here: later
            self._backlog = True
            return True
        return not deliver_pending(self.outbox.only(parcel.outbox_keys), self.writer).outage

    def _write_in_background(self, parcels: list[Parcel]) -> bool:
        in_memory = [parcel for parcel in parcels if parcel.documents]
        written = self._write_parcels(in_memory, safe=True) if in_memory else True
        for parcel in parcels:
            if not parcel.documents and written:  # after an outage, left to the sweep
                written = self._write_stored(parcel, safe=True)
        self._forget_now()
        return written

    def _keep(self, parcel: Parcel, safe: bool) -> None:
        if not parcel.outbox_keys:
            self._keep_documents(parcel.documents, safe)

    def _keep_documents(self, documents: list[Document], safe: bool) -> None:
        self._note_failure()
        if self.outbox is not None and safe:
            try:
                self.outbox.store(documents)
                return
            except Exception as exc:
                message = "audit_mongo: the outbox could not take pending documents"
                log_failure(logging.ERROR, exc, message)
        self.memory.store(documents)
        logger.warning(
            "audit_mongo: %d audit documents are kept in memory until Mongo takes them; they "
            "are lost if this process ends first",
            len(documents),
        )

    def _note_failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._backlog = True

    def _retry_backlog(self) -> None:
        """Mongo is back: send one batch of earlier pending work along. The backlog is over
        once a round finds less than a batch, Mongo took what it could, and no write failed
        meanwhile."""
        if not self._retrying.acquire(blocking=False):
            return
        try:
            failures = self._failures
            drained = self._drain(CLAIM_DOCUMENTS)
            with self._lock:
                over = not drained.outage and drained.confirmed < CLAIM_DOCUMENTS
                if over and self._failures == failures:
                    self._backlog = False
        finally:
            self._retrying.release()

    # -- delivered outbox rows ----------------------------------------------------------

    def _forget_later(self, keys: list[int]) -> None:
        if keys:
            with self._lock:
                self._to_forget.extend(keys)

    def _take_forgotten(self) -> list[int]:
        with self._lock:
            keys, self._to_forget = self._to_forget, []
        return keys

    def _forget_now(self) -> None:
        keys = self._take_forgotten()
        if keys and self.outbox is not None and not self.outbox.forget(keys):
            self._forget_later(keys)

    # -- pending work -----------------------------------------------------------------

    def pending(self) -> int:
        """Documents committed and not yet confirmed by Mongo: in the outbox, in memory, and
        queued for (or being written by) the background writer and held nowhere else."""
        self._forget_now()
        queued = self.background.queued() if self.background is not None else []
        in_queue = sum(len(p.documents) for p in queued if not p.outbox_keys)
        in_outbox = self.outbox.count() if self.outbox is not None else 0
        return in_outbox + self.memory.count() + in_queue

    def deliver_pending(self, limit: int | None = None) -> int:
        return self._drain(limit).confirmed

    def _drain(self, limit: int | None) -> Drained:
        self._forget_now()
        drained = Drained()
        if self.outbox is not None:
            drained = deliver_pending(self.outbox, self.writer, limit)
        if drained.outage:
            return drained
        from_memory = deliver_pending(self.memory, self.writer, limit)
        return Drained(drained.confirmed + from_memory.confirmed, from_memory.outage)

    def flush(self, timeout: float | None = None) -> bool:
        return self.background.flush(timeout) if self.background is not None else True

    def _sweep(self) -> int:
        self._drain(None)
        return self.pending()

    def close(self) -> None:
        """Drain the background writer, delete delivered outbox rows, try what is in memory
        once more, and say how many documents this process could not deliver and cannot
        keep."""
        if self.closed:
            return
        self.closed = True
        if self.background is not None:
            for parcel in self.background.close(timeout=max(self.writer.timeout * 2, 5.0)):
                self._keep(parcel, safe=True)
        self._forget_now()
        if self.memory.count():
            deliver_pending(self.memory, self.writer)
        lost = self.memory.count()
        if lost:
            logger.error(
                "audit_mongo: %d audit documents were never confirmed by Mongo and are lost "
                "with this process (an outbox would have kept them)",
                lost,
            )


def _roll_back(connection: Connection) -> None:
    """Roll the database transaction back before strict mode's error leaves the commit
    event: SQLAlchemy then takes the transaction for ended, and would return the connection
    to the pool with its work still open, for a later COMMIT to commit."""
    dbapi: Any = connection.connection.dbapi_connection
    try:
        dbapi.rollback()
    except Exception:
        try:
            dbapi.tpc_rollback()  # refused before PREPARE of a two-phase transaction
        except Exception as exc:
            message = "audit_mongo: could not roll back after a refused strict commit"
            log_failure(logging.ERROR, exc, message)


def _close_at_exit(ref: weakref.ReferenceType[CommitDelivery]) -> None:
    delivery = ref()
    if delivery is not None:
        delivery.close()
