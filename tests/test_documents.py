"""The document each committed row change produces (schema version 1)."""

from __future__ import annotations

import datetime as dt
import logging
import math
import uuid
from decimal import Decimal
from typing import Any

import pytest
from bson import ObjectId
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from audit_mongo import AuditLog, capture, document
from audit_mongo.document import ObjectIdSequence
from audit_mongo.flush_reads import OldValueReader
from tests.conftest import only, stored
from tests.models import Account, Client, Country, Device, Membership, Sample, Untracked


def test_create_records_the_autoincrement_id_and_every_non_null_column(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    client = Client(name="Company A", email="a@example.com")
    session.add(client)
    session.commit()

    document = only(collection)
    assert document["action"] == "create"
    assert document["table_name"] == "clients"
    assert document["object_id"] == client.id
    assert isinstance(document["object_id"], int)
    assert document["changes"] == {
        "id": {"added": [client.id], "deleted": []},
        "name": {"added": ["Company A"], "deleted": []},
        "email": {"added": ["a@example.com"], "deleted": []},
    }


def test_document_carries_metadata_and_fixed_field_names(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    session.add(Client(name="A"))
    session.commit()

    document = only(collection)
    assert set(document) == {
        "_id",
        "current_user_id",
        "action",
        "table_name",
        "object_id",
        "changes",
        "created_at",
        "transaction_id",
        "schema_version",
        "chain",
    }
    assert set(document["chain"]) == {"id", "seq", "hash"}  # first link; unsigned
    assert isinstance(document["_id"], ObjectId)
    assert document["current_user_id"] is None
    assert document["schema_version"] == 1
    assert isinstance(document["transaction_id"], str)
    uuid.UUID(document["transaction_id"])
    created_at = document["created_at"]
    assert created_at.tzinfo is not None
    assert before <= created_at <= dt.datetime.now(dt.timezone.utc)


def test_update_records_only_attributes_whose_value_changed(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    client = Client(name="Company B", email="b@example.com", phone="1")
    session.add(client)
    session.commit()
    loaded = session.get(Client, client.id)
    assert loaded is not None
    loaded.name = "Company A"
    loaded.email = "b@example.com"  # same value: not a change
    session.commit()

    document = only(collection, action="update")
    assert document["object_id"] == client.id
    assert document["changes"] == {"name": {"added": ["Company A"], "deleted": ["Company B"]}}


def test_an_equal_value_of_another_type_is_not_a_change(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    sample = Sample(price=Decimal("10.00"), ratio=3.0)
    session.add(sample)
    session.commit()
    sample.price = 10  # equal to Decimal("10.00"): SQLAlchemy sends no UPDATE
    sample.ratio = 3
    sample.day = dt.date(2024, 1, 1)
    session.commit()

    assert only(collection, action="update")["changes"] == {
        "day": {"added": ["2024-01-01"], "deleted": [None]}
    }


def test_nan_set_again_is_not_a_change(audit: AuditLog, engine: Any, collection: Any) -> None:
    with Session(engine, expire_on_commit=False) as session:  # SQLite reads NaN back as NULL
        sample = Sample(ratio=math.nan)
        session.add(sample)
        session.commit()
        sample.ratio = float("nan")  # another NaN object: SQLAlchemy does send an UPDATE
        session.commit()

    assert [d["action"] for d in stored(collection)] == ["create"]


def test_update_of_an_expired_attribute_reads_the_old_value(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    client = Client(name="Old", phone="1")
    session.add(client)
    session.commit()  # expires every attribute
    client.name = "New"  # set without loading: SQLAlchemy does not know the old value
    session.commit()

    document = only(collection, action="update")
    assert document["changes"] == {"name": {"added": ["New"], "deleted": ["Old"]}}


def change_sixty_expired_clients(session: Session, engine: Any, label: str) -> int:
    """Update 30 and delete 30 clients without loading them; return the SELECTs sent."""
    clients = [Client(name=f"{label}{i}", phone=str(i)) for i in range(60)]
    session.add_all(clients)
    session.commit()  # expires every attribute of every client
    selects: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        for i, client in enumerate(clients[:30]):
            client.name = f"new{i}"  # set without loading: the old value is unknown
        for client in clients[30:]:
            session.delete(client)
        session.commit()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return len(selects)


@pytest.mark.parametrize(("chunk", "extra_selects"), [(500, 2), (7, 10)])
def test_old_values_never_loaded_cost_one_select_per_table_per_flush(
    audit: AuditLog,
    session: Session,
    collection: Any,
    engine: Any,
    monkeypatch: pytest.MonkeyPatch,
    chunk: int,
    extra_selects: int,
) -> None:
    monkeypatch.setattr(OldValueReader, "CHUNK", chunk)  # 30 rows: 1 or 5 chunks a table
    audited = change_sixty_expired_clients(session, engine, "old")
    documents = stored(collection)[60:]
    audit.close()
    unaudited = change_sixty_expired_clients(session, engine, "x")

    assert audited - unaudited == extra_selects  # the same for the updates and the deletes
    updates = [d for d in documents if d["action"] == "update"]
    deletes = [d for d in documents if d["action"] == "delete"]
    assert len(updates) == len(deletes) == 30
    assert all(d["changes"]["name"]["deleted"] == [f"old{i}"] for i, d in enumerate(updates))
    assert all(d["changes"]["phone"]["deleted"] == [str(i + 30)] for i, d in enumerate(deletes))


def test_old_values_are_read_for_keys_the_database_returns_padded(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    session.add_all([Country(code="US", name="USA"), Country(code="FR", name="France")])
    session.commit()
    us = session.get(Country, "US")
    assert us is not None
    session.expire(us)
    us.name = "United States"
    session.commit()

    assert only(collection, action="update")["changes"] == {
        "name": {"added": ["United States"], "deleted": ["USA"]}
    }


def test_an_old_value_that_cannot_be_read_is_marked_and_the_commit_succeeds(
    audit: AuditLog,
    session: Session,
    collection: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = Client(name="old")
    session.add(client)
    session.commit()

    def failing_select(self: Any, mapper: Any, chunk: Any, keys: Any, connection: Any) -> None:
        connection.execute(text("SELECT no_such_column FROM clients"))  # a real SQL error

    monkeypatch.setattr(OldValueReader, "_select", failing_select)
    client.name = "new"  # expired: the old value must be read, and the read fails
    with caplog.at_level(logging.ERROR, logger="audit_mongo"):
        session.commit()

    assert session.scalar(select(Client.name)) == "new"  # the application's commit went through
    assert only(collection, action="update")["changes"] == {
        "name": {"added": ["new"], "deleted": [{"omitted": "could not be read"}]}
    }
    assert "could not read the old values of 1 rows of clients" in caplog.text


def test_a_row_that_cannot_be_captured_does_not_lose_the_others(
    audit: AuditLog,
    session: Session,
    collection: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    row_change = capture._row_change

    def broken_for_accounts(state: Any, note: Any, *rest: Any) -> Any:
        if note.info.table_name == "accounts":
            raise RuntimeError("a defect")
        return row_change(state, note, *rest)

    monkeypatch.setattr(capture, "_row_change", broken_for_accounts)
    session.add_all([Client(name="kept"), Account(login="lost")])
    with caplog.at_level(logging.ERROR, logger="audit_mongo"):
        session.commit()

    assert [d["table_name"] for d in stored(collection)] == ["clients"]
    assert "a create in accounts could not be captured" in caplog.text
    assert session.scalar(select(Account.login)) == "lost"  # the application's data is there


def test_setting_an_expired_attribute_to_its_stored_value_writes_nothing(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    client = Client(name="Same")
    session.add(client)
    session.commit()
    client.name = "Same"
    session.commit()

    assert [d["action"] for d in stored(collection)] == ["create"]


def test_update_to_null_and_from_null_is_recorded(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    client = Client(name="A", phone="555")
    session.add(client)
    session.commit()
    client.phone = None
    client.email = "x@example.com"
    session.commit()

    document = only(collection, action="update")
    assert document["changes"] == {
        "phone": {"added": [None], "deleted": ["555"]},
        "email": {"added": ["x@example.com"], "deleted": [None]},
    }


def test_delete_records_every_column_including_nulls(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    client = Client(name="Gone", email="g@example.com")
    session.add(client)
    session.commit()
    client_id = client.id
    session.delete(client)  # every attribute is expired by the commit above
    session.commit()

    document = only(collection, action="delete")
    assert document["object_id"] == client_id
    assert document["changes"] == {
        "id": {"added": [], "deleted": [client_id]},
        "name": {"added": [], "deleted": ["Gone"]},
        "email": {"added": [], "deleted": ["g@example.com"]},
        "phone": {"added": [], "deleted": [None]},
    }


def test_delete_of_an_object_never_loaded_records_its_values(
    audit: AuditLog, engine: Any, collection: Any
) -> None:
    with Session(engine) as first:
        first.add(Account(login="ann", password="pw", notes="deferred text"))
        first.commit()
    with Session(engine) as second:
        account = second.scalars(select(Account)).one()  # `notes` is deferred, never loaded
        assert "notes" not in account.__dict__
        second.delete(account)
        second.commit()

    document = only(collection, action="delete")
    assert document["changes"]["notes"] == {"added": [], "deleted": ["deferred text"]}
    assert document["changes"]["login"] == {"added": [], "deleted": ["ann"]}


def test_delete_of_a_modified_object_records_the_stored_values(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    client = Client(name="Stored")
    session.add(client)
    session.commit()
    client.name = "Unsaved edit"
    session.delete(client)
    session.commit()

    document = only(collection, action="delete")
    assert document["changes"]["name"] == {"added": [], "deleted": ["Stored"]}


def test_attribute_keys_are_used_not_column_names(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    session.add(Account(login="bob"))
    session.commit()

    document = only(collection)
    assert "login" in document["changes"]
    assert "user_name" not in document["changes"]


def test_composite_primary_key_is_a_list_in_key_column_order(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    client = Client(name="M")
    session.add(client)
    session.flush()
    membership = Membership(group="admins", member_id=client.id, role="owner")
    session.add(membership)
    session.commit()
    membership.role = "member"
    session.commit()

    documents = stored(collection, table_name="memberships")
    assert [d["action"] for d in documents] == ["create", "update"]
    assert all(d["object_id"] == ["admins", client.id] for d in documents)


def test_uuid_primary_key_is_stored_as_its_string(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    device = Device(label="phone")
    session.add(device)
    session.commit()

    assert only(collection)["object_id"] == str(device.id)


def test_untracked_models_record_nothing(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    session.add(Untracked(label="x"))
    session.commit()

    assert stored(collection) == []


def test_documents_of_one_commit_share_time_and_transaction_in_change_order(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    first, second = Client(name="first"), Client(name="third")
    session.add(first)
    session.flush()
    session.add(Account(login="second"))
    session.flush()
    session.add(second)
    session.commit()

    documents = stored(collection)
    assert len(documents) == 3
    assert len({d["created_at"] for d in documents}) == 1
    assert len({d["transaction_id"] for d in documents}) == 1
    names = [d["changes"].get("name", d["changes"].get("login"))["added"][0] for d in documents]
    assert names == ["first", "second", "third"]


def test_ids_keep_build_order_across_the_counter_wrap_and_a_clock_step_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sequence = ObjectIdSequence(counter=(1 << 24) - 3)  # wraps after three ids
    now = [1_700_000_000.0]
    monkeypatch.setattr(document.time, "time", lambda: now[0])
    first = list(sequence.take(5))
    now[0] -= 3600  # the clock is set back an hour
    second = list(sequence.take(2))

    built = first + second
    assert sorted(built) == built
    assert len(set(built)) == len(built)
    assert all(i.generation_time.timestamp() == 1_700_000_000 for i in built)


def test_each_commit_gets_its_own_transaction_id(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    session.add(Client(name="a"))
    session.commit()
    session.add(Client(name="b"))
    session.commit()

    assert len({d["transaction_id"] for d in stored(collection)}) == 2
