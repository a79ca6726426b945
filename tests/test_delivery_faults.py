"""Delivery under faults: what README's "Delivery: nothing is lost" promises still holds when
strict mode refuses a commit, the outbox cannot be read, the pool has a single connection,
Mongo refuses some documents for good, the connection is AUTOCOMMIT or two-phase, the
process forks, and the delivery command meets a database error."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import mongomock
import pytest
import sqlalchemy
from pymongo.errors import ServerSelectionTimeoutError
from sqlalchemy import Engine, create_engine, event, func, insert, select, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import Pool, SingletonThreadPool, StaticPool

from audit_mongo import AuditLog, AuditWriteError
from audit_mongo.cli import main
from audit_mongo.outbox import Outbox
from tests.conftest import postgresql_engine, stored
from tests.fakes import (
    FailingCollection,
    FileCollection,
    Gate,
    RefusesBatches,
    Switchable,
    Validator,
)
from tests.models import Base, Client

# Memory mode is chosen on purpose here; its warning says nothing these tests check.
pytestmark = pytest.mark.filterwarnings("ignore::audit_mongo.PendingInMemoryWarning")

POOL_TIMEOUT = 5.0  # seconds a one-connection pool makes a second checkout wait


def mongo_down() -> Switchable:
    """Mongo unreachable, until the test sets ``.target`` to a collection."""
    return Switchable(FailingCollection(ServerSelectionTimeoutError("down")))


def name_of(document: Any) -> Any:
    """The client name an audit document records."""
    return document["changes"]["name"]["added"][0]


def names_in(collection: Any) -> list[Any]:
    return sorted(name_of(document) for document in stored(collection))


def committed_clients(engine: Engine) -> list[str | None]:
    """Client names as fresh connections see them: only what was really committed."""
    engine.dispose()
    with engine.connect() as conn:
        return list(conn.scalars(select(Client.name).order_by(Client.id)))


def commit(engine: Engine, *names: str) -> None:
    with Session(engine) as s:
        s.add_all([Client(name=name) for name in names])
        s.commit()


def commit_core(engine: Engine, name: str) -> None:
    with engine.begin() as conn:
        conn.execute(insert(Client.__table__).values(name=name))


def timed(action: Callable[..., None], *args: Any) -> float:
    """Seconds ``action(*args)`` took."""
    started = time.monotonic()
    action(*args)
    return time.monotonic() - started


@pytest.fixture
def one_connection(engine: Engine) -> Iterator[Engine]:
    """The application's database through a pool of exactly one connection."""
    connect_args: dict[str, Any] = {}
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            schema = conn.scalar(text("SELECT current_schema()"))
        connect_args = {"options": f"-c search_path={schema}"}
    bounded = create_engine(
        engine.url,
        pool_size=1,
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT,
        connect_args=connect_args,
    )
    yield bounded
    bounded.dispose()


@pytest.fixture
def postgresql() -> Iterator[Engine]:
    """PostgreSQL only: SQLite has no two-phase transactions."""
    yield from postgresql_engine()


# -- strict mode ------------------------------------------------------------------------


def test_a_strict_refusal_then_closing_the_session_commits_nothing(engine: Engine) -> None:
    """AuditWriteError promises "nothing is committed", even by a later COMMIT on the pool."""
    audit = AuditLog(mongo_down(), strict=True, timeout=0.2)
    audit.track(Client)
    try:
        with pytest.raises(AuditWriteError), Session(engine) as s:
            s.add(Client(name="unaudited"))
            s.commit()
        with engine.begin() as conn:  # unrelated work on the same pooled connection
            conn.execute(text("SELECT 1"))
        assert committed_clients(engine) == []
    finally:
        audit.close()


def test_a_strict_refusal_then_closing_a_core_connection_commits_nothing(engine: Engine) -> None:
    """The same promise for a Core connection's commit-as-you-go ``conn.commit()``."""
    audit = AuditLog(mongo_down(), strict=True, core_statements=True, timeout=0.2)
    audit.track(Client)
    try:
        conn = engine.connect()
        conn.execute(insert(Client.__table__).values(name="unaudited"))
        with pytest.raises(AuditWriteError):
            conn.commit()
        conn.close()
        with engine.begin() as other:
            other.execute(text("SELECT 1"))
        assert committed_clients(engine) == []
    finally:
        audit.close()


def test_a_strict_autocommit_session_commits_and_keeps_its_documents(
    engine: Engine, collection: Any
) -> None:
    """On AUTOCOMMIT the rows commit as they run: no error, and their documents are kept."""
    mongo = mongo_down()
    audit = AuditLog(mongo, strict=True, timeout=0.2)
    audit.track(Client)
    try:
        with Session(engine.execution_options(isolation_level="AUTOCOMMIT")) as s:
            s.add(Client(name="autocommitted"))
            s.commit()  # must not raise: the row is already committed
        assert committed_clients(engine) == ["autocommitted"]
        assert audit.pending() == 1
        mongo.target = collection
        assert audit.deliver_pending() == 1
        assert names_in(collection) == ["autocommitted"]
    finally:
        audit.close()


def test_a_strict_two_phase_core_commit_raises_and_commits_nothing_when_mongo_is_down(
    postgresql: Engine,
) -> None:
    """Strict mode covers two-phase Core transactions too: no unaudited commit."""
    audit = AuditLog(mongo_down(), strict=True, core_statements=True, timeout=0.2)
    audit.track(Client)
    try:
        with postgresql.connect() as conn:
            transaction = conn.begin_twophase()
            conn.execute(insert(Client.__table__).values(name="unaudited"))
            with pytest.raises(AuditWriteError):
                transaction.commit()
        assert committed_clients(postgresql) == []
    finally:
        audit.close()


# -- the outbox ---------------------------------------------------------------------------


def test_a_commit_never_raises_when_the_outbox_cannot_be_read(
    engine: Engine, collection: Any
) -> None:
    """After an outage the backlog retry may fail; the commit it follows has succeeded."""
    mongo = mongo_down()
    audit = AuditLog(mongo, outbox=engine, timeout=0.2)
    audit.track(Client)
    try:
        commit(engine, "during the outage")  # kept in the outbox; a backlog to retry
        mongo.target = collection
        with engine.begin() as conn:  # the outbox becomes unreadable
            conn.execute(text("DROP TABLE audit_mongo_outbox"))
        commit(engine, "after")  # its own write succeeds; the retry cannot read the outbox
        assert committed_clients(engine) == ["during the outage", "after"]
        assert names_in(collection) == ["after"]
    finally:
        audit.close()


def test_a_core_commit_never_raises_when_the_outbox_cannot_be_read(
    engine: Engine, collection: Any
) -> None:
    """The same for Core connections, whose delivery runs in a pool event."""
    mongo = mongo_down()
    audit = AuditLog(mongo, outbox=engine, core_statements=True, timeout=0.2)
    audit.track(Client)
    try:
        commit_core(engine, "during the outage")
        mongo.target = collection
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE audit_mongo_outbox"))
        commit_core(engine, "after")
        assert committed_clients(engine) == ["during the outage", "after"]
        assert names_in(collection) == ["after"]
    finally:
        audit.close()


def test_a_commit_does_not_wait_for_a_second_connection_of_a_one_connection_pool(
    one_connection: Engine, collection: Any
) -> None:
    """Delivery needs no second connection while the session holds the only one."""
    audit = AuditLog(collection, outbox=one_connection)
    audit.track(Client)
    try:
        took = timed(commit, one_connection, "a")
        assert took < POOL_TIMEOUT, f"the commit waited {took:.1f}s for a pool connection"
        assert names_in(collection) == ["a"]
        assert audit.pending() == 0, "delivered, yet its outbox row was never deleted"
    finally:
        audit.close()


def test_a_core_commit_does_not_wait_for_or_break_a_one_connection_pool(
    one_connection: Engine, collection: Any
) -> None:
    """A Core commit's delivery runs while its connection is checked out: it must not need
    another, nor keep the only one from going back to the pool."""
    mongo = mongo_down()
    audit = AuditLog(mongo, outbox=one_connection, core_statements=True, timeout=0.2)
    audit.track(Client)
    try:
        took = [timed(commit_core, one_connection, "during the outage")]  # kept in the outbox
        mongo.target = collection
        took.append(timed(commit_core, one_connection, "after"))
        assert max(took) < POOL_TIMEOUT, f"commits waited {took}s for a pool connection"
        with one_connection.connect() as conn:  # the pool still has its connection
            assert conn.scalar(select(func.count()).select_from(Client.__table__)) == 2
        audit.deliver_pending()
        assert names_in(collection) == ["after", "during the outage"]
        assert audit.pending() == 0, "delivered, yet outbox rows were never deleted"
    finally:
        audit.close()


def test_a_failed_outbox_insert_stores_no_document_twice(
    engine: Engine, collection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the 2nd outbox row fails, the 1st may still commit (SQLite, MySQL): the documents
    sent after the commit keep their ids, so none is stored twice."""
    audit = AuditLog(collection, outbox=engine)
    audit.track(Client)
    real_insert = Outbox.insert
    calls: list[int] = []

    def second_fails(self: Outbox, connection: Any, data: bytes, count: int) -> int:
        calls.append(count)
        if len(calls) == 2:
            raise RuntimeError("simulated: the second outbox row is refused")
        return real_insert(self, connection, data, count)

    monkeypatch.setattr(Outbox, "insert", second_fails)
    try:
        commit(engine, *(f"c{i}" for i in range(1500)))  # two outbox rows: 1,000 + 500
        monkeypatch.setattr(Outbox, "insert", real_insert)
        audit.deliver_pending()
        assert audit.pending() == 0
    finally:
        audit.close()
    documents = stored(collection)
    per_row = Counter(document["object_id"] for document in documents)
    assert len(per_row) == 1500
    assert max(per_row.values()) == 1, f"{sum(n > 1 for n in per_row.values())} rows twice"
    assert len({document["transaction_id"] for document in documents}) == 1


def test_a_two_phase_core_commit_stores_its_documents_in_its_own_transaction(
    postgresql: Engine,
) -> None:
    """The outbox rows must commit with the two-phase transaction they describe."""
    audit = AuditLog(mongo_down(), outbox=postgresql, core_statements=True, timeout=0.2)
    audit.track(Client)
    inserted_by: list[Any] = []

    @event.listens_for(postgresql, "before_cursor_execute")
    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO audit_mongo_outbox"):
            inserted_by.append(conn)

    try:
        with postgresql.connect() as conn:
            transaction = conn.begin_twophase()
            conn.execute(insert(Client.__table__).values(name="two-phase"))
            transaction.commit()
            assert any(c is conn for c in inserted_by), (
                f"outbox rows inserted by {len(inserted_by)} other connections, not the "
                "committing one"
            )
        assert audit.pending() == 1
    finally:
        audit.close()


# -- pending work -------------------------------------------------------------------------


@pytest.mark.parametrize("with_outbox", [True, False], ids=["outbox", "memory"])
def test_a_document_refused_for_good_does_not_hold_back_later_ones(
    engine: Engine, collection: Any, with_outbox: bool
) -> None:
    """README: a document Mongo keeps refusing stays pending without holding back the rest."""
    mongo = mongo_down()
    audit = AuditLog(mongo, outbox=engine if with_outbox else None, timeout=0.2)
    audit.track(Client)
    try:
        commit(engine, "refused for good")  # the oldest pending document
        commit(engine, *(f"c{i}" for i in range(1000)))  # more than one claim holds with it
        assert audit.pending() == 1001
        mongo.target = Validator(collection, lambda d: name_of(d) == "refused for good")
        assert audit.deliver_pending() == 1000
        assert audit.pending() == 1
        assert len(stored(collection)) == 1000
    finally:
        audit.close()


@pytest.mark.parametrize("with_outbox", [True, False], ids=["outbox", "memory"])
def test_commits_after_an_outage_keep_sending_the_backlog_until_none_is_left(
    engine: Engine, collection: Any, with_outbox: bool
) -> None:
    """README: after an outage "the next commits go on until none is left", even when one
    retry fails."""
    refused = {"old"}
    mongo = RefusesBatches(collection, lambda d: name_of(d) in refused)
    audit = AuditLog(mongo, outbox=engine if with_outbox else None, timeout=0.2)
    audit.track(Client)
    try:
        commit(engine, "old")  # refused: pending
        commit(engine, "a")  # its own write succeeds; the retry of "old" fails again
        assert audit.pending() == 1
        refused.clear()  # Mongo takes everything again
        commit(engine, "b")
        commit(engine, "c")
        assert audit.pending() == 0, "later commits stopped sending earlier pending work"
        assert names_in(collection) == ["a", "b", "c", "old"]
    finally:
        audit.close()


def test_a_committed_core_statement_is_in_mongo_or_counted_as_pending(
    engine: Engine, collection: Any
) -> None:
    """pending() is the measure of what the log misses: a commit-as-you-go Core commit whose
    documents wait for the connection's next use must be counted."""
    audit = AuditLog(collection, core_statements=True)
    audit.track(Client)
    conn = engine.connect()
    try:
        conn.execute(insert(Client.__table__).values(name="core"))
        conn.commit()
        assert len(stored(collection)) + audit.pending() == 1
        conn.close()
        assert names_in(collection) == ["core"]
        assert audit.pending() == 0
    finally:
        conn.close()
        audit.close()


def test_close_delivers_what_a_still_open_core_connection_committed(
    engine: Engine, collection: Any
) -> None:
    """close() (and the exit hook) must not drop committed Core work of an open connection."""
    audit = AuditLog(collection, core_statements=True)
    audit.track(Client)
    conn = engine.connect()
    try:
        conn.execute(insert(Client.__table__).values(name="core"))
        conn.commit()
        audit.close()
    finally:
        conn.close()
        audit.close()
    assert names_in(collection) == ["core"]


# -- the background writer ----------------------------------------------------------------


@pytest.mark.parametrize("poolclass", [StaticPool, SingletonThreadPool])
def test_the_background_writer_refuses_an_outbox_pool_sharing_one_connection(
    collection: Any, poolclass: type[Pool]
) -> None:
    """Its thread would share the application's transaction (StaticPool), or see another
    in-memory database (SingletonThreadPool): refused up front, naming the pool."""
    engine = create_engine(
        "sqlite://", poolclass=poolclass, connect_args={"check_same_thread": False}
    )
    try:
        with pytest.raises(ValueError, match=poolclass.__name__):
            AuditLog(collection, outbox=engine, background=True)
    finally:
        engine.dispose()


def test_pending_counts_the_batch_the_background_writer_is_writing(
    engine: Engine, collection: Any
) -> None:
    """A batch taken off the queue and not yet in Mongo is still missing from the log."""
    gate = Gate(collection)
    audit = AuditLog(gate, background=True)
    audit.track(Client)
    try:
        commit(engine, "in flight")
        assert gate.entered.wait(5)
        assert len(stored(collection)) + audit.pending() == 1
        gate.open.set()
        assert audit.flush(5)
        assert audit.pending() == 0
    finally:
        gate.open.set()
        audit.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_delivers_what_it_commits(engine: Engine, tmp_path: Any) -> None:
    """gunicorn --preload, Celery prefork: the writer thread made before the fork must
    work again in the child."""
    mongo = FileCollection(str(tmp_path / "mongo.db"))  # shared with the child
    audit = AuditLog(mongo, background=True)  # made in the parent, before the fork
    audit.track(Client)
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            engine.dispose(close=False)  # the parent's connections stay the parent's
            commit(engine, "from the child")
            code = 0 if audit.flush(5) else 2
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    audit.close()
    assert os.WIFEXITED(status), status
    assert os.WEXITSTATUS(status) == 0, "the child's flush() failed or timed out"
    assert [name_of(document) for document in mongo.find()] == ["from the child"]


# -- audit-mongo deliver --watch ------------------------------------------------------------


CLI_MONGO_URI = "mongodb://mongo.test/app"


@pytest.fixture
def cli_mongo(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The client every Mongo URI of the command opens: one in-memory client."""
    client: Any = mongomock.MongoClient(CLI_MONGO_URI, tz_aware=True)
    monkeypatch.setattr("pymongo.MongoClient", lambda uri, **options: client)
    for name in ("AUDIT_MONGO_URI", "AUDIT_MONGO_OUTBOX_URL", "AUDIT_MONGO_COLLECTION"):
        monkeypatch.delenv(name, raising=False)
    return client


def test_deliver_watch_keeps_watching_after_a_failed_round(
    tmp_path: Any, cli_mongo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sidecar "until SIGINT/SIGTERM" must outlive a database blink, then deliver."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    app = create_engine(url)
    Base.metadata.create_all(app)
    audit = AuditLog(mongo_down(), outbox=app, timeout=0.2)
    audit.track(Client)
    try:
        commit(app, "pending")  # waits in the outbox
    finally:
        audit.close()

    real_deliver = AuditLog.deliver_pending
    rounds = 0

    def blinking(self: AuditLog) -> int:
        nonlocal rounds
        rounds += 1
        if rounds == 1:  # the outbox table is briefly missing
            with app.begin() as conn:
                conn.execute(text("ALTER TABLE audit_mongo_outbox RENAME TO away"))
            try:
                return real_deliver(self)
            finally:
                with app.begin() as conn:
                    conn.execute(text("ALTER TABLE away RENAME TO audit_mongo_outbox"))
        delivered = real_deliver(self)
        os.kill(os.getpid(), signal.SIGINT)  # then stop the watcher
        return delivered

    monkeypatch.setattr(AuditLog, "deliver_pending", blinking)
    try:
        status = main(
            [
                "deliver",
                "--outbox-url",
                url,
                "--mongo-uri",
                CLI_MONGO_URI,
                "--watch",
                "--interval",
                "0.1",
            ]
        )
    finally:
        app.dispose()
    assert status == 0
    assert rounds == 2
    assert names_in(cli_mongo.app.user_logs) == ["pending"]


# -- documented limits --------------------------------------------------------------------


def test_an_async_engine_outbox_is_refused_without_suggesting_its_sync_engine(
    tmp_path: Any, collection: Any
) -> None:
    """``async_engine.sync_engine`` fails outside a greenlet: the error must not advise it."""
    async_engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    try:
        with pytest.raises(TypeError, match="AsyncEngine") as refused:
            AuditLog(collection, outbox=async_engine)  # type: ignore[arg-type]
        assert "sync_engine" not in str(refused.value)
    finally:
        asyncio.run(async_engine.dispose())


def prepared_transactions(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT count(*) FROM pg_prepared_xacts")) or 0)


def test_a_prepared_core_transaction_carries_its_outbox_row_through_prepare(
    postgresql: Engine, collection: Any
) -> None:
    """Nothing may run after PREPARE: the outbox row is inserted before it."""
    mongo = mongo_down()
    audit = AuditLog(mongo, outbox=postgresql, core_statements=True, timeout=0.2)
    audit.track(Client)
    try:
        with postgresql.connect() as conn:
            transaction = conn.begin_twophase()
            conn.execute(insert(Client.__table__).values(name="prepared"))
            transaction.prepare()
            transaction.commit()
        assert prepared_transactions(postgresql) == 0
        assert audit.pending() == 1
        mongo.target = collection
        assert audit.deliver_pending() == 1
    finally:
        audit.close()
    assert names_in(collection) == ["prepared"]


@pytest.mark.parametrize("strict", [False, True], ids=["outbox", "strict"])
def test_a_two_phase_session_is_sealed_before_prepare(
    postgresql: Engine, collection: Any, strict: bool
) -> None:
    """twophase=True sessions: the outbox row, or the strict write, comes before PREPARE; a
    strict refusal leaves no prepared transaction behind."""
    audit = AuditLog(mongo_down(), outbox=postgresql, strict=strict, timeout=0.2)
    audit.track(Client)
    try:
        with Session(postgresql, twophase=True) as s:
            s.add(Client(name="two-phase"))
            if strict:
                # SQLAlchemy 2.0.0 itself then fails rolling back the two-phase transaction
                # (IllegalStateChangeError); the refusal is that error's __context__.
                with pytest.raises(Exception) as refused:
                    s.commit()
                assert isinstance(refused.value, AuditWriteError) or (
                    sqlalchemy.__version__ == "2.0.0"
                    and isinstance(refused.value.__context__, AuditWriteError)
                )
                s.rollback()
            else:
                s.commit()
        assert prepared_transactions(postgresql) == 0
        assert committed_clients(postgresql) == ([] if strict else ["two-phase"])
        assert audit.pending() == (0 if strict else 1)
    finally:
        audit.close()
