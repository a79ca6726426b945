"""``audit.context(...)`` puts metadata on a commit's documents; ``audit.disabled()`` records
nothing for a block. Both hold for the current thread or task only."""

from __future__ import annotations

import asyncio
import inspect
import threading
import uuid
from decimal import Decimal
from typing import Any

import pytest
from bson import Decimal128
from sqlalchemy import Engine, insert, update
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from audit_mongo import AuditLog
from tests.conftest import only, stored
from tests.models import Base, Client


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


def test_a_decorated_coroutine_function_records_nothing_while_a_concurrent_task_records(
    audit: AuditLog, engine: Engine, collection: Any
) -> None:
    def commit(client_id: int, name: str) -> None:
        with Session(engine) as session:
            session.add(Client(id=client_id, name=name))
            session.commit()

    @audit.disabled()
    async def load_fixtures(entered: asyncio.Event, other_done: asyncio.Event) -> str:
        entered.set()
        await other_done.wait()  # still off after an await: the other task committed meanwhile
        commit(1, "fixture")
        return "loaded"

    async def real(entered: asyncio.Event, other_done: asyncio.Event) -> None:
        await entered.wait()  # the decorated coroutine is running, suspended in its await
        commit(2, "real")
        other_done.set()

    async def main() -> list[Any]:
        entered, other_done = asyncio.Event(), asyncio.Event()
        results = await asyncio.gather(
            load_fixtures(entered, other_done), real(entered, other_done)
        )
        commit(3, "after")  # the task that awaited it records again
        return results

    assert asyncio.run(main()) == ["loaded", None]
    assert [d["object_id"] for d in stored(collection)] == [2, 3]
    assert inspect.iscoroutinefunction(load_fixtures)
    assert load_fixtures.__name__ == "load_fixtures"


def test_a_decorated_coroutine_function_committing_an_async_session_records_nothing(
    audit: AuditLog, tmp_path: Any, collection: Any
) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'async.db'}")

    async def commit(client_id: int, name: str) -> None:
        async with AsyncSession(engine) as session:
            session.add(Client(id=client_id, name=name))
            await session.commit()  # awaits the driver: other tasks run meanwhile

    @audit.disabled()
    async def load_fixtures(entered: asyncio.Event, other_done: asyncio.Event) -> None:
        entered.set()
        await other_done.wait()
        await commit(1, "fixture")

    async def real(entered: asyncio.Event, other_done: asyncio.Event) -> None:
        await entered.wait()
        await commit(2, "real")
        other_done.set()

    async def main() -> None:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        entered, other_done = asyncio.Event(), asyncio.Event()
        await asyncio.gather(load_fixtures(entered, other_done), real(entered, other_done))
        await commit(3, "after")
        await engine.dispose()

    asyncio.run(main())
    assert [d["object_id"] for d in stored(collection)] == [2, 3]


def test_disabled_works_as_an_async_with_block(
    audit: AuditLog, engine: Engine, collection: Any
) -> None:
    async def main() -> None:
        async with audit.disabled():
            await asyncio.sleep(0)
            assert not audit.recording
            with Session(engine) as session:
                session.add(Client(id=1, name="fixture"))
                session.commit()
        assert audit.recording
        with Session(engine) as session:
            session.add(Client(id=2, name="real"))
            session.commit()

    asyncio.run(main())
    assert [d["object_id"] for d in stored(collection)] == [2]


def test_recording_comes_back_when_a_decorated_function_raises(audit: AuditLog) -> None:
    @audit.disabled()
    def fails() -> None:
        assert not audit.recording
        raise KeyError("boom")

    @audit.disabled()
    async def fails_later() -> None:
        await asyncio.sleep(0)
        assert not audit.recording
        raise KeyError("boom")

    with pytest.raises(KeyError):
        fails()
    assert audit.recording
    with pytest.raises(KeyError):
        asyncio.run(fails_later())
    assert audit.recording


def test_one_disabled_object_nests_and_is_reused(audit: AuditLog) -> None:
    quiet = audit.disabled()
    with quiet:
        with quiet, audit.disabled():
            assert not audit.recording
        assert not audit.recording  # the outer block still holds
    assert audit.recording
    with quiet:
        assert not audit.recording
    assert audit.recording


def test_blocks_left_out_of_order_switch_recording_back_on_after_the_last(
    audit: AuditLog,
) -> None:
    first, second = audit.disabled(), audit.disabled()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not audit.recording
    second.__exit__(None, None, None)
    assert audit.recording


def test_a_coroutine_returned_by_a_plain_function_runs_with_recording_off(
    audit: AuditLog,
) -> None:
    seen: list[bool] = []

    async def body() -> int:
        await asyncio.sleep(0)
        seen.append(audit.recording)
        return 7

    class Loader:  # a callable whose __call__ is not seen as a coroutine function
        def __call__(self) -> Any:
            return body()

    assert asyncio.run(audit.disabled()(Loader())()) == 7
    assert seen == [False]


def test_disabled_refuses_to_decorate_a_generator_function(audit: AuditLog) -> None:
    def rows() -> Any:
        yield 1

    async def stream() -> Any:
        yield 1

    with pytest.raises(TypeError, match=r"cannot decorate the generator function .*rows"):
        audit.disabled()(rows)
    with pytest.raises(TypeError, match="use a `with` block inside it"):
        audit.disabled()(stream)


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
