"""The ``audit-mongo deliver`` command: it sends what waits in the outbox to Mongo, each
document once, and says by its exit status whether anything is left pending."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import mongomock
import pytest
from click.testing import CliRunner, Result
from pymongo import MongoClient
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from audit_mongo import AuditLog, AuditReader
from audit_mongo.cli import EXIT_PENDING, EXIT_USAGE, main
from audit_mongo.cli import exit_status as exit_status_of
from tests.fakes import closed_loopback_port
from tests.models import Client

MONGO_URI = "mongodb://mongo.test/app"
SETTINGS = (
    "AUDIT_MONGO_URI",
    "AUDIT_MONGO_OUTBOX_URL",
    "AUDIT_MONGO_COLLECTION",
    "AUDIT_MONGO_SIGNING_KEYS",
    "AUDIT_MONGO_SIGNING_KEY_ID",
)


@pytest.fixture(autouse=True)
def no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)


class FakeMongoClient:
    """Stands in for ``pymongo.MongoClient``, which audit_mongo looks up when it opens a
    URI: every call returns the same in-memory client, so the test reads what the command
    wrote."""

    def __init__(self) -> None:
        self.client: Any = mongomock.MongoClient(MONGO_URI, tz_aware=True)
        self.uris: list[str] = []

    def __call__(self, uri: str, **options: Any) -> Any:
        self.uris.append(uri)
        return self.client

    def documents(self, collection: str = "user_logs") -> list[dict[str, Any]]:
        return list(self.client.app[collection].find())


@pytest.fixture
def mongo(monkeypatch: pytest.MonkeyPatch) -> FakeMongoClient:
    fake = FakeMongoClient()
    monkeypatch.setattr("pymongo.MongoClient", fake)
    return fake


def leave_pending(engine: Engine, names: Sequence[str]) -> list[int]:
    """Commit a Client per name while Mongo is unreachable, so that their audit documents
    wait in the outbox; return the clients' ids."""
    client: Any = MongoClient(f"mongodb://127.0.0.1:{closed_loopback_port()}/app")
    audit = AuditLog(client.app.user_logs, timeout=0.3, outbox=engine)
    try:
        audit.track(Client)
        with Session(engine) as session:
            clients = [Client(name=name) for name in names]
            session.add_all(clients)
            session.commit()
            return [c.id for c in clients]
    finally:
        audit.close()
        client.close()


def outbox_documents(engine: Engine) -> int:
    with engine.connect() as connection:
        total = "SELECT coalesce(sum(document_count), 0) FROM audit_mongo_outbox"
        return int(connection.scalar(text(total)) or 0)


def cli_url(engine: Engine) -> str:
    """The engine's URL for the command, which makes an engine of its own. On PostgreSQL the
    test schema (a connect argument of the fixture's engine) goes into the URL."""
    url = engine.url
    if url.get_backend_name() == "postgresql":
        with engine.connect() as connection:
            schema = connection.scalar(text("SELECT current_schema()"))
        url = url.update_query_dict({"options": f"-c search_path={schema}"})
    return url.render_as_string(hide_password=False)


def deliver(engine: Engine, *options: str) -> list[str]:
    return ["deliver", "--outbox-url", cli_url(engine), "--mongo-uri", MONGO_URI, *options]


def run(arguments: list[str]) -> Result:
    """The command line as the shell runs it, through click's test runner."""
    return CliRunner().invoke(main, arguments)


def assert_stored_once(documents: list[dict[str, Any]], ids: list[int]) -> None:
    counts = Counter(document["_id"] for document in documents)
    assert set(counts.values()) == {1}, "a document was stored twice"
    assert sorted(document["object_id"] for document in documents) == sorted(ids)
    assert {(document["table_name"], document["action"]) for document in documents} == {
        ("clients", "create")
    }


def test_with_mongo_unreachable_it_exits_1_and_reports_what_is_pending(engine: Engine) -> None:
    leave_pending(engine, ["a", "b", "c"])
    unreachable = f"mongodb://127.0.0.1:{closed_loopback_port()}/app"

    began = time.monotonic()
    result = run(
        ["deliver", "--outbox-url", cli_url(engine), "--mongo-uri", unreachable, "--timeout", "0.3"]
    )

    assert result.exit_code == 1, result.output
    assert time.monotonic() - began < 10  # bounded by --timeout, not pymongo's 30 s
    assert result.stdout.splitlines() == ["delivered 0, pending 3"]
    assert outbox_documents(engine) == 3


def test_it_delivers_each_pending_document_once_and_empties_the_outbox(
    engine: Engine, mongo: FakeMongoClient
) -> None:
    ids = leave_pending(engine, ["a", "b", "c"])
    assert outbox_documents(engine) == 3

    first = run(deliver(engine))
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == ["delivered 3, pending 0"]
    assert_stored_once(mongo.documents(), ids)
    assert sorted(d["changes"]["name"]["added"] for d in mongo.documents()) == [["a"], ["b"], ["c"]]
    assert outbox_documents(engine) == 0

    second = run(deliver(engine))  # nothing left: a second run sends nothing again
    assert second.exit_code == 0, second.output
    assert second.stdout.splitlines() == ["delivered 0, pending 0"]
    assert_stored_once(mongo.documents(), ids)
    assert mongo.uris == [MONGO_URI, MONGO_URI]


def test_settings_fall_back_to_the_environment(
    engine: Engine, mongo: FakeMongoClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = leave_pending(engine, ["a", "b"])
    monkeypatch.setenv("AUDIT_MONGO_URI", MONGO_URI)
    monkeypatch.setenv("AUDIT_MONGO_OUTBOX_URL", cli_url(engine))
    monkeypatch.setenv("AUDIT_MONGO_COLLECTION", "audit_trail")

    result = run(["deliver", "--timeout", "1"])

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["delivered 2, pending 0"]
    assert mongo.uris == [MONGO_URI]
    assert_stored_once(mongo.documents("audit_trail"), ids)
    assert mongo.documents("user_logs") == []
    assert outbox_documents(engine) == 0


def test_options_take_precedence_over_the_environment(
    engine: Engine, mongo: FakeMongoClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = leave_pending(engine, ["a"])
    monkeypatch.setenv("AUDIT_MONGO_URI", "mongodb://elsewhere.test/other")
    monkeypatch.setenv("AUDIT_MONGO_OUTBOX_URL", "sqlite:///does/not/exist.db")
    monkeypatch.setenv("AUDIT_MONGO_COLLECTION", "not_this_one")

    result = run([*deliver(engine), "--collection", "audit_trail"])

    assert result.exit_code == 0, result.output

    assert mongo.uris == [MONGO_URI]
    assert_stored_once(mongo.documents("audit_trail"), ids)
    assert mongo.documents("not_this_one") == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["deliver", "--mongo-uri", MONGO_URI], "--outbox-url (or AUDIT_MONGO_OUTBOX_URL)"),
        (["deliver", "--outbox-url", "sqlite://"], "--uri/--mongo-uri (or AUDIT_MONGO_URI)"),
    ],
    ids=["outbox-url", "mongo-uri"],
)
def test_a_missing_setting_is_a_usage_error(
    mongo: FakeMongoClient, arguments: list[str], message: str
) -> None:
    result = run(arguments)

    assert result.exit_code == 2
    assert "Usage: audit-mongo deliver" in result.stderr
    assert f"Error: {message} is required" in result.stderr
    assert result.stdout == ""
    assert mongo.uris == []  # refused before connecting to anything


@pytest.mark.parametrize("option", ["--timeout", "--interval"])
@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_timeout_or_interval_that_is_not_a_positive_number_is_a_usage_error(
    mongo: FakeMongoClient, option: str, value: str
) -> None:
    arguments = ["deliver", "--outbox-url", "sqlite://", "--mongo-uri", "mongodb://x/app"]
    result = run([*arguments, option, value])

    assert result.exit_code == 2
    assert "expected a positive number of seconds" in result.stderr
    assert mongo.uris == []


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


class SigintReachedTheTest(Exception):
    """The command did not handle SIGINT itself: the test's own handler ran."""


def test_watch_delivers_new_work_until_sigint_then_exits_0_and_restores_the_handlers(
    engine: Engine, mongo: FakeMongoClient
) -> None:
    first = leave_pending(engine, ["a", "b"])
    later: list[int] = []
    failures: list[BaseException] = []

    def count() -> int:
        return len(mongo.documents())

    def feed_then_interrupt() -> None:
        try:
            assert wait_until(lambda: count() == 2), "the first round did not deliver"
            later.extend(leave_pending(engine, ["c"]))  # work arriving while it watches
            assert wait_until(lambda: count() == 3), "a later round did not deliver"
        except BaseException as exc:
            failures.append(exc)
        finally:
            os.kill(os.getpid(), signal.SIGINT)

    def callers_handler(signum: int, frame: FrameType | None) -> None:
        raise SigintReachedTheTest

    previous_sigint = signal.signal(signal.SIGINT, callers_handler)
    previous_sigterm = signal.getsignal(signal.SIGTERM)
    watcher = threading.Timer(0.1, feed_then_interrupt)
    try:
        watcher.start()
        result = run(deliver(engine, "--watch", "--interval", "0.1"))
        assert signal.getsignal(signal.SIGINT) is callers_handler
        assert signal.getsignal(signal.SIGTERM) == previous_sigterm
    finally:
        try:
            watcher.join(timeout=30)  # its SIGINT is the last thing it does
        finally:
            signal.signal(signal.SIGINT, previous_sigint)

    assert failures == []
    assert result.exit_code == 0, result.output
    assert_stored_once(mongo.documents(), first + later)
    assert outbox_documents(engine) == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "delivered 2, pending 0"
    assert sum(int(line.split()[1].rstrip(",")) for line in lines) == 3
    assert lines[-1].endswith("pending 0")


CONSOLE_SCRIPT = Path(sys.executable).parent / "audit-mongo"


@pytest.mark.parametrize(
    "command",
    [
        pytest.param([sys.executable, "-m", "audit_mongo"], id="python-m"),
        pytest.param(
            [str(CONSOLE_SCRIPT)],
            id="console-script",
            marks=pytest.mark.skipif(
                not CONSOLE_SCRIPT.exists(), reason="audit-mongo is not installed next to Python"
            ),
        ),
    ],
)
def test_deliver_help_lists_the_options(command: list[str]) -> None:
    result = subprocess.run(
        [*command, "deliver", "--help"], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr
    for option in ("--watch", "--interval", "--outbox-url", "--mongo-uri", "--timeout"):
        assert option in result.stdout


def test_the_exit_status_reaches_the_shell(engine: Engine) -> None:
    leave_pending(engine, ["a", "b"])
    unreachable = f"mongodb://127.0.0.1:{closed_loopback_port()}/app"
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("AUDIT_MONGO_")
    }

    result = subprocess.run(
        [sys.executable, "-m", "audit_mongo", "deliver", "--timeout", "0.3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            **environment,
            "AUDIT_MONGO_URI": unreachable,
            "AUDIT_MONGO_OUTBOX_URL": cli_url(engine),
        },
    )

    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == ["delivered 0, pending 2"]
    assert "Mongo is not reachable" in result.stderr


def test_main_called_with_arguments_returns_the_exit_status(
    engine: Engine, mongo: FakeMongoClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """``main(argv)`` returns the status rather than exiting, as it always did."""
    ids = leave_pending(engine, ["a"])
    capsys.readouterr()

    assert main(deliver(engine)) == 0
    assert capsys.readouterr().out.splitlines() == ["delivered 1, pending 0"]
    assert_stored_once(mongo.documents(), ids)
    assert main(["deliver", "--outbox-url", "sqlite://"]) == 2
    assert "--uri/--mongo-uri (or AUDIT_MONGO_URI) is required" in capsys.readouterr().err


def test_a_message_exit_is_an_error_status_not_documents_pending(
    mongo: FakeMongoClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``sys.exit("message")`` is status 1 to Python, which here means "pending": the
    command line makes it 2 and shows the message, as Python would have."""

    def give_up(*args: Any, **kwargs: Any) -> None:
        sys.exit("something gave up")

    monkeypatch.setattr("audit_mongo.cli.queries.show", give_up)

    status = main(["recent", "--uri", MONGO_URI])

    assert status == EXIT_USAGE != EXIT_PENDING
    assert capsys.readouterr().err == "something gave up\n"


@pytest.mark.parametrize(
    ("code", "status"),
    [(None, 0), (0, 0), (1, 1), (2, 2), (3, 3), ("a message", 2), (["odd"], 2)],
)
def test_exit_codes_map_to_statuses(code: object, status: int) -> None:
    assert exit_status_of(code) == status


def test_a_bad_mongo_uri_or_outbox_url_is_a_usage_error(tmp_path: Path) -> None:
    outbox = f"sqlite:///{tmp_path / 'app.db'}"
    bad_uri = run(["deliver", "--outbox-url", outbox, "--mongo-uri", "mongodb://a:b:c@x/"])
    bad_url = run(["deliver", "--outbox-url", "nosuchdb://x", "--mongo-uri", MONGO_URI])

    assert bad_uri.exit_code == 2
    assert "Invalid value for '--uri'" in bad_uri.stderr
    assert bad_url.exit_code == 2
    assert "Invalid value for '--outbox-url'" in bad_url.stderr
    assert "Traceback" not in bad_uri.output + bad_url.output


def test_an_outbox_database_that_cannot_be_opened_exits_3_without_a_traceback(
    mongo: FakeMongoClient, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'app.db'}"

    result = run(["deliver", "--outbox-url", url, "--mongo-uri", MONGO_URI])

    assert result.exit_code == 3
    assert "the outbox database failed: OperationalError" in result.stderr
    assert "Traceback" not in result.output


def test_deliver_signs_what_it_delivers_with_the_applications_keys(
    engine: Engine, mongo: FakeMongoClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = {"2026-12": "a secret of at least sixteen bytes"}
    leave_pending(engine, ["a", "b"])
    monkeypatch.setenv("AUDIT_MONGO_SIGNING_KEYS", json.dumps(keys))

    result = run(deliver(engine))

    assert result.exit_code == 0, result.output
    assert {d["chain"]["key"] for d in mongo.documents()} == {"2026-12"}
    reader = AuditReader(mongo.client.app.user_logs, signing_keys=keys)
    assert reader.verify() == []


def test_deliver_with_several_keys_and_none_named_is_a_usage_error(
    engine: Engine, mongo: FakeMongoClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = {"a": "a secret of at least sixteen bytes", "b": "another secret, sixteen+"}
    monkeypatch.setenv("AUDIT_MONGO_SIGNING_KEYS", json.dumps(keys))

    result = run(deliver(engine))

    assert result.exit_code == EXIT_USAGE
    assert "signing_key_id" in result.output
    assert "sixteen" not in result.output
