"""Statements that bypass mapper events: ORM bulk UPDATE / DELETE / INSERT, legacy Query and
bulk_* methods, and Core statements. Each changed row gets the same document the unit of work
would have written, once, under the same transaction rules."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import (
    Engine,
    MetaData,
    String,
    Table,
    bindparam,
    column,
    delete,
    event,
    func,
    insert,
    select,
    table,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    aliased,
    mapped_column,
    with_loader_criteria,
)

from audit_mongo import AuditLog
from tests.conftest import only, postgresql_engine, stored
from tests.models import (
    Account,
    Client,
    Country,
    Device,
    Employee,
    Engineer,
    LegacyItem,
    Membership,
    Untracked,
    legacy_table,
)

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
    account = Account(login="7")
    session.add(account)
    session.commit()
    session.execute(update(Account).values(login=Account.login + "1"))
    session.commit()

    document = only(collection, action="update")
    assert document["changes"] == {"login": {"added": ["71"], "deleted": ["7"]}}


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


def test_update_returning_records_the_changed_values(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    (a, *_) = three_clients(session)
    table = Client.__table__
    rows = session.execute(
        update(table).where(table.c.id == a).values(phone="9").returning(table.c.id)
    ).all()
    session.commit()

    assert [r.id for r in rows] == [a]
    assert only(collection, action="update")["changes"] == {
        "phone": {"added": ["9"], "deleted": ["1"]}
    }


def test_a_statement_that_moves_primary_keys_follows_each_row(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    a, b, c = three_clients(session)
    session.execute(delete(Client).where(Client.id == a))
    session.commit()
    collection.delete_many({})
    session.execute(
        update(Client).where(Client.id.in_([b, c])).values(id=Client.id - 1),
        execution_options={"synchronize_session": False},
    )
    session.commit()

    moved = [(d["previous_object_id"], d["object_id"], d["changes"]) for d in stored(collection)]
    assert sorted(moved, key=lambda m: m[0]) == [
        (b, b - 1, {"id": {"added": [b - 1], "deleted": [b]}}),
        (c, c - 1, {"id": {"added": [c - 1], "deleted": [c]}}),
    ]


def test_upserts_record_a_create_an_update_or_nothing(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    dialect_insert = {
        "sqlite": sqlite_insert,
        "postgresql": postgresql_insert,
    }[session.get_bind().dialect.name]
    session.add(Country(code="abc", name="old"))
    session.commit()
    collection.delete_many({})

    session.execute(dialect_insert(Country).values(code="abc", name="x").on_conflict_do_nothing())
    keep = dialect_insert(Country).values(code="abc", name="new")
    session.execute(keep.on_conflict_do_update(index_elements=["code"], set_={"name": "new"}))
    fresh = dialect_insert(Country).values(code="xyz", name="fresh")
    session.execute(fresh.on_conflict_do_update(index_elements=["code"], set_={"name": "x"}))
    session.commit()

    assert [(d["action"], d["object_id"]) for d in stored(collection)] == [
        ("update", "abc"),
        ("create", "xyz"),
    ]
    assert only(collection, action="update")["changes"] == {
        "name": {"added": ["new"], "deleted": ["old"]}
    }


UNIDENTIFIABLE_INSERTS = {
    "multi-VALUES": lambda table: insert(table).values([{"name": "m1"}, {"name": "m2"}]),
    "own RETURNING": lambda table: insert(table).values(name="v").returning(table.c.id),
}


@pytest.mark.parametrize("form", list(UNIDENTIFIABLE_INSERTS))
def test_inserts_whose_rows_cannot_be_identified_are_reported(
    audit: AuditLog,
    session: Session,
    collection: Any,
    caplog: pytest.LogCaptureFixture,
    form: str,
) -> None:
    with caplog.at_level(logging.WARNING, logger="audit_mongo"):
        result = session.execute(UNIDENTIFIABLE_INSERTS[form](Client.__table__))
        rows = result.all() if result.returns_rows else []
        session.commit()

    assert form != "own RETURNING" or rows  # the caller's RETURNING rows are untouched
    assert stored(collection) == []
    assert "rows inserted into clients could not be identified" in caplog.text


def test_a_char_key_is_one_row_whether_read_back_or_created(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    session.add(Country(code="ab", name="x"))
    session.flush()
    session.execute(
        update(Country).where(Country.code == "ab").values(name="y"),
        execution_options={"synchronize_session": False},
    )
    session.commit()

    document = only(collection)
    assert (document["action"], document["object_id"]) == ("create", "ab")
    assert document["changes"]["name"] == {"added": ["y"], "deleted": []}


def test_statements_through_an_alias_or_a_table_construct(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    a, b, _ = three_clients(session)
    alias = aliased(Client)
    session.execute(update(alias).where(alias.id == a).values(phone="via alias"))
    lightweight = table("clients", column("id"), column("phone"))
    session.execute(update(lightweight).where(lightweight.c.id == b).values(phone="via table"))
    session.commit()

    assert [(d["object_id"], d["changes"]["phone"]["added"]) for d in stored(collection)[3:]] == [
        (a, ["via alias"]),
        (b, ["via table"]),
    ]


class OtherBase(DeclarativeBase):
    pass


class OtherClient(OtherBase):
    """Another mapping of the clients table (a second application's models), untracked."""

    __tablename__ = "clients"
    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str | None] = mapped_column(String(255))


def test_a_table_construct_names_the_tracked_table_when_another_metadata_maps_the_name(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    assert OtherClient.__table__ is not Client.__table__
    a, _, _ = three_clients(session)
    lightweight = table("clients", column("id"), column("phone"))
    session.execute(update(lightweight).where(lightweight.c.id == a).values(phone="via table"))
    session.commit()

    assert [(d["object_id"], d["changes"]["phone"]["added"]) for d in stored(collection)[3:]] == [
        (a, ["via table"])
    ]


def test_autocommit_connections_record_each_statement(engine: Engine, collection: Any) -> None:
    audit = AuditLog(collection, core_statements=True)
    audit.track(Client)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    try:
        with Session(autocommit) as session:
            session.execute(insert(Client), [{"name": "s"}])
            session.commit()
        with autocommit.connect() as conn:
            conn.execute(update(Client.__table__).values(phone="core"))
    finally:
        audit.close()

    assert [d["action"] for d in stored(collection)] == ["create", "update"]


def test_wiring_added_after_a_first_statement_is_honoured(engine: Engine, collection: Any) -> None:
    audit = AuditLog(collection)
    with Session(engine) as session:
        session.execute(insert(Client), [{"name": "before wiring"}])
        session.commit()
        event.listen(Client, "before_update", audit.receive_before_update)
        try:
            session.execute(update(Client).values(phone="after"))
            session.commit()
        finally:
            event.remove(Client, "before_update", audit.receive_before_update)
            audit.close()

    assert [d["action"] for d in stored(collection)] == ["update"]


def test_an_executemany_with_equality_criteria_is_read_in_batches(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    session.execute(insert(Client), [{"name": f"n{i}", "phone": "0"} for i in range(40)])
    session.commit()
    collection.delete_many({})
    selects: list[int] = []
    listen_for_selects(session, selects)
    table = Client.__table__
    by_name = update(table).where(table.c.name == bindparam("n")).values(phone=bindparam("p"))

    session.execute(by_name, [{"n": f"n{i}", "p": "1"} for i in range(40)])
    session.commit()

    assert collection.count_documents({"action": "update"}) == 40
    assert len(selects) == 2  # one read of the 40 rows before, one after


def test_an_update_joined_to_another_table_records_each_row_once(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    a, _, _ = three_clients(session)
    session.add_all([Membership(group="g1", member_id=a), Membership(group="g2", member_id=a)])
    session.commit()
    collection.delete_many({})

    session.execute(
        update(Client).where(Client.id == Membership.member_id).values(phone="member"),
        execution_options={"synchronize_session": False},
    )
    session.commit()

    assert [(d["action"], d["object_id"]) for d in stored(collection)] == [("update", a)]


def test_statements_on_a_uuid_key_record_its_string(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    device = Device(label="old")
    session.add(device)
    session.commit()
    collection.delete_many({})
    session.execute(update(Device).values(label="new"))
    session.commit()

    document = only(collection)
    assert document["object_id"] == str(device.id)
    assert document["changes"] == {"label": {"added": ["new"], "deleted": ["old"]}}


def test_a_key_set_from_a_function_is_reported_not_guessed(
    audit: AuditLog,
    session: Session,
    collection: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (a, *_) = three_clients(session)
    with caplog.at_level(logging.WARNING, logger="audit_mongo"):
        session.execute(
            update(Client).where(Client.id == a).values(id=func.length(Client.name) + 100),
            execution_options={"synchronize_session": False},
        )
        session.commit()

    assert session.scalar(select(func.count()).where(Client.id == a)) == 0  # it did run
    assert [d["action"] for d in stored(collection)] == ["create"] * 3
    assert "sets the primary key from a function or a subquery" in caplog.text


def test_an_alias_whose_column_keys_differ_from_their_names(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    session.add_all([LegacyItem(1, "keep"), LegacyItem(2, "drop")])
    session.commit()
    collection.delete_many({})
    alias = legacy_table.alias()
    assert alias.c.label.name == "item_name"

    session.execute(delete(alias).where(alias.c.label == "drop"))
    session.commit()

    document = only(collection)
    assert (document["action"], document["object_id"]) == ("delete", 2)
    assert document["changes"]["title"] == {"added": [], "deleted": ["drop"]}


def test_a_reflected_copy_of_a_tracked_table(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    (a, *_) = three_clients(session)
    reflected = Table("clients", MetaData(), autoload_with=session.connection())
    session.execute(update(reflected).where(reflected.c.id == a).values(name="reflected"))
    session.commit()

    assert only(collection, action="update")["changes"] == {
        "name": {"added": ["reflected"], "deleted": ["a"]}
    }


def test_a_core_commit_is_delivered_when_its_connection_is_invalidated(
    engine: Engine, collection: Any
) -> None:
    audit = AuditLog(collection, core_statements=True)
    audit.track(Client)
    try:
        with engine.connect() as conn:
            conn.execute(insert(Client.__table__).values(name="kept"))
            conn.commit()
            conn.invalidate()
    finally:
        audit.close()

    assert [d["action"] for d in stored(collection)] == ["create"]


@pytest.fixture
def postgresql(collection: Any) -> Iterator[Engine]:
    """PostgreSQL alone: SQLite has no two-phase transactions."""
    yield from postgresql_engine()


def test_two_phase_transactions_on_core_connections(postgresql: Engine, collection: Any) -> None:
    engine = postgresql
    audit = AuditLog(collection, core_statements=True)
    audit.track(Client)
    try:
        with engine.connect() as conn:
            rolled_back = conn.begin_twophase()
            conn.execute(insert(Client.__table__).values(name="rolled back"))
            rolled_back.rollback()
            committed = conn.begin_twophase()
            conn.execute(insert(Client.__table__).values(name="committed"))
            committed.commit()
    finally:
        audit.close()

    assert [d["changes"]["name"]["added"] for d in stored(collection)] == [["committed"]]


def test_the_read_before_a_statement_streams_and_locks_the_rows(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    three_clients(session)
    reads: list[tuple[bool, str]] = []

    @event.listens_for(session.get_bind(), "before_cursor_execute")
    def note_reads(conn: Any, cursor: Any, statement: str, p: Any, context: Any, many: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            streamed = bool(context.execution_options.get("stream_results"))
            reads.append((streamed, statement))

    session.execute(update(Client).where(Client.name != "c").values(phone="2"))
    session.commit()

    before = reads[0]
    assert before[0], "a read that may match any number of rows is streamed"
    if session.get_bind().dialect.name == "postgresql":
        assert "FOR UPDATE OF clients" in before[1]


def test_the_rows_read_before_a_statement_stay_locked_until_it_runs(
    postgresql: Engine, collection: Any
) -> None:
    audit = AuditLog(collection)
    audit.track(Client)
    with Session(postgresql) as session:
        session.add(Client(name="a"))
        session.commit()
    seen_locked: list[bool] = []

    @event.listens_for(postgresql, "before_cursor_execute")
    def try_the_row(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if not statement.lstrip().upper().startswith("UPDATE"):
            return
        with postgresql.connect() as other:  # what a concurrent writer would meet
            try:
                other.execute(text("SELECT id FROM clients FOR UPDATE NOWAIT"))
                seen_locked.append(False)
            except OperationalError:
                seen_locked.append(True)

    try:
        with Session(postgresql) as session:
            session.execute(update(Client).values(phone="1"))
            session.commit()
    finally:
        event.remove(postgresql, "before_cursor_execute", try_the_row)
        audit.close()

    assert seen_locked == [True]


def test_a_delete_with_criteria_added_when_compiling_records_only_deleted_rows(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    engineer = Engineer(name="eng")
    session.add_all([Employee(name="plain"), engineer])
    a, *_ = three_clients(session)
    engineer_id = engineer.id
    collection.delete_many({})

    session.execute(delete(Engineer))  # the ORM adds "kind = 'engineer'" as it compiles
    only_a = with_loader_criteria(Client, Client.id == a)
    session.execute(delete(Client).options(only_a))
    session.commit()

    assert [(d["table_name"], d.get("entity"), d["object_id"]) for d in stored(collection)] == [
        ("employees", "Engineer", engineer_id),
        ("clients", None, a),
    ]


def test_a_large_bulk_insert_is_read_back_in_chunks(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    selects: list[int] = []
    listen_for_selects(session, selects)

    session.execute(insert(Client), [{"name": f"n{i}"} for i in range(2_500)])
    session.commit()

    assert collection.count_documents({"action": "create"}) == 2_500
    assert len(selects) == 5  # 500 keys per read-back
