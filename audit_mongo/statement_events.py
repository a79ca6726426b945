"""The Core execution events statement capture listens to, and where captured rows go.

A statement run by a session's connection joins that session's transaction buffer, unless
it is the session's own flush (whose rows the mapper events already noted); one run by a
connection no session owns is captured only when the log was asked to capture Core
statements.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, CursorResult, Engine, ExceptionContext
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import UpdateBase

from . import statements
from .changes import Action, RowChange, RowKey
from .connection_transaction import ConnectionTransactions
from .log_safety import log_failure
from .statements import PendingStatement, StatementTarget
from .tracking import Tracking
from .transaction import TransactionBuffer

logger = logging.getLogger("audit_mongo")

Recorder = Callable[[Iterable[tuple[RowKey, RowChange]], bool], None]


class StatementEvents:
    """Captures INSERT / UPDATE / DELETE statements on tracked tables (see ``statements``)."""

    def __init__(
        self,
        tracking: Tracking,
        sessions: TransactionBuffer,
        connections: ConnectionTransactions | None,
    ) -> None:
        self._tracking = tracking
        self._sessions = sessions
        self._connections = connections
        self._pending: weakref.WeakKeyDictionary[
            Connection, list[tuple[Any, PendingStatement, Recorder]]
        ] = weakref.WeakKeyDictionary()
        self._listeners: list[tuple[str, Callable[..., Any], dict[str, Any]]] = [
            ("before_execute", self._before_execute, {"retval": True}),
            ("after_execute", self._after_execute, {}),
            ("handle_error", self._handle_error, {}),
        ]
        for name, listener, options in self._listeners:
            event.listen(Engine, name, listener, **options)

    def close(self) -> None:
        for name, listener, _ in self._listeners:
            if event.contains(Engine, name, listener):
                event.remove(Engine, name, listener)

    def _before_execute(
        self,
        connection: Connection,
        statement: Any,
        multiparams: Sequence[Mapping[str, Any]],
        params: Mapping[str, Any],
        execution_options: Mapping[str, Any],
    ) -> tuple[Any, Sequence[Mapping[str, Any]], Mapping[str, Any]]:
        action = statements.statement_action(statement)
        if action is None or not self._tracking.records(connection):
            return statement, multiparams, params
        try:
            pending = self._capture_before(
                connection, statement, action, multiparams, params, execution_options
            )
            if pending is not None:
                statement = _asking_for_keys(statement, pending[0].target)
                self._pending.setdefault(connection, []).append((statement, *pending))
        except Exception as exc:  # a defect here must not stop the application's statement
            log_failure(
                logging.ERROR, exc, "audit_mongo: a %s statement could not be captured", action
            )
        return statement, multiparams, params

    def _capture_before(
        self,
        connection: Connection,
        statement: Any,
        action: Action,
        multiparams: Sequence[Mapping[str, Any]],
        params: Mapping[str, Any],
        execution_options: Mapping[str, Any],
    ) -> tuple[PendingStatement, Recorder] | None:
        table, statement_from = self._tracking.statement_table(statement.table)
        if table is None:
            return None
        session = self._sessions.owner(connection)
        if session is not None and self._sessions.in_flush(session, table):
            return None  # the flush's own statement: its rows were noted by mapper events
        if session is None and self._connections is None:
            return None
        target = self._tracking.target(table)
        if target is None or action not in target.actions:
            return None
        param_sets = list(multiparams) if multiparams else [params or {}]
        pending = statements.before(
            target, action, statement, statement_from, param_sets, connection, execution_options
        )
        return pending, self._recorder(connection, session)

    def _recorder(self, connection: Connection, session: Session | None) -> Recorder:
        if session is not None:
            return partial(self._sessions.record_statement, session)
        assert self._connections is not None
        return partial(self._connections.record, connection)

    def _after_execute(
        self,
        connection: Connection,
        statement: Any,
        multiparams: Any,
        params: Any,
        execution_options: Any,
        result: CursorResult[Any],
    ) -> None:
        entry = self._take(connection, statement)
        if entry is None:
            return
        _, pending, recorder = entry
        try:
            recorder(statements.after(pending, result, connection), pending.moves)
        except Exception as exc:
            log_failure(
                logging.ERROR,
                exc,
                "audit_mongo: the rows a %s statement on %s changed could not be recorded",
                pending.action,
                pending.target.table_name,
            )

    def _handle_error(self, context: ExceptionContext) -> None:
        statement = getattr(context, "invoked_statement", None)  # absent before SQLAlchemy 2.1
        if context.connection is not None and statement is not None:
            self._take(context.connection, statement)  # it changed nothing

    def _take(
        self, connection: Connection, statement: Any
    ) -> tuple[Any, PendingStatement, Recorder] | None:
        entries = self._pending.get(connection)
        if not entries:
            return None
        for index in range(len(entries) - 1, -1, -1):
            if entries[index][0] is statement:
                return entries.pop(index)
        return None


def _asking_for_keys(statement: UpdateBase, target: StatementTarget) -> UpdateBase:
    """An INSERT that also returns the new rows' primary keys, so they can be read back."""
    if not statements.needs_inserted_keys(statement):
        return statement
    try:
        return statement.return_defaults(*target.pk_columns)
    except Exception:  # already asked for other defaults: its keys come back anyway
        return statement
