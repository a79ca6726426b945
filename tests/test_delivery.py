"""A Mongo failure never breaks, or stalls, the application's commit, and is never silent."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import bson
import pytest
from bson.errors import InvalidDocument
from pymongo import MongoClient
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    DocumentTooLarge,
    OperationFailure,
    WriteConcernError,
)
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from audit_mongo import AuditLog, commit_delivery
from audit_mongo.delivery import MongoWriter, repair
from tests.conftest import postgresql_engine, stored
from tests.fakes import FailingCollection, closed_loopback_port
from tests.models import Base, Client


def commit_one_client(audit: AuditLog, engine: Engine, name: str = "kept") -> None:
    audit.track(Client)
    with Session(engine) as s:
        s.add(Client(name=name))
        s.commit()


def clients_in_database(engine: Engine) -> int:
    with Session(engine) as s:
        return int(s.scalar(select(func.count()).select_from(Client)) or 0)


def test_unreachable_mongo_neither_breaks_nor_stalls_the_commit(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # pymongo's own default would wait 30 s for a server; the log's bound is what counts.
    client: Any = MongoClient(f"mongodb://127.0.0.1:{closed_loopback_port()}/app")
    audit = AuditLog(client.app.user_logs, timeout=0.5)
    started = time.monotonic()
    try:
        with caplog.at_level(logging.ERROR, logger="audit_mongo"):
            commit_one_client(audit, engine)
    finally:
        audit.close()
        client.close()

    assert time.monotonic() - started < 10  # far below pymongo's 30 s default
    assert clients_in_database(engine) == 1
    assert "1 of 1 audit documents were not written" in caplog.text
    assert "ServerSelectionTimeoutError" in caplog.text


def test_the_default_bound_is_two_seconds_not_pymongos_thirty(engine: Engine) -> None:
    client: Any = MongoClient(f"mongodb://127.0.0.1:{closed_loopback_port()}/app")
    audit = AuditLog(client.app.user_logs)
    started = time.monotonic()
    try:
        commit_one_client(audit, engine)
    finally:
        audit.close()
        client.close()

    assert 1.5 < time.monotonic() - started < 10
    assert clients_in_database(engine) == 1


WRITE_ERRORS = [
    AutoReconnect("connection reset"),
    OperationFailure("not authorized on app to execute command", code=13),
    WriteConcernError("waiting for replication timed out", code=64),
    InvalidDocument("cannot encode object"),
    DocumentTooLarge("BSON document too large"),
    ValueError("bad value"),
    OverflowError("MongoDB can only handle up to 8-byte ints"),
]


@pytest.mark.parametrize("error", WRITE_ERRORS, ids=lambda e: type(e).__name__)
def test_every_kind_of_write_error_is_logged_with_its_count_and_the_commit_succeeds(
    engine: Engine, error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    failing = FailingCollection(error)
    audit = AuditLog(failing)
    try:
        with caplog.at_level(logging.ERROR, logger="audit_mongo"):
            commit_one_client(audit, engine)
    finally:
        audit.close()

    assert failing.calls >= 1
    assert clients_in_database(engine) == 1
    assert "1 of 1 audit documents were not written" in caplog.text
    assert type(error).__name__ in caplog.text


def bulk_error(codes: list[int], inserted: int) -> BulkWriteError:
    return BulkWriteError(
        {
            "writeErrors": [
                {"index": i, "code": code, "errmsg": "E", "op": {"secret": "value"}}
                for i, code in enumerate(codes)
            ],
            "writeConcernErrors": [],
            "nInserted": inserted,
        }
    )


def test_duplicate_keys_count_as_delivered(caplog: pytest.LogCaptureFixture) -> None:
    writer = MongoWriter(FailingCollection(bulk_error([11000, 11000], inserted=1)))
    with caplog.at_level(logging.WARNING, logger="audit_mongo"):
        confirmed = writer.write([{"_id": 1}, {"_id": 2}, {"_id": 3}])

    assert confirmed == 3
    assert caplog.text == ""


def test_other_write_errors_are_counted_and_logged_without_the_documents(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = MongoWriter(FailingCollection(bulk_error([11000, 121], inserted=1)))
    with caplog.at_level(logging.WARNING, logger="audit_mongo"):
        confirmed = writer.write([{"_id": 1}, {"_id": 2}, {"_id": 3}])

    assert confirmed == 2
    assert "1 of 3 audit documents were not written" in caplog.text
    assert "codes [121]" in caplog.text
    assert "value" not in caplog.text  # BulkWriteError's text embeds documents: never logged


def test_repair_replaces_unencodable_values_and_keeps_good_documents_as_they_are() -> None:
    good = {"_id": 1, "table_name": "t", "changes": {"a": {"added": [1], "deleted": []}}}
    bad = {"_id": 2, "table_name": "t", "changes": {"a": {"added": [object()], "deleted": []}}}

    assert repair(good) is good
    fixed = repair(bad)
    assert fixed["changes"]["a"]["added"][0]["unrepresentable"] == "builtins.object"
    assert fixed["_id"] == 2


def test_repair_omits_the_largest_values_until_a_wide_row_fits() -> None:
    part = "x" * (900 * 1024)  # each value under 1 MiB, 20 of them over 16 MiB
    document = {
        "_id": 1,
        "table_name": "t",
        "changes": {f"c{i}": {"added": [part + str(i)], "deleted": []} for i in range(20)},
    }

    fixed = repair(document)

    encoded = len(bson.encode(fixed))
    assert encoded <= 16 * 1024 * 1024
    values = [change["added"][0] for change in fixed["changes"].values()]
    omitted = [v for v in values if isinstance(v, dict)]
    assert 1 <= len(omitted) <= 3  # only as many as needed
    assert all(v["omitted"] == "too large" for v in omitted)
    assert document["changes"]["c0"]["added"][0] == part + "0"  # the original is untouched


def test_repair_shrinks_a_document_over_16_mib() -> None:
    huge = "x" * (17 * 1024 * 1024)
    document = {
        "_id": 1,
        "table_name": "t",
        "changes": {
            "body": {"added": [huge], "deleted": []},
            "title": {"added": ["t"], "deleted": []},
        },
    }

    fixed = repair(document)

    assert fixed["changes"]["title"] == {"added": ["t"], "deleted": []}
    marker = fixed["changes"]["body"]["added"][0]
    assert marker["omitted"] == "too large"
    assert marker["bson_bytes"] > 17 * 1024 * 1024


def test_an_outage_costs_a_commit_of_many_batches_one_timeout(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    client: Any = MongoClient(f"mongodb://127.0.0.1:{closed_loopback_port()}/app")
    audit = AuditLog(client.app.user_logs, timeout=0.5)
    audit.track(Client)
    try:
        with caplog.at_level(logging.ERROR, logger="audit_mongo"), Session(engine) as s:
            s.add_all([Client(name=f"c{i}") for i in range(2_500)])  # three batches of 1,000
            s.commit()
        pending, logged = audit.pending(), caplog.text
    finally:
        audit.close()
        client.close()

    assert clients_in_database(engine) == 2_500
    # Mongo took none of the first batch: the other 1,500 are kept without being tried
    assert logged.count("audit documents were not written") == 1
    assert "1000 of 1000 audit documents were not written (ServerSelectionTimeoutError" in logged
    assert pending == 2_500


class UniqueNameIndex:
    """A collection with an application's unique index on the recorded name, refusing as a
    server does: code 11000 with the index's keyPattern (not ``_id``)."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def insert_many(self, documents: Any, ordered: bool = True) -> Any:
        errors, kept = [], []
        for index, document in enumerate(documents):
            if document["changes"].get("name", {}).get("added") == ["taken"]:
                errors.append(
                    {
                        "index": index,
                        "code": 11000,
                        "keyPattern": {"changes.name.added": 1},
                        "errmsg": "E11000 duplicate key error collection: app.user_logs "
                        'index: changes.name.added_1 dup key: { : "taken" }',
                    }
                )
            else:
                kept.append(document)
        if kept:
            self.target.insert_many(kept, ordered=ordered)
        if errors:
            raise BulkWriteError({"writeErrors": errors, "nInserted": len(kept)})


def test_a_duplicate_on_another_unique_index_is_a_refusal_not_a_delivery(
    engine: Engine, collection: Any
) -> None:
    audit = AuditLog(UniqueNameIndex(collection))
    audit.track(Client)
    try:
        with Session(engine) as session:
            session.add_all([Client(name="taken"), Client(name="free")])
            session.commit()
        assert [d["changes"]["name"]["added"] for d in stored(collection)] == [["free"]]
        assert audit.pending() == 1  # kept, not counted as already there
    finally:
        audit.close()


class CountsSends:
    """Delegates to ``target`` and counts how often each ``_id`` was sent."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.sent: Counter[Any] = Counter()

    def insert_many(self, documents: Sequence[Any], ordered: bool = True) -> Any:
        self.sent.update(d["_id"] for d in documents)
        return self.target.insert_many(documents, ordered=ordered)


@pytest.mark.parametrize("background", [False, True], ids=["direct", "background"])
def test_a_commit_too_large_to_keep_in_memory_sends_each_document_once(
    background: bool, collection: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past KEEP_BYTES a commit's documents are drained from the outbox: the rows its
    in-memory parcels delivered are deleted first, so nothing is sent twice; flush() waits
    for that drain."""
    engine = create_engine(f"sqlite:///{tmp_path / 'big.db'}")
    Base.metadata.create_all(engine)
    monkeypatch.setattr(commit_delivery, "KEEP_BYTES", 600_000)  # one parcel of 1,000 kept
    counting = CountsSends(collection)
    audit = AuditLog(counting, outbox=engine, background=background)
    audit.track(Client)
    with Session(engine) as session:
        session.add_all([Client(name=f"client {i}", phone="+1 555 0100") for i in range(2500)])
        session.commit()
    assert audit.flush(timeout=10)  # the background writer's drain of the outbox included
    assert collection.count_documents({}) == 2500
    assert audit.pending() == 0
    audit.close()
    assert len(counting.sent) == 2500
    assert max(counting.sent.values()) == 1


def test_commits_made_while_a_large_one_is_read_back_are_each_sent_once(
    collection: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a background writer, a commit too large to keep in memory is read back from the
    outbox row by row; the rows of small commits made meanwhile (whose documents wait in
    the writer's queue) are not sent a second time, and no filler is needed."""
    engine = create_engine(f"sqlite:///{tmp_path / 'busy.db'}", connect_args={"timeout": 30})
    Base.metadata.create_all(engine)
    monkeypatch.setattr(commit_delivery, "KEEP_BYTES", 200_000)
    counting = CountsSends(collection)
    audit = AuditLog(counting, outbox=engine, background=True)
    audit.track(Client)
    stop = threading.Event()

    def small_commits() -> None:
        while not stop.is_set():
            with Session(engine) as session:
                session.add(Client(name="small"))
                session.commit()

    other = threading.Thread(target=small_commits)
    other.start()
    try:
        with Session(engine) as session:
            session.add_all([Client(name=f"big {i}") for i in range(4000)])
            session.commit()
    finally:
        stop.set()
        other.join()
    assert audit.flush(timeout=30)
    audit.close()
    assert max(counting.sent.values()) == 1
    assert collection.count_documents({"action": "link"}) == 0
    assert collection.count_documents({"changes.name.added": "big 3999"}) == 1
    assert AuditLog(collection).verify() == []


def test_a_large_commits_rows_are_deleted_as_they_are_read_back_and_delivered(
    collection: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows of a commit too large to keep in memory are claimed like pending work: once
    delivered they are gone, and another process's drain finds nothing to send again."""
    engine = create_engine(f"sqlite:///{tmp_path / 'rows.db'}")
    Base.metadata.create_all(engine)
    monkeypatch.setattr(commit_delivery, "KEEP_BYTES", 1)  # every parcel kept only as its row
    audit = AuditLog(collection, outbox=engine)
    audit.track(Client)
    with Session(engine) as session:
        session.add_all([Client(name=f"client {i}") for i in range(3000)])
        session.commit()
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM audit_mongo_outbox").scalar() == 0
    other = CountsSends(collection)  # another process, draining the outbox
    assert AuditLog(other, outbox=engine).deliver_pending() == 0
    audit.close()
    assert collection.count_documents({}) == 3000


@pytest.fixture
def postgresql() -> Iterator[Engine]:
    yield from postgresql_engine()


def test_on_postgresql_a_failed_store_leaves_no_document_of_a_large_commit_behind(
    collection: Any, postgresql: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The savepoint of a failed outbox insert takes the rows stored before it: documents
    kept only in those rows are built again after the commit, not lost."""
    engine = postgresql
    monkeypatch.setattr(commit_delivery, "KEEP_BYTES", 1)
    audit = AuditLog(collection, outbox=engine)
    audit.track(Client)
    outbox = audit._delivery.outbox
    assert outbox is not None
    store, calls = outbox.insert, []

    def third_insert_fails(connection: Any, data: bytes, count: int) -> int:
        calls.append(count)
        if len(calls) == 3:
            raise OperationalError("INSERT", {}, Exception("statement timeout"))
        return store(connection, data, count)

    monkeypatch.setattr(outbox, "insert", third_insert_fails)
    with Session(engine) as session:
        session.add_all([Client(name=f"client {i}") for i in range(3000)])
        session.commit()
    audit.close()
    assert collection.count_documents({}) == 3000
