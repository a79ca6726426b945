"""Fixtures: an audit collection (mongomock, or the server in AUDIT_MONGO_TEST_URI), a SQLite
engine with the test models, and an ``AuditLog`` wired both ways users wire it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import bson
import pytest
from sqlalchemy import Engine, MetaData, create_engine, event, text
from sqlalchemy.orm import Session

from audit_mongo import AuditLog
from tests.models import (
    Account,
    Article,
    Base,
    Client,
    Country,
    Device,
    Employee,
    Engineer,
    LegacyItem,
    Manager,
    Membership,
    Node,
    Sample,
    Stamped,
    Tag,
)

TRACKED = (
    Client,
    Account,
    Sample,
    Membership,
    Device,
    Country,
    Article,
    Tag,
    Employee,
    Manager,
    Engineer,
    Stamped,
    LegacyItem,
    Node,
)
pytest_plugins = ["tests.query_helpers"]  # the clock fixture of the query tests

MAPPER_EVENTS = ("before_insert", "before_update", "before_delete")
REAL_MONGO_URI = os.environ.get("AUDIT_MONGO_TEST_URI")
POSTGRES_URL = os.environ.get("AUDIT_TEST_POSTGRES_URL")


def make_collection() -> tuple[Any, Any]:
    """A fresh, empty audit collection and the client that owns it."""
    name = f"user_logs_{uuid.uuid4().hex[:12]}"
    if REAL_MONGO_URI:
        from pymongo import MongoClient

        client: Any = MongoClient(REAL_MONGO_URI, tz_aware=True, serverSelectionTimeoutMS=5000)
        return client, client.get_default_database("audit_mongo_test")[name]
    import mongomock

    client = mongomock.MongoClient(tz_aware=True)
    return client, client["audit_mongo_test"][name]


@pytest.fixture
def collection() -> Iterator[Any]:
    client, coll = make_collection()
    yield coll
    coll.drop()
    client.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Engine]:
    """The application database: a SQLite file, and PostgreSQL when configured."""
    yield from engine_of(request.param, tmp_path, Base.metadata)


def engine_of(kind: str, tmp_path: Any, metadata: MetaData) -> Iterator[Engine]:
    """A SQLite file, or a PostgreSQL schema of its own, with ``metadata``'s tables."""
    if kind == "sqlite":
        eng = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
        metadata.create_all(eng)
        yield eng
        eng.dispose()
    else:
        yield from postgresql_engine(metadata)


def postgresql_engine(metadata: MetaData = Base.metadata, options: str = "") -> Iterator[Engine]:
    """An engine on a schema of its own in the server AUDIT_TEST_POSTGRES_URL names, with
    ``metadata``'s tables and ``options`` for each connection (``-c name=value ...``)."""
    if not POSTGRES_URL:
        pytest.skip(
            "PostgreSQL not configured: set AUDIT_TEST_POSTGRES_URL (.ci/postgres starts one)"
        )
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    connect_options = f"-c search_path={schema} {options}".strip()
    eng = create_engine(POSTGRES_URL, connect_args={"options": connect_options})
    metadata.create_all(eng)
    try:
        yield eng
    finally:
        eng.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def wire_like_the_blog_post(audit: AuditLog, models: tuple[type, ...]) -> list[tuple[Any, ...]]:
    receivers = (
        audit.receive_before_insert,
        audit.receive_before_update,
        audit.receive_before_delete,
    )
    wired = []
    for model in models:
        for name, receiver in zip(MAPPER_EVENTS, receivers, strict=True):
            event.listen(model, name, receiver)
            wired.append((model, name, receiver))
    return wired


@pytest.fixture(params=["track", "event.listen"])
def audit(request: pytest.FixtureRequest, collection: Any) -> Iterator[AuditLog]:
    """An AuditLog on the test models, wired with track() or with the blog post's event.listen."""
    log = AuditLog(collection)
    wired: list[tuple[Any, ...]] = []
    if request.param == "track":
        for model in TRACKED:
            log.track(model)
    else:
        wired = wire_like_the_blog_post(log, TRACKED)
    yield log
    log.close()
    for target, name, receiver in wired:
        event.remove(target, name, receiver)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    """A thread to run pymongo calls in while a test scripts a mockupdb server: mockupdb's own
    go() re-raises errors as exctype(str(value)), a plain pool keeps them real."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        yield executor


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as s:
        yield s


def stored(collection: Any, **query: Any) -> list[dict[str, Any]]:
    """Every audit document, oldest first; each is checked to pass ``bson.encode``."""
    documents = list(collection.find(query).sort([("created_at", 1), ("_id", 1)]))
    for document in documents:
        bson.encode(document)
    return documents


def only(collection: Any, **query: Any) -> dict[str, Any]:
    documents = stored(collection, **query)
    assert len(documents) == 1, documents
    return documents[0]
