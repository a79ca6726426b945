"""Delivery promises of the README that only a mutation test showed untested."""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import pytest
from pymongo.errors import AutoReconnect, OperationFailure

from audit_mongo.delivery import MongoWriter


class NetworkDown:
    """insert_many always fails with a retryable network error."""

    def __init__(self) -> None:
        self.calls = 0

    def insert_many(self, documents: Any, ordered: bool = True) -> None:
        self.calls += 1
        raise AutoReconnect("connection reset")


def test_retries_back_off_doubling_from_50_ms(monkeypatch: pytest.MonkeyPatch) -> None:
    """README: retryable errors are retried "with backoff (0.05 s, doubling) while the
    write's timeout lasts", not hammered in a tight loop."""
    pauses: list[float] = []
    monkeypatch.setattr("audit_mongo.delivery.time.sleep", pauses.append)
    mongo = NetworkDown()
    assert MongoWriter(mongo, timeout=0.5).write([{"_id": 1}]) == 0
    assert pauses[:3] == [0.05, 0.1, 0.2]
    assert all(later == 2 * earlier for earlier, later in itertools.pairwise(pauses))
    assert max(pauses) < 0.5  # no pause longer than the write's budget
    assert mongo.calls == len(pauses) + 1


# -- the background writer's sweep ---------------------------------------------------------

from sqlalchemy import Engine  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from audit_mongo import AuditLog  # noqa: E402
from tests.conftest import stored  # noqa: E402
from tests.fakes import FailsOnce  # noqa: E402
from tests.models import Client  # noqa: E402


@pytest.mark.filterwarnings("ignore::audit_mongo.PendingInMemoryWarning")
@pytest.mark.parametrize("with_outbox", [True, False], ids=["outbox", "memory"])
def test_the_background_writer_delivers_what_failed_without_being_asked(
    engine: Engine, collection: Any, with_outbox: bool
) -> None:
    """README: pending work is delivered "by the background writer, when idle (... right
    after a failure ...)": no deliver_pending(), no further commit, no close()."""
    audit = AuditLog(
        FailsOnce(collection, OperationFailure("not primary", code=10107)),
        background=True,
        timeout=0.2,
        outbox=engine if with_outbox else None,
    )
    audit.track(Client)
    try:
        with Session(engine) as s:
            s.add(Client(name="blip"))
            s.commit()
        deadline = time.monotonic() + 5
        while audit.pending() or not stored(collection):
            assert time.monotonic() < deadline, "the writer never swept the pending work"
            time.sleep(0.05)
        assert [d["changes"]["name"]["added"] for d in stored(collection)] == [["blip"]]
    finally:
        audit.close()


# -- outbox mode writes to Mongo only after the COMMIT ----------------------------------------

from sqlalchemy import event  # noqa: E402


def test_outbox_mode_sends_nothing_before_the_commit_nor_for_a_failed_commit(
    engine: Engine, collection: Any
) -> None:
    """README: the documents "commit or roll back with the changes they describe. Right after
    the commit they are written to Mongo" -- so a COMMIT that fails leaves nothing in Mongo
    and nothing pending (unlike strict mode, which writes first and voids)."""
    audit = AuditLog(collection, outbox=engine)
    audit.track(Client)
    seen_at_commit: list[int] = []

    def look(connection: Any) -> None:
        seen_at_commit.append(len(stored(collection)))

    def fail(connection: Any) -> None:
        raise RuntimeError("the database refused the COMMIT")

    event.listen(engine, "commit", look)
    event.listen(engine, "commit", fail)
    try:
        with Session(engine) as s:
            s.add(Client(name="never committed"))
            with pytest.raises(RuntimeError, match="refused"):
                s.commit()
            s.rollback()
    finally:
        event.remove(engine, "commit", fail)
        event.remove(engine, "commit", look)
    try:
        assert seen_at_commit == [0]
        assert stored(collection) == []
        assert audit.pending() == 0
    finally:
        audit.close()


# -- pending work goes oldest first -------------------------------------------------------------


class Records:
    """Refuses while ``down``; then writes to ``target`` and records the order it was sent."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.down = True
        self.sent: list[str] = []

    def insert_many(self, documents: Any, ordered: bool = True) -> Any:
        if self.down:
            raise OperationFailure("not authorized", code=13)
        self.sent.extend(d["changes"]["name"]["added"][0] for d in documents)
        return self.target.insert_many(documents, ordered=ordered)


@pytest.mark.filterwarnings("ignore::audit_mongo.PendingInMemoryWarning")
@pytest.mark.parametrize("with_outbox", [True, False], ids=["outbox", "memory"])
def test_deliver_pending_sends_the_oldest_first(
    engine: Engine, collection: Any, with_outbox: bool
) -> None:
    """README: deliver_pending() "sends it oldest first"."""
    mongo = Records(collection)
    audit = AuditLog(mongo, outbox=engine if with_outbox else None)
    audit.track(Client)
    try:
        for name in ("first", "second", "third"):
            with Session(engine) as s:
                s.add(Client(name=name))
                s.commit()
        assert audit.pending() == 3
        mongo.down = False
        assert audit.deliver_pending() == 3
    finally:
        audit.close()
    assert mongo.sent == ["first", "second", "third"]


# -- memory mode says at close what it loses --------------------------------------------------


@pytest.mark.filterwarnings("ignore::audit_mongo.PendingInMemoryWarning")
def test_memory_mode_logs_at_close_how_many_documents_are_lost(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """README: memory mode, process ends -> "the pending documents are lost (their count is
    logged at exit)"."""
    mongo = Records(None)  # stays down
    audit = AuditLog(mongo)
    audit.track(Client)
    with Session(engine) as s:
        s.add_all([Client(name="a"), Client(name="b")])
        s.commit()
    with caplog.at_level(logging.ERROR, logger="audit_mongo"):
        audit.close()
    lost = [r for r in caplog.records if "never confirmed by Mongo" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelno == logging.ERROR
    assert lost[0].getMessage().startswith("audit_mongo: 2 audit documents were never")


# -- a session on another database than the outbox's ------------------------------------------

from sqlalchemy import create_engine, text  # noqa: E402


def test_a_session_on_another_database_keeps_what_mongo_refused_in_the_outbox(
    engine: Engine, collection: Any, tmp_path: Any
) -> None:
    """README: "A session bound to another database has its documents written after its
    commit, and what Mongo refuses then goes to the outbox in a transaction of its own"."""
    outbox_db = create_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    mongo = Records(collection)  # down
    audit = AuditLog(mongo, outbox=outbox_db)
    audit.track(Client)
    try:
        with Session(engine) as s:  # the application's database is not the outbox's
            s.add(Client(name="elsewhere"))
            s.commit()
        with outbox_db.connect() as conn:
            assert conn.scalar(text("SELECT sum(document_count) FROM audit_mongo_outbox")) == 1
        assert audit.pending() == 1
        mongo.down = False
        assert audit.deliver_pending() == 1
    finally:
        audit.close()
        outbox_db.dispose()
    assert [d["changes"]["name"]["added"] for d in stored(collection)] == [["elsewhere"]]
