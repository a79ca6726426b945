"""Helpers for the query API tests: a log on the test models, a clock the tests control,
a collection that records what the reader asks of Mongo, and a way to make strict mode
void what it wrote."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from audit_mongo import AuditLog, commit_delivery
from tests.conftest import TRACKED

UTC = dt.timezone.utc
START = dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def new_log(collection: Any, models: tuple[type, ...] = TRACKED, **options: Any) -> AuditLog:
    """An ``AuditLog`` tracking ``models``, with its indexes."""
    log = AuditLog(collection, **options)
    for model in models:
        log.track(model)
    log.ensure_indexes()
    return log


class Clock:
    """Stands in for the time a commit is stamped with: each call gives ``now``, which then
    moves on by ``step`` (zero: every commit in the same instant). A commit may ask more
    than once; ``commit_times()`` gives the times documents got."""

    def __init__(self, start: dt.datetime = START, step: dt.timedelta | None = None) -> None:
        self.now = start
        self.step = dt.timedelta(seconds=1) if step is None else step
        self._lock = threading.Lock()

    def __call__(self) -> dt.datetime:
        with self._lock:
            now = self.now
            self.now += self.step
            return now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Commits stamped one second apart from START (registered by tests/conftest.py)."""
    return controlled_clock(monkeypatch)


def saved(session: Session, *objects: Any) -> None:
    session.add_all(objects)
    session.commit()


def controlled_clock(monkeypatch: pytest.MonkeyPatch, **options: Any) -> Clock:
    clock = Clock(**options)
    monkeypatch.setattr(commit_delivery, "commit_time", clock)
    return clock


def commit_times(collection: Any) -> list[dt.datetime]:
    """The created_at of each commit that wrote documents (voids aside), oldest first."""
    found = collection.find({"action": {"$ne": "void"}}, {"created_at": 1})
    return sorted({d["created_at"].astimezone(UTC) for d in found})


@dataclass
class Find:
    """One ``find()`` the reader sent."""

    filter: dict[str, Any]
    sort: list[tuple[str, int]] | None
    batch_size: int


class CountingCursor:
    """A cursor that counts the documents read through it."""

    def __init__(self, cursor: Any, spy: SpyCollection) -> None:
        self.cursor = cursor
        self.spy = spy

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        document: dict[str, Any] = next(self.cursor)
        self.spy.pulled += 1
        return document

    def close(self) -> None:
        self.cursor.close()


class SpyCollection:
    """A thin wrapper around a collection: records the filter and sort of every ``find()``
    and counts the documents read from Mongo; everything else goes to ``target``."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.finds: list[Find] = []
        self.pulled = 0

    def find(
        self,
        filter: dict[str, Any] | None = None,
        projection: Any = None,
        *,
        sort: list[tuple[str, int]] | None = None,
        batch_size: int = 0,
    ) -> CountingCursor:
        self.finds.append(Find(filter or {}, sort, batch_size))
        return CountingCursor(self.target.find(filter, projection, sort=sort), self)

    def reset(self) -> None:
        self.finds.clear()
        self.pulled = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


def fail_commits(engine: Engine) -> Any:
    """Make every COMMIT on ``engine`` fail after strict mode wrote its documents (the
    listener runs after audit_mongo's own, as in tests/test_strict.py). Returns the listener
    for ``event.remove``."""

    def fail(connection: Any) -> None:
        raise RuntimeError("the database refused the COMMIT")

    event.listen(engine, "commit", fail)
    return fail
