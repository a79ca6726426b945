"""Opening a log from a URI, its indexes, its settings, and the quickstart example."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from audit_mongo import AuditLog
from audit_mongo.indexes import ensure_indexes, retention_seconds
from tests.conftest import REAL_MONGO_URI

ROOT = Path(__file__).resolve().parent.parent


def test_from_uri_uses_the_database_in_the_uri_or_the_default() -> None:
    named = AuditLog.from_uri("mongomock://localhost/app", collection="trail")
    default = AuditLog.from_uri("mongomock://")
    explicit = AuditLog.from_uri("mongomock://localhost/app", database="other")
    try:
        assert named.collection.full_name == "app.trail"
        assert default.collection.full_name == "audit.user_logs"
        assert explicit.collection.full_name == "other.user_logs"
    finally:
        for log in (named, default, explicit):
            log.close()


def test_from_uri_builds_a_real_pymongo_client_without_connecting() -> None:
    log = AuditLog.from_uri("mongodb://127.0.0.1:1/app?serverSelectionTimeoutMS=100")
    try:
        assert log.collection.full_name == "app.user_logs"
        assert type(log.collection).__module__.startswith("pymongo")
        assert log.collection.database.client.codec_options.tz_aware
    finally:
        log.close()


def test_timeout_must_be_positive(collection: Any) -> None:
    with pytest.raises(ValueError, match="timeout"):
        AuditLog(collection, timeout=0)


def test_ensure_indexes_is_idempotent(collection: Any) -> None:
    audit = AuditLog(collection)
    try:
        first = audit.ensure_indexes()
        second = audit.ensure_indexes()
    finally:
        audit.close()

    assert first == second
    indexes = {name: {"key": list(i["key"])} for name, i in collection.index_information().items()}
    assert indexes["audit_row_history"]["key"] == [
        ("table_name", 1),
        ("object_id", 1),
        ("created_at", -1),
        ("_id", -1),
    ]
    assert indexes["audit_user_history"]["key"][0] == ("current_user_id", 1)
    assert indexes["audit_created_at"]["key"] == [("created_at", 1), ("_id", 1)]
    assert indexes["audit_transaction_order"]["key"] == [
        ("transaction_id", 1),
        ("created_at", 1),
        ("_id", 1),
    ]
    assert indexes["audit_table_history"]["key"][0] == ("table_name", 1)
    assert indexes["audit_request"]["key"][0] == ("context.request_id", 1)
    assert indexes["audit_voids"]["key"] == [("voids", 1)]


def test_the_superseded_transaction_index_of_earlier_versions_gets_a_warning_not_an_error(
    collection: Any, caplog: pytest.LogCaptureFixture
) -> None:
    collection.create_index([("transaction_id", 1)], name="audit_transaction")
    with caplog.at_level(logging.WARNING, logger="audit_mongo"):
        names = ensure_indexes(collection)

    assert "audit_transaction_order" in names
    assert "index audit_transaction" in caplog.text
    assert "dropIndex('audit_transaction')" in caplog.text
    caplog.clear()
    collection.drop_index("audit_transaction")
    with caplog.at_level(logging.WARNING, logger="audit_mongo"):
        ensure_indexes(collection)
    assert "no longer used" not in caplog.text


def ensure_with_retention(collection: Any, retention: dt.timedelta | None) -> list[str]:
    audit = AuditLog(collection, retention=retention)
    try:
        return audit.ensure_indexes()
    finally:
        audit.close()


def test_retention_creates_a_single_field_ttl_index_on_created_at(collection: Any) -> None:
    names = ensure_with_retention(collection, dt.timedelta(days=30))

    assert names[-1] == "audit_retention"
    indexes = collection.index_information()
    assert list(indexes["audit_retention"]["key"]) == [("created_at", 1)]
    assert indexes["audit_retention"]["expireAfterSeconds"] == 30 * 24 * 3600
    # The compound time-range index stays, without a TTL (MongoDB ignores one there).
    assert list(indexes["audit_created_at"]["key"]) == [("created_at", 1), ("_id", 1)]
    assert "expireAfterSeconds" not in indexes["audit_created_at"]
    assert ensure_with_retention(collection, dt.timedelta(days=30)) == names  # idempotent


def test_a_changed_retention_changes_the_ttl_index(
    collection: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ensure_with_retention(collection, dt.timedelta(days=30))
    with caplog.at_level(logging.INFO, logger="audit_mongo"):
        names = ensure_with_retention(collection, dt.timedelta(days=7))

    assert names[-1] == "audit_retention"
    assert collection.index_information()["audit_retention"]["expireAfterSeconds"] == 7 * 86400
    assert "changed from 2592000 to 604800 seconds" in caplog.text


def test_without_retention_an_existing_ttl_index_stays_with_a_warning(
    collection: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ensure_with_retention(collection, dt.timedelta(days=30))
    with caplog.at_level(logging.WARNING, logger="audit_mongo"):
        names = ensure_with_retention(collection, None)

    assert "audit_retention" not in names
    assert collection.index_information()["audit_retention"]["expireAfterSeconds"] == 2592000
    assert "expireAfterSeconds=2592000" in caplog.text
    assert "MongoDB still deletes older audit documents" in caplog.text


@pytest.mark.parametrize(
    "retention",
    [
        dt.timedelta(0),
        dt.timedelta(seconds=-60),
        dt.timedelta(milliseconds=999),
        dt.timedelta(seconds=2**31),
    ],
    ids=["zero", "negative", "sub-second", "over-int32"],
)
def test_retention_outside_one_second_to_int32_seconds_is_refused(
    collection: Any, retention: dt.timedelta
) -> None:
    with pytest.raises(ValueError, match="retention must be"):
        retention_seconds(retention)
    with pytest.raises(ValueError, match="retention must be"):
        ensure_indexes(collection, retention=retention)
    assert collection.index_information() == {}  # refused before any index is built


def test_retention_is_its_whole_seconds() -> None:
    assert retention_seconds(None) is None
    assert retention_seconds(dt.timedelta(days=1)) == 86400
    assert retention_seconds(dt.timedelta(seconds=90, microseconds=999_999)) == 90
    assert retention_seconds(dt.timedelta(seconds=2**31 - 1)) == 2**31 - 1
    with pytest.raises(TypeError, match="timedelta"):
        retention_seconds(3600)  # type: ignore[arg-type]


def test_quickstart_example_runs_and_prints_its_documents(collection: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_MONGO_")}
    if REAL_MONGO_URI:  # write where the collection fixture will drop it
        env["AUDIT_MONGO_URI"] = REAL_MONGO_URI
        env["AUDIT_MONGO_COLLECTION"] = collection.name
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )

    where = collection.full_name if REAL_MONGO_URI else "audit.user_logs"
    assert result.stdout.rstrip().endswith(f"5 audit documents in {where}")
    assert "verify(): 0 problems in 5 documents" in result.stdout
    decoder = json.JSONDecoder()
    text, documents = result.stdout, []
    position = text.index("{")
    while position < len(text) and text[position] == "{":
        document, end = decoder.raw_decode(text, position)
        documents.append(document)
        position = end + 1
    assert [d["action"] for d in documents] == ["create", "update", "delete", "create", "create"]
    assert {d["current_user_id"] for d in documents} == {42}
    assert documents[1]["changes"]["name"] == {"added": ["Company A"], "deleted": ["Company B"]}
    assert [d["changes"]["name"]["added"] for d in documents[3:]] == [
        ["Company C Ltd"],
        ["Company D Ltd"],
    ]


def test_a_bad_retention_is_refused_when_the_log_is_built(collection: Any) -> None:
    with pytest.raises(ValueError, match="retention"):
        AuditLog(collection, retention=dt.timedelta(0))
