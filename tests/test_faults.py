"""Faults across processes and threads: a process killed after its commit, two processes
delivering the same outbox, many threads committing at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo.errors import OperationFailure
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session

from audit_mongo import AuditLog
from tests.conftest import REAL_MONGO_URI, stored
from tests.fakes import FileCollection
from tests.models import Client

KILLED_AFTER_COMMIT = """
import os, signal, sys
from sqlalchemy import create_engine, event
from sqlalchemy.orm import Session
from audit_mongo import AuditLog
from tests.models import Client

engine = create_engine(sys.argv[1])
# Registered before the log's own listener, so it runs first: the database has committed,
# the documents have not been sent.
event.listen(Session, "after_commit", lambda s: os.kill(os.getpid(), signal.SIGKILL))
audit = AuditLog.from_uri("mongomock://", outbox=engine)
audit.track(Client)
with Session(engine) as s:
    s.add_all([Client(name=f"c{i}") for i in range(25)])
    s.commit()
print("not reached")
"""

DELIVER = """
import sys
from sqlalchemy import create_engine
from audit_mongo import AuditLog
from tests.fakes import FileCollection

engine = create_engine(sys.argv[1])
if sys.argv[2].startswith("mongodb"):
    from pymongo import MongoClient
    client = MongoClient(sys.argv[2])
    mongo = client.get_default_database("audit_mongo_test")[sys.argv[3]]
else:
    mongo = FileCollection(sys.argv[2])
audit = AuditLog(mongo, outbox=engine, timeout=10)
sys.stdin.readline()  # start together
print(audit.deliver_pending())
"""


def url_of(engine: Engine) -> str:
    """A URL another process can connect with, to the same tables (the PostgreSQL tests
    each use a schema of their own)."""
    url = engine.url
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            schema = conn.scalar(text("SELECT current_schema()"))
        url = url.update_query_dict({"options": f"-c search_path={schema}"})
    return url.render_as_string(hide_password=False)


def python(script: str, *args: str, **options: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args], text=True, cwd=os.getcwd(), **options
    )


def test_a_process_killed_after_its_commit_loses_nothing(engine: Engine, collection: Any) -> None:
    child = python(KILLED_AFTER_COMMIT, url_of(engine), stdout=subprocess.PIPE)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert "not reached" not in out

    fresh = AuditLog(collection, outbox=engine)
    try:
        assert fresh.pending() == 25
        assert fresh.deliver_pending() == 25
        assert fresh.pending() == 0
    finally:
        fresh.close()
    documents = stored(collection)
    assert len({d["_id"] for d in documents}) == len(documents) == 25
    assert sorted(d["changes"]["name"]["added"][0] for d in documents) == sorted(
        f"c{i}" for i in range(25)
    )


class Refuses:
    def insert_many(self, documents: Any, ordered: bool = True) -> None:
        raise OperationFailure("not authorized", code=13)


@pytest.fixture
def shared_mongo(tmp_path: Any) -> Iterator[tuple[list[str], Any]]:
    """Arguments naming a Mongo both processes reach, and that collection to read back."""
    if REAL_MONGO_URI:
        from pymongo import MongoClient

        name = f"user_logs_{uuid.uuid4().hex[:12]}"
        client: Any = MongoClient(REAL_MONGO_URI, tz_aware=True)
        collection = client.get_default_database("audit_mongo_test")[name]
        yield [REAL_MONGO_URI, name], collection
        collection.drop()
        client.close()
        return
    path = str(tmp_path / "mongo.db")
    yield [path, "-"], FileCollection(path)


def test_two_processes_delivering_at_once_store_each_document_once(
    engine: Engine, shared_mongo: tuple[list[str], Any]
) -> None:
    down = AuditLog(Refuses(), outbox=engine)
    down.track(Client)
    try:
        with Session(engine) as s:
            for batch in range(40):
                s.add_all([Client(name=f"c{batch}-{i}") for i in range(50)])
                s.commit()  # 40 outbox rows of 50 documents
    finally:
        down.close()

    arguments, mongo = shared_mongo
    workers = [
        python(DELIVER, url_of(engine), *arguments, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    confirmed = [int(worker.communicate(timeout=120)[0].split()[-1]) for worker in workers]

    documents = list(mongo.find())
    ids = Counter(d["_id"] for d in documents)
    assert len(ids) == 2_000 and set(ids.values()) == {1}
    assert sum(confirmed) >= 2_000  # a document both sent counts for both: it is there
    if engine.dialect.name == "postgresql":  # FOR UPDATE SKIP LOCKED: each row to one of them
        assert sum(confirmed) == 2_000
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM audit_mongo_outbox")) == 0


THREADS, COMMITS = 8, 500


def test_eight_threads_committing_as_their_own_users_are_each_recorded_once(
    engine: Engine, collection: Any
) -> None:
    audit = AuditLog(collection, outbox=engine)
    audit.track(Client)
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            with audit.acting_as(f"user-{thread}"), Session(engine) as s:
                for i in range(COMMITS):
                    s.add(Client(name=f"{thread}:{i}"))
                    s.commit()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert audit.pending() == 0
    finally:
        audit.close()
    documents = stored(collection)
    assert len(documents) == len({d["_id"] for d in documents}) == THREADS * COMMITS
    for document in documents:
        thread = document["changes"]["name"]["added"][0].split(":")[0]
        assert document["current_user_id"] == f"user-{thread}"


@pytest.fixture(autouse=True)
def _many_connections(engine: Engine) -> None:
    # Eight threads, each holding a session: more than the default pool of five plus ten.
    engine.pool._pool.maxsize = max(engine.pool.size(), 16)  # type: ignore[attr-defined]
    if engine.dialect.name == "sqlite":
        # SQLite has one writer at a time; on a loaded machine eight of them can wait past
        # pysqlite's 5 s default before "database is locked". Wait as long as it takes.
        engine.dispose()
        event.listen(engine, "connect", _patient)


def _patient(dbapi_connection: Any, record: Any) -> None:
    dbapi_connection.execute("PRAGMA busy_timeout = 120000")
