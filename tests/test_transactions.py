"""Documents are written only for committed work, one per row, carrying the net change."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from audit_mongo import AuditLog
from tests.conftest import only, stored
from tests.models import Client


def committed_client(session: Session, **values: Any) -> Client:
    client = Client(**values)
    session.add(client)
    session.commit()
    return client


def test_nothing_is_written_before_the_commit(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    session.add(Client(name="a"))
    session.flush()

    assert stored(collection) == []
    assert [c.action for c in audit.uncommitted_changes(session)] == ["create"]
    session.commit()
    assert len(stored(collection)) == 1
    assert audit.uncommitted_changes(session) == []


def test_rolled_back_work_writes_nothing(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    session.add(Client(name="a"))
    session.flush()
    session.rollback()
    session.commit()

    assert stored(collection) == []


def test_closing_a_session_without_commit_writes_nothing(
    audit: AuditLog, engine: Any, collection: Any
) -> None:
    with Session(engine) as s:
        s.add(Client(name="a"))
        s.flush()

    assert stored(collection) == []


@pytest.mark.parametrize("in_savepoint", [False, True], ids=["transaction", "savepoint"])
@pytest.mark.parametrize("fails_in", ["flush", "commit"])
def test_a_failed_flush_leaves_nothing_behind(
    audit: AuditLog, session: Session, collection: Any, in_savepoint: bool, fails_in: str
) -> None:
    committed_client(session, name="a", email="dup@example.com")
    savepoint = session.begin_nested() if in_savepoint else None
    session.add(Client(name="b", email="dup@example.com"))
    with pytest.raises(IntegrityError):
        if fails_in == "flush":
            session.flush()
        else:
            (savepoint or session).commit()
    (savepoint or session).rollback()
    session.add(Client(name="c"))
    session.commit()

    assert [d["changes"]["name"]["added"] for d in stored(collection)] == [["a"], ["c"]]


def test_rolled_back_savepoint_drops_exactly_its_changes(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    kept = committed_client(session, name="kept")
    collection.delete_many({})
    kept.name = "outer edit"
    savepoint = session.begin_nested()
    kept.phone = "inner edit"
    session.add(Client(name="inner insert"))
    session.flush()
    savepoint.rollback()
    assert [c.action for c in audit.uncommitted_changes(session)] == ["update"]
    session.add(Client(name="outer insert"))
    session.commit()

    documents = stored(collection)
    assert [(d["action"], d["changes"].get("name")) for d in documents] == [
        ("update", {"added": ["outer edit"], "deleted": ["kept"]}),
        ("create", {"added": ["outer insert"], "deleted": []}),
    ]


def test_released_savepoint_writes_nothing_until_the_outer_commit(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    with session.begin_nested():
        session.add(Client(name="inner"))
    assert stored(collection) == []
    session.commit()

    assert only(collection)["changes"]["name"]["added"] == ["inner"]


def test_released_savepoint_then_outer_rollback_writes_nothing(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    with session.begin_nested():
        session.add(Client(name="inner"))
    session.rollback()
    session.commit()

    assert stored(collection) == []


def test_nested_savepoints_merge_into_their_parents(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    client = committed_client(session, name="v0")
    collection.delete_many({})
    with session.begin_nested():
        client.name = "v1"
        with session.begin_nested():
            client.name = "v2"
        inner = session.begin_nested()
        client.name = "discarded"
        session.flush()
        inner.rollback()
    session.commit()

    assert only(collection)["changes"] == {"name": {"added": ["v2"], "deleted": ["v0"]}}


def test_outer_rollback_with_an_open_savepoint_writes_nothing(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    session.begin_nested()
    session.add(Client(name="x"))
    session.flush()
    session.rollback()
    session.commit()

    assert stored(collection) == []


def test_insert_then_update_is_one_create_with_final_values(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    client = Client(name="draft", phone="1")
    session.add(client)
    session.flush()
    client.name = "final"
    client.phone = None
    session.flush()
    client.email = "e@example.com"
    session.commit()

    document = only(collection)
    assert document["action"] == "create"
    assert document["changes"] == {
        "id": {"added": [client.id], "deleted": []},
        "name": {"added": ["final"], "deleted": []},
        "email": {"added": ["e@example.com"], "deleted": []},
    }


def test_insert_then_delete_leaves_nothing(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    client = Client(name="temp")
    session.add(client)
    session.flush()
    session.delete(client)
    session.commit()

    assert stored(collection) == []


def test_update_then_delete_is_one_delete_with_values_from_before(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    client = committed_client(session, name="original", phone="1")
    collection.delete_many({})
    client.name = "edited"
    session.flush()
    session.delete(client)
    session.commit()

    document = only(collection)
    assert document["action"] == "delete"
    assert document["changes"]["name"] == {"added": [], "deleted": ["original"]}
    assert document["changes"]["phone"] == {"added": [], "deleted": ["1"]}


def test_two_updates_across_flushes_are_one_update_first_old_to_last_new(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    client = committed_client(session, name="a", phone="1")
    collection.delete_many({})
    client.name = "b"
    session.flush()
    client.name = "c"
    client.phone = "2"
    session.flush()
    client.phone = "1"  # back to where it started: no net change
    session.commit()

    assert only(collection)["changes"] == {"name": {"added": ["c"], "deleted": ["a"]}}


def test_updates_that_cancel_out_write_nothing(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    client = committed_client(session, name="a")
    collection.delete_many({})
    client.name = "b"
    session.flush()
    client.name = "a"
    session.commit()

    assert stored(collection) == []


def test_delete_then_reinsert_of_the_same_key_is_one_update(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    client = committed_client(session, name="old", phone="1")
    client_id = client.id
    collection.delete_many({})
    session.delete(client)
    session.flush()
    session.add(Client(id=client_id, name="new", phone="1"))
    session.commit()

    document = only(collection)
    assert document["action"] == "update"
    assert document["object_id"] == client_id
    assert document["changes"] == {"name": {"added": ["new"], "deleted": ["old"]}}
