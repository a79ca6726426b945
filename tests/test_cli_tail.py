"""``audit-mongo tail``: following new entries, by change stream where the server has them
and by polling where it refuses them (or the client has none: mongomock)."""

from __future__ import annotations

import copy
import datetime as dt
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from bson import ObjectId
from click.testing import Result
from pymongo.errors import OperationFailure
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from audit_mongo.cli import tail
from audit_mongo.cli.tail import SeenIds
from tests.models import Client, Membership
from tests.test_cli_queries import SETTINGS, blocks, cli, json_lines, mongo_server, recording

WATCHDOG = 30.0  # seconds before a test's tail is interrupted, should it wait forever
ACTIONS = ["create", "update", "delete"]


@pytest.fixture(autouse=True)
def no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)


def commit_client(engine: Engine, name: str) -> int:
    with Session(engine) as session:
        client = Client(name=name)
        session.add(client)
        session.commit()
        return client.id


def rename_client(engine: Engine, client_id: int, name: str) -> None:
    with Session(engine) as session:
        client = session.get(Client, client_id)  # get_one: SQLAlchemy 2.0.22+
        assert client is not None
        client.name = name
        session.commit()


@pytest.fixture
def polled(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set once ``tail`` has polled the log a first time (so later writes are new)."""
    done = threading.Event()
    new_ids = tail.new_ids

    def first_noted(*args: Any) -> list[tuple[Any, dt.datetime]]:
        found = new_ids(*args)
        done.set()
        return found

    monkeypatch.setattr(tail, "new_ids", first_noted)
    return done


@contextmanager
def meanwhile(action: Callable[[], None]) -> Iterator[list[BaseException]]:
    """Run ``action`` in a thread while the block runs ``tail``; a watchdog interrupts the
    tail (SIGINT) should it never stop. Yields the thread's failures."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:
            failures.append(exc)

    worker = threading.Thread(target=run)
    watchdog = threading.Timer(WATCHDOG, os.kill, (os.getpid(), signal.SIGINT))
    worker.start()
    watchdog.start()
    try:
        yield failures
    finally:
        worker.join(WATCHDOG)
        watchdog.cancel()


def names(result: Result) -> list[tuple[str, str]]:
    """(action, the name's change) of each entry shown."""
    shown = []
    for header, *fields in blocks(result):
        change = next(f.split(None, 1)[1] for f in fields if f.strip().startswith("name"))
        shown.append((header.split("  ")[1], change))
    return shown


# -- polling --------------------------------------------------------------------------------


def test_polling_shows_entries_committed_while_it_runs_not_earlier_ones(
    engine: Engine, polled: threading.Event
) -> None:
    with mongo_server() as collection, recording(collection):
        commit_client(engine, "before")

        def commit_later() -> None:
            assert polled.wait(WATCHDOG)
            client_id = commit_client(engine, "new")
            rename_client(engine, client_id, "renamed")

        with meanwhile(commit_later) as failures:
            result = cli("tail", "--interval", "0.05", "--stop-after", "2")

    assert failures == []
    assert result.exit_code == 0, result.output
    assert names(result) == [("create", "∅ → 'new'"), ("update", "'new' → 'renamed'")]
    assert "this client has no change streams: polling for new entries" in result.stderr


def test_polling_with_since_first_shows_the_entries_since_then(
    engine: Engine, polled: threading.Event
) -> None:
    with mongo_server() as collection, recording(collection) as audit:
        commit_client(engine, "earlier")
        collection.update_many(
            {}, {"$set": {"created_at": dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)}}
        )
        commit_client(engine, "recent")

        def commit_later() -> None:
            assert polled.wait(WATCHDOG)
            with audit.acting_as(5), Session(engine) as session:
                session.add(Membership(group="g", member_id=1))
                session.commit()
            commit_client(engine, "later")

        with meanwhile(commit_later) as failures:
            result = cli(
                "tail", "--since", "1h", "--table", "clients", "--interval", "0.05",
                "--stop-after", "2", "--json",
            )  # fmt: skip

    assert failures == []
    entries = json_lines(result)
    assert [e["changes"]["name"]["added"] for e in entries] == [["recent"], ["later"]]
    assert {e["table_name"] for e in entries} == {"clients"}


def test_tail_json_gives_context_keys_as_stored(engine: Engine) -> None:
    with mongo_server() as collection, recording(collection) as audit:
        with audit.context(**{"$where": 1, "a.b": 2}):
            commit_client(engine, "in context")
        (document,) = collection.find()

        result = cli("tail", "--since", "1h", "--stop-after", "1", "--json")

    assert document["context"] == {"\uff04where": 1, "a\uff0eb": 2}
    (entry,) = json_lines(result)
    assert entry["context"] == document["context"]
    assert entry == {k: v for k, v in document.items() if k not in ("schema_version", "chain")}


def test_polling_shows_documents_delivered_late_within_the_lookback(
    engine: Engine, polled: threading.Event
) -> None:
    """An outbox delivers a document after an outage with its commit's created_at."""
    with mongo_server() as collection, recording(collection):
        commit_client(engine, "template")
        template = collection.find_one()

        def deliver_late() -> None:
            assert polled.wait(WATCHDOG)
            for name, age in (("too late", 10), ("late", 2)):
                document = copy.deepcopy(template)
                document["_id"] = ObjectId()
                document["created_at"] = dt.datetime.now(dt.timezone.utc) - dt.timedelta(
                    minutes=age
                )
                document["changes"]["name"]["added"] = [name]
                collection.insert_one(document)
            commit_client(engine, "fresh")

        with meanwhile(deliver_late) as failures:
            result = cli(
                "tail", "--lookback", "5m", "--interval", "0.05", "--stop-after", "2", "--json"
            )

    assert failures == []
    assert [e["changes"]["name"]["added"] for e in json_lines(result)] == [["late"], ["fresh"]]


def test_ctrl_c_ends_tail_with_exit_status_0(engine: Engine, polled: threading.Event) -> None:
    with mongo_server() as collection, recording(collection):
        commit_client(engine, "before")

        def interrupt() -> None:
            assert polled.wait(WATCHDOG)
            os.kill(os.getpid(), signal.SIGINT)

        with meanwhile(interrupt) as failures:
            result = cli("tail", "--interval", "0.05")

    assert failures == []
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "Aborted" not in result.stderr


def test_seen_ids_forget_what_the_window_cannot_return_and_stay_bounded() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    seen = SeenIds(limit=3)
    for minute in range(5):
        seen.add(minute, start + dt.timedelta(minutes=minute))

    assert seen.forget_before(start + dt.timedelta(seconds=30)) == start + dt.timedelta(minutes=2)
    assert len(seen) == 3 and 1 not in seen and 2 in seen  # the newest three
    assert seen.forget_before(start + dt.timedelta(minutes=3)) == start + dt.timedelta(minutes=3)
    assert len(seen) == 2 and 2 not in seen


def test_seen_ids_trim_a_long_backlog_as_it_is_read() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    seen = SeenIds(limit=2)
    for minute in range(5):  # the fifth is past twice the limit: only the newest two stay
        seen.add(minute, start + dt.timedelta(minutes=minute))

    assert len(seen) == 2 and 3 in seen and 4 in seen
    assert seen.forget_before(start) == start + dt.timedelta(minutes=3)


def test_seen_ids_hold_up_to_twice_the_limit_between_polls_and_the_limit_after_one() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    seen = SeenIds(limit=2)
    for minute in range(4):  # twice the limit: not trimmed yet
        seen.add(minute, start + dt.timedelta(minutes=minute))

    assert len(seen) == 4
    assert seen.forget_before(start) == start + dt.timedelta(minutes=2)
    assert len(seen) == 2 and 2 in seen and 3 in seen


def test_seen_ids_remember_a_commit_larger_than_the_limit_whole() -> None:
    """A commit's documents share their ``created_at``: none of them can be forgotten
    while the window still starts at that moment, or it would be shown again."""
    commit = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    seen = SeenIds(limit=2)
    for _id in range(5):  # past twice the limit: trimmed, but all share the cutoff
        seen.add(_id, commit)

    assert len(seen) == 5
    assert seen.forget_before(commit - dt.timedelta(minutes=5)) == commit
    assert len(seen) == 5 and all(_id in seen for _id in range(5))


# -- change streams ----------------------------------------------------------------------------


class Stream:
    """A change stream yielding ``events`` (an exception is raised where it stands)."""

    def __init__(self, events: list[Any]) -> None:
        self.events = events
        self.closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for event in self.events:
            if isinstance(event, BaseException):
                raise event
            yield event

    def close(self) -> None:
        self.closed = True


class Watchable:
    """A collection with change streams (as on a replica set): ``watch()`` records its
    pipeline and returns a ``Stream`` of ``events``, or raises ``refusal``."""

    def __init__(self, target: Any, events: list[Any], refusal: Exception | None = None) -> None:
        self.target = target
        self.refusal = refusal
        self.stream = Stream(events)
        self.pipelines: list[Any] = []

    def find(self, *args: Any, **kwargs: Any) -> Any:
        return self.target.find(*args, **kwargs)

    def watch(self, pipeline: list[dict[str, Any]]) -> Stream:
        self.pipelines.append(pipeline)
        if self.refusal is not None:
            raise self.refusal
        return self.stream


class NoClient:
    def close(self) -> None:
        pass


def open_as(monkeypatch: pytest.MonkeyPatch, collection: Any) -> None:
    """Make the command line open ``collection`` whatever its --uri."""
    monkeypatch.setattr(
        "audit_mongo.cli.options.open_collection", lambda *args: (NoClient(), collection)
    )


def inserts(collection: Any) -> list[dict[str, Any]]:
    documents = collection.find(sort=[("created_at", 1), ("_id", 1)])
    return [{"operationType": "insert", "fullDocument": d} for d in documents]


def test_a_change_stream_delivers_each_insert(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mongo_server() as collection, recording(collection):
        client_id = commit_client(engine, "a")
        rename_client(engine, client_id, "b")
        commit_client(engine, "c")
        create_a, rename, create_c = inserts(collection)
        other = {"operationType": "update", "documentKey": {"_id": ObjectId()}}
        watchable = Watchable(collection, [create_a, other, rename, create_c])
        open_as(monkeypatch, watchable)

        everything = cli("tail")
        two = cli("tail", "--table", "clients", "--stop-after", "2", "--json")

    assert everything.exit_code == 0, everything.output
    assert names(everything) == [
        ("create", "∅ → 'a'"),
        ("update", "'a' → 'b'"),
        ("create", "∅ → 'c'"),
    ]
    assert everything.stderr == ""
    assert [e["changes"]["name"]["added"] for e in json_lines(two)] == [["a"], ["b"]]
    assert watchable.stream.closed
    assert watchable.pipelines == [
        [{"$match": {"operationType": "insert", "fullDocument.action": {"$in": ACTIONS}}}],
        [
            {
                "$match": {
                    "operationType": "insert",
                    "fullDocument.action": {"$in": ACTIONS},
                    "fullDocument.table_name": "clients",
                }
            }
        ],
    ]


def test_a_change_stream_with_since_shows_the_backlog_first_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mongo_server() as collection, recording(collection):
        commit_client(engine, "backlog")
        (backlog,) = inserts(collection)
        commit_client(engine, "streamed")
        streamed = inserts(collection)[1]
        # the stream opened before the backlog was read: it repeats a backlog document
        open_as(monkeypatch, Watchable(collection, [streamed, backlog]))

        result = cli("tail", "--since", "1h", "--json")

    names_shown = [e["changes"]["name"]["added"] for e in json_lines(result)]
    assert names_shown == [["backlog"], ["streamed"]]


def test_ctrl_c_ends_a_change_stream_with_exit_status_0(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mongo_server() as collection, recording(collection):
        commit_client(engine, "a")
        watchable = Watchable(collection, [*inserts(collection), KeyboardInterrupt()])
        open_as(monkeypatch, watchable)

        result = cli("tail")

    assert result.exit_code == 0, result.output
    assert names(result) == [("create", "∅ → 'a'")]
    assert watchable.stream.closed


def test_a_server_refusing_change_streams_is_polled(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusal = OperationFailure(
        "The $changeStream stage is only supported on replica sets", code=40573
    )
    with mongo_server() as collection, recording(collection):
        commit_client(engine, "a")
        commit_client(engine, "b")
        watchable = Watchable(collection, [], refusal)
        open_as(monkeypatch, watchable)

        result = cli("tail", "--since", "1h", "--stop-after", "2", "--interval", "0.05")

    assert result.exit_code == 0, result.output
    assert names(result) == [("create", "∅ → 'a'"), ("create", "∅ → 'b'")]
    assert "the server refuses change streams (code 40573): polling" in result.stderr
    assert len(watchable.pipelines) == 1
