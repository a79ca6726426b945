"""Nothing is lost: what Mongo does not take at commit time waits, in the outbox or in
memory, and is delivered later exactly once."""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import AutoReconnect, BulkWriteError, OperationFailure
from sqlalchemy import Engine, create_engine, func, inspect, select, text
from sqlalchemy.orm import Session

from audit_mongo import AuditLog, PendingInMemoryWarning
from tests.conftest import stored
from tests.fakes import DropsMidBatch, FailingCollection, Switchable, closed_loopback_port
from tests.models import Client

OUTBOX = "audit_mongo_outbox"


@pytest.fixture
def unreachable() -> Iterator[Any]:
    """A real pymongo collection on a closed loopback port."""
    client: Any = MongoClient(f"mongodb://127.0.0.1:{closed_loopback_port()}/app")
    yield client.app.user_logs
    client.close()


def commit_clients(audit: AuditLog, engine: Engine, count: int, user: Any = None) -> None:
    audit.track(Client)
    with Session(engine) as s, audit.acting_as(user):
        for i in range(count):
            s.add(Client(name=f"c{i}"))
            s.commit()


def outbox_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text(f"SELECT count(*) FROM {OUTBOX}")) or 0)


def ids_once(collection: Any) -> Counter[Any]:
    """The audit documents' ids (chain fillers left out), each stored once."""
    documents = [d for d in stored(collection) if d["action"] != "link"]
    counts = Counter(document["_id"] for document in documents)
    assert set(counts.values()) <= {1}, "a document was stored twice"
    return counts


def test_mongo_unreachable_commits_succeed_and_the_outbox_delivers_each_document_once(
    engine: Engine, unreachable: Any, collection: Any
) -> None:
    audit = AuditLog(unreachable, timeout=0.3, outbox=engine)
    try:
        commit_clients(audit, engine, 3, user=7)
        assert audit.pending() == 3
    finally:
        audit.close()
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Client)) == 3

    # Mongo is reachable again: a fresh log (another process, the CLI) finds the work.
    recovered = AuditLog(collection, outbox=engine)
    try:
        assert recovered.pending() == 3
        assert recovered.deliver_pending() == 3
        assert recovered.pending() == 0
        assert recovered.deliver_pending() == 0
    finally:
        recovered.close()
    documents = stored(collection)
    assert len(ids_once(collection)) == 3
    assert [d["changes"]["name"]["added"] for d in documents] == [["c0"], ["c1"], ["c2"]]
    assert {d["current_user_id"] for d in documents} == {7}
    assert outbox_rows(engine) == 0


def test_outbox_rows_commit_and_roll_back_with_the_transaction(
    engine: Engine, unreachable: Any
) -> None:
    audit = AuditLog(unreachable, timeout=0.3, outbox=engine)
    audit.track(Client)
    try:
        with Session(engine) as s:
            s.add(Client(name="rolled back"))
            s.flush()
            s.rollback()
            s.add(Client(name="kept"))
            s.commit()
        assert outbox_rows(engine) == 1
        assert audit.pending() == 1
    finally:
        audit.close()


def test_delivered_documents_leave_the_outbox(engine: Engine, collection: Any) -> None:
    audit = AuditLog(collection, outbox=engine)
    try:
        commit_clients(audit, engine, 2)
        assert audit.pending() == 0
    finally:
        audit.close()
    assert outbox_rows(engine) == 0
    assert len(ids_once(collection)) == 2


def test_a_large_transaction_is_kept_in_rows_of_a_thousand_and_delivered_once(
    engine: Engine, unreachable: Any, collection: Any
) -> None:
    audit = AuditLog(unreachable, timeout=0.3, outbox=engine)
    audit.track(Client)
    try:
        with Session(engine) as s:
            s.add_all([Client(name=f"c{i}") for i in range(2_500)])
            s.commit()
        assert outbox_rows(engine) == 3
        assert audit.pending() == 2_500
    finally:
        audit.close()
    recovered = AuditLog(collection, outbox=engine)
    try:
        assert recovered.deliver_pending() == 2_500
    finally:
        recovered.close()
    assert len(ids_once(collection)) == 2_500


def test_the_outbox_table_is_created_once_and_named_by_the_caller(
    engine: Engine, collection: Any
) -> None:
    first = AuditLog(collection, outbox=engine, outbox_table="my_outbox")
    second = AuditLog(collection, outbox=engine, outbox_table="my_outbox")
    first.close()
    second.close()
    assert "my_outbox" in inspect(engine).get_table_names()


def test_an_async_engine_as_outbox_is_refused_with_a_clear_error(collection: Any) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine("sqlite+aiosqlite://")
    with pytest.raises(TypeError, match="synchronous sqlalchemy Engine"):
        AuditLog(collection, outbox=engine)  # type: ignore[arg-type]


def test_without_an_outbox_a_warning_says_a_crash_can_lose_pending_documents(
    collection: Any,
) -> None:
    with pytest.warns(PendingInMemoryWarning, match="a crash loses them"):
        AuditLog(collection).close()
    with pytest.warns(PendingInMemoryWarning):  # strict: void documents can be pending
        AuditLog(collection, strict=True).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AuditLog(collection, outbox=create_engine("sqlite://")).close()


def test_without_an_outbox_pending_documents_wait_in_memory_and_are_delivered_once(
    engine: Engine, unreachable: Any, collection: Any
) -> None:
    mongo = Switchable(unreachable)
    with pytest.warns(PendingInMemoryWarning):
        audit = AuditLog(mongo, timeout=0.3)
    try:
        commit_clients(audit, engine, 2)
        assert audit.pending() == 2
        mongo.target = collection
        assert audit.deliver_pending() == 2
        assert audit.pending() == 0
    finally:
        audit.close()
    assert len(ids_once(collection)) == 2


def test_after_an_outage_the_next_successful_commit_sends_earlier_pending_work(
    engine: Engine, unreachable: Any, collection: Any
) -> None:
    mongo = Switchable(unreachable)
    audit = AuditLog(mongo, timeout=0.3, outbox=engine)
    try:
        commit_clients(audit, engine, 2)
        assert audit.pending() == 2
        mongo.target = collection
        commit_clients(audit, engine, 1)
        assert audit.pending() == 0
    finally:
        audit.close()
    assert len(ids_once(collection)) == 3


@pytest.mark.parametrize("with_outbox", [True, False], ids=["outbox", "memory"])
@pytest.mark.parametrize(
    "error",
    [AutoReconnect("connection reset"), OperationFailure("not authorized", code=13)],
    ids=["retryable", "not-retryable"],
)
def test_a_failure_in_the_middle_of_a_batch_still_stores_each_document_once(
    engine: Engine, collection: Any, error: BaseException, with_outbox: bool
) -> None:
    mongo = DropsMidBatch(collection, stored=2, error=error)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingInMemoryWarning)
        audit = AuditLog(mongo, outbox=engine if with_outbox else None)
    audit.track(Client)
    try:
        with Session(engine) as s:
            s.add_all([Client(name=f"c{i}") for i in range(5)])
            s.commit()
        if isinstance(error, AutoReconnect):  # retried at once: the first two are duplicates
            assert mongo.calls == 3  # and fillers vouch for their chain positions
            assert audit.pending() == 0
            assert collection.count_documents({"action": "link"}) == 2
        else:  # not retried: kept, and delivered on demand
            assert mongo.calls == 1
            assert audit.pending() == 5
            assert audit.deliver_pending() == 5
    finally:
        audit.close()
    assert len(ids_once(collection)) == 5


class Rejects:
    """Refuses documents of one table (a collection validator, say); stores the others."""

    def __init__(self, target: Any, table_name: str) -> None:
        self.target = target
        self.table_name = table_name

    def insert_many(self, documents: Any, ordered: bool = True) -> None:
        errors = [
            {"index": i, "code": 121, "errmsg": "Document failed validation"}
            for i, d in enumerate(documents)
            if d["object_id"] == 2
        ]
        accepted = [d for d in documents if d["object_id"] != 2]
        if accepted:
            self.target.insert_many(accepted, ordered=ordered)
        if errors:
            raise BulkWriteError({"writeErrors": errors, "nInserted": len(documents) - 1})


def test_a_document_mongo_keeps_rejecting_stays_pending_without_stalling_the_rest(
    engine: Engine, collection: Any, caplog: pytest.LogCaptureFixture
) -> None:
    audit = AuditLog(Rejects(collection, "clients"), outbox=engine)
    try:
        with caplog.at_level(logging.ERROR, logger="audit_mongo"):
            commit_clients(audit, engine, 3)
            assert audit.pending() == 1
            assert audit.deliver_pending() == 0  # passes over it once, does not loop
    finally:
        audit.close()
    assert sorted(d["object_id"] for d in stored(collection)) == [1, 3]
    assert "1 of 1 audit documents were not written (BulkWriteError: write error codes [121])" in (
        caplog.text
    )


def test_only_errors_pymongo_marks_retryable_are_retried() -> None:
    from audit_mongo.delivery import MongoWriter

    network = FailingCollection(AutoReconnect("reset"))
    labelled = OperationFailure("primary stepped down", code=189)
    labelled._add_error_label("RetryableWriteError")
    stepdown = FailingCollection(labelled)
    refused = FailingCollection(OperationFailure("not authorized", code=13))
    for collection in (network, stepdown, refused):
        assert MongoWriter(collection, timeout=0.5).write([{"_id": 1}]) == 0

    assert network.calls >= 3  # backoff 0.05, 0.1, 0.2 ... within the 0.5 s budget
    assert stepdown.calls >= 3
    assert refused.calls == 1


def test_deliver_pending_counts_documents_already_in_mongo_as_confirmed(
    engine: Engine, unreachable: Any, collection: Any
) -> None:
    mongo = Switchable(unreachable)
    audit = AuditLog(mongo, timeout=0.3, outbox=engine)
    try:
        commit_clients(audit, engine, 2)
        with engine.connect() as conn:
            from audit_mongo.encoding import decode_all

            data = conn.scalar(text(f"SELECT documents FROM {OUTBOX} ORDER BY id LIMIT 1"))
        collection.insert_many(decode_all(data))  # delivered once before, say by a crash
        mongo.target = collection
        assert audit.deliver_pending() == 2
    finally:
        audit.close()
    assert len(ids_once(collection)) == 2


def test_pending_counts_every_process_outbox_rows(
    engine: Engine, unreachable: Any, collection: Any
) -> None:
    first = AuditLog(unreachable, timeout=0.3, outbox=engine)
    try:
        commit_clients(first, engine, 2)
    finally:
        first.close()
    other = AuditLog(collection, outbox=engine)
    try:
        assert other.pending() == 2
    finally:
        other.close()
