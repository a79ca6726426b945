"""The per-transaction buffer: row changes wait here until their transaction's fate is known.

Each session gets one ``SessionBuffer`` per audit log, in ``session.info``. Changes of a
flush go to the frame of the innermost open savepoint (or of the root transaction); a
released savepoint's frame is merged into its parent's, a rolled-back one is dropped, and
the root frame is handed on only after the database has committed.

Event facts this relies on (checked by running SQLAlchemy 2.x, see ``shared/notes``):
the commit's final flush runs after ``before_commit``; ``after_commit`` also fires when a
savepoint is released, with that savepoint still current; every transaction, root, savepoint
or one a flush opens, ends with ``after_transaction_end``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.orm.state import InstanceState

from .capture import Noted
from .changes import RowChange, RowKey
from .flush_reads import OldValueReader
from .frame import Frame

CommitHandler = Callable[[Session, Iterable[RowChange], Any, Any], None]
SealHandler = Callable[[Connection, Iterable[RowChange], Any, bool], Any]
NOT_CAPTURED: Any = object()
FlushCollector = Callable[[Session, "SessionBuffer"], Iterable[tuple[RowKey, RowChange]]]


class SessionBuffer:
    """What one audit log has captured in one session and not yet delivered."""

    __slots__ = (
        "committed",
        "context",
        "dialect",
        "frames",
        "noted",
        "noted_tables",
        "reader",
        "sealed",
    )

    def __init__(self) -> None:
        self.dialect: Dialect | None = None  # of the flush's connection, for TypeDecorators
        self.noted: dict[InstanceState[Any], Noted] = {}
        self.noted_tables: set[Any] = set()  # tables the flush's own statements capture
        self.reader = OldValueReader()  # old values read from the database in this flush
        self.frames: dict[SessionTransaction, Frame] = {}
        self.context: Any = NOT_CAPTURED  # what capture_context() said before the commit
        self.sealed: Any = None  # what seal() did just before the COMMIT
        self.committed: tuple[Frame, Any] | None = None  # the root frame, once committed

    def record_all(
        self,
        transaction: SessionTransaction,
        changes: Iterable[tuple[RowKey, RowChange]],
        may_move: bool,
    ) -> None:
        """Add changes to the transaction's frame, netted with earlier ones (see ``Frame``)."""
        frame = self.frames.get(transaction)
        if frame is None:
            frame = self.frames[transaction] = Frame()
        frame.record_all(changes, may_move)

    def release(self, savepoint: SessionTransaction) -> None:
        """A released savepoint's changes become its parent's."""
        frame = self.frames.pop(savepoint, None)
        if frame is not None:
            parent = _frame_owner(savepoint.parent)
            if parent not in self.frames:
                self.frames[parent] = Frame()
            self.frames[parent].absorb(frame)


def _frame_owner(transaction: SessionTransaction | None) -> SessionTransaction:
    """The nearest savepoint or root transaction, skipping those a flush opens."""
    while transaction is not None and not transaction.nested and transaction.parent is not None:
        transaction = transaction.parent
    if transaction is None:
        raise RuntimeError("a savepoint without a parent transaction")
    return transaction


class TransactionBuffer:
    """Listens to every ``Session`` and keeps one log's changes per transaction.

    ``collect`` turns the instances noted during a flush into row changes.
    ``capture_context`` is called as a root transaction starts to commit, while the session
    can still run SQL (a ``user_loader`` may need to load the current user);
    ``seal`` receives the net changes and that context just before the root transaction's
    COMMIT reaches the database (it may raise to stop the commit); ``on_commit`` receives
    them, and what ``seal`` returned, once the database has committed and the session has
    given its connections back (so delivery may open connections of its own);
    ``on_abandon`` gets what ``seal`` returned when the COMMIT then failed.
    """

    def __init__(
        self,
        collect: FlushCollector,
        capture_context: Callable[[], Any],
        seal: SealHandler,
        on_commit: CommitHandler,
        on_abandon: Callable[[Any], None],
    ) -> None:
        self._collect = collect
        self._capture_context = capture_context
        self._seal = seal
        self._on_commit = on_commit
        self._on_abandon = on_abandon
        self._listeners: list[tuple[str, Callable[..., None]]] = [
            ("before_commit", self._before_commit),
            ("before_flush", self._before_flush),
            ("after_flush", self._after_flush),
            ("after_commit", self._after_commit),
            ("after_transaction_end", self._after_transaction_end),
            ("after_soft_rollback", self._before_flush),
            ("after_begin", self._after_begin),
        ]
        self._owners: weakref.WeakKeyDictionary[Connection, Session] = weakref.WeakKeyDictionary()
        self._engine_listeners: list[tuple[str, Callable[..., None]]] = [
            ("commit", self._connection_commit),
            # Two-phase: after PREPARE no statement may run, so the outbox insert goes first.
            ("prepare_twophase", self._connection_prepare),
        ]
        for name, listener in self._listeners:
            event.listen(Session, name, listener)
        for name, listener in self._engine_listeners:
            event.listen(Engine, name, listener)

    def close(self) -> None:
        for name, listener in self._listeners:
            if event.contains(Session, name, listener):
                event.remove(Session, name, listener)
        for name, listener in self._engine_listeners:
            if event.contains(Engine, name, listener):
                event.remove(Engine, name, listener)

    def buffer(self, session: Session) -> SessionBuffer:
        """This log's buffer for ``session``, created on first use."""
        buffer: SessionBuffer | None = session.info.get(self)
        if buffer is None:
            buffer = session.info[self] = SessionBuffer()
        return buffer

    def owner(self, connection: Connection) -> Session | None:
        """The session whose transaction ``connection`` is running, if any."""
        session = self._owners.get(connection)
        if session is None or session.get_transaction() is None:
            return None
        return session

    def record_statement(
        self, session: Session, changes: Iterable[tuple[RowKey, RowChange]], may_move: bool
    ) -> None:
        """Row changes a statement made in ``session``'s current (nested) transaction."""
        transaction = session.get_nested_transaction() or session.get_transaction()
        if transaction is None:
            return
        self.buffer(session).record_all(transaction, changes, may_move)

    def in_flush(self, session: Session, table: Any) -> bool:
        """Whether a statement on ``table`` is the flush's own, captured by mapper events."""
        buffer: SessionBuffer | None = session.info.get(self)
        return buffer is not None and table in buffer.noted_tables

    def pending(self, session: Session) -> Iterator[RowChange]:
        """The changes captured in ``session`` and not yet committed (all frames)."""
        buffer: SessionBuffer | None = session.info.get(self)
        if buffer is not None:
            for frame in list(buffer.frames.values()):
                yield from frame.changes()

    def _before_commit(self, session: Session) -> None:
        # Fires for a savepoint's release too, and, when a session.begin() block ends with a
        # savepoint open, for the root while that savepoint is still current: capture every
        # time, the root's commit comes last. Flushing first (the commit would do it next)
        # shows whether anything tracked changed, so the loader is only asked when needed.
        session.flush()
        buffer: SessionBuffer | None = session.info.get(self)
        if buffer is not None and any(buffer.frames.values()):
            buffer.context = self._capture_context()

    def _before_flush(self, session: Session, *_: Any) -> None:
        # Instances noted by a flush that failed must not leak into the next one.
        buffer: SessionBuffer | None = session.info.get(self)
        if buffer is not None:
            buffer.noted.clear()
            buffer.noted_tables.clear()
            buffer.reader.clear()

    def _after_begin(
        self, session: Session, transaction: SessionTransaction, connection: Connection
    ) -> None:
        self._owners[connection] = session

    def _after_flush(self, session: Session, _flush_context: Any) -> None:
        buffer: SessionBuffer | None = session.info.get(self)
        if buffer is None or not buffer.noted:
            return
        transaction = session.get_nested_transaction() or session.get_transaction()
        if transaction is None:
            return
        changes = list(self._collect(session, buffer))
        may_move = any(change.previous_key is not None for _, change in changes)
        buffer.record_all(transaction, changes, may_move)
        buffer.noted.clear()
        buffer.noted_tables.clear()

    def _connection_prepare(self, connection: Connection, xid: Any) -> None:
        self._connection_commit(connection, before_prepare=True)

    def _connection_commit(self, connection: Connection, before_prepare: bool = False) -> None:
        # Core's commit event: the session's savepoints are released and its last flush is
        # done, the COMMIT is next. With several connections (binds), the first one seals.
        session = self.owner(connection)
        buffer: SessionBuffer | None = session.info.get(self) if session is not None else None
        if session is None or buffer is None or buffer.sealed is not None:
            return
        root = session.get_transaction()
        frame = buffer.frames.get(root) if root is not None else None
        if frame:
            try:
                buffer.sealed = self._seal(
                    connection, frame.changes(), buffer.context, before_prepare
                )
            except BaseException as refused:
                # What the refused seal did is abandoned with the transaction, once the
                # session has let go of its connection.
                buffer.sealed = getattr(refused, "sealed", None)
                raise

    def _after_commit(self, session: Session) -> None:
        buffer: SessionBuffer | None = session.info.get(self)
        if buffer is None:
            return
        savepoint = session.get_nested_transaction()
        if savepoint is not None:
            buffer.release(savepoint)
            return
        root = session.get_transaction()
        frame = buffer.frames.pop(root, None) if root is not None else None
        sealed, buffer.sealed = buffer.sealed, None
        if frame is not None:
            buffer.committed = (frame, sealed)

    def _deliver(self, session: Session, buffer: SessionBuffer, frame: Frame, sealed: Any) -> None:
        try:
            if frame:
                self._on_commit(session, frame.changes(), buffer.context, sealed)
        finally:
            frame.close()

    def _after_transaction_end(self, session: Session, transaction: SessionTransaction) -> None:
        buffer: SessionBuffer | None = session.info.get(self)
        if buffer is None:
            return
        if transaction.parent is None:
            del session.info[self]
            for leftover in buffer.frames.values():  # a rolled-back transaction's
                leftover.close()
            if buffer.committed is not None:
                self._deliver(session, buffer, *buffer.committed)
            elif buffer.sealed is not None:  # sealed, then the COMMIT failed
                self._on_abandon(buffer.sealed)
        elif transaction.nested:
            dropped = buffer.frames.pop(transaction, None)  # released frames were merged already
            if dropped is not None:
                dropped.close()
