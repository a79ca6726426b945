"""``flask audit history|user|recent|export|show-indexes|ensure-indexes``: the
``audit-mongo`` commands on the application's own log (``current_log()``), whose models
turn a key given as text into the key's type and refuse an unknown table.

The application's log is on a mongomock server (``mongo_server``) that ``audit-mongo
--uri`` reaches too, so both command lines can be compared on the same documents."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import pytest
from bson import ObjectId
from click.testing import Result
from flask import Flask

from audit_mongo.flask import AuditMongo, current_log
from tests.fakes import closed_loopback_port
from tests.flask_app_factory import Client, User, create_app, db
from tests.test_cli_queries import SETTINGS, URI, blocks, cli, json_lines, mongo_server

COMMANDS = (
    "history",
    "user",
    "recent",
    "export",
    "show-indexes",
    "ensure-indexes",
    "verify",
)


@pytest.fixture(autouse=True)
def no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def collection() -> Iterator[Any]:
    """The log's collection (``app.user_logs`` on the mongomock server of ``URI``)."""
    with mongo_server() as user_logs:
        yield user_logs


@pytest.fixture
def app(collection: Any, tmp_path: Any) -> Iterator[Flask]:
    audit_ext = AuditMongo()
    audit_ext.track(Client)
    application = create_app(
        audit_ext,
        f"sqlite:///{tmp_path / 'app.db'}",
        AUDIT_MONGO_URI=URI,
        AUDIT_MONGO_RETENTION=30,
    )
    with application.app_context():
        db.session.add_all([User(id=1, name="alice"), User(id=2, name="bob")])
        db.session.commit()
    yield application
    with application.app_context():
        current_log().close()
        db.engine.dispose()


@pytest.fixture
def changed(app: Flask) -> Flask:
    """Alice creates client 1 and renames it; nobody logged in creates client 2, which Bob
    renames: four documents, written by real requests."""
    web = app.test_client()
    web.post("/login/1")
    assert web.post("/clients", data={"name": "Company B"}).text == "1"
    web.post("/clients/1/name", data={"name": "Company A"})
    web.post("/logout")
    assert web.post("/clients", data={"name": "anonymous"}).text == "2"
    web.post("/login/2")
    web.post("/clients/2/name", data={"name": "by bob"})
    return app


def flask_audit(app: Flask, *arguments: str) -> Result:
    """``flask audit ARGUMENTS...`` through Flask's CLI test runner."""
    return app.test_cli_runner().invoke(args=["audit", *arguments])


def headers(result: Result) -> list[str]:
    """Each entry's header line without its time and transaction id: ``action table id user``."""
    return [" ".join(block[0].split("  ")[1:-1]) for block in blocks(result)]


def names(result: Result) -> list[Any]:
    """The name each entry gives (``--json`` output)."""
    return [entry["changes"]["name"]["added"][0] for entry in json_lines(result)]


# -- the queries ---------------------------------------------------------------------------


def test_history_shows_a_rows_entries_newest_first_as_audit_mongo_does(changed: Flask) -> None:
    result = flask_audit(changed, "history", "clients", "1")

    assert headers(result) == ["update clients id 1 user 1", "create clients id 1 user 1"]
    update, create = blocks(result)
    assert update[1].split() == ["name", "'Company", "B'", "→", "'Company", "A'"]
    assert [line.split()[0] for line in create[1:]] == ["id", "name"]
    assert result.stdout == cli("history", "clients", "1").stdout


def test_history_json_is_the_stored_documents_with_the_key_as_its_type(changed: Flask) -> None:
    result = flask_audit(changed, "history", "clients", "2", "--json")

    entries = json_lines(result)
    assert [(e["action"], e["object_id"], e["current_user_id"]) for e in entries] == [
        ("update", 2, 2),
        ("create", 2, None),
    ]
    assert entries[0]["context"]["path"] == "/clients/2/name"
    assert result.stdout == cli("history", "clients", "2", "--json").stdout


def test_history_filters_and_limits_as_audit_mongo_does(changed: Flask) -> None:
    assert names(flask_audit(changed, "history", "clients", "1", "--json", "--limit", "1")) == [
        "Company A"
    ]
    created = flask_audit(changed, "history", "clients", "1", "--action", "create", "--json")
    assert names(created) == ["Company B"]
    none_yet = flask_audit(changed, "history", "clients", "1", "--until", "2000-01-01")
    assert none_yet.exit_code == 0
    assert none_yet.stdout == ""
    assert "no entries" in none_yet.stderr


def test_the_id_is_converted_to_the_keys_type(changed: Flask, collection: Any) -> None:
    """The application's models say the key is an integer: ``1`` matches ``object_id: 1``
    only, where ``audit-mongo`` (no models) matches ``"1"`` too."""
    update = collection.find_one({"object_id": 1, "action": "update"})
    collection.insert_one({**update, "_id": ObjectId(), "object_id": "1"})

    converted = flask_audit(changed, "history", "clients", "1", "--json")
    either = cli("history", "clients", "1", "--json")

    assert [e["object_id"] for e in json_lines(converted)] == [1, 1]
    assert "1" in [e["object_id"] for e in json_lines(either)]


def test_user_shows_what_one_user_did_and_nobody_what_no_user_was_known_for(
    changed: Flask,
) -> None:
    alice = flask_audit(changed, "user", "1")
    nobody = flask_audit(changed, "user", "--nobody", "--json")
    bob = flask_audit(changed, "user", "2", "--table", "clients", "--action", "update", "--json")

    assert headers(alice) == ["update clients id 1 user 1", "create clients id 1 user 1"]
    assert alice.stdout == cli("user", "1").stdout
    assert names(nobody) == ["anonymous"]
    assert names(bob) == ["by bob"]
    assert nobody.stdout == cli("user", "--nobody", "--json").stdout


def test_recent_shows_the_latest_entries(changed: Flask) -> None:
    latest = flask_audit(changed, "recent", "--limit", "3")
    updates = flask_audit(changed, "recent", "--table", "clients", "--action", "update", "--json")

    assert headers(latest) == [
        "update clients id 2 user 2",
        "create clients id 2 user None",
        "update clients id 1 user 1",
    ]
    assert latest.stdout == cli("recent", "--limit", "3").stdout
    assert names(updates) == ["by bob", "Company A"]
    assert (
        updates.stdout == cli("recent", "--table", "clients", "--action", "update", "--json").stdout
    )


def test_export_writes_jsonl_or_csv_oldest_first(changed: Flask) -> None:
    jsonl = flask_audit(changed, "export", "--table", "clients", "--id", "1")
    rows = list(
        csv.reader(
            io.StringIO(flask_audit(changed, "export", "--format", "csv", "--user", "2").stdout)
        )
    )

    assert names(jsonl) == ["Company B", "Company A"]
    assert jsonl.stderr == "exported 2 entries\n"
    assert jsonl.stdout == cli("export", "--table", "clients", "--id", "1").stdout
    assert rows[0][:3] == ["id", "created_at", "table_name"]
    assert [(row[4], row[7], row[8], row[9]) for row in rows[1:]] == [
        ("update", "name", "anonymous", "by bob")
    ]


# -- usage errors: exit status 2, a message, no traceback ----------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        ["history", "nope", "1"],
        ["user", "1", "--table", "nope"],
        ["recent", "--table", "nope"],
        ["export", "--table", "nope"],
    ],
)
def test_an_unknown_table_is_a_usage_error(changed: Flask, arguments: list[str]) -> None:
    result = flask_audit(changed, *arguments)

    assert result.exit_code == 2, result.output
    assert "unknown table 'nope'" in result.stderr
    assert "clients" in result.stderr  # the tables the models map
    assert "Usage:" in result.stderr
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    "arguments",
    [
        ["history", "clients", "abc"],
        ["history", "clients", "1.5"],
        ["history", "clients", "[1, 2]"],
        ["export", "--table", "clients", "--id", "abc"],
    ],
)
def test_an_id_that_is_not_of_the_keys_type_is_a_usage_error(
    changed: Flask, arguments: list[str]
) -> None:
    result = flask_audit(changed, *arguments)

    assert result.exit_code == 2, result.output
    assert "clients" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["history", "clients", '{"$gt": 1}'], "query operators are refused"),
        (["history", "$where", "1"], "Invalid value for 'TABLE'"),
        (["user"], "Missing argument 'USER_ID' (or --nobody"),
        (["user", "1", "--nobody"], "give USER_ID or --nobody, not both"),
        (["export", "--id", "1"], "--id needs --table"),
        (["recent", "--since", "1h", "--until", "2h"], "--since must be before --until"),
        (["recent", "--limit", "0"], "Invalid value for '--limit'"),
        (["recent", "--uri", URI], "No such option '--uri'"),
    ],
)
def test_the_options_are_checked_as_audit_mongo_checks_them(
    app: Flask, arguments: list[str], message: str
) -> None:
    result = flask_audit(app, *arguments)

    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_mongo_unreachable_is_exit_status_3_with_a_message(tmp_path: Any) -> None:
    audit_ext = AuditMongo()
    audit_ext.track(Client)
    app = create_app(
        audit_ext,
        f"sqlite:///{tmp_path / 'app.db'}",
        AUDIT_MONGO_URI=f"mongodb://127.0.0.1:{closed_loopback_port()}/app",
        AUDIT_MONGO_CLIENT_OPTIONS={"serverSelectionTimeoutMS": 200},
    )
    try:
        result = flask_audit(app, "recent")
    finally:
        with app.app_context():
            current_log().close()
            db.engine.dispose()

    assert result.exit_code == 3, result.output
    assert "Mongo is unreachable" in result.stderr
    assert "AUDIT_MONGO_URI" in result.stderr
    assert "Traceback" not in result.output


# -- indexes and help ----------------------------------------------------------------------


def test_ensure_indexes_uses_the_applications_retention_and_show_indexes_lists_them(
    app: Flask,
) -> None:
    before = flask_audit(app, "show-indexes")
    ensured = flask_audit(app, "ensure-indexes")
    after = flask_audit(app, "show-indexes", "--json")

    assert before.exit_code == 0, before.output
    assert all(line.split()[0] in ("missing", "other") for line in before.stdout.splitlines())
    assert ensured.exit_code == 0, ensured.output
    assert "ensured audit_retention" in ensured.stdout.splitlines()
    assert after.stdout == cli("show-indexes", "--json").stdout
    assert '"expire_after_seconds": 2592000' in after.stdout  # 30 days


def test_flask_audit_help_lists_the_commands_without_the_log_options(app: Flask) -> None:
    group = flask_audit(app, "--help")
    history = flask_audit(app, "history", "--help")

    assert group.exit_code == 0, group.output
    listed = [
        line.split()[0] for line in group.stdout.split("Commands:")[1].splitlines() if line.strip()
    ]
    assert sorted(listed) == sorted(COMMANDS)
    assert history.exit_code == 0, history.output
    assert "flask audit history clients 5" in history.stdout
    for option in ("--since", "--until", "--action", "--limit", "--json"):
        assert option in history.stdout
    for option in ("--uri", "--collection", "--database", "--server-timeout"):
        assert option not in history.stdout


def test_verify_checks_the_log_with_the_applications_keys(collection: Any, tmp_path: Any) -> None:
    audit_ext = AuditMongo()
    audit_ext.track(Client)
    keys = {"2026-12": "a secret of at least sixteen bytes"}
    app = create_app(
        audit_ext,
        f"sqlite:///{tmp_path / 'app.db'}",
        AUDIT_MONGO_URI=URI,
        AUDIT_MONGO_SIGNING_KEYS=keys,
    )
    try:
        web = app.test_client()
        web.post("/clients", data={"name": "Company B"})
        web.post("/clients/1/name", data={"name": "Company A"})
        heads = tmp_path / "heads.json"

        intact = flask_audit(app, "verify", "--heads", str(heads))
        with app.app_context():
            log = current_log()
            assert {d["chain"]["key"] for d in log.collection.find()} == {"2026-12"}
            log.collection.update_one({"action": "update"}, {"$set": {"current_user_id": 9}})
        tampered = flask_audit(app, "verify", "--heads", str(heads))
    finally:
        with app.app_context():
            current_log().close()
            db.engine.dispose()

    assert intact.exit_code == 0, intact.output
    assert "intact: 2 entries in 1 chains (signed)" in intact.output
    assert tampered.exit_code == 4
    assert tampered.output.startswith("modified:")
