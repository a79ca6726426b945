"""An AsyncSession records the same documents as a sync session."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from audit_mongo import AuditLog
from tests.conftest import stored
from tests.models import Base, Client


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
