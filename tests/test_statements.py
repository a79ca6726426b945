"""Statements that bypass mapper events: ORM bulk UPDATE / DELETE / INSERT, legacy Query and
bulk_* methods, and Core statements. Each changed row gets the same document the unit of work
would have written, once, under the same transaction rules."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, delete, event, insert, select, text, update
from sqlalchemy.orm import Session

from audit_mongo import AuditLog
from tests.conftest import only, stored
from tests.models import Account, Client, Membership, Untracked

SYNC_MODES = ["auto", "evaluate", "fetch", False]


def three_clients(session: Session) -> list[int]:
    clients = [Client(name=n, phone="1") for n in ("a", "b", "c")]
    session.add_all(clients)
    session.commit()
    return [c.id for c in clients]


def actions(collection: Any) -> list[tuple[str, Any]]:
    return [(d["action"], d["object_id"]) for d in stored(collection)]


@pytest.mark.parametrize("mode", SYNC_MODES)
def test_orm_update_statement_records_each_matched_row(
    audit: AuditLog, session: Session, collection: Any, mode: Any
) -> None:
    a, b, _ = three_clients(session)
    session.execute(
        update(Client).where(Client.name != "c").values(phone="2"),
        execution_options={"synchronize_session": mode},
    )
    session.commit()

    updates = stored(collection, action="update")
    assert sorted(d["object_id"] for d in updates) == [a, b]
    for document in updates:
        assert document["changes"] == {"phone": {"added": ["2"], "deleted": ["1"]}}
        assert document["table_name"] == "clients"


@pytest.mark.parametrize("mode", SYNC_MODES)
def test_orm_delete_statement_records_every_column_of_each_row(
    audit: AuditLog, session: Session, collection: Any, mode: Any
) -> None:
    a, _, _ = three_clients(session)
    session.execute(
        delete(Client).where(Client.name == "a"), execution_options={"synchronize_session": mode}
    )
    session.commit()

    document = only(collection, action="delete")
    assert document["object_id"] == a
    assert document["changes"] == {
        "id": {"added": [], "deleted": [a]},
        "name": {"added": [], "deleted": ["a"]},
        "email": {"added": [], "deleted": [None]},
        "phone": {"added": [], "deleted": ["1"]},
    }


def test_sql_expression_values_record_what_the_database_computed(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    account = Account(login="ann", password="7")
    session.add(account)
    session.commit()
    session.execute(update(Account).values(password=Account.password + "1"))
    session.commit()

    document = only(collection, action="update")
    assert document["changes"] == {"password": {"added": ["71"], "deleted": ["7"]}}


def test_update_returning_keeps_the_callers_rows(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    a, b, _ = three_clients(session)
    returned = session.execute(
        update(Client).where(Client.id.in_([a, b])).values(phone="9").returning(Client.id)
    ).all()
    session.commit()

    assert sorted(r.id for r in returned) == [a, b]
    assert sorted(d["object_id"] for d in stored(collection, action="update")) == [a, b]


def test_legacy_query_update_and_delete(audit: AuditLog, session: Session, collection: Any) -> None:
    a, b, _ = three_clients(session)
    session.query(Client).filter(Client.id == a).update({"name": "A"})
    session.query(Client).filter(Client.id == b).delete()
    session.commit()

    assert actions(collection)[3:] == [("update", a), ("delete", b)]
    assert only(collection, action="update")["changes"] == {
        "name": {"added": ["A"], "deleted": ["a"]}
    }


def test_orm_bulk_insert_records_the_generated_keys(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    session.execute(insert(Client), [{"name": "x", "phone": "1"}, {"name": "y"}])
    session.commit()

    ids = session.scalars(select(Client.id).order_by(Client.id)).all()
    documents = stored(collection)
    assert [(d["action"], d["object_id"]) for d in documents] == [("create", i) for i in ids]
    assert documents[0]["changes"] == {
        "id": {"added": [ids[0]], "deleted": []},
        "name": {"added": ["x"], "deleted": []},
        "phone": {"added": ["1"], "deleted": []},
    }


def test_orm_bulk_insert_with_returning_keeps_the_callers_objects(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    created = session.scalars(insert(Client).returning(Client), [{"name": "x"}, {"name": "y"}])
    names = sorted(c.name or "" for c in created)
    session.commit()

    assert names == ["x", "y"]
    assert len(stored(collection, action="create")) == 2


def test_orm_bulk_update_by_primary_key(audit: AuditLog, session: Session, collection: Any) -> None:
    a, _, c = three_clients(session)
    session.execute(update(Client), [{"id": a, "name": "A"}, {"id": c, "name": "C"}])
    session.commit()

    updates = stored(collection, action="update")
    assert [(d["object_id"], d["changes"]["name"]["added"]) for d in updates] == [
        (a, ["A"]),
        (c, ["C"]),
    ]


def test_legacy_bulk_methods(audit: AuditLog, session: Session, collection: Any) -> None:
    session.bulk_insert_mappings(Client, [{"name": "m1"}, {"name": "m2"}])  # type: ignore[arg-type]
    session.bulk_save_objects([Client(name="o1")])
    session.commit()
    ids = session.scalars(select(Client.id).order_by(Client.id)).all()
    session.bulk_update_mappings(Client, [{"id": ids[0], "phone": "5"}])  # type: ignore[arg-type]
    loaded = session.get(Client, ids[2])
    assert loaded is not None
    loaded.phone = "6"
    session.bulk_save_objects([loaded])
    session.commit()

    assert actions(collection) == [
        ("create", ids[0]),
        ("create", ids[1]),
        ("create", ids[2]),
        ("update", ids[0]),
        ("update", ids[2]),
    ]


def test_a_row_changed_by_the_flush_and_a_statement_gets_one_net_document(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    client = Client(name="new", phone="1")
    session.add(client)
    session.flush()
    session.execute(update(Client).where(Client.id == client.id).values(phone="2"))
    session.execute(update(Client).where(Client.id == client.id).values(name="newer"))
    session.commit()

    document = only(collection)
    assert document["action"] == "create"
    assert document["changes"]["phone"] == {"added": ["2"], "deleted": []}
    assert document["changes"]["name"] == {"added": ["newer"], "deleted": []}


def test_statements_follow_rollback_and_savepoints(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    a, b, _ = three_clients(session)
    session.execute(update(Client).values(phone="lost"))
    session.rollback()
    savepoint = session.begin_nested()
    session.execute(delete(Client).where(Client.id == a))
    savepoint.rollback()
    with session.begin_nested():
        session.execute(update(Client).where(Client.id == b).values(phone="kept"))
    session.commit()

    assert actions(collection)[3:] == [("update", b)]


def test_statements_on_untracked_tables_and_raw_sql_are_not_recorded(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    three_clients(session)
    session.execute(insert(Untracked), [{"label": "x"}])
    session.execute(text("UPDATE clients SET phone = 'raw'"))
    session.commit()

    assert [d["action"] for d in stored(collection)] == ["create"] * 3


def test_core_statements_through_a_session_are_recorded(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    a, _, _ = three_clients(session)
    table = Account.__table__
    session.execute(table.insert().values(user_name="core"))  # column name, not attribute key
    session.execute(Client.__table__.update().where(Client.id == a).values(name="core"))
    session.commit()

    created = only(collection, table_name="accounts")
    assert created["changes"]["login"] == {"added": ["core"], "deleted": []}
    assert only(collection, action="update")["object_id"] == a


def test_composite_key_statement(audit: AuditLog, session: Session, collection: Any) -> None:
    (a, *_) = three_clients(session)
    session.execute(insert(Membership), [{"group": "g", "member_id": a, "role": "r"}])
    session.execute(update(Membership).values(role="s"))
    session.commit()

    memberships = stored(collection, table_name="memberships")
    assert [(d["action"], d["object_id"]) for d in memberships] == [("create", ["g", a])]
    assert only(collection, table_name="memberships")["changes"]["role"]["added"] == ["s"]


def test_core_connections_are_recorded_only_when_asked(engine: Engine, collection: Any) -> None:
    quiet = AuditLog(collection)
    quiet.track(Client)
    with engine.begin() as conn:
        conn.execute(insert(Client.__table__).values(name="unseen"))
    quiet.close()
    assert stored(collection) == []

    audit = AuditLog(collection, core_statements=True)
    audit.track(Client)
    try:
        with engine.begin() as conn:
            conn.execute(insert(Client.__table__), [{"name": "x"}, {"name": "y"}])
            conn.execute(update(Client.__table__).where(Client.name == "x").values(phone="1"))
        with engine.connect() as conn:
            conn.execute(delete(Client.__table__))
            conn.rollback()
            savepoint = conn.begin_nested()
            conn.execute(delete(Client.__table__).where(Client.name == "x"))
            savepoint.rollback()
            conn.execute(delete(Client.__table__).where(Client.name == "y"))
            conn.commit()
    finally:
        audit.close()

    assert [d["action"] for d in stored(collection)] == ["create", "create", "delete"]
    assert stored(collection, action="create")[0]["changes"]["phone"] == {
        "added": ["1"],
        "deleted": [],
    }
    assert only(collection, action="delete")["changes"]["name"]["deleted"] == ["y"]


def test_a_large_statement_is_read_and_written_in_chunks(
    session: Session, collection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = 2_500
    session.execute(insert(Client), [{"name": f"n{i}", "phone": "0"} for i in range(rows)])
    session.commit()
    batches: list[int] = []
    insert_many = collection.insert_many

    def counting_insert_many(documents: list[Any], **options: Any) -> Any:
        batches.append(len(documents))
        return insert_many(documents, **options)

    monkeypatch.setattr(collection, "insert_many", counting_insert_many)
    selects: list[int] = []
    listen_for_selects(session, selects)
    audit = AuditLog(collection)
    audit.track(Client)
    try:
        session.execute(update(Client).values(phone="1"))
        session.commit()
    finally:
        audit.close()

    assert batches == [1000, 1000, 500]
    # one streamed read before the statement, then one read back per 500 rows
    assert len(selects) == 1 + rows // 500
    assert collection.count_documents({"action": "update"}) == rows


def listen_for_selects(session: Session, selects: list[int]) -> None:
    engine = session.get_bind()

    @event.listens_for(engine, "before_cursor_execute")
    def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(1)
