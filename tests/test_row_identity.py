"""A row is not its key: keys are reused after deletes, moved by updates of the primary key,
and a scalar id must not match a composite key that happens to contain it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import BigInteger, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from audit_mongo import AuditLog, AuditReader
from tests.models import Client, Employee, Engineer, Manager, Membership
from tests.query_helpers import Clock, commit_times, new_log, saved


@pytest.fixture
def audit(collection: Any) -> Iterator[AuditLog]:
    log = new_log(collection)
    yield log
    log.close()


def names(entries: Any) -> list[tuple[str, Any]]:
    return [(e.action, e.changes["name"].new if "name" in e.changes else None) for e in entries]


# -- a scalar id and composite keys ------------------------------------------------------


def test_without_a_model_a_scalar_id_does_not_match_a_composite_key_holding_it(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    saved(session, Client(id=7, name="member"))
    saved(session, Membership(group="7", member_id=7, role="r"))
    saved(session, Membership(group="admins", member_id=7, role="a"))
    reader = AuditReader(collection)  # no models: the key's type and arity are unknown

    assert list(reader.for_object("memberships", "7")) == []
    assert list(reader.for_object("memberships", "admins")) == []
    assert reader.find(table="memberships", object_id="admins").entries == []
    (entry,) = reader.for_object("memberships", ["admins", 7])
    assert entry.changes["role"].new == "a"
    assert [e.object_id for e in reader.for_object("clients", "7")] == [7]


def test_a_scalar_user_id_does_not_match_a_composite_user_id(
    audit: AuditLog, session: Session
) -> None:
    with audit.acting_as([42, "eu"]):  # say, a user model with a composite key
        saved(session, Client(name="by the composite user"))
    with audit.acting_as(42):
        saved(session, Client(name="by user 42"))

    assert [e.changes["name"].new for e in audit.by_user(42)] == ["by user 42"]
    assert [e.changes["name"].new for e in audit.by_user("42")] == ["by user 42"]
    assert [e.changes["name"].new for e in audit.by_user([42, "eu"])] == ["by the composite user"]


class BigBase(DeclarativeBase):
    pass


class Snowflake(BigBase):
    __tablename__ = "snowflakes"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(20))


def test_nineteen_digit_text_matches_a_64_bit_integer_key(collection: Any, tmp_path: Any) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'big.db'}")
    BigBase.metadata.create_all(engine)
    audit = new_log(collection, models=(Snowflake,))
    big = 1234567890123456789  # 19 digits, within int64
    try:
        with Session(engine) as session, audit.acting_as(big):
            saved(session, Snowflake(id=big, name="flake"))
        reader = AuditReader(collection)
        assert [e.object_id for e in reader.for_object("snowflakes", str(big))] == [big]
        assert [e.object_id for e in reader.by_user(str(big))] == [big]
        assert [e.object_id for e in audit.for_object(Snowflake, str(big))] == [big]
    finally:
        audit.close()
        engine.dispose()


def test_key_text_must_be_plain_digits_for_an_integer_key(audit: AuditLog) -> None:
    for text in ("1_0", " 5 ", "\u0665", "5.0"):
        with pytest.raises(ValueError, match="not a valid int"):
            list(audit.for_object(Client, text))


# -- keys reused and moved ------------------------------------------------------------------


def test_history_of_a_deleted_object_is_its_own_when_a_newer_row_took_its_key(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    first = Client(id=5, name="A")
    saved(session, first)
    session.delete(first)
    session.commit()
    saved(session, Client(id=5, name="B"))

    assert names(audit.history(first)) == [("delete", None), ("create", "A")]
    assert audit.updated_at(first, "name") == commit_times(audit.collection)[0]


def test_state_at_is_none_once_the_row_moved_to_another_key(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    client = Client(id=5, name="A")
    saved(session, client)
    client.id = 6
    session.commit()
    created, moved = commit_times(audit.collection)

    assert audit.state_at(Client, 5, created) == {
        "id": 5,
        "name": "A",
        "email": None,
        "phone": None,
    }
    assert audit.state_at(Client, 5, moved) is None
    assert audit.state_at(Client, 5, moved + dt.timedelta(hours=1)) is None
    later = audit.state_at(Client, 6, moved + dt.timedelta(hours=1))
    assert later is not None and later["id"] == 6


def test_state_at_answers_for_the_row_holding_the_key_not_one_moved_there_later(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    x, a = Client(id=5, name="X"), Client(id=6, name="A")
    saved(session, x, a)
    session.delete(x)
    session.commit()
    a.id = 5
    session.commit()
    both_created, _, moved = commit_times(audit.collection)

    then = audit.state_at(Client, 5, both_created)
    assert then is not None and then["name"] == "X"
    now = audit.state_at(Client, 5, moved)
    assert now is not None and (now["id"], now["name"]) == (5, "A")


def test_history_stops_where_an_earlier_row_left_the_key_even_with_a_gap_in_the_log(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    a = Client(id=5, name="A")
    saved(session, a)
    a.id = 6
    session.commit()
    with audit.disabled():  # the log misses this create
        saved(session, Client(id=5, name="B"))
    b = session.get(Client, 5)
    assert b is not None
    b.name = "B2"
    session.commit()

    assert names(audit.history(b)) == [("update", "B2")]
    assert names(audit.history(a)) == [("update", None), ("create", "A")]


# -- inheritance -------------------------------------------------------------------------


def test_for_object_with_a_subclass_gives_only_rows_of_that_class(
    audit: AuditLog, session: Session
) -> None:
    coder, boss = Engineer(name="coder"), Manager(name="boss")
    saved(session, coder, boss)

    assert list(audit.for_object(Manager, coder.id)) == []
    assert [e.entity for e in audit.for_object(Manager, boss.id)] == ["Manager"]
    assert [e.entity for e in audit.for_object(Engineer, coder.id)] == ["Engineer"]


def test_a_field_of_another_class_in_the_hierarchy_is_refused(audit: AuditLog) -> None:
    with pytest.raises(ValueError, match=r"Engineer \(employees\) has no attribute 'budget'"):
        list(audit.for_table(Engineer, fields=("budget",)))
    list(audit.for_table(Manager, fields=("budget",)))  # Manager's own column


def test_an_exclusion_named_for_a_subclass_is_known_to_the_query_side(collection: Any) -> None:
    audit = new_log(collection, models=(Employee,))
    audit.track(Manager, exclude=("budget",))
    try:
        with pytest.raises(ValueError, match="budget is excluded from the audit log"):
            list(audit.for_table(Manager, fields=("budget",)))
    finally:
        audit.close()
