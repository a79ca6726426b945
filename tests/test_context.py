"""``audit.context(...)`` puts metadata on a commit's documents; ``audit.disabled()`` records
nothing for a block. Both hold for the current thread or task only."""

from __future__ import annotations

import asyncio
import threading
import uuid
from decimal import Decimal
from typing import Any

from bson import Decimal128
from sqlalchemy import Engine, insert, update
from sqlalchemy.orm import Session

from audit_mongo import AuditLog
from tests.conftest import only, stored
from tests.models import Client


def test_a_commit_inside_a_context_block_carries_the_context(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    with audit.context(request_id="r-1", reason="GDPR erase"):
        session.add(Client(id=1, name="A"))
        session.commit()

    assert only(collection)["context"] == {"request_id": "r-1", "reason": "GDPR erase"}


def test_a_commit_outside_any_context_block_has_no_context_field(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    with audit.context(request_id="r-1"):
        pass
    session.add(Client(id=1, name="A"))
    session.commit()

    assert "context" not in only(collection)


def test_nested_blocks_merge_and_the_inner_value_wins_then_the_outer_comes_back(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    with audit.context(request_id="outer", job="nightly"):
        with audit.context(request_id="inner"):
            session.add(Client(id=1, name="A"))
            session.commit()
        session.add(Client(id=2, name="B"))
        session.commit()

    first, second = stored(collection)
    assert first["context"] == {"request_id": "inner", "job": "nightly"}
    assert second["context"] == {"request_id": "outer", "job": "nightly"}


def test_context_values_are_normalised_like_column_values(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    token = uuid.uuid4()
    with audit.context(token=token, amount=Decimal("9.99"), tags={"b", "a"}, **{"a.b": 1}):
        session.add(Client(id=1, name="A"))
        session.commit()

    context = only(collection)["context"]
    assert context["token"] == str(token)
    assert context["amount"] == Decimal128("9.99")
    assert context["tags"] == ["a", "b"]
    assert context["a\uff0eb"] == 1  # a dot escaped, as in JSON documents


def test_context_is_per_thread(audit: AuditLog, engine: Engine, collection: Any) -> None:
    inside = threading.Event()
    done = threading.Event()

    def other_thread() -> None:
        inside.wait(10)
        with Session(engine) as other:
            other.add(Client(id=2, name="other thread"))
            other.commit()
        done.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with audit.context(request_id="mine"), Session(engine) as session:
        session.add(Client(id=1, name="mine"))
        inside.set()
        done.wait(10)
        session.commit()
    thread.join(10)

    by_id = {d["object_id"]: d for d in stored(collection)}
    assert by_id[1]["context"] == {"request_id": "mine"}
    assert "context" not in by_id[2]


def test_context_is_per_asyncio_task(audit: AuditLog, engine: Engine, collection: Any) -> None:
    async def task(client_id: int, name: str) -> None:
        with audit.context(task=name):
            await asyncio.sleep(0.01)  # the other task enters its block meanwhile
            with Session(engine) as session:
                session.add(Client(id=client_id, name=name))
                session.commit()

    async def both() -> None:
        await asyncio.gather(task(1, "a"), task(2, "b"))

    asyncio.run(both())
    by_id = {d["object_id"]: d["context"] for d in stored(collection)}
    assert by_id == {1: {"task": "a"}, 2: {"task": "b"}}


def test_context_is_read_when_the_commit_starts_not_when_rows_were_flushed(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    session.add(Client(id=1, name="A"))
    session.flush()
    with audit.context(request_id="at-commit"):
        session.commit()

    assert only(collection)["context"] == {"request_id": "at-commit"}


# -- disabled() ------------------------------------------------------------------------


def test_nothing_flushed_inside_a_disabled_block_is_recorded(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    with audit.disabled():
        session.add(Client(id=1, name="fixture"))
        session.commit()
    client = session.get(Client, 1)
    assert client is not None
    client.name = "recorded"
    session.commit()

    document = only(collection)
    assert document["action"] == "update"
    assert document["changes"]["name"] == {"added": ["recorded"], "deleted": ["fixture"]}


def test_bulk_statements_inside_a_disabled_block_are_not_recorded(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    with audit.disabled():
        session.execute(insert(Client), [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
        session.execute(update(Client).values(name="c"))
        session.commit()
    session.execute(update(Client).where(Client.id == 1).values(name="d"))
    session.commit()

    assert [(d["action"], d["object_id"]) for d in stored(collection)] == [("update", 1)]


def test_a_change_made_in_the_block_but_flushed_after_it_is_recorded(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    with audit.disabled():
        session.add(Client(id=1, name="late"))
    session.commit()

    assert only(collection)["action"] == "create"


def test_disabled_works_as_a_decorator(audit: AuditLog, session: Session, collection: Any) -> None:
    @audit.disabled()
    def load_fixtures() -> None:
        session.add(Client(id=1, name="fixture"))
        session.commit()

    load_fixtures()
    session.add(Client(id=2, name="real"))
    session.commit()

    assert [d["object_id"] for d in stored(collection)] == [2]


def test_disabled_is_per_thread(audit: AuditLog, engine: Engine, collection: Any) -> None:
    inside = threading.Event()
    done = threading.Event()

    def other_thread() -> None:
        inside.wait(10)
        with Session(engine) as other:
            other.add(Client(id=2, name="other thread"))
            other.commit()
        done.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with audit.disabled(), Session(engine) as session:
        inside.set()
        done.wait(10)
        session.add(Client(id=1, name="mine"))
        session.commit()
    thread.join(10)

    assert [d["object_id"] for d in stored(collection)] == [2]


def test_core_statements_inside_a_disabled_block_are_not_recorded(
    collection: Any, engine: Engine
) -> None:
    audit = AuditLog(collection, core_statements=True)
    audit.track(Client)
    try:
        with audit.disabled(), engine.begin() as connection:
            connection.execute(insert(Client), [{"id": 1, "name": "a"}])
        with engine.begin() as connection:
            connection.execute(insert(Client), [{"id": 2, "name": "b"}])
    finally:
        audit.close()

    assert [d["object_id"] for d in stored(collection)] == [2]


def test_the_query_api_gives_the_context_back_with_its_keys_as_written(
    audit: AuditLog, session: Session
) -> None:
    with audit.context(request_id="r-9", **{"a.b": 1, "$note": "x"}):
        session.add(Client(id=1, name="A"))
        session.commit()

    (entry,) = audit.for_request("r-9")
    assert dict(entry.context) == {"request_id": "r-9", "a.b": 1, "$note": "x"}
