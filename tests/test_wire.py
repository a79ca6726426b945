"""What real pymongo sends over the wire, against a scripted server (mockupdb)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.write_concern import WriteConcern
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from audit_mongo import AuditLog
from tests.models import Account, Client

mockupdb = pytest.importorskip("mockupdb")


@pytest.fixture
def server() -> Iterator[Any]:
    mock = mockupdb.MockupDB(auto_ismaster={"maxWireVersion": 21})
    mock.run()
    yield mock
    mock.stop()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    # mockupdb's own go() re-raises errors as exctype(str(value)); a plain pool keeps them real.
    with ThreadPoolExecutor(max_workers=1) as executor:
        yield executor


@pytest.fixture
def client(server: Any) -> Iterator[Any]:
    mongo: Any = MongoClient(server.uri, serverSelectionTimeoutMS=5000)
    yield mongo
    mongo.close()


def commit_three_clients(audit: AuditLog, engine: Engine) -> None:
    audit.track(Client)
    with Session(engine) as s, audit.acting_as(7):
        s.add_all([Client(name="a"), Client(name="b"), Client(name="c")])
        s.commit()


def test_one_commit_is_one_unordered_insert_with_the_write_concern(
    server: Any, pool: ThreadPoolExecutor, client: Any, engine: Engine
) -> None:
    collection = client.app.user_logs
    audit = AuditLog(collection, write_concern=WriteConcern(w="majority", j=True), timeout=1.5)
    done: Future[None] = pool.submit(commit_three_clients, audit, engine)

    request = server.receives(mockupdb.OpMsg("insert", "user_logs"), timeout=10)
    request.ok(n=3)
    done.result(timeout=10)
    audit.close()

    command = request.doc
    assert command["ordered"] is False
    assert command["writeConcern"] == {"w": "majority", "j": True}
    assert 0 < command["maxTimeMS"] <= 1500  # the commit's bound, through pymongo.timeout()
    documents = command["documents"]
    assert len(documents) == 3
    assert [d["changes"]["name"]["added"] for d in documents] == [["a"], ["b"], ["c"]]
    assert {d["current_user_id"] for d in documents} == {7}
    assert len({d["transaction_id"] for d in documents}) == 1
    assert all(d["action"] == "create" and d["schema_version"] == 1 for d in documents)


def test_ensure_indexes_sends_the_documented_indexes(
    server: Any, pool: ThreadPoolExecutor, client: Any
) -> None:
    audit = AuditLog(client.app.user_logs)
    done = pool.submit(audit.ensure_indexes)

    request = server.receives(mockupdb.OpMsg("createIndexes", "user_logs"), timeout=10)
    request.ok()
    assert done.result(timeout=10) == [
        "audit_row_history",
        "audit_user_history",
        "audit_created_at",
        "audit_transaction",
    ]
    audit.close()

    keys = {index["name"]: list(index["key"].items()) for index in request.doc["indexes"]}
    assert keys == {
        "audit_row_history": [("table_name", 1), ("object_id", 1), ("created_at", -1), ("_id", -1)],
        "audit_user_history": [("current_user_id", 1), ("created_at", -1), ("_id", -1)],
        "audit_created_at": [("created_at", 1), ("_id", 1)],
        "audit_transaction": [("transaction_id", 1)],
    }


def test_a_document_over_16_mib_is_shrunk_and_sent_again(
    server: Any,
    pool: ThreadPoolExecutor,
    client: Any,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    audit = AuditLog(client.app.user_logs)
    audit.track(Account)

    def commit_huge_row() -> None:
        with Session(engine) as s:
            s.add(Account(login="a", notes="h" * (17 * 1024 * 1024)))
            s.commit()

    with caplog.at_level(logging.WARNING, logger="audit_mongo"):
        done = pool.submit(commit_huge_row)
        # pymongo leaves an acknowledged write's size check to the server, which refuses it.
        first = server.receives(mockupdb.OpMsg("insert", "user_logs"), timeout=30)
        first.ok(n=0, writeErrors=[{"index": 0, "code": 10334, "errmsg": "BSONObjectTooLarge"}])
        retry = server.receives(mockupdb.OpMsg("insert", "user_logs"), timeout=30)
        retry.ok(n=1)
        done.result(timeout=30)
    audit.close()

    (document,) = retry.doc["documents"]
    assert document["changes"]["notes"]["added"][0]["omitted"] == "too large"
    assert document["changes"]["login"]["added"] == ["a"]
    assert "1 audit documents could not be encoded or exceeded 16 MiB" in caplog.text
    assert "not written" not in caplog.text


def test_duplicate_key_on_redelivery_is_treated_as_written(
    server: Any,
    pool: ThreadPoolExecutor,
    client: Any,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    audit = AuditLog(client.app.user_logs)
    with caplog.at_level(logging.WARNING, logger="audit_mongo"):
        done = pool.submit(commit_three_clients, audit, engine)
        request = server.receives(mockupdb.OpMsg("insert", "user_logs"), timeout=10)
        request.ok(
            n=2,
            writeErrors=[{"index": 1, "code": 11000, "errmsg": "E11000 duplicate key error"}],
        )
        done.result(timeout=10)
    audit.close()

    assert caplog.text == ""
