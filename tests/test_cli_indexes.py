"""``audit-mongo show-indexes`` and ``ensure-indexes``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from audit_mongo.indexes import INDEXES
from tests.models import Client
from tests.test_cli_queries import SETTINGS, cli, mongo_server, recording

OURS = [model.document["name"] for model in INDEXES]


@pytest.fixture(autouse=True)
def no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)


def statuses(output: str) -> dict[str, str]:
    return {line.split()[1]: line.split()[0] for line in output.splitlines()}


def test_show_indexes_lists_ours_missing_then_the_others(engine: Engine) -> None:
    with mongo_server() as collection, recording(collection), Session(engine) as session:
        session.add(Client(name="a"))
        session.commit()
        collection.create_index([("changes.name", 1)], name="by_name")

        result = cli("show-indexes")

    assert result.exit_code == 0, result.output
    assert statuses(result.stdout) == {
        **dict.fromkeys(OURS, "missing"),
        "_id_": "other",
        "by_name": "other",
    }
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines] == [*OURS, "_id_", "by_name"]
    assert lines[0].split(None, 2)[2] == "table_name, object_id, created_at -1, _id -1"


def test_ensure_indexes_creates_them_and_show_indexes_then_finds_them() -> None:
    with mongo_server() as collection:
        ensured = cli("ensure-indexes")
        again = cli("ensure-indexes")  # idempotent
        shown = cli("show-indexes")
        names = set(collection.index_information())

    assert ensured.exit_code == 0, ensured.output
    assert ensured.stdout.splitlines() == [f"ensured {name}" for name in OURS]
    assert again.exit_code == 0, again.output
    assert set(OURS) <= names
    assert statuses(shown.stdout) == {**dict.fromkeys(OURS, "present"), "_id_": "other"}


def test_an_index_under_our_name_with_other_keys_is_shown_as_different() -> None:
    with mongo_server() as collection:
        collection.create_index([("created_at", -1)], name="audit_created_at")

        result = cli("show-indexes", "--json")

    rows: list[dict[str, Any]] = [json.loads(line) for line in result.stdout.splitlines()]
    created_at = next(row for row in rows if row["name"] == "audit_created_at")
    assert created_at == {
        "name": "audit_created_at",
        "status": "different",
        "keys": [["created_at", -1]],
        "expire_after_seconds": None,
    }
    missing = next(row for row in rows if row["name"] == "audit_row_history")
    assert missing["status"] == "missing"
    assert missing["keys"] == [["table_name", 1], ["object_id", 1], ["created_at", -1], ["_id", -1]]


def test_ensure_indexes_with_a_retention_adds_the_ttl_index() -> None:
    with mongo_server():
        ensured = cli("ensure-indexes", "--retention", "30d")
        shown = cli("show-indexes")
        changed = cli("ensure-indexes", "--retention", "7d")
        shown_after = cli("show-indexes")
        refused = cli("ensure-indexes", "--retention", "soon")

    assert ensured.exit_code == 0, ensured.output
    assert "ensured audit_retention" in ensured.stdout.splitlines()
    retention = next(line for line in shown.stdout.splitlines() if "audit_retention" in line)
    assert retention.split()[:3] == ["present", "audit_retention", "created_at"]
    assert retention.endswith("(TTL: expires after 2592000 s)")
    assert changed.exit_code == 0, changed.output
    assert "(TTL: expires after 604800 s)" in shown_after.stdout
    assert refused.exit_code == 2
    assert "Invalid value for '--retention'" in refused.stderr
