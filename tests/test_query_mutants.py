"""Query API behaviour found unchecked by mutation testing of the query side (reader,
row_history, query, inputs, state, entry): row walks and state_at across keys left, taken
and reached with gaps in the log, paging with filters, time bounds, id text, reads bounded
by a limit, and how entries come back. Logs are written by real ORM sessions."""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import bson
import pytest
from bson.codec_options import CodecOptions
from sqlalchemy.orm import Session

from audit_mongo import AuditLog, AuditReader, reader, row_history
from tests.models import Article, Client, Device, Engineer, Manager, Membership, Tag
from tests.query_helpers import (
    UTC,
    Clock,
    SpyCollection,
    commit_times,
    controlled_clock,
    new_log,
    saved,
)

SECOND = dt.timedelta(seconds=1)


@pytest.fixture
def audit(collection: Any) -> Iterator[AuditLog]:
    log = new_log(collection)
    yield log
    log.close()


def names(entries: Any) -> list[tuple[str, Any]]:
    return [(e.action, e.changes["name"].new if "name" in e.changes else None) for e in entries]


# -- a row's history ------------------------------------------------------------------------


def test_history_stops_at_the_rows_create_though_the_earlier_rows_delete_was_not_logged(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    old = Client(id=5, name="old")
    saved(session, old)
    old.name = "old, changed"
    session.commit()
    with audit.disabled():  # the log never hears of the delete
        session.delete(old)
        session.commit()
    new = Client(id=5, name="new")
    saved(session, new)

    assert names(audit.history(new)) == [("create", "new")]
    assert names(audit.for_object(Client, 5)) == [("create", "new")]


def test_for_object_of_a_subclass_is_empty_once_another_class_took_the_key(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    boss = Manager(id=8, name="boss")
    saved(session, boss)
    session.delete(boss)
    session.commit()
    saved(session, Engineer(id=8, name="coder"))

    # the row that holds the key is an Engineer: no Manager's entries answer for it
    assert list(audit.for_object(Manager, 8)) == []
    assert [(e.action, e.entity) for e in audit.for_object(Engineer, 8)] == [("create", "Engineer")]
    assert [(e.action, e.entity) for e in audit.history(boss)] == [
        ("delete", "Manager"),
        ("create", "Manager"),
    ]


def test_history_of_a_deleted_object_whose_key_a_later_row_took_and_left(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    first = Client(id=5, name="A")
    saved(session, first)
    session.delete(first)
    session.commit()
    second = Client(id=5, name="B")  # takes the free key ...
    saved(session, second)
    second.id = 6  # ... and leaves it
    session.commit()
    created = commit_times(audit.collection)[0]

    assert names(audit.history(first)) == [("delete", None), ("create", "A")]
    assert audit.updated_at(first, "name") == created


def test_a_limited_history_reads_no_more_entries_than_the_limit(
    collection: Any, session: Session, clock: Clock
) -> None:
    spy = SpyCollection(collection)
    audit = new_log(spy)
    try:
        client = Client(name="v0")
        saved(session, client)
        for version in range(1, 30):
            client.name = f"v{version}"
            session.commit()
        spy.reset()

        assert [e.changes["name"].new for e in audit.history(client, limit=2)] == ["v29", "v28"]
        assert spy.pulled == 2
        walk = [f for f in spy.finds if f.filter.get("object_id")]
        assert [f.batch_size for f in walk] == [2]

        spy.reset()
        assert len(list(audit.for_object(Client, client.id, limit=3))) == 3
        assert spy.pulled == 3
    finally:
        audit.close()


def test_history_reads_nothing_of_the_row_that_left_the_key_before(
    collection: Any, session: Session, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader, "CHUNK", 5)
    monkeypatch.setattr(row_history, "CHUNK", 5)
    spy = SpyCollection(collection)
    audit = new_log(spy)
    try:
        first = Client(id=1, name="v0")
        saved(session, first)
        for version in range(1, 30):
            first.name = f"v{version}"
            session.commit()
        first.id = 2  # leaves key 1
        session.commit()
        with audit.disabled():  # the log misses this create
            saved(session, Client(id=1, name="B"))
        second = session.get(Client, 1)
        assert second is not None
        second.name = "B2"
        session.commit()
        spy.reset()

        assert names(audit.history(second)) == [("update", "B2")]
        # the departure, then one chunk of the walk: not the 30 entries of the first row
        assert spy.pulled <= 1 + 5
    finally:
        audit.close()


def test_a_row_history_up_to_a_moment_reads_no_entry_after_it(
    collection: Any, session: Session, clock: Clock
) -> None:
    spy = SpyCollection(collection)
    audit = new_log(spy)
    try:
        client = Client(name="v0")
        saved(session, client)
        for version in range(1, 20):
            client.name = f"v{version}"
            session.commit()
        created = commit_times(collection)[0]
        spy.reset()

        until = created + SECOND / 2
        assert names(audit.for_object(Client, client.id, until=until)) == [("create", "v0")]
        assert spy.pulled == 1  # the create: the 19 later updates stay in Mongo
    finally:
        audit.close()


# -- state_at across keys -------------------------------------------------------------------


def test_state_at_the_moment_a_row_arrived_at_a_key_takes_later_old_values(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    client = Client(id=1, name="A", phone="1")
    with audit.disabled():  # the log began after the row existed
        saved(session, client)
    client.id = 10
    session.commit()  # arrives at 10
    client.name = "B"
    session.commit()
    arrived, _ = commit_times(audit.collection)

    assert audit.state_at(Client, 10, arrived) == {"id": 10, "name": "A"}


def test_state_at_takes_the_id_from_the_update_that_moved_the_row_away_later(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    a = Client(id=1, name="A1")
    with audit.disabled():
        saved(session, a)
    a.name = "A2"
    session.commit()  # t0
    a.id = 2  # leaves key 1
    session.commit()  # t1
    b = Client(id=1, name="B")
    saved(session, b)  # t2: another row takes key 1
    b.id = 3
    session.commit()  # t3: and leaves it
    renamed, _, _, _ = commit_times(audit.collection)

    # the first later change of the id is A's own move: its old value is the key then
    assert audit.state_at(Client, 1, renamed + SECOND / 2) == {"id": 1, "name": "A2"}


def test_state_at_learns_nothing_from_a_row_that_came_to_the_key_later(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    a = Client(id=1, name="A", email="a@example.com")
    with audit.disabled():
        saved(session, a)
    a.name = "A2"
    session.commit()  # t0
    with audit.disabled():  # A leaves without the log knowing
        session.delete(a)
        session.commit()
    b = Client(id=2, name="B", email="b@example.com", phone="p")
    saved(session, b)  # t1
    b.id, b.email = 1, "b2@example.com"  # B comes to key 1 ...
    session.commit()  # t2
    b.id, b.phone = 3, "q"  # ... and leaves it
    session.commit()  # t3
    renamed = commit_times(audit.collection)[0]

    # nothing B's entries say (its old id, email or phone) was ever A's
    assert audit.state_at(Client, 1, renamed + SECOND / 2) == {"name": "A2"}


def test_without_a_model_a_created_rows_state_does_not_change_with_later_entries(
    audit: AuditLog, session: Session, collection: Any, clock: Clock
) -> None:
    client = Client(name="a")
    saved(session, client)
    untyped = AuditReader(collection)
    created = commit_times(collection)[0]
    before = untyped.state_at("clients", client.id, created)
    client.phone = "555"
    session.commit()

    assert before == {"id": client.id, "name": "a"}  # the create's values, as stored
    assert untyped.state_at("clients", client.id, created) == before


# -- many rows: filters, pages and time bounds --------------------------------------------------


def test_entries_changing_any_of_several_fields_are_found(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    client = Client(name="a")
    saved(session, client)
    client.phone = "555"
    session.commit()
    client.email = "a@example.com"
    session.commit()

    found = audit.for_table(Client, fields=("name", "phone"))
    assert [(e.action, sorted(e.changes)) for e in found] == [
        ("update", ["phone"]),
        ("create", ["id", "name"]),
    ]
    page = audit.find(table=Client, fields=("email", "phone"), actions="update")
    assert [sorted(e.changes) for e in page] == [["email"], ["phone"]]


def test_a_cursor_does_not_widen_since_when_paging_oldest_first(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    for i in range(4):
        saved(session, Client(name=f"c{i}"))
    _, _, third, _ = commit_times(audit.collection)
    first_page = audit.find(order="oldest", limit=1)
    assert first_page.next_cursor is not None

    page = audit.find(order="oldest", since=third, after=first_page.next_cursor)

    assert [e.changes["name"].new for e in page] == ["c2", "c3"]


def test_a_date_bound_is_the_midnight_that_starts_it(
    audit: AuditLog, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    midnight = dt.datetime(2024, 5, 2, tzinfo=UTC)
    clock = controlled_clock(monkeypatch, start=midnight - SECOND, step=dt.timedelta(0))
    saved(session, Client(name="before"))
    clock.now = midnight
    saved(session, Client(name="at midnight"))
    assert commit_times(audit.collection) == [midnight - SECOND, midnight]

    day = dt.date(2024, 5, 2)
    assert [e.changes["name"].new for e in audit.for_table(Client, since=day)] == ["at midnight"]
    assert [e.changes["name"].new for e in audit.for_table(Client, until=day)] == ["before"]


@pytest.fixture
def tokyo_local_time() -> Iterator[None]:
    """The process's local time zone is Asia/Tokyo (UTC+9) for the test."""
    saved_tz = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    try:
        yield
    finally:
        if saved_tz is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved_tz
        time.tzset()


def test_a_naive_bound_is_utc_whatever_the_local_time_zone(
    audit: AuditLog, session: Session, clock: Clock, tokyo_local_time: None
) -> None:
    client = Client(name="A")
    saved(session, client)
    client.name = "B"
    session.commit()
    _, renamed = commit_times(audit.collection)
    naive = renamed.replace(tzinfo=None)

    assert [e.changes["name"].new for e in audit.for_table(Client, since=naive)] == ["B"]
    assert [e.changes["name"].new for e in audit.for_table(Client, until=naive)] == ["A"]
    state = audit.state_at(Client, client.id, naive - SECOND / 2)
    assert state is not None and state["name"] == "A"


# -- ids and user ids given as text ----------------------------------------------------------


def test_text_with_non_ascii_digits_matches_only_that_text(
    audit: AuditLog, session: Session
) -> None:
    with audit.acting_as(5):
        saved(session, Client(name="by five"))
    with audit.acting_as("\u0665"):  # ARABIC-INDIC DIGIT FIVE
        saved(session, Client(name="by the text"))

    assert [e.changes["name"].new for e in audit.by_user("\u0665")] == ["by the text"]
    assert [e.changes["name"].new for e in audit.by_user("5")] == ["by five"]


def test_a_user_id_beyond_64_bits_given_as_text_is_matched_as_text(
    collection: Any, session: Session
) -> None:
    spy = SpyCollection(collection)
    audit = new_log(spy)
    huge = 2**64
    try:
        with audit.acting_as(huge):  # stored as its decimal string
            saved(session, Client(name="by a huge id"))
        spy.reset()

        assert [e.user_id for e in audit.by_user(str(huge))] == [str(huge)]
        assert [e.user_id for e in audit.by_user(huge)] == [str(huge)]
        assert spy.finds
        for find in spy.finds:  # what pymongo must encode to send it to a server
            bson.encode(find.filter)
    finally:
        audit.close()


def test_a_set_is_not_an_id(audit: AuditLog, session: Session) -> None:
    untyped = AuditReader(audit.collection)
    for call in (
        lambda: audit.for_object(Client, {1}),
        lambda: untyped.for_object("clients", {1}),
        lambda: audit.by_user({42}),
        lambda: audit.find(user_id=frozenset({42})),
    ):
        with pytest.raises(ValueError, match="single value"):
            call()


# -- entries as returned ----------------------------------------------------------------------


def test_created_at_is_aware_utc_from_a_client_that_is_not_tz_aware(
    audit: AuditLog, session: Session, clock: Clock, tokyo_local_time: None
) -> None:
    client = Client(id=1, name="A")
    saved(session, client)
    client.id = 2
    session.commit()
    created, moved = commit_times(audit.collection)
    naive = audit.collection.with_options(codec_options=CodecOptions(tz_aware=False))
    assert naive.find_one()["created_at"].tzinfo is None  # pymongo's default

    plain_reader = AuditReader(naive, models=[Client])

    entries = list(plain_reader.for_object(Client, 2))
    assert [e.created_at for e in entries] == [moved, created]
    assert all(e.created_at.tzinfo == UTC for e in entries)
    assert plain_reader.state_at(Client, 1, moved) is None  # the row had left key 1


def test_a_decimal_user_id_and_decimal_context_values_come_back_as_decimals(
    audit: AuditLog, session: Session
) -> None:
    parts = [Decimal("1.5"), {"fee": Decimal("0.25")}]
    with audit.acting_as(Decimal("7.5")), audit.context(amount=Decimal("9.99"), parts=parts):
        saved(session, Client(name="a"))

    (entry,) = audit.by_user(Decimal("7.5"))
    assert entry.user_id == Decimal("7.5") and isinstance(entry.user_id, Decimal)
    assert dict(entry.context) == {
        "amount": Decimal("9.99"),
        "parts": [Decimal("1.5"), {"fee": Decimal("0.25")}],
    }
    assert isinstance(entry.context["amount"], Decimal)
    assert isinstance(entry.context["parts"][0], Decimal)
    assert isinstance(entry.context["parts"][1]["fee"], Decimal)


def test_previous_object_id_comes_back_as_the_keys_python_type(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    device = Device(label="phone")
    saved(session, Client(id=7, name="member"))
    membership = Membership(group="admins", member_id=7)
    saved(session, device, membership)
    old_device_id = device.id
    device.id = uuid.uuid4()
    membership.group = "owners"
    session.commit()

    moved_device = next(audit.history(device))
    assert moved_device.previous_object_id == old_device_id
    assert isinstance(moved_device.previous_object_id, uuid.UUID)
    moved_membership = next(audit.history(membership))
    assert moved_membership.object_id == ("owners", 7)
    assert moved_membership.previous_object_id == ("admins", 7)


def test_without_a_model_removing_several_related_rows_is_a_collection_change(
    audit: AuditLog, session: Session, collection: Any, clock: Clock
) -> None:
    article = Article(title="a", tags=[Tag(label="x"), Tag(label="y")])
    saved(session, article)
    article.tags.clear()
    session.commit()

    removed = next(AuditReader(collection).for_object("articles", article.id))
    change = removed.changes["tags"]
    assert change.collection and change.added == [] and len(change.deleted) == 2
    with pytest.raises(TypeError, match="collection"):
        _ = change.old


def test_describe_shows_milliseconds_a_user_id_of_zero_and_values_up_to_60_characters(
    audit: AuditLog, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = controlled_clock(monkeypatch, step=dt.timedelta(0))
    sixty = "n" * 58  # its repr, quotes included, is 60 characters
    client = Client(name="A")
    with audit.acting_as(0):
        saved(session, client)
        clock.now = dt.datetime(2024, 5, 1, 12, 0, 1, 5000, tzinfo=UTC)  # 5 ms past a second
        client.name = sixty
        session.commit()

    entry = next(audit.history(client))

    assert entry.describe() == (
        f"update clients {client.id} by 0 at 2024-05-01 12:00:01.005+00:00: name 'A' → {sixty!r}"
    )
