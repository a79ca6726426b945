"""Input checks of the query API: nothing a caller passes can become a Mongo operator, and a
misspelt name or a bad argument is a clear error, raised at the call, not an empty result."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session

from audit_mongo import AuditLog, AuditReader
from tests.models import Account, Client, Device, Membership
from tests.query_helpers import UTC, commit_times, controlled_clock, new_log

NOW = dt.datetime(2030, 1, 1, tzinfo=UTC)
MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
def audit(collection: Any) -> Iterator[AuditLog]:
    log = new_log(collection)
    log.track(Account, exclude=("password",))
    yield log
    log.close()


@pytest.fixture
def client(audit: AuditLog, session: Session) -> Client:
    client = Client(name="a")
    session.add(client)
    session.commit()
    return client


OPERATOR_IDS = [
    pytest.param({"$gt": 0}, "not a mapping", id="a dict"),
    pytest.param({"id": 1}, "not a mapping", id="a plain dict"),
    pytest.param("$where", "may not start with", id="a $ string"),
    pytest.param("$gt", "may not start with", id="an operator name"),
]


@pytest.mark.parametrize(("bad", "message"), OPERATOR_IDS)
def test_an_object_id_that_could_be_an_operator_is_refused(
    audit: AuditLog, client: Client, bad: Any, message: str
) -> None:
    untyped = AuditReader(audit.collection)
    calls = [
        lambda: audit.for_object(Client, bad),
        lambda: audit.for_object("clients", bad),
        lambda: untyped.for_object("clients", bad),
        lambda: audit.state_at(Client, bad, NOW),
        lambda: untyped.state_at("clients", bad, NOW),
        lambda: audit.find(table=Client, object_id=bad),
        lambda: untyped.find(table="clients", object_id=bad),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.parametrize(
    "bad",
    [
        ("$admins", 7),
        ("admins", {"$ne": 0}),
        ["admins", "$7"],
        ("admins", ["$x"]),
    ],
    ids=["first part", "a dict part", "a $ text part", "nested"],
)
def test_a_composite_key_with_an_operator_part_is_refused(audit: AuditLog, bad: Any) -> None:
    with pytest.raises(ValueError, match=r"mapping|may not start|key of 2"):
        audit.for_object(Membership, bad)
    with pytest.raises(ValueError, match=r"mapping|may not start"):
        AuditReader(audit.collection).for_object("memberships", bad)


@pytest.mark.parametrize(("bad", "message"), OPERATOR_IDS)
def test_a_user_or_request_id_that_could_be_an_operator_is_refused(
    audit: AuditLog, bad: Any, message: str
) -> None:
    for call in (
        lambda: audit.by_user(bad),
        lambda: audit.find(user_id=bad),
        lambda: audit.by_user([1, bad]),
        lambda: audit.for_request(bad),
    ):
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.parametrize("bad", [{"$ne": ""}, "$where", "", 5, None])
def test_a_transaction_id_must_be_plain_text(audit: AuditLog, bad: Any) -> None:
    with pytest.raises(ValueError, match="transaction id"):
        audit.for_transaction(bad)


def test_an_id_is_required_and_must_be_a_single_finite_value(audit: AuditLog) -> None:
    with pytest.raises(ValueError, match="required"):
        audit.for_request(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        AuditReader(audit.collection).for_object("clients", float("nan"))
    with pytest.raises(ValueError, match="empty"):
        AuditReader(audit.collection).for_object("clients", ())
    with pytest.raises(ValueError, match="cannot be stored"):
        audit.by_user(object())


def test_a_text_id_that_is_not_the_keys_type_is_a_clear_error(audit: AuditLog) -> None:
    with pytest.raises(ValueError, match=r"'abc' is not a valid int, the type of clients\.id"):
        audit.for_object(Client, "abc")
    with pytest.raises(ValueError, match="not a valid UUID"):
        audit.for_object(Device, "not-a-uuid")
    with pytest.raises(ValueError, match=r"key of 2 column\(s\) \(group, member_id\)"):
        audit.for_object(Membership, "admins")


def test_table_names_are_checked_against_the_models(audit: AuditLog) -> None:
    for call in (
        lambda: audit.for_table("client"),
        lambda: audit.for_object("client", 1),
        lambda: audit.by_user(1, table="client"),
        lambda: audit.find(table="client"),
        lambda: audit.state_at("client", 1, NOW),
    ):
        with pytest.raises(ValueError, match=r"unknown table 'client'.*clients"):
            call()
    with pytest.raises(ValueError, match="table name"):
        audit.for_table("$where")
    with pytest.raises(ValueError, match="table name"):
        audit.for_table("")
    with pytest.raises(TypeError, match="not a mapped class"):
        audit.for_table(dict)


def test_field_names_are_checked_against_the_model(audit: AuditLog, client: Client) -> None:
    for call in (
        lambda: audit.for_table(Client, fields=("emial",)),
        lambda: audit.for_table("clients", fields="emial"),
        lambda: audit.find(table=Client, fields=["name", "emial"]),
        lambda: audit.updated_at(client, "emial"),
        lambda: audit.changed_by(client, "emial"),
    ):
        with pytest.raises(ValueError, match=r"clients has no attribute 'emial'.*email"):
            call()
    with pytest.raises(ValueError, match="excluded from the audit log"):
        audit.for_table(Account, fields="password")
    for bad in ("a.b", "$where", "", "a\x00"):
        with pytest.raises(ValueError, match="field name"):
            audit.find(fields=bad)  # no model to check against: still no operator
    with pytest.raises(ValueError, match="fields is empty"):
        audit.for_table(Client, fields=())


@pytest.mark.parametrize("bad", ["drop", ["create", "void"], (), "CREATE", [None]])
def test_actions_must_be_among_create_update_delete(audit: AuditLog, bad: Any) -> None:
    for call in (
        lambda: audit.for_table(Client, actions=bad),
        lambda: audit.for_object(Client, 1, actions=bad),
        lambda: audit.by_user(1, actions=bad),
        lambda: audit.find(actions=bad),
    ):
        with pytest.raises(ValueError, match="actions must be among create, update, delete"):
            call()


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "10"])
def test_a_limit_must_be_a_positive_integer(audit: AuditLog, client: Client, bad: Any) -> None:
    for call in (
        lambda: audit.history(client, limit=bad),
        lambda: audit.for_object(Client, 1, limit=bad),
        lambda: audit.by_user(1, limit=bad),
        lambda: audit.for_table(Client, limit=bad),
        lambda: audit.find(limit=bad),
    ):
        with pytest.raises(ValueError, match="limit must be a positive integer"):
            call()


def test_a_page_has_a_limit_of_at_most_ten_thousand(audit: AuditLog) -> None:
    assert audit.find(limit=10_000).entries == []
    with pytest.raises(ValueError, match="at most 10000"):
        audit.find(limit=10_001)
    with pytest.raises(ValueError, match="limit must be 1 to 10000"):
        audit.find(limit=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="order must be 'newest' or 'oldest'"):
        audit.find(order="desc")
    with pytest.raises(ValueError, match="object_id needs a table"):
        audit.find(object_id=1)


def encoded(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "bad",
    [
        "garbage!",
        "",
        "a",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        encoded([1]),
        encoded({"a": 1, "b": 2}),
        encoded([1.5, "6630f0c2a1b2c3d4e5f60718"]),
        encoded([True, "6630f0c2a1b2c3d4e5f60718"]),
        encoded(["1", "6630f0c2a1b2c3d4e5f60718"]),
        encoded([1, "not an object id"]),
        encoded([10**20, "6630f0c2a1b2c3d4e5f60718"]),
        12345,
    ],
)
def test_a_page_cursor_not_from_find_is_refused(audit: AuditLog, bad: Any) -> None:
    with pytest.raises(ValueError, match="not a page cursor from find"):
        audit.find(after=bad)


def test_time_bounds_must_be_datetimes_or_dates(audit: AuditLog) -> None:
    for call in (
        lambda: audit.by_user(1, since="2024-05-01"),  # type: ignore[arg-type]
        lambda: audit.for_table(Client, until=1714521600),  # type: ignore[arg-type]
        lambda: audit.find(since="yesterday"),  # type: ignore[arg-type]
        lambda: audit.state_at(Client, 1, "2024-05-01"),  # type: ignore[arg-type]
    ):
        with pytest.raises(TypeError, match="must be a datetime or a date"):
            call()
    with pytest.raises(ValueError, match="when is required"):
        audit.state_at(Client, 1, None)  # type: ignore[arg-type]


def test_naive_bounds_are_utc_aware_ones_are_converted_and_dates_are_midnight_utc(
    audit: AuditLog, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = controlled_clock(monkeypatch, step=dt.timedelta(0))
    after_midnight = dt.datetime(2024, 5, 2, 0, 0, 1, tzinfo=UTC)
    for name, when in [
        ("before midnight", after_midnight - MINUTE),
        ("after midnight", after_midnight),
    ]:
        clock.now = when
        session.add(Client(name=name))
        session.commit()
    assert commit_times(audit.collection)[-1] == after_midnight
    tokyo = dt.timezone(dt.timedelta(hours=9))

    def names(**bounds: Any) -> list[Any]:
        return [e.changes["name"].new for e in audit.for_table(Client, **bounds)]

    assert names(since=after_midnight) == ["after midnight"]
    assert names(since=after_midnight.replace(tzinfo=None)) == ["after midnight"]
    assert names(since=after_midnight.astimezone(tokyo)) == ["after midnight"]
    assert names(until=after_midnight.astimezone(tokyo)) == ["before midnight"]
    assert names(since=dt.date(2024, 5, 2)) == ["after midnight"]
    assert names(until=dt.date(2024, 5, 2)) == ["before midnight"]
    # sub-millisecond bounds: since stays inclusive, until exclusive
    half = dt.timedelta(microseconds=500)
    assert names(since=after_midnight - half) == ["after midnight"]
    assert names(since=after_midnight + half) == []
    assert names(until=after_midnight + half) == ["after midnight", "before midnight"]
