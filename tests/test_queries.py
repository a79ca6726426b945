"""The query API on logs written by real ORM sessions: history, for_object, by_user,
for_table, updated_at / changed_by, for_transaction, for_request; the order of entries,
void documents, primary key changes and inheritance."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, delete, event, update
from sqlalchemy.orm import Session

from audit_mongo import AuditEntry, AuditLog, AuditReader, reader
from audit_mongo.document import Written, build_voids
from tests.conftest import stored
from tests.models import (
    Article,
    Base,
    Client,
    Country,
    Device,
    Employee,
    Engineer,
    Manager,
    Membership,
    Tag,
)
from tests.query_helpers import (
    UTC,
    Clock,
    commit_times,
    controlled_clock,
    fail_commits,
    new_log,
    saved,
)


@pytest.fixture
def audit(collection: Any) -> Iterator[AuditLog]:
    log = new_log(collection)
    yield log
    log.close()


def actions(entries: Any) -> list[str]:
    return [e.action for e in entries]


def ids(entries: Any) -> list[Any]:
    return [e.id for e in entries]


def last_commit(audit: AuditLog) -> dt.datetime:
    return commit_times(audit.collection)[-1]


# -- one row ----------------------------------------------------------------------------


def test_history_gives_an_objects_entries_newest_first_as_typed_entries(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    client = Client(name="A", email="a@example.com")
    with audit.acting_as(42):
        saved(session, client)
        client.name = "B"
        session.commit()
    with audit.acting_as(7):
        client.email = "b@example.com"
        session.commit()
    saved(session, Client(name="another"))

    newest, renamed, created = entries = list(audit.history(client))

    assert actions(entries) == ["update", "update", "create"]
    assert [e.created_at for e in entries] == commit_times(audit.collection)[2::-1]
    assert all(e.created_at.tzinfo == UTC for e in entries)
    assert [e.user_id for e in entries] == [7, 42, 42]
    assert {(e.table_name, e.object_id) for e in entries} == {("clients", client.id)}
    assert len({e.transaction_id for e in entries}) == 3
    assert newest.changes["email"].old == "a@example.com"
    assert newest.changes["email"].new == "b@example.com"
    assert set(newest.changes) == {"email"}
    assert (renamed.changes["name"].deleted, renamed.changes["name"].added) == (["A"], ["B"])
    assert created.changes["name"].old is None
    assert created.changes["id"].new == client.id
    assert "phone" not in created.changes  # a create lists the non-null columns
    with pytest.raises(dataclasses.FrozenInstanceError):
        created.action = "delete"  # type: ignore[misc]
    with pytest.raises(TypeError):
        created.changes["name"] = created.changes["id"]  # type: ignore[index]


def test_history_of_a_deleted_object_starts_with_its_delete(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    client = Client(name="A", phone="1")
    saved(session, client)
    session.delete(client)
    session.commit()

    deleted, created = audit.history(client)

    assert (deleted.action, created.action) == ("delete", "create")
    assert {k: c.old for k, c in deleted.changes.items()} == {
        "id": client.id,
        "name": "A",
        "email": None,  # a delete lists every column, nulls included
        "phone": "1",
    }
    assert deleted.changes["name"].new is None


def test_history_limit_keeps_the_newest(audit: AuditLog, session: Session, clock: Clock) -> None:
    client = Client(name="v0")
    saved(session, client)
    for version in range(1, 5):
        client.name = f"v{version}"
        session.commit()

    assert [e.changes["name"].new for e in audit.history(client, limit=2)] == ["v4", "v3"]


def test_an_object_without_a_key_or_not_mapped_is_refused(
    audit: AuditLog, session: Session
) -> None:
    with pytest.raises(ValueError, match="no primary key yet"):
        audit.history(Client(name="new"))
    with pytest.raises(TypeError, match="not an instance of a mapped class"):
        audit.history(object())


def test_for_object_takes_a_class_or_a_table_name_and_text_ids(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    first, second = Client(name="first"), Client(name="second")
    saved(session, first, second)
    first.name = "first again"
    session.commit()

    expected = ids(audit.history(first))
    assert len(expected) == 2
    assert ids(audit.for_object(Client, first.id)) == expected
    assert ids(audit.for_object("clients", first.id)) == expected
    assert ids(audit.for_object("clients", str(first.id))) == expected  # from a URL
    assert ids(audit.for_object(Client, str(second.id))) == ids(audit.history(second))
    assert [e.object_id for e in audit.for_object("clients", str(first.id))] == [first.id] * 2


def test_for_object_filters_by_action_and_time(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    client = Client(name="v0")
    saved(session, client)
    for version in range(1, 4):
        client.name = f"v{version}"
        session.commit()
    _, first, _, third = commit_times(audit.collection)

    def names(**filters: Any) -> list[Any]:
        return [e.changes["name"].new for e in audit.for_object(Client, client.id, **filters)]

    assert names(actions="update") == ["v3", "v2", "v1"]
    assert names(actions=("create",)) == ["v0"]
    assert names(since=first) == ["v3", "v2", "v1"]  # since: inclusive
    assert names(until=third) == ["v2", "v1", "v0"]  # until: exclusive
    assert names(since=first, until=third, actions="update") == ["v2", "v1"]
    assert names(until=third, limit=1) == ["v2"]


def test_text_ids_are_coerced_to_uuid_composite_and_char_keys(
    audit: AuditLog, session: Session
) -> None:
    device = Device(label="phone")
    saved(session, Client(id=7, name="member"))
    membership = Membership(group="admins", member_id=7, role="owner")
    country = Country(code="fr", name="France")
    saved(session, device, membership, country)

    assert isinstance(device.id, uuid.UUID)
    (by_text,) = audit.for_object(Device, str(device.id).upper())
    assert by_text.object_id == device.id  # back as a UUID
    assert ids(audit.for_object("devices", device.id)) == [by_text.id]

    (member,) = audit.for_object(Membership, ("admins", "7"))
    assert member.object_id == ("admins", 7)
    assert ids(audit.for_object("memberships", ["admins", 7])) == [member.id]
    assert ids(audit.history(membership)) == [member.id]

    (french,) = audit.for_object(Country, "fr ")  # CHAR keys: the padding is not part of it
    assert french.object_id == "fr"
    assert ids(audit.history(country)) == [french.id]


def test_a_key_that_starts_with_a_dollar_sign_still_has_a_history(
    audit: AuditLog, session: Session
) -> None:
    """Operator-looking text is refused as input, never as an object's own key."""
    country = Country(code="$US", name="dollars")
    saved(session, country)

    assert actions(audit.history(country)) == ["create"]
    assert audit.updated_at(country, "name") is not None


def test_updated_at_and_changed_by_name_the_last_change_of_an_attribute(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    client = Client(name="A", email="a@example.com")
    with audit.acting_as(1):
        saved(session, client)
    assert audit.updated_at(client, "name") == last_commit(audit)  # the create set it
    assert audit.changed_by(client, "name") == 1

    with audit.acting_as(2):
        client.name = "B"
        session.commit()
    name_changed = last_commit(audit)
    with audit.acting_as(3):
        client.email = "b@example.com"
        session.commit()

    assert audit.updated_at(client, "name") == name_changed
    assert audit.changed_by(client, "name") == 2
    assert audit.updated_at(client, "email") == last_commit(audit)
    assert audit.changed_by(client, "email") == 3
    last = audit.last_change(client, "name")
    assert last is not None and last.changes["name"].new == "B"
    # phone was never set (a create lists non-null columns only)
    assert audit.updated_at(client, "phone") is None
    assert audit.changed_by(client, "phone") is None

    client.phone = "555"
    session.commit()  # nobody known
    assert audit.updated_at(client, "phone") == last_commit(audit)
    assert audit.changed_by(client, "phone") is None


# -- many rows ----------------------------------------------------------------------------


def test_by_user_lists_what_one_user_did_across_tables_in_a_time_range(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    a, b = Client(name="a"), Client(name="b")
    with audit.acting_as(42):
        saved(session, a)  # t0
    with audit.acting_as(7):
        saved(session, b)  # t1
    with audit.acting_as(42):
        a.name = "a2"
        session.commit()  # t2
        saved(session, Tag(label="t"))  # t3
    b.name = "b2"
    session.commit()  # t4, nobody known
    t0, t1, t2, t3, t4 = commit_times(audit.collection)

    def when(user: Any, **bounds: Any) -> list[dt.datetime]:
        return [e.created_at for e in audit.by_user(user, **bounds)]

    assert when(42) == [t3, t2, t0]
    assert {e.table_name for e in audit.by_user(42)} == {"clients", "tags"}
    assert when(42, since=t2) == [t3, t2]
    assert when(42, until=t3) == [t2, t0]
    assert when(42, since=t2, until=t3) == [t2]
    assert when(42, since=t1, until=t2) == []
    assert when(42, limit=1) == [t3]
    assert when(7) == [t1]
    assert when(None) == [t4]
    assert when(42, table=Client) == [t2, t0]
    assert when(42, actions="create") == [t3, t0]


def test_a_user_id_given_as_numeric_text_matches_the_integer_and_the_string_form(
    audit: AuditLog, session: Session
) -> None:
    with audit.acting_as(42):
        saved(session, Client(name="by the integer"))
    with audit.acting_as("42"):
        saved(session, Client(name="by the string"))
    with audit.acting_as("ab"):
        saved(session, Client(name="by another"))

    def names(user: Any) -> set[str]:
        return {e.changes["name"].new for e in audit.by_user(user)}

    assert names("42") == {"by the integer", "by the string"}  # a URL parameter
    assert names(42) == {"by the integer"}
    assert names("ab") == {"by another"}
    page = audit.find(user_id="42", limit=10)
    assert {e.user_id for e in page} == {42, "42"}


def test_for_table_filters_by_action_field_time_and_limit(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    a = Client(name="a", email="a@example.com")
    b = Client(name="b")
    c = Client(name="c")
    saved(session, a, b, c)  # t0
    a.email = "new@example.com"
    session.commit()  # t1
    b.name = "b2"
    session.commit()  # t2
    session.delete(c)
    session.commit()  # t3
    saved(session, Tag(label="other table"))  # t4
    t0, t1, _, t3, _ = commit_times(audit.collection)

    def rows(**filters: Any) -> list[tuple[str, Any]]:
        return [(e.action, e.object_id) for e in audit.for_table(Client, **filters)]

    assert rows() == [
        ("delete", c.id),
        ("update", b.id),
        ("update", a.id),
        ("create", c.id),
        ("create", b.id),
        ("create", a.id),
    ]
    assert rows(actions=("delete",)) == [("delete", c.id)]
    assert rows(actions="update") == [("update", b.id), ("update", a.id)]
    # entries whose changes list the field: a delete lists every column
    assert rows(fields=("email",)) == [("delete", c.id), ("update", a.id), ("create", a.id)]
    assert rows(fields="email", actions=("update", "create")) == [
        ("update", a.id),
        ("create", a.id),
    ]
    assert rows(since=t1, until=t3) == [("update", b.id), ("update", a.id)]
    assert rows(limit=2) == [("delete", c.id), ("update", b.id)]
    assert rows(actions="update", fields="name", since=t0, until=t3, limit=50) == [("update", b.id)]
    assert [e.object_id for e in audit.for_table("clients", actions="delete")] == [c.id]


def test_bulk_statements_are_found_like_unit_of_work_changes(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    saved(session, *(Client(name=f"c{i}") for i in range(3)))
    with audit.acting_as(9):
        session.execute(update(Client).where(Client.name != "c1").values(phone="555"))
        session.execute(delete(Client).where(Client.name == "c1"))
        session.commit()

    (statement_commit,) = {e.transaction_id for e in audit.by_user(9)}
    entries = list(audit.for_transaction(statement_commit))
    assert sorted(actions(entries)) == ["delete", "update", "update"]
    updated = list(audit.for_table(Client, actions="update", fields="phone"))
    assert [e.changes["phone"].new for e in updated] == ["555", "555"]
    (deleted,) = audit.for_table(Client, actions="delete")
    assert deleted.changes["name"].old == "c1"


def test_for_transaction_gives_everything_one_commit_did_in_order(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    old = Client(name="old")
    saved(session, old)
    tag = Tag(label="news")
    article = Article(title="Hello", tags=[tag])
    old.name = "renamed"
    saved(session, tag, article)
    session.delete(old)  # a later commit: not part of it
    session.commit()

    (transaction,) = {e.transaction_id for e in audit.for_table(Article)}
    entries = list(audit.for_transaction(transaction))

    written = stored(audit.collection, transaction_id=transaction)
    assert ids(entries) == [d["_id"] for d in written]
    assert sorted(e.table_name for e in entries) == ["articles", "clients", "tags"]
    assert {e.created_at for e in entries} == {commit_times(audit.collection)[1]}
    assert [e.id for e in entries] == sorted(e.id for e in entries)
    (article_entry,) = (e for e in entries if e.table_name == "articles")
    assert article_entry.changes["tags"].added == [tag.id]  # a many-to-many collection
    with pytest.raises(TypeError, match="collection"):
        _ = article_entry.changes["tags"].new
    assert list(audit.for_transaction(str(uuid.uuid4()))) == []


def test_for_request_gives_every_commit_of_one_request(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    with audit.context(request_id="req-1", reason="signup"):
        saved(session, Client(name="a"))
        saved(session, Tag(label="t"))
    with audit.context(request_id="req-2"):
        saved(session, Client(name="b"))
    saved(session, Client(name="no request"))

    entries = list(audit.for_request("req-1"))

    assert [e.table_name for e in entries] == ["clients", "tags"]  # in the order done
    assert [e.created_at for e in entries] == commit_times(audit.collection)[:2]
    assert dict(entries[0].context) == {"request_id": "req-1", "reason": "signup"}
    assert [e.changes["name"].new for e in audit.for_request("req-2")] == ["b"]
    assert list(audit.for_request("req-3")) == []
    (unrelated,) = audit.for_table(Client, since=last_commit(audit))
    assert dict(unrelated.context) == {}


def test_disabled_blocks_leave_nothing_to_find(audit: AuditLog, session: Session) -> None:
    client = Client(name="fixture")
    with audit.disabled():
        saved(session, client)
    client.name = "changed"
    session.commit()

    assert actions(audit.history(client)) == ["update"]


def test_ties_in_time_are_ordered_by_id(
    audit: AuditLog, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = controlled_clock(monkeypatch, step=dt.timedelta(0))  # every commit, one instant
    client = Client(name="v0")
    saved(session, client)
    for version in range(1, 6):
        client.name = f"v{version}"
        session.commit()
    saved(session, Client(name="x"), Client(name="y"), Client(name="z"))

    documents = stored(audit.collection)
    assert {d["created_at"] for d in documents} == {clock.now}
    # Stored in another order than built: only the sort by _id can put them back.
    audit.collection.delete_many({})
    audit.collection.insert_many(documents[::-1])

    history = list(audit.history(client))
    assert [e.changes["name"].new for e in history] == ["v5", "v4", "v3", "v2", "v1", "v0"]
    newest_first = list(audit.for_table(Client))
    assert ids(newest_first) == [d["_id"] for d in documents[::-1]]
    assert ids(audit.find(table=Client, order="oldest")) == [d["_id"] for d in documents]
    last_commit = documents[-1]["transaction_id"]
    assert [e.changes["name"].new for e in audit.for_transaction(last_commit)] == ["x", "y", "z"]


# -- void documents (strict mode) ------------------------------------------------------------


def test_void_documents_and_what_they_void_are_never_found(
    engine: Engine, collection: Any, clock: Clock
) -> None:
    audit = new_log(collection, strict=True)
    client = Client(name="kept", email="k@example.com")
    try:
        with Session(engine) as session, audit.context(request_id="r1"), audit.acting_as(5):
            saved(session, client)
            key = client.id
        kept_at = last_commit(audit)
        failing = fail_commits(engine)
        try:
            with Session(engine) as session, audit.context(request_id="r1"), audit.acting_as(5):
                session.get(Client, key).name = "never"  # type: ignore[union-attr]
                session.add(Client(name="never either"))
                with pytest.raises(RuntimeError, match="refused"):
                    session.commit()
                session.rollback()
        finally:
            event.remove(engine, "commit", failing)

        documents = stored(collection)  # what the failed commit left in Mongo
        assert sorted(d["action"] for d in documents) == [
            "create",
            "create",
            "update",
            "void",
            "void",
        ]
        failed = documents[-1]["transaction_id"]

        (created,) = audit.history(client)
        assert created.created_at == kept_at
        assert ids(audit.for_object(Client, key)) == [created.id]
        assert ids(audit.by_user(5)) == [created.id]
        assert ids(audit.for_table(Client)) == [created.id]
        assert ids(audit.find()) == [created.id]
        assert ids(audit.find(order="oldest")) == [created.id]
        assert ids(audit.for_request("r1")) == [created.id]
        assert list(audit.for_transaction(failed)) == []
        assert audit.updated_at(client, "name") == kept_at
        assert audit.changed_by(client, "name") == 5
        state = audit.state_at(Client, key, clock.now)
        assert state is not None and state["name"] == "kept"
    finally:
        audit.close()


def test_a_voided_primary_key_change_is_not_followed(
    engine: Engine, collection: Any, clock: Clock
) -> None:
    audit = new_log(collection, strict=True)
    try:
        with Session(engine) as session:
            saved(session, Client(id=1, name="one"))
        failing = fail_commits(engine)
        try:
            with Session(engine) as session:
                session.get(Client, 1).id = 99  # type: ignore[union-attr]
                with pytest.raises(RuntimeError, match="refused"):
                    session.commit()
                session.rollback()
        finally:
            event.remove(engine, "commit", failing)
        assert [d["action"] for d in stored(collection)] == ["create", "update", "void"]

        assert list(audit.for_object(Client, 99)) == []
        assert audit.state_at(Client, 99, clock.now) is None
        assert actions(audit.for_object(Client, 1)) == ["create"]
    finally:
        audit.close()


def test_voided_documents_are_left_out_across_read_chunks(
    audit: AuditLog, session: Session, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Voids found for each chunk the reader reads, also when a chunk is all voided."""
    monkeypatch.setattr(reader, "CHUNK", 3)
    for i in range(10):
        saved(session, Client(name=f"c{i}"))
    documents = stored(audit.collection)
    voided = [documents[i] for i in (1, 3, 4, 5, 9)]  # chunk 2 (newest first) all void
    audit.collection.insert_many(build_voids([Written.of(d) for d in voided], clock()))

    kept = [f"c{i}" for i in (8, 7, 6, 2, 0)]
    assert [e.changes["name"].new for e in audit.for_table(Client)] == kept
    assert [e.changes["name"].new for e in audit.find(limit=5)] == kept
    assert [e.changes["name"].new for e in audit.find(limit=3, order="oldest")] == [
        "c0",
        "c2",
        "c6",
    ]


# -- primary key changes -------------------------------------------------------------------


def test_history_follows_a_primary_key_change_back_to_the_old_key(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    client = Client(id=1, name="v0")
    saved(session, client)  # t0
    client.phone = "555"
    session.commit()  # t1
    client.id = 10
    session.commit()  # t2
    client.name = "v1"
    session.commit()  # t3
    _, phoned, moved, _ = commit_times(audit.collection)

    entries = list(audit.history(client))

    assert [(e.action, e.object_id) for e in entries] == [
        ("update", 10),
        ("update", 10),
        ("update", 1),
        ("create", 1),
    ]
    rename = entries[1]
    assert rename.previous_object_id == 1
    assert (rename.changes["id"].old, rename.changes["id"].new) == (1, 10)
    assert ids(audit.for_object(Client, "10")) == ids(entries)
    assert audit.updated_at(client, "phone") == phoned  # set under the old key
    # entries before the key change are found even when the change is past `until`
    assert [e.object_id for e in audit.for_object(Client, 10, until=moved)] == [1, 1]
    assert actions(audit.for_object(Client, 10, actions="create")) == ["create"]
    assert [e.object_id for e in audit.for_object(Client, 10, since=moved)] == [10, 10]
    # the raw key queries do not follow
    assert actions(audit.find(table=Client, object_id=10)) == ["update", "update"]


def test_history_leaves_out_a_row_that_had_the_key_before(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    first = Client(id=1, name="first")
    saved(session, first)
    first.name = "first, changed"
    session.commit()
    first.id = 10
    session.commit()
    second = Client(id=1, name="second")  # takes the key the first row gave up
    saved(session, second)

    assert [e.changes["name"].new for e in audit.history(second)] == ["second"]
    assert [e.changes["name"].new for e in audit.for_object(Client, 1)] == ["second"]
    first_history = list(audit.history(first))
    assert [(e.action, e.object_id) for e in first_history] == [
        ("update", 10),
        ("update", 1),
        ("create", 1),
    ]
    assert [e.changes["name"].new for e in first_history if "name" in e.changes] == [
        "first, changed",
        "first",
    ]


def test_a_key_given_up_and_taken_in_one_commit_stays_with_its_rows(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    moving, newcomer = Client(id=1, name="moving"), Client(id=5, name="newcomer")
    saved(session, moving, newcomer)
    newcomer.name = "newcomer, renamed"
    session.flush()  # the newcomer is changed first: its document comes first
    moving.id = 2
    session.flush()
    newcomer.id = 1  # takes the key the other row gave up, in the same commit
    session.commit()

    assert [(e.action, e.object_id) for e in audit.history(moving)] == [
        ("update", 2),
        ("create", 1),
    ]
    assert [(e.action, e.object_id) for e in audit.history(newcomer)] == [
        ("update", 1),
        ("create", 5),
    ]
    assert audit.updated_at(moving, "name") == commit_times(audit.collection)[0]


def test_a_deleted_rows_key_taken_again_starts_a_new_history(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    old = Client(id=5, name="old", phone="1")
    saved(session, old)
    old.name = "old, changed"
    session.commit()
    session.delete(old)
    session.commit()
    new = Client(id=5, name="new")
    saved(session, new)
    new.name = "newer"
    session.commit()

    assert actions(audit.history(new)) == ["update", "create"]
    assert actions(audit.for_object(Client, 5)) == ["update", "create"]
    updates = audit.for_object(Client, 5, actions="update")  # the walk still sees the create
    assert [e.changes["name"].new for e in updates] == ["newer"]
    assert audit.updated_at(new, "phone") is None  # the old row's phone is not this row's
    assert actions(audit.find(table=Client, object_id=5)) == [
        "update",
        "create",
        "delete",
        "update",
        "create",
    ]


def test_a_row_inserted_while_the_log_was_off_does_not_take_a_deleted_rows_history(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    old = Client(id=5, name="old")
    saved(session, old)
    session.delete(old)
    session.commit()
    new = Client(id=5, name="new")
    with audit.disabled():
        saved(session, new)  # no create in the log
    new.name = "newer"
    session.commit()

    assert [e.changes["name"].new for e in audit.history(new)] == ["newer"]
    assert actions(audit.for_object(Client, 5)) == ["update"]


# -- inheritance ------------------------------------------------------------------------------


def test_for_table_of_a_subclass_gives_only_that_classs_rows(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    boss = Manager(name="boss", budget=10)
    coder = Engineer(name="coder", skill="sql")
    plain = Employee(name="plain")
    saved(session, boss, coder, plain)
    boss.budget = 20
    coder.skill = "python"
    session.commit()

    def rows(model: Any, **filters: Any) -> list[tuple[str, Any]]:
        return [(e.action, e.entity) for e in audit.for_table(model, **filters)]

    assert rows(Manager) == [("update", "Manager"), ("create", "Manager")]
    assert rows(Engineer, actions="update") == [("update", "Engineer")]
    assert sorted(rows(Employee, actions="create")) == [
        ("create", "Employee"),
        ("create", "Engineer"),
        ("create", "Manager"),
    ]
    assert {e.table_name for e in audit.for_table(Manager)} == {"employees"}
    with pytest.raises(ValueError, match="no attribute 'budget_typo'"):
        list(audit.for_table(Engineer, fields="budget_typo"))  # names checked for the class
    assert actions(audit.history(boss)) == ["update", "create"]
    assert ids(audit.for_object(Manager, boss.id)) == ids(audit.for_object(Employee, boss.id))
    assert [e.entity for e in audit.find(table=Manager)] == ["Manager", "Manager"]
    (update_,) = audit.for_table(Manager, fields="budget", actions="update")
    assert (update_.changes["budget"].old, update_.changes["budget"].new) == (10, 20)


# -- the reader on its own -------------------------------------------------------------------


def test_an_audit_reader_with_models_checks_names_and_types_values(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    client = Client(name="a")
    saved(session, client)

    typed = AuditReader(collection, models=[Base])

    (entry,) = typed.for_object("clients", str(client.id))
    assert isinstance(entry, AuditEntry) and entry.object_id == client.id
    assert ids(typed.history(client)) == [entry.id]
    with pytest.raises(ValueError, match="unknown table 'client'"):
        list(typed.for_table("client"))


def test_an_audit_reader_without_models_matches_text_ids_and_reads_values_as_stored(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    client = Client(name="a")
    saved(session, client)
    saved(session, Membership(group="g", member_id=client.id))

    untyped = AuditReader(collection)

    (entry,) = untyped.for_object("clients", str(client.id))  # "1" also matches 1
    assert entry.object_id == client.id
    (member,) = untyped.for_object("memberships", ("g", client.id))
    assert member.object_id == ("g", client.id)
    assert list(untyped.for_table("no_such_table")) == []  # nothing to check names against
    now = dt.datetime.now(UTC)
    assert untyped.state_at("clients", client.id, now) == {"id": client.id, "name": "a"}
