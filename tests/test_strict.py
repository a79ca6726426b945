"""Strict mode: no change commits unless Mongo has its documents first."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError
from sqlalchemy import Engine, event, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from audit_mongo import AuditLog, AuditWriteError
from tests.conftest import stored
from tests.fakes import Switchable
from tests.models import Client


class Down:
    def insert_many(self, documents: Any, ordered: bool = True) -> None:
        raise ServerSelectionTimeoutError("connection refused")


class FailsOnCall:
    """Takes the first ``good`` batches, then fails."""

    def __init__(self, target: Any, good: int) -> None:
        self.target = target
        self.good = good

    def insert_many(self, documents: Any, ordered: bool = True) -> Any:
        if self.good == 0:
            raise ServerSelectionTimeoutError("connection refused")
        self.good -= 1
        return self.target.insert_many(documents, ordered=ordered)


def clients(engine: Engine) -> list[str]:
    with Session(engine) as s:
        return list(s.scalars(select(Client.name).order_by(Client.id)))


def test_a_mongo_failure_makes_the_commit_raise_and_nothing_is_committed(
    engine: Engine, collection: Any
) -> None:
    mongo = Switchable(Down())
    audit = AuditLog(mongo, strict=True, timeout=0.3)
    audit.track(Client)
    try:
        with Session(engine) as s:
            s.add(Client(name="unaudited"))
            with pytest.raises(AuditWriteError, match="not committed"):
                s.commit()
            s.rollback()  # as after any failed commit
            assert clients(engine) == []

            mongo.target = collection  # the session goes on working once Mongo is back
            s.add(Client(name="audited"))
            s.commit()
        assert audit.pending() == 0
    finally:
        audit.close()
    assert clients(engine) == ["audited"]
    assert [d["changes"]["name"]["added"] for d in stored(collection)] == [["audited"]]


def test_documents_are_in_mongo_before_the_database_commits(
    engine: Engine, collection: Any
) -> None:
    audit = AuditLog(collection, strict=True)
    audit.track(Client)
    seen_at_commit: list[int] = []

    def count_documents(connection: Any) -> None:
        seen_at_commit.append(len(stored(collection)))

    event.listen(engine, "commit", count_documents)
    try:
        with Session(engine) as s:
            s.add(Client(name="a"))
            s.commit()
    finally:
        event.remove(engine, "commit", count_documents)
        audit.close()
    assert seen_at_commit == [1]


def test_a_partly_written_transaction_is_voided_when_mongo_fails_half_way(
    engine: Engine, collection: Any
) -> None:
    mongo = Switchable(FailsOnCall(collection, good=1))
    audit = AuditLog(mongo, strict=True, timeout=0.3, outbox=engine)
    audit.track(Client)
    try:
        with Session(engine) as s:
            s.add_all([Client(name=f"c{i}") for i in range(1_500)])  # two batches
            with pytest.raises(AuditWriteError):
                s.commit()
            s.rollback()
        assert audit.pending() == 1_000  # the voids wait until Mongo is back
        mongo.target = collection
        assert audit.deliver_pending() == 1_000
    finally:
        audit.close()
    assert clients(engine) == []
    documents = stored(collection)
    written = [d for d in documents if d["action"] == "create"]
    voids = [d for d in documents if d["action"] == "void"]
    assert len(written) == 1_000  # the first batch reached Mongo before the failure ...
    assert sorted(v["voids"] for v in voids) == sorted(d["_id"] for d in written)  # ... voided
    assert {v["transaction_id"] for v in voids} == {written[0]["transaction_id"]}


def fail_the_commit_after_the_audit_wrote(engine: Engine) -> Any:
    """A COMMIT that fails after audit_mongo's pre-commit write (listeners run in order)."""

    def fail(connection: Any) -> None:
        raise RuntimeError("the database refused the COMMIT")

    event.listen(engine, "commit", fail)
    return fail


def test_a_commit_failing_after_the_write_gets_void_documents(
    engine: Engine, collection: Any
) -> None:
    audit = AuditLog(collection, strict=True)
    audit.track(Client)
    with Session(engine) as s:
        s.add(Client(name="kept"))
        s.commit()
    failing = fail_the_commit_after_the_audit_wrote(engine)
    try:
        with Session(engine) as s, audit.acting_as(5):
            s.execute(update(Client).values(name="never"))
            with pytest.raises(RuntimeError, match="refused"):
                s.commit()
            s.rollback()
    finally:
        event.remove(engine, "commit", failing)
        audit.close()
    create, update_, void = stored(collection)
    assert clients(engine) == ["kept"]
    assert update_["changes"]["name"] == {"added": ["never"], "deleted": ["kept"]}
    assert void["action"] == "void"
    assert void["voids"] == update_["_id"]
    assert (void["table_name"], void["object_id"]) == ("clients", create["object_id"])
    assert void["current_user_id"] == 5
    assert void["changes"] == {}


def test_a_deferred_constraint_failing_at_commit_voids_what_was_written(
    collection: Any,
) -> None:
    from tests.conftest import postgresql_engine

    for engine in postgresql_engine():
        with engine.begin() as conn:
            conn.execute(
                text(
                    "ALTER TABLE clients ADD CONSTRAINT one_name UNIQUE (name) "
                    "DEFERRABLE INITIALLY DEFERRED"
                )
            )
        audit = AuditLog(collection, strict=True)
        audit.track(Client)
        try:
            with Session(engine) as s:
                s.add_all([Client(name="same"), Client(name="same")])
                with pytest.raises(IntegrityError):
                    s.commit()  # PostgreSQL checks the constraint at COMMIT
                s.rollback()
        finally:
            audit.close()
        with Session(engine) as s:
            assert s.scalar(select(func.count()).select_from(Client)) == 0
        actions = sorted(d["action"] for d in stored(collection))
        assert actions == ["create", "create", "void", "void"]


def test_strict_mode_covers_core_statements_on_connections(engine: Engine, collection: Any) -> None:
    audit = AuditLog(Switchable(Down()), strict=True, core_statements=True, timeout=0.3)
    audit.track(Client)
    try:
        with pytest.raises(AuditWriteError), engine.begin() as conn:
            conn.execute(Client.__table__.insert().values(name="core"))
    finally:
        audit.close()
    assert clients(engine) == []


class LostMidWrite:
    """Stores the first write, then loses the connection before its reply, and for good."""

    def __init__(self, target: Any) -> None:
        self.target: Any = target

    def insert_many(self, documents: Any, ordered: bool = True) -> Any:
        if self.target is not None:
            self.target.insert_many(documents, ordered=ordered)
            self.target = None
        raise AutoReconnect("connection reset by peer")


def test_documents_that_may_have_been_stored_before_a_lost_reply_are_voided(
    engine: Engine, collection: Any
) -> None:
    audit = AuditLog(LostMidWrite(collection), strict=True, timeout=0.2, outbox=engine)
    audit.track(Client)
    try:
        with Session(engine) as s:
            s.add(Client(name="maybe stored"))
            with pytest.raises(AuditWriteError):
                s.commit()
            s.rollback()
        # the void, and the filler of the document's chain position (see test_tamper_evidence),
        # refused like everything else here
        assert audit.pending() == 2
        assert audit.deliver_pending() == 0
    finally:
        audit.close()
    assert clients(engine) == []
    (document,) = stored(collection)
    assert document["action"] == "create"  # stored, though Mongo never confirmed it ...
    with engine.connect() as conn:  # ... so its void waits in the outbox
        from audit_mongo.encoding import decode_all

        data = conn.scalar(text("SELECT documents FROM audit_mongo_outbox"))
    void, filler = decode_all(data)
    assert (void["action"], void["voids"]) == ("void", document["_id"])
    assert filler["chain"]["stands_for"] == document["chain"]["hash"]
