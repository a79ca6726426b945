"""Which log the command line opens (--uri, --collection, --database and their environment
variables), and how it fails when it cannot: exit statuses and messages, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from audit_mongo.cli import main
from tests.fakes import closed_loopback_port
from tests.models import Client
from tests.test_cli_queries import SETTINGS, URI, cli, json_lines, mongo_server, recording

QUERIES = [
    ["history", "clients", "1"],
    ["user", "1"],
    ["recent"],
    ["export"],
    ["tail", "--stop-after", "1"],
    ["show-indexes"],
    ["ensure-indexes"],
]


@pytest.fixture(autouse=True)
def no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)


def test_collection_and_database_select_the_log(engine: Engine) -> None:
    with mongo_server() as collection:
        other = collection.database.client.elsewhere.audit_trail
        with recording(other), Session(engine) as session:
            session.add(Client(name="in the trail"))
            session.commit()

        default = cli("recent", "--json")
        chosen = cli("recent", "--database", "elsewhere", "--collection", "audit_trail", "--json")

    assert json_lines(default) == []
    assert [e["changes"]["name"]["added"] for e in json_lines(chosen)] == [["in the trail"]]


def test_the_environment_names_the_log_and_options_win(engine: Engine) -> None:
    with mongo_server() as collection:
        trail = collection.database.audit_trail
        with recording(trail), Session(engine) as session:
            session.add(Client(name="in the trail"))
            session.commit()
        runner = CliRunner(env={"AUDIT_MONGO_URI": URI, "AUDIT_MONGO_COLLECTION": "audit_trail"})

        from_environment = runner.invoke(main, ["recent", "--json"])
        overridden = runner.invoke(main, ["recent", "--json", "--collection", "user_logs"])
        by_alias = runner.invoke(main, ["recent", "--json", "--mongo-uri", URI])

    assert len(json_lines(from_environment)) == 1
    assert json_lines(overridden) == []
    assert json_lines(by_alias) == json_lines(from_environment)


def test_a_mongomock_uri_opens_an_empty_in_memory_log() -> None:
    result = cli("recent", uri="mongomock://memory/app")

    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "no entries\n")


@pytest.mark.parametrize("command", QUERIES, ids=lambda c: c[0])
def test_an_unreachable_server_exits_3_within_the_server_timeout(command: list[str]) -> None:
    unreachable = f"mongodb://127.0.0.1:{closed_loopback_port()}/app"
    name, *rest = command

    began = time.monotonic()
    result = cli(name, "--server-timeout", "0.5", *rest, uri=unreachable)

    assert time.monotonic() - began < 5
    assert result.exit_code == 3, result.output
    assert "Error: Mongo is unreachable (127.0.0.1:" in result.stderr
    assert "gave up after 0.5 s (--server-timeout)" in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("http://mongo.test/app", "Invalid URI scheme"),
        ("mongodb://user:pa:ss@mongo.test/app", "must be escaped"),
        ("mongodb://mongo.test:99999/app", "Port must be an integer"),
    ],
)
def test_a_bad_uri_is_a_usage_error(uri: str, message: str) -> None:
    result = cli("recent", uri=uri)

    assert result.exit_code == 2, result.output
    assert "Invalid value for '--uri'" in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["recent"], "--uri/--mongo-uri (or AUDIT_MONGO_URI) is required"),
        (["recent", "--uri", URI, "--collection", "a$b"], "invalid --collection or --database"),
        (["recent", "--uri", URI, "--server-timeout", "0"], "expected a positive number"),
        (["history", "--uri", URI, "clients"], "Missing argument 'ID'"),
        (["nonsense"], "No such command 'nonsense'"),
    ],
)
def test_bad_arguments_are_usage_errors(arguments: list[str], message: str) -> None:
    with mongo_server():
        result = CliRunner().invoke(main, arguments)

    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_python_m_audit_mongo_help_lists_the_commands() -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_MONGO_")}
    result = subprocess.run(
        [sys.executable, "-m", "audit_mongo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=environment,
    )

    assert result.returncode == 0, result.stderr
    assert "Usage: python -m audit_mongo [OPTIONS] COMMAND" in result.stdout
    for command in ("history", "user", "recent", "export", "tail", "show-indexes"):
        assert command in result.stdout
    assert "ensure-indexes" in result.stdout and "deliver" in result.stdout
    assert "3 Mongo (or the outbox database) unreachable" in " ".join(result.stdout.split())


def test_an_unreachable_server_in_a_real_process_exits_3_with_a_message() -> None:
    unreachable = f"mongodb://127.0.0.1:{closed_loopback_port()}/app"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_MONGO_")}
    result = subprocess.run(
        [sys.executable, "-m", "audit_mongo", "recent", "--server-timeout", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**environment, "AUDIT_MONGO_URI": unreachable},
    )

    assert result.returncode == 3
    assert result.stderr.startswith("Error: Mongo is unreachable")
    assert "Traceback" not in result.stderr
