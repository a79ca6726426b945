"""``current_user_id``: acting_as() for a block, else user_loader, else null."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from audit_mongo import AuditLog
from tests.conftest import only, stored
from tests.models import Base, Client, Untracked


def test_acting_as_attributes_the_commit(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    session.add(Client(name="a"))
    with audit.acting_as(42):
        session.commit()

    assert only(collection)["current_user_id"] == 42


def test_user_loader_is_used_when_nobody_is_acting(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    audit.user_loader = lambda: "u-7"
    session.add(Client(name="a"))
    session.commit()
    session.add(Client(name="b"))
    with audit.acting_as(1):  # acting_as wins over the loader
        session.commit()

    assert [d["current_user_id"] for d in stored(collection)] == ["u-7", 1]


def test_user_loader_may_load_from_the_session_on_every_commit(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    admin = Client(name="admin")
    session.add(admin)
    session.commit()
    admin_id = admin.id
    audit.user_loader = lambda: admin.id  # expired by each commit: loading it runs SQL

    session.add(Client(name="first"))
    session.commit()
    session.add(Client(name="second"))
    session.commit()

    assert [d["current_user_id"] for d in stored(collection)[1:]] == [admin_id, admin_id]


def test_user_loader_may_load_when_a_begin_block_ends_with_a_savepoint_open(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    admin = Client(name="admin")
    session.add(admin)
    session.commit()
    admin_id = admin.id  # loads it, which begins a transaction
    session.commit()  # ends it, and expires admin again
    audit.user_loader = lambda: admin.id  # expired: loading it runs SQL

    with session.begin():
        session.begin_nested()
        session.add(Client(name="in a savepoint"))

    assert stored(collection)[-1]["current_user_id"] == admin_id


def test_user_loader_is_asked_only_for_commits_that_record_something(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    calls: list[int] = []
    audit.user_loader = lambda: calls.append(1) or 9
    client = Client(name="a")
    session.add(client)
    session.commit()
    session.add(Untracked(label="not audited"))
    session.commit()
    client.name = "a"  # no net change
    session.commit()
    session.commit()  # nothing at all

    assert len(calls) == 1
    assert [d["current_user_id"] for d in stored(collection)] == [9]


def test_a_failing_user_loader_records_null_and_the_commit_succeeds(
    audit: AuditLog, session: Session, collection: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def no_request() -> Any:
        raise RuntimeError("working outside of request context")

    audit.user_loader = no_request
    session.add(Client(name="a"))
    with caplog.at_level(logging.WARNING, logger="audit_mongo"):
        session.commit()

    assert only(collection)["current_user_id"] is None
    assert "user_loader failed; recording current_user_id as null (RuntimeError)" in caplog.text


def test_a_mapped_object_acts_through_its_primary_key(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    admin = Client(name="admin")
    session.add(admin)
    session.commit()
    session.add(Client(name="b"))
    with audit.acting_as(admin):
        session.commit()

    assert stored(collection)[-1]["current_user_id"] == admin.id


def test_acting_as_none_overrides_the_loader(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    audit.user_loader = lambda: 5
    session.add(Client(name="a"))
    with audit.acting_as(None):
        session.commit()

    assert only(collection)["current_user_id"] is None


def test_acting_as_is_per_thread(audit: AuditLog, engine: Engine, collection: Any) -> None:
    both_inside = threading.Barrier(2)

    def work(user_id: int) -> None:
        with Session(engine) as s, audit.acting_as(user_id):
            s.add(Client(name=f"by {user_id}"))
            both_inside.wait(timeout=10)  # the other thread is acting as someone else now
            s.commit()

    threads = [threading.Thread(target=work, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    by_user = {d["current_user_id"]: d["changes"]["name"]["added"][0] for d in stored(collection)}
    assert by_user == {1: "by 1", 2: "by 2"}


def test_acting_as_is_per_asyncio_task(audit: AuditLog, tmp_path: Any, collection: Any) -> None:
    async def main() -> None:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'async.db'}")
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        both_inside = asyncio.Barrier(2)

        async def work(user_id: int) -> None:
            async with AsyncSession(engine) as s:
                with audit.acting_as(user_id):
                    s.add(Client(name=f"by {user_id}"))
                    await both_inside.wait()
                    await s.commit()

        await asyncio.gather(work(1), work(2))
        await engine.dispose()

    asyncio.run(main())

    by_user = {d["current_user_id"]: d["changes"]["name"]["added"][0] for d in stored(collection)}
    assert by_user == {1: "by 1", 2: "by 2"}
