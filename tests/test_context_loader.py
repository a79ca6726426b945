"""Context that comes from outside a block: a ``context_loader`` asked at commit time, a
snapshot carried to a background job, and a log scoped to some engines."""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from typing import Any

import pytest
from bson import Decimal128
from sqlalchemy import Engine, create_engine, insert
from sqlalchemy.orm import Session

from audit_mongo import AuditLog
from tests.conftest import only, stored
from tests.models import Base, Client


def test_a_context_loader_is_asked_at_commit_and_blocks_win_on_a_shared_key(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    audit.context_loader = lambda: {"request_id": "from-loader", "path": "/clients/1"}
    session.add(Client(id=1, name="A"))
    session.commit()
    with audit.context(request_id="from-block"):
        session.add(Client(id=2, name="B"))
        session.commit()

    first, second = stored(collection)
    assert first["context"] == {"request_id": "from-loader", "path": "/clients/1"}
    assert second["context"] == {"request_id": "from-block", "path": "/clients/1"}


def test_a_context_loader_that_raises_is_logged_and_the_commit_goes_on(
    audit: AuditLog, session: Session, collection: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("outside a request")

    audit.context_loader = broken
    with audit.context(reason="kept"):
        session.add(Client(id=1, name="A"))
        session.commit()

    assert only(collection)["context"] == {"reason": "kept"}
    assert "context_loader failed; the context is recorded without it (RuntimeError)" in (
        caplog.text
    )


def test_a_snapshot_is_plain_json_and_attributes_a_jobs_changes_to_whoever_queued_it(
    audit: AuditLog, engine: Engine, collection: Any
) -> None:
    with audit.acting_as(42), audit.context(request_id="r-1", amount=Decimal("9.99")):
        message = json.dumps(audit.current_context())  # what a job queue would carry

    def job(snapshot: dict[str, Any]) -> None:
        with audit.restore_context(snapshot), Session(engine) as session:
            session.add(Client(id=1, name="made by the job"))
            session.commit()

    worker = threading.Thread(target=job, args=(json.loads(message),))
    worker.start()
    worker.join(10)

    document = only(collection)
    assert document["current_user_id"] == 42
    assert document["context"] == {
        "request_id": "r-1",
        "amount": Decimal128("9.99"),
        "via": "job",
    }


def test_restore_context_names_how_the_work_ran_and_nobody_stays_nobody(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    audit.user_loader = lambda: 7  # the worker's own loader must not take over
    with audit.acting_as(None):
        snapshot = audit.current_context()
    with audit.restore_context(snapshot, via="celery"):
        session.add(Client(id=1, name="A"))
        session.commit()

    document = only(collection)
    assert document["current_user_id"] is None
    assert document["context"] == {"via": "celery"}


@pytest.mark.parametrize(
    "snapshot",
    [
        None,
        {},
        {"user_id": 1},
        {"user_id": 1, "context": []},
        {"user_id": 1, "context": {}, "x": 1},
    ],
)
def test_anything_but_a_snapshot_is_refused(audit: AuditLog, snapshot: Any) -> None:
    with pytest.raises(ValueError, match="snapshot"), audit.restore_context(snapshot):
        pass


def test_a_log_given_engines_records_only_their_work(collection: Any, tmp_path: Any) -> None:
    mine = create_engine(f"sqlite:///{tmp_path / 'mine.db'}")
    other = create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    for each in (mine, other):
        Base.metadata.create_all(each)
    audit = AuditLog(collection, engines=[mine])
    audit.track(Client)
    try:
        for each, name in ((mine, "mine"), (other, "other")):
            with Session(each) as session:
                session.add(Client(name=name))
                session.commit()
                session.execute(insert(Client), [{"name": f"{name} bulk"}])
                session.commit()
        with Session(mine.execution_options(isolation_level="SERIALIZABLE")) as session:
            session.add(Client(name="mine, through a derived engine"))
            session.commit()
    finally:
        audit.close()
        mine.dispose()
        other.dispose()

    names = [d["changes"]["name"]["added"][0] for d in stored(collection)]
    assert names == ["mine", "mine bulk", "mine, through a derived engine"]


def test_a_disposed_engine_is_still_one_of_the_logs_engines(collection: Any, tmp_path: Any) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    Base.metadata.create_all(engine)
    audit = AuditLog(collection, engines=[engine])
    audit.track(Client)
    try:
        engine.dispose(close=False)  # what a forked worker does: a new pool
        with Session(engine) as session:
            session.add(Client(name="after dispose"))
            session.commit()
    finally:
        audit.close()
        engine.dispose()

    assert [d["changes"]["name"]["added"] for d in stored(collection)] == [["after dispose"]]


@pytest.mark.parametrize("where", ["log", "track"])
def test_exclude_given_as_a_plain_string_is_refused(collection: Any, where: str) -> None:
    with pytest.raises(TypeError, match="not a string"):
        if where == "log":
            AuditLog(collection, exclude="phone")  # would exclude "p", "h", "o"...
        else:
            audit = AuditLog(collection)
            try:
                audit.track(Client, exclude="phone")
            finally:
                audit.close()


def test_an_outbox_database_unreachable_at_start_up_gets_its_table_when_first_needed(
    collection: Any, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "not yet"
    engine = create_engine(f"sqlite:///{folder / 'app.db'}")
    audit = AuditLog(collection, outbox=engine)  # the application starts all the same
    audit.track(Client)
    try:
        assert "could not create the outbox table" in caplog.text
        folder.mkdir()
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            session.add(Client(name="once the database is there"))
            session.commit()
        assert audit.pending() == 0
    finally:
        audit.close()
        engine.dispose()

    assert [d["changes"]["name"]["added"] for d in stored(collection)] == [
        ["once the database is there"]
    ]
