"""An AsyncSession records the same documents as a sync session."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import create_engine, delete, insert, text, update
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from audit_mongo import AuditLog
from tests.conftest import stored
from tests.models import Base, Client, Manager


def test_async_session_records_create_update_and_delete(
    audit: AuditLog, tmp_path: Any, collection: Any
) -> None:
    async def main() -> int:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'async.db'}")
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        async with AsyncSession(engine) as session:
            client = Client(name="old", phone="1")
            session.add(client)
            await session.flush()
            client_id = client.id
            await session.commit()
            client.name = "new"  # expired by the commit: the old value is read in the flush
            await session.commit()
            await session.delete(client)
            await session.commit()
        await engine.dispose()
        return client_id

    client_id = asyncio.run(main())

    documents = stored(collection)
    assert [(d["action"], d["object_id"]) for d in documents] == [
        ("create", client_id),
        ("update", client_id),
        ("delete", client_id),
    ]
    assert documents[1]["changes"] == {"name": {"added": ["new"], "deleted": ["old"]}}
    assert documents[2]["changes"]["name"] == {"added": [], "deleted": ["new"]}
    assert documents[2]["changes"]["phone"] == {"added": [], "deleted": ["1"]}


def comparable(collection: Any) -> list[tuple[Any, ...]]:
    return [
        (d["action"], d["table_name"], d["object_id"], d["changes"], d.get("entity"))
        for d in stored(collection)
    ]


def scenario(session: Any) -> list[Any]:
    """One run of every capture path, as steps a sync or an async session can take."""
    return [
        lambda: session.add_all([Client(name="a", phone="1"), Manager(name="m", budget=1)]),
        lambda: session.execute(insert(Client), [{"name": "b"}, {"name": "c"}]),
        lambda: session.execute(update(Client).where(Client.name != "a").values(phone="2")),
        lambda: session.execute(update(Manager).values(budget=Manager.budget + 1)),
        lambda: session.execute(delete(Client).where(Client.name == "c")),
    ]


def test_async_session_records_what_a_sync_session_records(
    audit: AuditLog, tmp_path: Any, collection: Any
) -> None:
    sync_engine = create_engine(f"sqlite:///{tmp_path / 'sync.db'}")
    Base.metadata.create_all(sync_engine)
    with Session(sync_engine) as session:
        for step in scenario(session):
            step()
        session.commit()
    sync_engine.dispose()
    from_sync = comparable(collection)
    collection.delete_many({})

    async def main() -> None:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'async.db'}")
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        async with AsyncSession(engine) as session:
            for step in scenario(session):
                result = step()
                if asyncio.iscoroutine(result):
                    await result
            await session.commit()
        await engine.dispose()

    asyncio.run(main())

    # c was created and deleted in the transaction; the manager's update nets into its create
    assert [(a, t, e) for a, t, _, _, e in from_sync] == [
        ("create", "clients", None),
        ("create", "employees", "Manager"),
        ("create", "clients", None),
    ]
    assert from_sync[1][3]["budget"] == {"added": [2], "deleted": []}
    assert comparable(collection) == from_sync


class RefusesAndLooksAtTheOutbox:
    """Refuses every write, noting how many outbox rows exist when the write is tried."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.outbox_rows: list[int] = []

    def insert_many(self, documents: Any, ordered: bool = True) -> None:
        from pymongo.errors import OperationFailure

        with self.engine.connect() as conn:
            self.outbox_rows.append(conn.scalar(text("SELECT count(*) FROM audit_mongo_outbox")))
        raise OperationFailure("not authorized", code=13)


def test_an_async_session_writes_its_outbox_rows_in_its_own_transaction(
    tmp_path: Any, collection: Any
) -> None:
    path = tmp_path / "async.db"
    sync_engine = create_engine(f"sqlite:///{path}")  # the outbox: same database, sync driver
    Base.metadata.create_all(sync_engine)
    mongo = RefusesAndLooksAtTheOutbox(sync_engine)
    audit = AuditLog(mongo, outbox=sync_engine)
    audit.track(Client)

    async def main() -> None:
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        async with AsyncSession(engine) as session:
            session.add(Client(name="kept"))
            await session.commit()
            session.add(Client(name="rolled back"))
            await session.flush()
            await session.rollback()
        await engine.dispose()

    try:
        asyncio.run(main())
        assert mongo.outbox_rows == [1]  # committed with the data, before the Mongo write
        assert audit.pending() == 1
    finally:
        audit.close()
    delivering = AuditLog(collection, outbox=sync_engine)
    try:
        assert delivering.deliver_pending() == 1
    finally:
        delivering.close()
    assert [d["changes"]["name"]["added"] for d in stored(collection)] == [["kept"]]
