"""``audit-mongo verify``: exit status 0 when the log is intact, 4 when anything is wrong."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from audit_mongo import AuditLog
from tests.models import Client
from tests.test_cli_queries import SETTINGS, cli, mongo_server

SECRET = "a secret of at least sixteen bytes"
KEYS_JSON = json.dumps({"k1": SECRET})


@pytest.fixture(autouse=True)
def no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*SETTINGS, "AUDIT_MONGO_SIGNING_KEYS", "AUDIT_MONGO_SIGNING_KEY_ID"):
        monkeypatch.delenv(name, raising=False)


@contextmanager
def written_log(engine: Engine, **options: Any) -> Iterator[Any]:
    """Three entries written by a log, in a Mongo the command reaches."""
    with mongo_server() as collection:
        audit = AuditLog(collection, **options)
        audit.track(Client)
        with Session(engine) as session:
            client = Client(name="a")
            session.add(client)
            session.commit()
            client.name = "b"
            session.commit()
            session.delete(client)
            session.commit()
        audit.close()
        yield collection


def test_an_intact_signed_log_exits_0(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_MONGO_SIGNING_KEYS", KEYS_JSON)
    with written_log(engine, signing_keys={"k1": SECRET}):
        result = cli("verify")

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "intact: 3 entries in 1 chains (signed)" in result.stderr


def test_a_changed_entry_exits_4_and_is_named(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIT_MONGO_SIGNING_KEYS", KEYS_JSON)
    with written_log(engine, signing_keys={"k1": SECRET}) as collection:
        target = collection.find_one({"action": "update"})
        collection.update_one({"_id": target["_id"]}, {"$set": {"changes.name.added": ["x"]}})
        result = cli("verify")

    assert result.exit_code == 4
    assert result.stdout.startswith("modified:")
    assert str(target["_id"]) in result.stdout
    assert "1 problems" in result.stderr


def test_keys_come_from_a_file(engine: Engine, tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(KEYS_JSON)
    with written_log(engine, signing_keys={"k1": SECRET}):
        with_keys = cli("verify", "--keys-file", str(keys))
        without = cli("verify")

    assert with_keys.exit_code == 0, with_keys.output
    assert without.exit_code == 4  # every entry signed with a key it does not have
    assert without.stdout.count("unknown key") == 3


@pytest.mark.parametrize("content", ["not json", '["k1"]', '{"k1": 5}', '{"k1": "short"}'])
def test_a_bad_keys_file_is_a_usage_error(tmp_path: Path, content: str) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(content)
    with mongo_server():
        result = cli("verify", "--keys-file", str(keys))

    assert result.exit_code == 2
    assert "--keys-file" in result.output or "signing key" in result.output


def test_saved_heads_find_entries_removed_from_the_end(engine: Engine, tmp_path: Path) -> None:
    heads = tmp_path / "heads.json"
    with written_log(engine) as collection:
        first = cli("verify", "--heads", str(heads))
        newest = max(collection.find(), key=lambda d: d["chain"]["seq"])
        collection.delete_one({"_id": newest["_id"]})
        second = cli("verify", "--heads", str(heads))

    assert first.exit_code == 0, first.output
    assert "truncated" in second.stdout and second.exit_code == 4


def test_an_unsigned_log_is_verified_with_a_note(engine: Engine) -> None:
    with written_log(engine):
        result = cli("verify")

    assert result.exit_code == 0, result.output
    assert "note: no signing key" in result.stderr
    assert "(hashed only)" in result.stderr
