"""A row walk followed back through a primary key change stops where an earlier row left
the old key (found by mutation testing of row_history.walk after its floor was made per
key and per row). Logs are written by real ORM sessions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session

from audit_mongo import AuditLog
from tests.models import Client
from tests.query_helpers import Clock, new_log, saved


@pytest.fixture
def audit(collection: Any) -> Iterator[AuditLog]:
    log = new_log(collection)
    yield log
    log.close()


def test_a_walk_back_to_an_old_key_stops_where_an_earlier_row_left_that_key(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    earlier = Client(id=1, name="earlier")
    saved(session, earlier)
    earlier.id = 5  # leaves key 1
    session.commit()
    with audit.disabled():  # the log misses this row's create at key 1
        saved(session, Client(id=1, name="A"))
    row = session.get(Client, 1)
    assert row is not None
    row.name = "A2"
    session.commit()
    row.id = 2  # and moves it on: its history continues under key 1
    session.commit()

    def rows(entries: Any) -> list[tuple[str, Any, Any]]:
        return [
            (e.action, e.object_id, e.changes["name"].new if "name" in e.changes else None)
            for e in entries
        ]

    # not the earlier row's create under key 1
    assert rows(audit.history(row)) == [("update", 2, None), ("update", 1, "A2")]
    assert [(e.action, e.object_id) for e in audit.for_object(Client, 2)] == [
        ("update", 2),
        ("update", 1),
    ]
