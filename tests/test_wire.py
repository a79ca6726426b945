"""What real pymongo sends over the wire, against a scripted server (mockupdb)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.write_concern import WriteConcern
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from audit_mongo import AuditLog, delivery
from audit_mongo.chain import signed_bytes
from audit_mongo.signing import SigningKeys
from tests.models import Account, Client

mockupdb = pytest.importorskip("mockupdb")


@pytest.fixture
def server() -> Iterator[Any]:
    mock = mockupdb.MockupDB(auto_ismaster={"maxWireVersion": 21})
    answer_the_startup_check(mock)
    mock.run()
    yield mock
    mock.stop()


def answer_the_startup_check(mock: Any) -> None:
    """A server without access control: AuditLog's start-up check passes."""
    mock.autoresponds("listCollections", cursor={"id": 0, "ns": "app.$cmd", "firstBatch": []})
    mock.autoresponds("connectionStatus", authInfo={"authenticatedUsers": []})


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


def test_the_documents_on_the_wire_are_the_sealed_ones(
    server: Any,
    pool: ThreadPoolExecutor,
    client: Any,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pymongo is handed the seal's own bytes (a raw document), not a dict it would encode
    again: each arrives linked and signed, its hash matching what it holds."""
    keys = SigningKeys({"2026-12": b"s" * 32})
    audit = AuditLog(client.app.user_logs, signing_keys={"2026-12": b"s" * 32})

    def outgoing_with_a_dict_only_field(*args: Any) -> list[Any]:
        wrapped = original_outgoing(*args)
        for document in wrapped:
            if isinstance(document, dict):  # pymongo would encode it field by field
                document["only_in_the_dict"] = True
        return wrapped

    original_outgoing = delivery._outgoing
    monkeypatch.setattr(delivery, "_outgoing", outgoing_with_a_dict_only_field)
    done: Future[None] = pool.submit(commit_three_clients, audit, engine)
    request = server.receives(mockupdb.OpMsg("insert", "user_logs"), timeout=10)
    request.ok(n=3)
    done.result(timeout=10)
    audit.close()

    documents = request.doc["documents"]
    assert [d["chain"]["seq"] for d in documents] == [0, 1, 2]
    assert [d["changes"]["name"]["added"] for d in documents] == [["a"], ["b"], ["c"]]
    for document in documents:
        assert "only_in_the_dict" not in document
        assert keys.matches("2026-12", signed_bytes(document), document["chain"]["hash"])


def test_ensure_indexes_sends_the_documented_indexes(
    server: Any, pool: ThreadPoolExecutor, client: Any
) -> None:
    audit = AuditLog(client.app.user_logs)
    done = pool.submit(audit.ensure_indexes)

    answer_list_indexes(server)
    request = server.receives(mockupdb.OpMsg("createIndexes", "user_logs"), timeout=10)
    request.ok()
    assert done.result(timeout=10) == [
        "audit_row_history",
        "audit_user_history",
        "audit_table_history",
        "audit_created_at",
        "audit_row_departures",
        "audit_transaction_order",
        "audit_request",
        "audit_voids",
        "audit_chain",
    ]
    audit.close()

    keys = {index["name"]: list(index["key"].items()) for index in request.doc["indexes"]}
    assert keys == {
        "audit_row_history": [("table_name", 1), ("object_id", 1), ("created_at", -1), ("_id", -1)],
        "audit_user_history": [("current_user_id", 1), ("created_at", -1), ("_id", -1)],
        "audit_table_history": [("table_name", 1), ("created_at", -1), ("_id", -1)],
        "audit_created_at": [("created_at", 1), ("_id", 1)],
        "audit_row_departures": [
            ("table_name", 1),
            ("previous_object_id", 1),
            ("created_at", -1),
            ("_id", -1),
        ],
        "audit_transaction_order": [("transaction_id", 1), ("created_at", 1), ("_id", 1)],
        "audit_request": [("context.request_id", 1), ("created_at", 1), ("_id", 1)],
        "audit_voids": [("voids", 1)],
        "audit_chain": [("chain.id", 1), ("chain.seq", 1), ("_id", 1)],
    }
    partial = {i["name"]: i.get("partialFilterExpression") for i in request.doc["indexes"]}
    assert partial["audit_request"] == {"context.request_id": {"$exists": True}}
    assert partial["audit_voids"] == {"voids": {"$exists": True}}
    assert not any("expireAfterSeconds" in index for index in request.doc["indexes"])


def answer_list_indexes(server: Any, *indexes: dict[str, Any]) -> None:
    """Answer ensure_indexes()' listIndexes: the ``_id_`` index and ``indexes``."""
    request = server.receives(mockupdb.OpMsg("listIndexes", "user_logs"), timeout=10)
    batch = [{"v": 2, "key": {"_id": 1}, "name": "_id_"}, *indexes]
    request.ok(cursor={"id": 0, "ns": "app.user_logs", "firstBatch": batch})


def retention_index(expire_after_seconds: int) -> dict[str, Any]:
    return {
        "v": 2,
        "key": {"created_at": 1},
        "name": "audit_retention",
        "expireAfterSeconds": expire_after_seconds,
    }


def test_retention_sends_a_single_field_ttl_index_in_create_indexes(
    server: Any, pool: ThreadPoolExecutor, client: Any
) -> None:
    audit = AuditLog(client.app.user_logs, retention=dt.timedelta(days=30))
    done = pool.submit(audit.ensure_indexes)

    answer_list_indexes(server)
    request = server.receives(mockupdb.OpMsg("createIndexes", "user_logs"), timeout=10)
    request.ok()
    assert done.result(timeout=10)[-1] == "audit_retention"
    audit.close()

    specs = {index["name"]: index for index in request.doc["indexes"]}
    assert len(specs) == 10
    ttl = specs["audit_retention"]
    assert list(ttl["key"].items()) == [("created_at", 1)]
    assert ttl["expireAfterSeconds"] == 2_592_000
    assert type(ttl["expireAfterSeconds"]) is int
    assert [name for name, spec in specs.items() if "expireAfterSeconds" in spec] == [
        "audit_retention"
    ]


def test_a_changed_retention_is_applied_with_coll_mod(
    server: Any, pool: ThreadPoolExecutor, client: Any
) -> None:
    audit = AuditLog(client.app.user_logs, retention=dt.timedelta(days=7))
    done = pool.submit(audit.ensure_indexes)

    answer_list_indexes(server, retention_index(2_592_000))
    create = server.receives(mockupdb.OpMsg("createIndexes", "user_logs"), timeout=10)
    create.ok()
    coll_mod = server.receives(mockupdb.OpMsg("collMod", "user_logs"), timeout=10)
    coll_mod.ok(expireAfterSeconds_old=2_592_000, expireAfterSeconds_new=604_800)
    assert done.result(timeout=10)[-1] == "audit_retention"
    audit.close()

    # Sending the TTL index again with new options would fail (IndexOptionsConflict).
    assert "audit_retention" not in [index["name"] for index in create.doc["indexes"]]
    assert dict(coll_mod.doc["index"]) == {
        "name": "audit_retention",
        "expireAfterSeconds": 604_800,
    }


def test_an_unchanged_retention_sends_no_coll_mod(
    server: Any, pool: ThreadPoolExecutor, client: Any
) -> None:
    audit = AuditLog(client.app.user_logs, retention=dt.timedelta(days=7))
    done = pool.submit(audit.ensure_indexes)

    answer_list_indexes(server, retention_index(604_800))
    server.receives(mockupdb.OpMsg("createIndexes", "user_logs"), timeout=10).ok()
    # A collMod would wait for an answer that never comes.
    assert done.result(timeout=10)[-1] == "audit_retention"
    audit.close()
    assert not server.got(mockupdb.OpMsg("collMod", "user_logs"), timeout=0.5)


def test_a_document_over_16_mib_is_shrunk_before_it_is_sent(
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
        # pymongo would leave the size check to the server; the document is signed as
        # stored, so it is shrunk before its first send.
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
        # The second document is held under an earlier link: a filler takes its position.
        filling = server.receives(mockupdb.OpMsg("insert", "user_logs"), timeout=10)
        filling.ok(n=1)
        done.result(timeout=10)
    audit.close()

    assert caplog.text == ""
    (filler,) = filling.doc["documents"]
    duplicate = request.doc["documents"][1]
    assert filler["action"] == "link"
    assert filler["chain"]["stands_for"] == duplicate["chain"]["hash"]
    assert filler["chain"]["seq"] == duplicate["chain"]["seq"]
