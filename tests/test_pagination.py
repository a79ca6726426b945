"""find(): pages that continue from a position, so entries committed while a client pages
(by other threads, through real sessions) never repeat or hide an entry."""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from bson import ObjectId
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from audit_mongo import AuditLog, Page
from tests.conftest import stored
from tests.models import Client, Tag
from tests.query_helpers import commit_times, controlled_clock, new_log

STEPS = {
    "a second between commits": dt.timedelta(seconds=1),
    "every commit in one instant": dt.timedelta(0),
}


@pytest.fixture(params=list(STEPS))
def step(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> dt.timedelta:
    """Commits a second apart, or all in the same millisecond (order by _id alone)."""
    delta = STEPS[request.param]
    controlled_clock(monkeypatch, step=delta)
    return delta


@pytest.fixture
def audit(collection: Any) -> Iterator[AuditLog]:
    log = new_log(collection)
    yield log
    log.close()


def write_history(engine: Engine) -> None:
    """25 rows in one commit (entries sharing a created_at), then 10 single updates."""
    with Session(engine) as session:
        clients = [Client(name=f"c{i}") for i in range(25)]
        session.add_all(clients)
        session.commit()
        for i in range(10):
            clients[i].phone = str(i)
            session.commit()


def every_page(audit: AuditLog, **filters: Any) -> list[Page]:
    pages = [audit.find(**filters)]
    while pages[-1].next_cursor is not None:
        pages.append(audit.find(**filters, after=pages[-1].next_cursor))
    return pages


def all_ids(collection: Any, newest_first: bool = True, **query: Any) -> list[ObjectId]:
    ordered = [d["_id"] for d in stored(collection, **query) if d["action"] != "void"]
    return ordered[::-1] if newest_first else ordered


@pytest.mark.parametrize("order", ["newest", "oldest"])
def test_pages_give_every_entry_once_in_order(
    audit: AuditLog, engine: Engine, step: dt.timedelta, order: str
) -> None:
    write_history(engine)

    pages = every_page(audit, limit=7, order=order)

    assert [len(page) for page in pages] == [7, 7, 7, 7, 7]  # 35: no empty last page
    found = [entry.id for page in pages for entry in page]
    assert found == all_ids(audit.collection, newest_first=order == "newest")
    assert pages[-1].next_cursor is None


def test_a_page_cursor_is_url_safe_text(audit: AuditLog, engine: Engine) -> None:
    write_history(engine)
    cursor = audit.find(limit=3).next_cursor
    assert cursor is not None and re.fullmatch(r"[A-Za-z0-9_-]+", cursor)


@pytest.mark.parametrize("order", ["newest", "oldest"])
def test_pages_are_stable_while_other_threads_commit_between_them(
    audit: AuditLog, engine: Engine, step: dt.timedelta, order: str
) -> None:
    write_history(engine)
    original = all_ids(audit.collection, newest_first=order == "newest")

    def commit_one(label: str) -> None:
        with Session(engine) as session:
            session.add(Tag(label=label))
            session.commit()

    found: list[ObjectId] = []
    page = audit.find(limit=6, order=order)
    for number in range(100):
        found.extend(entry.id for entry in page)
        if page.next_cursor is None:
            break
        if number < 5:  # other sessions commit before the next page is asked for
            writers = [
                threading.Thread(target=commit_one, args=(f"p{number}w{w}",)) for w in range(3)
            ]
            for writer in writers:
                writer.start()
            for writer in writers:
                writer.join()
        page = audit.find(limit=6, order=order, after=page.next_cursor)

    added = [d["_id"] for d in stored(audit.collection, table_name="tags")]
    assert len(added) == 15
    assert len(found) == len(set(found))  # nothing repeated
    if order == "newest":  # newer than the first page: never shifts into later pages
        assert found == original
    else:  # the original entries in order, then those committed meanwhile
        assert found[: len(original)] == original
        assert sorted(found[len(original) :]) == sorted(added)


def test_filters_and_paging_combine(
    audit: AuditLog, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    controlled_clock(monkeypatch)
    with Session(engine) as session:
        clients = [Client(name=f"c{i}") for i in range(6)]
        with audit.acting_as(1):
            session.add_all(clients)
            session.commit()
        for round_ in range(3):
            for i, client in enumerate(clients):
                with audit.acting_as(1 if i % 2 else 2):
                    client.name = f"c{i}r{round_}"
                    session.commit()
        first = clients[0].id
    times = commit_times(audit.collection)
    filters: dict[str, Any] = {
        "table": Client,
        "user_id": 1,
        "actions": ("update",),
        "fields": ("name",),
        "since": times[1],
        "until": times[-1],
        "limit": 2,
    }

    pages = every_page(audit, **filters)

    found = [entry for page in pages for entry in page]
    assert all(e.user_id == 1 and e.action == "update" for e in found)
    assert all(times[1] <= e.created_at < times[-1] for e in found)
    expected = [
        d["_id"]
        for d in stored(audit.collection, current_user_id=1, action="update")
        if times[1] <= d["created_at"] < times[-1]
    ][::-1]
    assert [e.id for e in found] == expected
    assert len(expected) == 8  # three users-1 clients x three rounds, less the last commit
    by_object = every_page(audit, table="clients", object_id=str(first), limit=1)
    assert [len(page) for page in by_object] == [1, 1, 1, 1]


def test_user_none_finds_the_changes_nobody_was_known_for(audit: AuditLog, engine: Engine) -> None:
    with Session(engine) as session:
        with audit.acting_as(3):
            session.add(Client(name="known"))
            session.commit()
        session.add(Client(name="anonymous"))
        session.commit()

    (entry,) = audit.find(user_id=None)
    assert entry.changes["name"].new == "anonymous"
    assert [e.changes["name"].new for e in audit.find(user_id=3)] == ["known"]
    assert len(audit.find()) == 2  # user_id left out: everyone
