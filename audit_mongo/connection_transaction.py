"""The buffer of connections no ``Session`` owns: Core statements, when the log captures them.

A connection's changes wait in a stack of frames, one per open savepoint over the root
transaction's, and are netted per row like a session's. Core has no "after commit" event:
its ``commit`` event fires before the database commits. So a committed connection's changes
are handed on only once the commit is known to have succeeded, that is when the connection
begins its next transaction or its DBAPI connection goes back to the pool, is invalidated or
is closed; a failed COMMIT (a deferred constraint, a serialization failure) reaches
``handle_error`` first, and its changes are dropped with it (and what ``seal`` did for them
is abandoned). On an AUTOCOMMIT connection each statement commits as it runs, and its changes
are handed on at once.

``seal`` runs in the ``commit`` event itself, before the COMMIT, where statements may still
run: that is where the outbox insert and strict mode's write happen. A two-phase
transaction is sealed in ``prepare_twophase``, before its PREPARE.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, ExceptionContext
from sqlalchemy.pool import Pool

from .changes import RowChange, RowKey
from .frame import Frame
from .safe_reads import in_autocommit

CommitHandler = Callable[[Iterable[RowChange], Any, Any, bool], None]
SealHandler = Callable[[Connection, Iterable[RowChange], Any, bool], Any]


class ConnectionTransactions:
    """Frames of Core connections, and the changes of commits not yet known to be durable."""

    def __init__(
        self,
        capture_context: Callable[[], Any],
        seal: SealHandler,
        on_commit: CommitHandler,
        on_abandon: Callable[[Any], None],
    ) -> None:
        self._capture_context = capture_context
        self._seal = seal
        self._on_commit = on_commit
        self._on_abandon = on_abandon
        self._frames: weakref.WeakKeyDictionary[Connection, list[Frame]] = (
            weakref.WeakKeyDictionary()
        )
        # Committed, not yet known to be durable, by id() of the DBAPI connection; the entry
        # holds that connection, so the id cannot be reused by another while it waits.
        self._committing: dict[int, tuple[Any, Frame, Any, Any]] = {}
        self._listeners: list[tuple[Any, str, Callable[..., Any]]] = [
            (Engine, "savepoint", self._savepoint),
            (Engine, "release_savepoint", self._release_savepoint),
            (Engine, "rollback_savepoint", self._rollback_savepoint),
            (Engine, "rollback", self._rollback),
            (Engine, "rollback_twophase", self._rollback_twophase),
            (Engine, "commit", self._commit),
            (Engine, "commit_twophase", self._commit_twophase),
            (Engine, "prepare_twophase", self._prepare_twophase),
            (Engine, "begin", self._begin),
            (Engine, "begin_twophase", self._begin_twophase),
            (Engine, "handle_error", self._handle_error),
            # The DBAPI connection leaves the application: whatever it committed is durable.
            (Pool, "checkin", self._released),
            (Pool, "invalidate", self._released),
            (Pool, "soft_invalidate", self._released),
            (Pool, "close", self._released),
            (Pool, "close_detached", self._released),
        ]
        for target, name, listener in self._listeners:
            event.listen(target, name, listener)

    def close(self) -> None:
        """Stop listening, and hand on what committed connections still hold: outside a
        commit in progress, a commit that got this far has succeeded."""
        for target, name, listener in self._listeners:
            if event.contains(target, name, listener):
                event.remove(target, name, listener)
        for dbapi_connection, *_ in list(self._committing.values()):
            committed = self._take(dbapi_connection)
            if committed is not None:
                self._deliver_frame(*committed, safe=True)

    def waiting(self) -> int:
        """Row changes committed and not yet handed on."""
        return sum(len(frame) for _, frame, _, _ in list(self._committing.values()))

    def record(
        self, connection: Connection, changes: Iterable[tuple[RowKey, RowChange]], may_move: bool
    ) -> None:
        if in_autocommit(connection):  # the statement committed as it ran
            committed = Frame()
            committed.record_all(changes, may_move)
            self._deliver_frame(committed, self._capture_context(), None, safe=False)
            return
        frames = self._frames.setdefault(connection, [Frame()])
        frames[-1].record_all(changes, may_move)

    def _savepoint(self, connection: Connection, name: str) -> None:
        self._frames.setdefault(connection, [Frame()]).append(Frame())

    def _release_savepoint(self, connection: Connection, name: str, context: Any) -> None:
        frames = self._frames.get(connection)
        if frames is not None and len(frames) > 1:
            released = frames.pop()
            frames[-1].absorb(released)

    def _rollback_savepoint(self, connection: Connection, name: str, context: Any) -> None:
        frames = self._frames.get(connection)
        if frames is not None and len(frames) > 1:
            frames.pop().close()

    def _rollback(self, connection: Connection) -> None:
        for frame in self._frames.pop(connection, []):
            frame.close()

    def _commit(self, connection: Connection, before_prepare: bool = False) -> None:
        frames = self._frames.pop(connection, None)
        if not frames:
            return
        root = frames[0]
        for frame in frames[1:]:  # savepoints still open are committed with the root
            root.absorb(frame)
        if not root:
            root.close()
            return
        context = self._capture_context()
        try:
            sealed = self._seal(connection, root.changes(), context, before_prepare)
        except BaseException as refused:
            root.close()
            if getattr(refused, "sealed", None) is not None:
                self._on_abandon(refused.sealed)  # type: ignore[attr-defined]
            raise
        dbapi = _dbapi(connection)
        self._committing[id(dbapi)] = (dbapi, root, context, sealed)

    def _prepare_twophase(self, connection: Connection, xid: Any) -> None:
        # Sealed before PREPARE: no statement may run after it.
        self._commit(connection, before_prepare=True)

    def _commit_twophase(self, connection: Connection, xid: Any, is_prepared: bool) -> None:
        self._commit(connection)  # prepared: done at PREPARE already

    def _rollback_twophase(self, connection: Connection, xid: Any, is_prepared: bool) -> None:
        self._rollback(connection)
        self._abandon(_dbapi(connection))  # rolled back after PREPARE

    def _begin(self, connection: Connection) -> None:
        if self._committing:
            self._deliver(_dbapi(connection))

    def _begin_twophase(self, connection: Connection, xid: Any) -> None:
        self._begin(connection)

    def _released(self, dbapi_connection: Any, *_: Any) -> None:
        if self._committing and dbapi_connection is not None:
            self._deliver(dbapi_connection)

    def _handle_error(self, context: ExceptionContext) -> None:
        connection = context.connection
        if connection is not None and context.statement is None and self._committing:
            self._abandon(_dbapi(connection))  # the COMMIT itself failed

    def _abandon(self, dbapi_connection: Any) -> None:
        failed = self._take(dbapi_connection)
        if failed is not None:
            failed[0].close()
            if failed[2] is not None:
                self._on_abandon(failed[2])

    def _take(self, dbapi_connection: Any) -> tuple[Frame, Any, Any] | None:
        entry = self._committing.get(id(dbapi_connection))
        if entry is None or entry[0] is not dbapi_connection:
            return None
        del self._committing[id(dbapi_connection)]
        return entry[1], entry[2], entry[3]

    def _deliver(self, dbapi_connection: Any) -> None:
        committed = self._take(dbapi_connection)
        if committed is not None:
            self._deliver_frame(*committed, safe=False)

    def _deliver_frame(self, frame: Frame, context: Any, sealed: Any, safe: bool) -> None:
        # safe=False: inside a Core event, with the connection still checked out.
        try:
            if frame:
                self._on_commit(frame.changes(), context, sealed, safe)
        finally:
            frame.close()


def _dbapi(connection: Connection) -> Any:
    try:
        return connection.connection.dbapi_connection
    except Exception:  # closed or invalidated
        return None
