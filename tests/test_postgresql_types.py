"""PostgreSQL's own column types (UUID, JSONB, ARRAY, NUMERIC, TIMESTAMPTZ, INTERVAL, INET,
CIDR, ENUM) against a real server: every value reaches the log in its README "Values" form,
whether it comes from the application or is read back from PostgreSQL through psycopg."""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import logging
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from bson import Decimal128
from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    Integer,
    Numeric,
    String,
    Uuid,
    func,
    null,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.orm.attributes import flag_modified

from audit_mongo import AuditLog
from tests.conftest import only, postgresql_engine, stored

# What the connection reads timestamptz in: neither UTC nor the application's zone.
SESSION_ZONE = "America/New_York"
TOKYO = dt.timezone(dt.timedelta(hours=9))


class Base(DeclarativeBase):
    """A metadata of its own: these tables and types exist only in this module's schema."""


class Mood(enum.Enum):
    HAPPY = "h"
    SAD = "s"


class Reading(Base):
    __tablename__ = "readings"
    id: Mapped[int] = mapped_column(primary_key=True)
    uid_text: Mapped[str | None] = mapped_column(postgresql.UUID(as_uuid=False))
    ref: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    data: Mapped[Any] = mapped_column(postgresql.JSONB, nullable=True)
    counts: Mapped[list[int] | None] = mapped_column(postgresql.ARRAY(Integer))
    labels: Mapped[list[str] | None] = mapped_column(postgresql.ARRAY(String))
    amount: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    span: Mapped[dt.timedelta | None] = mapped_column(postgresql.INTERVAL)
    # psycopg loads these as ipaddress objects (SQLAlchemy's default native_inet_types).
    address: Mapped[Any] = mapped_column(postgresql.INET, nullable=True)
    network: Mapped[Any] = mapped_column(postgresql.CIDR, nullable=True)
    mood: Mapped[Mood | None] = mapped_column(postgresql.ENUM(Mood, name="mood"))


@pytest.fixture
def engine() -> Iterator[Engine]:
    """PostgreSQL on a schema of its own, reading timestamptz in a zone that is not UTC."""
    yield from postgresql_engine(Base.metadata, f"-c timezone={SESSION_ZONE}")


@pytest.fixture
def audit(collection: Any) -> Iterator[AuditLog]:
    log = AuditLog(collection)
    log.track(Reading)
    yield log
    log.close()


@pytest.fixture
def session(engine: Engine, audit: AuditLog) -> Iterator[Session]:
    with Session(engine) as s:
        yield s


TOKEN = "9f1c6e0a-3b2d-4c5e-8f70-1a2b3c4d5e6f"


def a_reading() -> Reading:
    return Reading(
        uid_text=TOKEN,
        ref=uuid.UUID(TOKEN),
        data={"tags": ["a", "b"], "owner": {"id": 7, "name": None}},
        counts=[1, 2],
        labels=["x", "y"],
        amount=Decimal("-1234567890.12"),
        at=dt.datetime(2024, 5, 1, 9, 30, 15, 123456, tzinfo=TOKYO),
        span=dt.timedelta(days=1, hours=2),
        address="10.0.0.1",
        network="10.0.0.0/8",
        mood=Mood.HAPPY,
    )


# a_reading() in its README "Values" form.
STORED = {
    "uid_text": TOKEN,
    "ref": TOKEN,  # a UUID and a UUID-as-string column store the same canonical string
    "data": {"tags": ["a", "b"], "owner": {"id": 7, "name": None}},
    "counts": [1, 2],
    "labels": ["x", "y"],
    "amount": Decimal128("-1234567890.12"),
    "at": "2024-05-01T00:30:15.123456+00:00",
    "span": 93600.0,
    "address": "10.0.0.1",
    "network": "10.0.0.0/8",
    "mood": "HAPPY",
}


def test_create_update_and_delete_store_postgresql_types_in_their_documented_forms(
    session: Session, collection: Any, caplog: pytest.LogCaptureFixture
) -> None:
    reading = a_reading()
    session.add(reading)
    session.commit()
    reading_id = reading.id
    created = only(collection, action="create")  # only() checks bson.encode
    assert created["changes"] == {
        "id": {"added": [reading_id], "deleted": []},
        **{key: {"added": [value], "deleted": []} for key, value in STORED.items()},
    }

    reading.amount = Decimal("9999999999.99")  # the largest NUMERIC(12, 2)
    reading.at = dt.datetime(2024, 12, 31, 23, 59, tzinfo=dt.timezone(dt.timedelta(hours=-8)))
    reading.span = dt.timedelta(microseconds=1)
    reading.mood = Mood.SAD
    with caplog.at_level(logging.WARNING, logger="audit_mongo"):
        session.commit()
        # Everything loaded back from PostgreSQL (timestamptz in New York time, INET and CIDR
        # as ipaddress objects) before the delete reads the row's values.
        session.expire_all()
        session.delete(session.get(Reading, reading_id))
        session.commit()

    updated = only(collection, action="update")
    assert updated["changes"] == {
        "amount": {
            "added": [Decimal128("9999999999.99")],
            "deleted": [Decimal128("-1234567890.12")],
        },
        "at": {
            "added": ["2025-01-01T07:59:00+00:00"],
            "deleted": ["2024-05-01T00:30:15.123456+00:00"],
        },
        "span": {"added": [1e-06], "deleted": [93600.0]},
        "mood": {"added": ["SAD"], "deleted": ["HAPPY"]},
    }
    deleted = only(collection, action="delete")
    assert deleted["changes"] == {
        "id": {"added": [], "deleted": [reading_id]},
        **{key: {"added": [], "deleted": [value]} for key, value in STORED.items()},
        "amount": {"added": [], "deleted": [Decimal128("9999999999.99")]},
        "at": {"added": [], "deleted": ["2025-01-01T07:59:00+00:00"]},
        "span": {"added": [], "deleted": [1e-06]},
        "mood": {"added": [], "deleted": ["SAD"]},
    }
    assert "unrepresentable" not in caplog.text


def test_inet_and_cidr_values_are_stored_as_the_strings_postgresql_prints(
    session: Session, collection: Any, caplog: pytest.LogCaptureFixture
) -> None:
    reading = Reading(
        address=ipaddress.ip_interface("192.168.1.5/24"),
        network=ipaddress.ip_network("2001:db8::/32"),
    )
    session.add(reading)
    session.commit()
    assert isinstance(reading.address, ipaddress.IPv4Interface)  # as psycopg loads it

    reading.address = "2001:db8::1"
    with caplog.at_level(logging.WARNING, logger="audit_mongo"):
        session.commit()

    created = only(collection, action="create")["changes"]
    assert created["address"] == {"added": ["192.168.1.5/24"], "deleted": []}
    assert created["network"] == {"added": ["2001:db8::/32"], "deleted": []}
    assert only(collection, action="update")["changes"] == {
        "address": {"added": ["2001:db8::1"], "deleted": ["192.168.1.5/24"]}
    }
    assert "unrepresentable" not in caplog.text


def test_a_jsonb_value_changed_in_place_or_replaced_is_an_update(
    session: Session, collection: Any
) -> None:
    reading = Reading(data={"tags": ["a"], "owner": {"id": 7}})
    session.add(reading)
    session.commit()

    reading.data["tags"].append("b")  # in place: SQLAlchemy sees it only when told
    reading.data["owner"]["id"] = 8
    flag_modified(reading, "data")
    session.commit()
    reading.data = {"tags": [], "a.b": {"$ref": 1.5}}  # a new dict
    session.commit()

    first, second = stored(collection, action="update")
    assert first["changes"] == {
        "data": {
            "added": [{"tags": ["a", "b"], "owner": {"id": 8}}],
            "deleted": [{"tags": ["a"], "owner": {"id": 7}}],
        }
    }
    assert second["changes"] == {
        "data": {
            "added": [{"tags": [], "a\uff0eb": {"\uff04ref": 1.5}}],
            "deleted": [{"tags": ["a", "b"], "owner": {"id": 8}}],
        }
    }


def test_json_null_is_stored_as_null_like_sql_null(session: Session, collection: Any) -> None:
    json_null = Reading(data=JSON.NULL)
    sql_null = Reading(data=null())
    from_dict = Reading(data={"x": 1})
    session.add_all([json_null, sql_null, from_dict])
    session.commit()
    is_sql_null = dict(session.execute(select(Reading.id, Reading.data.is_(None))).all())
    assert is_sql_null == {json_null.id: False, sql_null.id: True, from_dict.id: False}

    from_dict.data = JSON.NULL
    session.commit()
    session.delete(json_null)
    session.commit()

    created = only(collection, action="create", object_id=json_null.id)["changes"]
    # Whether a create lists an explicit JSON null is not pinned here; never as a number.
    assert created.get("data", {"added": [None], "deleted": []}) == {"added": [None], "deleted": []}
    assert "data" not in only(collection, action="create", object_id=sql_null.id)["changes"]
    assert only(collection, action="update")["changes"] == {
        "data": {"added": [None], "deleted": [{"x": 1}]}
    }
    assert only(collection, action="delete")["changes"]["data"] == {"added": [], "deleted": [None]}


def test_an_array_change_shows_the_old_and_new_lists(session: Session, collection: Any) -> None:
    reading = Reading(counts=[3, 1, 2], labels=["x", "y"])
    session.add(reading)
    session.commit()

    reading.counts = [*reading.counts, 2]  # a new list: ARRAY is not mutation-tracked
    reading.labels = []
    session.commit()
    reading.labels = None
    session.commit()

    first, second = stored(collection, action="update")
    assert first["changes"] == {
        "counts": {"added": [[3, 1, 2, 2]], "deleted": [[3, 1, 2]]},
        "labels": {"added": [[]], "deleted": [["x", "y"]]},
    }
    assert second["changes"] == {"labels": {"added": [None], "deleted": [[]]}}


def test_a_bulk_orm_update_records_the_values_postgresql_holds_before_and_after(
    session: Session, collection: Any
) -> None:
    target, other = a_reading(), Reading(amount=Decimal("5.00"))
    session.add_all([target, other])
    session.commit()
    collection.delete_many({})

    session.execute(
        update(Reading)
        .where(Reading.amount < 0)
        .values(
            amount=Reading.amount * 2,
            counts=func.array_append(Reading.counts, 9),
            labels=["z"],
            data={"tags": [], "n": 0.1},
            at=Reading.at + dt.timedelta(hours=1),
            span=Reading.span - dt.timedelta(days=1),
            address=ipaddress.ip_address("10.0.0.2"),
            mood=Mood.SAD,
        )
    )
    session.commit()

    document = only(collection)
    assert (document["action"], document["object_id"]) == ("update", target.id)
    assert document["changes"] == {
        "amount": {
            "added": [Decimal128("-2469135780.24")],
            "deleted": [Decimal128("-1234567890.12")],
        },
        "counts": {"added": [[1, 2, 9]], "deleted": [[1, 2]]},
        "labels": {"added": [["z"]], "deleted": [["x", "y"]]},
        "data": {
            "added": [{"tags": [], "n": 0.1}],
            "deleted": [STORED["data"]],
        },
        "at": {
            "added": ["2024-05-01T01:30:15.123456+00:00"],
            "deleted": ["2024-05-01T00:30:15.123456+00:00"],
        },
        "span": {"added": [7200.0], "deleted": [93600.0]},
        "address": {"added": ["10.0.0.2"], "deleted": ["10.0.0.1"]},
        "mood": {"added": ["SAD"], "deleted": ["HAPPY"]},
    }


def test_a_bulk_update_by_primary_key_records_arrays_and_jsonb(
    session: Session, collection: Any
) -> None:
    first, second = Reading(counts=[1], data={"v": 1}), Reading(labels=["a"], data={"v": 2})
    session.add_all([first, second])
    session.commit()
    collection.delete_many({})

    session.execute(
        update(Reading),
        [
            {"id": first.id, "counts": [1, 1], "data": {"v": [1]}},
            {"id": second.id, "labels": ["a", "b"], "data": {"v": 2}},  # data: no change
        ],
    )
    session.commit()

    assert [(d["object_id"], d["changes"]) for d in stored(collection)] == [
        (
            first.id,
            {
                "counts": {"added": [[1, 1]], "deleted": [[1]]},
                "data": {"added": [{"v": [1]}], "deleted": [{"v": 1}]},
            },
        ),
        (second.id, {"labels": {"added": [["a", "b"]], "deleted": [["a"]]}}),
    ]
