"""The background writer: commits do not wait for Mongo, and nothing queued is lost."""

from __future__ import annotations

import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo.errors import AutoReconnect
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from audit_mongo import AuditLog, PendingInMemoryWarning
from tests.conftest import stored
from tests.fakes import FileCollection
from tests.models import Client


class Gate:
    """A collection whose writes wait until the test opens the gate; records who wrote."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.open = threading.Event()
        self.calls: list[tuple[str, int]] = []

    def insert_many(self, documents: Any, ordered: bool = True) -> Any:
        self.calls.append((threading.current_thread().name, len(documents)))
        self.open.wait(10)
        return self.target.insert_many(documents, ordered=ordered)


@pytest.fixture
def gate(collection: Any) -> Iterator[Gate]:
    gate = Gate(collection)
    yield gate
    gate.open.set()


def background_log(mongo: Any, engine: Engine | None = None, **options: Any) -> AuditLog:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingInMemoryWarning)
        audit = AuditLog(mongo, background=True, outbox=engine, **options)
    audit.track(Client)
    return audit


def commit(engine: Engine, *names: str) -> None:
    with Session(engine) as s:
        s.add_all([Client(name=name) for name in names])
        s.commit()


def test_a_commit_does_not_wait_for_mongo(engine: Engine, gate: Gate, collection: Any) -> None:
    audit = background_log(gate)
    try:
        commit(engine, "a")  # returns while the writer is still held at the gate
        assert stored(collection) == []
        gate.open.set()
        assert audit.flush(timeout=10)
        assert [d["changes"]["name"]["added"] for d in stored(collection)] == [["a"]]
        assert [name for name, _ in gate.calls] == ["audit_mongo-writer"]
    finally:
        audit.close()


def test_commits_are_batched_by_count_and_time(engine: Engine, gate: Gate, collection: Any) -> None:
    gate.open.set()
    audit = background_log(gate, max_delay=0.5, batch_size=20)
    try:
        for i in range(50):
            commit(engine, f"c{i}")
        assert audit.flush(timeout=10)
    finally:
        audit.close()
    assert len(stored(collection)) == 50
    assert len(gate.calls) < 10  # 50 commits, not 50 round trips
    assert max(size for _, size in gate.calls) <= 20


def test_a_full_queue_without_outbox_makes_the_committing_thread_write(
    engine: Engine, gate: Gate, collection: Any
) -> None:
    audit = background_log(gate, queue_size=1, max_delay=0)
    try:
        commit(engine, "taken by the writer")  # the writer holds it at the gate
        while not gate.calls:
            threading.Event().wait(0.01)
        commit(engine, "queued")  # fills the queue
        writer = threading.Thread(target=commit, args=(engine, "written inline"), name="app")
        writer.start()
        while len(gate.calls) < 2:
            threading.Event().wait(0.01)
        gate.open.set()
        writer.join(10)
        assert audit.flush(timeout=10)
    finally:
        audit.close()
    assert ("app", 1) in gate.calls
    assert len(stored(collection)) == 3


def test_a_full_queue_with_an_outbox_leaves_the_work_in_the_outbox(
    engine: Engine, gate: Gate, collection: Any
) -> None:
    audit = background_log(gate, engine, queue_size=1, max_delay=0)
    try:
        commit(engine, "taken by the writer")
        while not gate.calls:
            threading.Event().wait(0.01)
        commit(engine, "queued")
        commit(engine, "left in the outbox")  # no wait, no write by the committing thread
        assert [name for name, _ in gate.calls] == ["audit_mongo-writer"]
        assert audit.pending() == 3
        gate.open.set()
        assert audit.flush(timeout=10)
        audit.deliver_pending()
        assert audit.pending() == 0
    finally:
        audit.close()
    assert sorted(d["changes"]["name"]["added"][0] for d in stored(collection)) == [
        "left in the outbox",
        "queued",
        "taken by the writer",
    ]


class Down:
    def insert_many(self, documents: Any, ordered: bool = True) -> None:
        raise AutoReconnect("connection refused")


@pytest.mark.parametrize("with_outbox", [True, False], ids=["outbox", "memory"])
def test_what_the_writer_cannot_write_stays_pending(engine: Engine, with_outbox: bool) -> None:
    audit = background_log(Down(), engine if with_outbox else None, timeout=0.2)
    try:
        commit(engine, "a", "b")
        assert audit.flush(timeout=10)
        assert audit.pending() == 2
    finally:
        audit.close()


def test_close_writes_what_is_queued(engine: Engine, collection: Any) -> None:
    audit = background_log(collection, max_delay=5)  # would wait 5 s for a fuller batch
    commit(engine, "a")
    audit.close()
    assert len(stored(collection)) == 1


DRAINED_AT_EXIT = """
import sys
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from audit_mongo import AuditLog
from tests.fakes import FileCollection
from tests.models import Base, Client

engine = create_engine(sys.argv[1])
Base.metadata.create_all(engine)
audit = AuditLog(FileCollection(sys.argv[2]), background=True, outbox=engine, max_delay=5)
audit.track(Client)
with Session(engine) as s:
    s.add_all([Client(name=f"c{i}") for i in range(10)])
    s.commit()
# no close(): the interpreter exits with the documents still queued
"""


def test_the_queue_is_drained_when_the_process_exits(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    mongo = tmp_path / "mongo.db"
    subprocess.run([sys.executable, "-c", DRAINED_AT_EXIT, url, str(mongo)], check=True)
    assert len(FileCollection(str(mongo)).find()) == 10
