"""``AuditLog``: the one object an application holds.

It wires the pipeline: mapper events note instances (capture), the session's flush turns
them into BSON-safe row changes (normalise), the transaction buffer nets them per row and
waits for the commit, and the commit delivery seals them just before the COMMIT (outbox,
strict) and delivers them after it, keeping what Mongo refuses as pending work (delivery).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from pymongo.errors import OperationFailure
from pymongo.write_concern import WriteConcern
from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.orm.state import InstanceState
from sqlalchemy.pool import SingletonThreadPool, StaticPool

from . import capture
from .actor import Acting, Actor
from .catalog import ModelCatalog
from .changes import Action, RowChange, RowKey
from .commit_delivery import CommitDelivery
from .connect import AuditSetupError, check_collection, open_collection
from .connection_transaction import ConnectionTransactions
from .delivery import MongoWriter
from .indexes import ensure_indexes, retention_seconds
from .log_safety import log_failure
from .outbox import DEFAULT_TABLE as DEFAULT_OUTBOX_TABLE
from .outbox import Outbox
from .reader import AuditReader
from .signing import SigningKeys
from .statement_events import StatementEvents
from .tracking import MaskSettings, Off, Tracking
from .transaction import NOT_CAPTURED, SessionBuffer, TransactionBuffer
from .verify import Head, Verification

logger = logging.getLogger("audit_mongo")

MAPPER_EVENTS = ("before_insert", "before_update", "before_delete")
MEMORY_WARNING = (
    "AuditLog without an outbox: audit documents Mongo cannot take when their transaction "
    "commits (in strict mode: void documents) wait in this process's memory, and a crash "
    "loses them. Pass outbox=<your Engine> to keep them in your database instead."
)


UNAUTHORIZED = 13  # MongoDB's error code for a command the user's roles do not allow

# MongoDB's TTL monitor deletes expired documents once a minute or so: a chain's oldest
# links in the last hour of the window may be gone while the next ones are still there.
RETENTION_MARGIN = dt.timedelta(hours=1)

# One DBAPI connection for the whole process (StaticPool) or one database per thread
# (SingletonThreadPool, ":memory:"): a writer thread would share the application's
# transaction, or see another database.
SHARED_POOLS = (StaticPool, SingletonThreadPool)


class PendingInMemoryWarning(UserWarning):
    """An ``AuditLog`` keeps pending documents in memory, where a crash loses them."""


class AuditLog(AuditReader):
    """An audit trail of a SQLAlchemy application's row changes, in a Mongo collection.
    It also answers questions about them: see ``AuditReader`` (``history``, ``for_object``,
    ``by_user``, ``for_table``, ``find``, ``state_at``...), whose models are the tracked ones.

    ::

        audit = AuditLog.from_uri("mongodb://localhost/app", outbox=engine)
        audit.ensure_indexes()
        audit.track(Client, exclude=("password",))
        with audit.acting_as(42):
            session.commit()   # one document per changed row, written after the commit

    The blog-post wiring works the same::

        event.listen(Client, "before_insert", audit.receive_before_insert)
        event.listen(Client, "before_update", audit.receive_before_update)
        event.listen(Client, "before_delete", audit.receive_before_delete)

    :param collection: a pymongo (or mongomock) ``Collection``.
    :param exclude: attribute names never recorded, for every model.
    :param mask: attribute names recorded as changed with their values hidden, for every
        model (an excluded attribute stays excluded).
    :param mask_key: an application secret (bytes or str): masked values are then stored as
        ``"hmac-sha256:<hex>"`` digests, equal for equal values of one column; without it,
        as ``"[masked]"``. Keep it secret and stable: another key gives other digests.
    :param default_mask: also mask the attributes whose names contain ``password``,
        ``secret``, ``token``, ``api_key`` or ``apikey`` (in any case).
    :param timeout: seconds a commit may wait for Mongo at most (``pymongo.timeout``).
    :param write_concern: the ``WriteConcern`` of audit writes; the collection's by default.
    :param core_statements: also record INSERT / UPDATE / DELETE statements on tracked
        tables run on connections no ``Session`` owns (``engine.begin()``,
        ``engine.connect()``). Statements run through a session are always recorded.
    :param retention: how long documents are kept; ``ensure_indexes()`` then creates a TTL
        index on ``created_at`` that makes MongoDB delete older ones. Kept forever by default.
    :param outbox: an ``Engine`` on the application's database. Documents are inserted into
        its ``outbox_table`` by the transaction they describe, so a crash or a Mongo outage
        after the commit loses nothing; without it, documents Mongo did not take wait in
        memory (and a warning says so).
    :param strict: write documents to Mongo before the SQL commit; if Mongo does not take
        them, ``commit()`` raises ``AuditWriteError`` and nothing is committed.
    :param background: write after-commit documents from a background thread, in batches of
        up to ``batch_size`` gathered for at most ``max_delay`` seconds, through a queue of at
        most ``queue_size`` documents.
    :param engines: record only work done through these engines (several applications in
        one process, each with its own log); every engine's by default.
    :param signing_keys: named secrets (``{"2026-12": b"..."}``, 16+ bytes each) that sign
        every document's link in its chain; ``verify()`` then also detects documents forged
        by someone without the key. Keep retired keys here to verify what they signed.
    :param signing_key_id: which of ``signing_keys`` signs new documents (needed when
        there are several).
    """

    def __init__(
        self,
        collection: Any,
        *,
        exclude: Collection[str] = (),
        mask: Collection[str] = (),
        mask_key: bytes | str | None = None,
        default_mask: bool = True,
        timeout: float = 2.0,
        write_concern: WriteConcern | None = None,
        core_statements: bool = False,
        retention: dt.timedelta | None = None,
        outbox: Engine | None = None,
        outbox_table: str = DEFAULT_OUTBOX_TABLE,
        strict: bool = False,
        background: bool = False,
        queue_size: int = 10_000,
        batch_size: int = 1000,
        max_delay: float = 0.05,
        engines: Iterable[Engine] | None = None,
        signing_keys: Mapping[str, bytes | str] | None = None,
        signing_key_id: str | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        retention_seconds(retention)  # a bad retention fails here, not at ensure_indexes()
        masks = MaskSettings.of(mask, mask_key, default_mask)
        self.collection = collection
        self.retention = retention
        keys = SigningKeys(signing_keys, signing_key_id)
        self._writer = MongoWriter(
            collection, timeout=timeout, write_concern=write_concern, keys=keys
        )
        check_collection(collection, timeout)
        if background and outbox is not None and isinstance(outbox.pool, SHARED_POOLS):
            raise ValueError(
                "background=True needs an outbox engine whose pool gives each thread its own "
                f"connection; {type(outbox.pool).__name__} shares one (use a file database "
                "with the default pool)"
            )
        self.outbox = Outbox(outbox, outbox_table) if outbox is not None else None
        if self.outbox is not None:
            self.outbox.create_now_or_later()
        else:
            warnings.warn(PendingInMemoryWarning(MEMORY_WARNING), stacklevel=2)
        options = {"max_documents": queue_size, "batch_size": batch_size, "max_delay": max_delay}
        self._delivery = CommitDelivery(
            self._writer,
            outbox=self.outbox,
            strict=strict,
            background=options if background else None,
        )
        self._actor = Actor()
        self._tracking = Tracking(
            exclude,
            {
                "create": ("before_insert", self.receive_before_insert),
                "update": ("before_update", self.receive_before_update),
                "delete": ("before_delete", self.receive_before_delete),
            },
            masks,
        )
        self._tracking.listen()
        if engines is not None:
            self._tracking.engines = tuple(engines)
        AuditReader.__init__(
            self, collection, signing_keys=signing_keys, signing_key_id=signing_key_id
        )
        self._mapper_listeners: list[tuple[Any, str, Callable[..., None]]] = []
        self._tracking_listeners = tuple(
            self._tracking_listener(action) for action in ("create", "update", "delete")
        )
        self._buffer = TransactionBuffer(
            collect=self._collect,
            capture_context=self._actor.current,
            seal=self._seal,
            on_commit=lambda session, changes, acting, sealed: self._committed(
                changes, acting, sealed, True
            ),
            on_abandon=lambda sealed: self._delivery.abandoned(sealed, safe=True),
        )
        self._connections = (
            ConnectionTransactions(
                self._actor.current,
                self._seal,
                self._committed,
                lambda sealed: self._delivery.abandoned(sealed, safe=False),
            )
            if core_statements
            else None
        )
        self._statements = StatementEvents(self._tracking, self._buffer, self._connections)
        self._client: Any = None
        self.closed = False

    def _model_catalog(self, models: Iterable[type]) -> ModelCatalog:
        """The query side knows the tracked classes (and their exclusions)."""
        tracking = self._tracking
        return ModelCatalog(
            tracking.known_registries,
            preferred=tracking.is_tracked,
            excluded=tracking.excluded,
            generation=lambda: tracking.generation,
        )

    @classmethod
    def from_uri(
        cls,
        uri: str,
        collection: str = "user_logs",
        *,
        database: str | None = None,
        client_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> AuditLog:
        """An ``AuditLog`` on a collection named by URI; ``mongomock://`` is in memory.

        ``AuditLog.from_uri("mongodb://db1:27017/app")`` writes to ``app.user_logs``; with
        no database in the URI nor ``database=``, to ``audit.user_logs``. The client is
        closed by ``close()``.
        """
        client, target = open_collection(uri, collection, database, client_options or {})
        log = cls(target, **options)
        log._client = client
        return log

    # -- configuration ---------------------------------------------------------------

    @property
    def user_loader(self) -> Callable[[], Any] | None:
        """Called at commit time for the acting user's id when no ``acting_as()`` is in force."""
        return self._actor.user_loader

    @user_loader.setter
    def user_loader(self, loader: Callable[[], Any] | None) -> None:
        self._actor.user_loader = loader

    def acting_as(self, user_id: Any) -> AbstractContextManager[None]:
        """Attribute the commits made inside the block to ``user_id``."""
        return self._actor.acting_as(user_id)

    def context(self, **values: Any) -> AbstractContextManager[None]:
        """Store ``values`` under ``context`` in the documents of commits made in the block.

        ::

            with audit.context(request_id=request_id, reason="GDPR erase"):
                session.commit()

        Blocks nest (the inner value wins on a shared key); like ``acting_as()``, a block
        holds for its own thread or asyncio task. ``for_request()`` finds a request's
        entries by ``context.request_id``.
        """
        return self._actor.context(values)

    def disabled(self) -> Off:
        """Record nothing of what is flushed or executed inside the block; it holds for the
        current thread or asyncio task only (and the tasks it starts). A ``with`` or an
        ``async with`` block, or a decorator: of a function, for the call; of an ``async
        def``, for as long as its coroutine runs, across its awaits, in the awaiting task.
        A generator function cannot be decorated: use a block inside it.

        ::

            with audit.disabled():
                load_fixtures(session)
                session.commit()

            @audit.disabled()
            async def load_fixtures(session: AsyncSession) -> None:
                session.add_all(FIXTURES)
                await session.commit()
        """
        return self._tracking.off()

    @property
    def context_loader(self) -> Callable[[], Mapping[str, Any] | None] | None:
        """Called at commit time for context values (a web request's, say); the values of
        ``context()`` blocks in force win on a shared key. One that raises is logged and
        ignored."""
        return self._actor.context_loader

    @context_loader.setter
    def context_loader(self, loader: Callable[[], Mapping[str, Any] | None] | None) -> None:
        self._actor.context_loader = loader

    def current_context(self) -> dict[str, Any]:
        """Who acts now and the context, as plain JSON, for a background job to carry::

        job_queue.enqueue(send_invoice, invoice_id, audit=audit.current_context())

        def send_invoice(invoice_id, audit):
            with audit_log.restore_context(audit):   # attributed to whoever queued it
                ...
        """
        return self._actor.snapshot()

    def restore_context(
        self, snapshot: Mapping[str, Any], *, via: str = "job"
    ) -> AbstractContextManager[None]:
        """Put a ``current_context()`` snapshot in force for the block, with ``via`` (``"job"``
        unless told) in the context; ``ValueError`` for anything else than a snapshot."""
        return self._actor.restored(snapshot, via)

    @property
    def recording(self) -> bool:
        """Whether changes flushed now, in this thread or task, are recorded: False inside
        ``disabled()`` and after ``close()``."""
        return not self.closed and self._tracking.recording

    def verify(
        self, *, since: dt.datetime | None = None, heads: Mapping[str, Head] | None = None
    ) -> Verification:
        """``AuditReader.verify``; with a ``retention``, ``since`` defaults to the start of
        the retention window (plus a margin), since MongoDB deletes what is older."""
        if since is None and self.retention is not None:
            since = dt.datetime.now(dt.timezone.utc) - self.retention + RETENTION_MARGIN
        return super().verify(since=since, heads=heads)

    def ensure_indexes(self) -> list[str]:
        """Create the indexes the log's queries use (idempotent): an administrative step,
        needing listIndexes, createIndex and collMod on the collection, which an
        insert-only application user does not have (``AuditSetupError`` then)."""
        try:
            return ensure_indexes(self.collection, retention=self.retention)
        except OperationFailure as exc:
            if exc.code != UNAUTHORIZED:
                raise
        raise AuditSetupError(
            f"ensure_indexes() was refused on {self.collection.full_name} (Unauthorized): it "
            "needs listIndexes, createIndex and collMod there. Run it as an administrative "
            "step with such a user (see Least privilege in the README), not as the "
            "application's insert-only user."
        )

    def track(
        self,
        model: type,
        *,
        exclude: Collection[str] = (),
        mask: Collection[str] = (),
        default_mask: bool | None = None,
    ) -> type:
        """Record changes to ``model``'s rows; a declarative base tracks every mapped subclass.

        ``exclude`` names attributes of this model (and its subclasses) never recorded; it
        adds to the exclusions of earlier calls, of the model's base classes and of the log.
        ``mask`` names attributes recorded with their values hidden, adding to masks in the
        same way. ``default_mask`` turns the log's default mask on or off for this model and
        its subclasses (None: as its base classes, else the log, say).
        Returns ``model``, so it also works as a class decorator.
        """
        self._tracking.add(model, exclude, mask, default_mask)
        # Listeners of its own, not the public receivers: SQLAlchemy would take those for a
        # duplicate of the application's own wiring and drop propagate=True. _note() records
        # each instance once however many listeners fire.
        for name, listener in zip(MAPPER_EVENTS, self._tracking_listeners, strict=True):
            if not event.contains(model, name, listener):
                event.listen(model, name, listener, propagate=True)
                self._mapper_listeners.append((model, name, listener))
        return model

    def close(self) -> None:
        """Remove every listener this log added and close the client ``from_uri`` opened.

        Receivers the application wired itself with ``event.listen`` stay registered but do
        nothing after ``close()``.
        """
        if self.closed:
            return
        self.closed = True
        for target, name, receiver in self._mapper_listeners:
            if event.contains(target, name, receiver):
                event.remove(target, name, receiver)
        self._mapper_listeners.clear()
        self._buffer.close()
        self._statements.close()
        self._tracking.close()
        if self._connections is not None:
            self._connections.close()
        self._delivery.close()
        if self._client is not None:
            self._client.close()

    # -- delivery ------------------------------------------------------------------

    def pending(self) -> int:
        """How many committed documents await delivery to Mongo: in the outbox (written by
        any process), in this process's memory, or queued for its background writer."""
        waiting = self._connections.waiting() if self._connections is not None else 0
        return self._delivery.pending() + waiting

    def deliver_pending(self) -> int:
        """Send pending documents to Mongo, oldest first; return how many are now confirmed
        there (documents already there count: they were delivered before).

        Safe to run from several processes at once: each document keeps the ``_id`` it was
        built with, so Mongo stores it once, and on PostgreSQL each outbox row is taken by
        one process (``FOR UPDATE SKIP LOCKED``).
        """
        return self._delivery.deliver_pending()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the background writer has written what is queued (True), or until
        ``timeout`` seconds have passed (False). Without a background writer, True."""
        return self._delivery.flush(timeout)

    def uncommitted_changes(self, session: Session) -> list[RowChange]:
        """Changes captured in ``session`` that its transaction has not committed yet."""
        return list(self._buffer.pending(session))

    # -- capture: mapper event receivers -------------------------------------------------

    def receive_before_insert(
        self, mapper: Mapper[Any], connection: Connection, target: Any
    ) -> None:
        """Mapper ``before_insert`` listener."""
        self._note(mapper, connection, target, "create")

    def receive_before_update(
        self, mapper: Mapper[Any], connection: Connection, target: Any
    ) -> None:
        """Mapper ``before_update`` listener."""
        self._note(mapper, connection, target, "update")

    def receive_before_delete(
        self, mapper: Mapper[Any], connection: Connection, target: Any
    ) -> None:
        """Mapper ``before_delete`` listener."""
        self._note(mapper, connection, target, "delete")

    def _tracking_listener(self, action: Action) -> Callable[..., None]:
        # A partial, not a closure: one Python call less per row of every flush.
        return functools.partial(self._note, action=action)

    def _note(
        self, mapper: Mapper[Any], connection: Connection, target: Any, action: Action
    ) -> None:
        if self.closed or not self._tracking.records(connection):
            return
        state: InstanceState[Any] = instance_state(target)  # inspect(), without its lookup
        session = state.session
        if session is None:
            return
        buffer = self._buffer.buffer(session)
        buffer.dialect = connection.dialect
        if state in buffer.noted:  # wired twice (track() and event.listen): note once
            return
        info = self._tracking.info(mapper)
        try:
            buffer.noted[state] = capture.note(info, state, action, connection, buffer.reader)
            buffer.noted_tables.update(info.tables)
        except Exception as exc:  # a defect here must not break the application's flush
            log_failure(
                logging.ERROR,
                exc,
                "audit_mongo: could not note a %s in %s; that row change is not recorded",
                action,
                info.table_name,
            )

    # -- buffer and delivery ----------------------------------------------------------

    def _collect(
        self, session: Session, buffer: SessionBuffer
    ) -> Iterable[tuple[RowKey, RowChange]]:
        return list(capture.collect(buffer.noted, buffer.dialect))

    def _seal(
        self,
        connection: Connection,
        changes: Iterable[RowChange],
        acting: Acting,
        before_prepare: bool,
    ) -> Any:
        return self._delivery.seal(connection, changes, self._acting(acting), before_prepare)

    def _committed(
        self, changes: Iterable[RowChange], acting: Acting, sealed: Any, safe: bool
    ) -> None:
        self._delivery.committed(changes, self._acting(acting), sealed, safe)

    def _acting(self, captured: Any) -> Acting:
        if captured is NOT_CAPTURED:  # changes flushed by another before_commit listener
            return self._actor.current()
        return captured  # type: ignore[no-any-return]
