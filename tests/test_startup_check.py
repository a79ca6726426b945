"""AuditLog's start-up check, against a scripted server (mockupdb): a server that refuses the
credentials or the namespace, or whose user may not insert into the collection, stops the
start with ``AuditSetupError``; a server that is unreachable or too slow only warns."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from pymongo import MongoClient

from audit_mongo import AuditLog, AuditSetupError, PendingInMemoryWarning
from tests.fakes import closed_loopback_port

mockupdb = pytest.importorskip("mockupdb")

LIST_COLLECTIONS = mockupdb.OpMsg("listCollections", namespace="app")
CONNECTION_STATUS = mockupdb.OpMsg("connectionStatus", namespace="app")
NO_COLLECTIONS = {"id": 0, "ns": "app.$cmd.listCollections", "firstBatch": []}
REPLY_TIMEOUT = 10.0


@pytest.fixture
def server() -> Iterator[Any]:
    mock = mockupdb.MockupDB(auto_ismaster={"maxWireVersion": 21})
    mock.run()
    yield mock
    mock.stop()


@pytest.fixture
def user_logs(server: Any) -> Iterator[Any]:
    """The real pymongo collection ``app.user_logs`` on the scripted server."""
    client: Any = MongoClient(server.uri, serverSelectionTimeoutMS=5000)
    yield client.app.user_logs
    client.close()


def build(collection: Any, timeout: float = 2.0) -> AuditLog:
    """An AuditLog without an outbox (its memory warning is beside the point here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingInMemoryWarning)
        return AuditLog(collection, timeout=timeout)


def start(pool: ThreadPoolExecutor, collection: Any, timeout: float = 2.0) -> Future[AuditLog]:
    """Construct the log in the pool: its check waits for the replies this thread scripts."""
    return pool.submit(build, collection, timeout)


def refuse_listing(server: Any, code: int, errmsg: str) -> None:
    server.receives(LIST_COLLECTIONS, timeout=REPLY_TIMEOUT).command_err(code=code, errmsg=errmsg)


def answer_check(server: Any, users: list[dict[str, str]], privileges: list[dict[str, Any]]) -> Any:
    """Answer the check's two commands; return the ``listCollections`` request."""
    listing = server.receives(LIST_COLLECTIONS, timeout=REPLY_TIMEOUT)
    listing.ok(cursor=NO_COLLECTIONS)
    server.receives(CONNECTION_STATUS, timeout=REPLY_TIMEOUT).ok(
        authInfo={
            "authenticatedUsers": users,
            "authenticatedUserRoles": [{"role": "auditWriter", "db": "admin"}] if users else [],
            "authenticatedUserPrivileges": privileges,
        }
    )
    return listing


def setup_error(future: Future[AuditLog]) -> AuditSetupError:
    error = future.exception(timeout=REPLY_TIMEOUT)
    if error is None:
        future.result().close()
        pytest.fail("AuditLog(...) started although Mongo refused it")
    assert isinstance(error, AuditSetupError), repr(error)
    return error


def started(future: Future[AuditLog]) -> None:
    """Assert the construction succeeded, and close the log."""
    future.result(timeout=REPLY_TIMEOUT).close()


AUDITOR = [{"user": "auditor", "db": "admin"}]


@pytest.mark.parametrize(
    ("code", "errmsg"),
    [
        (18, "Authentication failed."),
        (13, "command listCollections requires authentication"),
        (8000, "bad auth : Authentication failed."),  # MongoDB Atlas
    ],
    ids=["authentication-failed", "unauthenticated", "atlas-bad-auth"],
)
def test_refused_credentials_stop_the_start(
    server: Any, pool: ThreadPoolExecutor, user_logs: Any, code: int, errmsg: str
) -> None:
    future = start(pool, user_logs)
    refuse_listing(server, code, errmsg)

    message = str(setup_error(future))
    assert "credentials" in message
    assert "app.user_logs" in message
    assert f"code {code}" in message
    assert errmsg in message


def test_a_refused_namespace_stops_the_start(
    server: Any, pool: ThreadPoolExecutor, user_logs: Any
) -> None:
    future = start(pool, user_logs)
    refuse_listing(server, 73, "Invalid namespace specified 'app.user_logs'")

    message = str(setup_error(future))
    assert "namespace" in message
    assert "credentials" not in message
    assert "code 73" in message


@pytest.mark.parametrize(
    "privileges",
    [
        [],
        [{"resource": {"db": "app", "collection": "user_logs"}, "actions": ["find"]}],
        [{"resource": {"db": "app", "collection": "other_logs"}, "actions": ["insert"]}],
        [{"resource": {"db": "audit", "collection": "user_logs"}, "actions": ["insert"]}],
        [{"resource": {"db": "audit", "collection": ""}, "actions": ["insert"]}],
        [{"resource": {"cluster": True}, "actions": ["insert", "serverStatus"]}],
    ],
    ids=[
        "no-privileges",
        "read-only",
        "other-collection",
        "other-database",
        "other-database-any-collection",
        "cluster",
    ],
)
def test_a_user_who_may_not_insert_into_the_collection_stops_the_start(
    server: Any, pool: ThreadPoolExecutor, user_logs: Any, privileges: list[dict[str, Any]]
) -> None:
    future = start(pool, user_logs)
    answer_check(server, AUDITOR, privileges)

    message = str(setup_error(future))
    assert "may not insert into app.user_logs" in message
    assert "insert action" in message


@pytest.mark.parametrize(
    "resource",
    [
        {"db": "app", "collection": "user_logs"},
        {"db": "app", "collection": ""},
        {"db": "", "collection": "user_logs"},
        {"db": "", "collection": ""},
        {"anyResource": True},
    ],
    ids=["the-collection", "its-database", "any-database", "every-database", "any-resource"],
)
def test_a_user_who_may_insert_into_the_collection_starts(
    server: Any,
    pool: ThreadPoolExecutor,
    user_logs: Any,
    resource: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    privileges = [
        {"resource": {"db": "app", "collection": "user_logs"}, "actions": ["find"]},
        {"resource": resource, "actions": ["find", "insert"]},
    ]
    with caplog.at_level(logging.WARNING, logger="audit_mongo"):
        future = start(pool, user_logs, timeout=1.5)
        listing = answer_check(server, AUDITOR, privileges)
        started(future)

    assert caplog.records == []
    # The check is bounded by the log's timeout and asks only about its own collection.
    assert 0 < listing.doc["maxTimeMS"] <= 1500
    assert listing.doc["filter"] == {"name": "user_logs"}


def test_a_server_without_access_control_starts(
    server: Any, pool: ThreadPoolExecutor, user_logs: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="audit_mongo"):
        future = start(pool, user_logs)
        answer_check(server, users=[], privileges=[])
        started(future)

    assert caplog.records == []


def test_a_server_too_slow_for_the_check_only_warns(
    server: Any, pool: ThreadPoolExecutor, user_logs: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Reachable but slow: the server gives up at the check's maxTimeMS (code 50,
    # MaxTimeMSExpired). Nothing was refused, so the application must still start.
    with caplog.at_level(logging.WARNING, logger="audit_mongo"):
        future = start(pool, user_logs, timeout=0.5)
        refuse_listing(server, 50, "operation exceeded time limit")
        started(future)

    (record,) = caplog.records
    assert record.name == "audit_mongo"
    assert record.levelno == logging.WARNING
    assert "did not answer the start-up check within 0.5 s" in record.getMessage()


def test_an_unreachable_server_only_warns_and_does_not_hold_up_the_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client: Any = MongoClient(f"mongodb://127.0.0.1:{closed_loopback_port()}/app")
    try:
        with caplog.at_level(logging.WARNING, logger="audit_mongo"):
            began = time.monotonic()
            audit = build(client.app.user_logs, timeout=0.3)
            elapsed = time.monotonic() - began
        audit.close()
    finally:
        client.close()

    assert elapsed < 5  # bounded by the log's timeout, not pymongo's 30 s server selection
    (record,) = caplog.records
    assert record.name == "audit_mongo"
    assert record.levelno == logging.WARNING
    assert "Mongo is not reachable" in record.getMessage()
