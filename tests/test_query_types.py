"""Values come back from the query API as the model's Python types: the inverse of the
README's "Values" table, for values a real session wrote (create: the values assigned;
update: the old values as the database gave them back), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import (
    DateTime,
    Engine,
    Enum,
    Integer,
    Numeric,
    String,
    TypeDecorator,
    Uuid,
    create_engine,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from audit_mongo import AuditEntry, AuditLog, AuditReader
from tests.conftest import postgresql_engine
from tests.models import Color, Point, Sample
from tests.query_helpers import new_log

TOKYO = dt.timezone(dt.timedelta(hours=9))


class Style(enum.Flag):
    BOLD = 1
    ITALIC = 2


class Perm(enum.IntFlag):
    READ = 1
    WRITE = 2


class FlagType(TypeDecorator[Style]):
    """A Flag column: SQLAlchemy's Enum cannot hold a combination of members."""

    impl = Integer
    cache_ok = True

    def process_bind_param(self, value: Style | None, dialect: Any) -> int | None:
        return None if value is None else value.value

    def process_result_value(self, value: int | None, dialect: Any) -> Style | None:
        return None if value is None else Style(value)

    @property
    def python_type(self) -> type[Style]:
        return Style


class BigNumber(TypeDecorator[int]):
    """Integers past 64 bits, kept as text in the database."""

    impl = String(60)
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Any) -> str | None:
        return None if value is None else str(value)

    def process_result_value(self, value: str | None, dialect: Any) -> int | None:
        return None if value is None else int(value)

    @property
    def python_type(self) -> type[int]:
        return int


class Base(DeclarativeBase):
    """Tables of this module only."""


class Flags(Base):
    __tablename__ = "flags"
    id: Mapped[int] = mapped_column(primary_key=True)
    style: Mapped[Style | None] = mapped_column(Enum(Style))  # single members, by name
    styles: Mapped[Style | None] = mapped_column(FlagType)
    perms: Mapped[int | None] = mapped_column(Integer)  # an IntFlag is an int
    huge: Mapped[int | None] = mapped_column(BigNumber)
    wide: Mapped[Decimal | None] = mapped_column(Numeric(40, 0))


class Reading(Base):
    """PostgreSQL's own types."""

    __tablename__ = "readings"
    id: Mapped[int] = mapped_column(primary_key=True)
    counts: Mapped[list[int] | None] = mapped_column(postgresql.ARRAY(Integer))
    amounts: Mapped[list[Decimal] | None] = mapped_column(postgresql.ARRAY(Numeric(10, 2)))
    moments: Mapped[list[dt.datetime] | None] = mapped_column(
        postgresql.ARRAY(DateTime(timezone=True))
    )
    grid: Mapped[list[list[int]] | None] = mapped_column(postgresql.ARRAY(Integer, dimensions=2))
    doc: Mapped[Any] = mapped_column(postgresql.JSONB, nullable=True)
    color: Mapped[Color | None] = mapped_column(postgresql.ENUM(Color, name="color_pg"))
    span: Mapped[dt.timedelta | None] = mapped_column(postgresql.INTERVAL)
    at: Mapped[dt.datetime | None] = mapped_column(postgresql.TIMESTAMP(timezone=True))
    ref: Mapped[uuid.UUID | None] = mapped_column(postgresql.UUID(as_uuid=True))
    tag: Mapped[uuid.UUID | None] = mapped_column(Uuid)


def round_trip(
    audit: AuditLog, engine: Engine, model: type, first: dict[str, Any], second: dict[str, Any]
) -> tuple[AuditEntry, AuditEntry, dict[str, Any]]:
    """Create a row with ``first``, read it back, update it to ``second``: the create's and
    the update's entries, and the values the database gave back."""
    with Session(engine) as session:
        row = model(**first)
        session.add(row)
        session.commit()
        loaded = {name: getattr(row, name) for name in first}  # expired: read back
        for name, value in second.items():
            setattr(row, name, value)
        session.commit()
        updated, created = audit.history(row)
    return created, updated, loaded


def assert_same(found: Any, expected: Any) -> None:
    """Equal, of the same type, and (datetimes) equally naive or aware."""
    assert found == expected
    assert type(found) is type(expected), (found, expected)
    if isinstance(expected, (dt.datetime, dt.time)):
        assert (found.tzinfo is None) == (expected.tzinfo is None)


SAMPLE_VALUES: list[tuple[str, Any, Any]] = [
    ("price", Decimal("9.99"), Decimal("10.01")),
    ("day", dt.date(2024, 5, 1), dt.date(1999, 12, 31)),
    ("at", dt.datetime(2024, 5, 1, 12, 30, 0, 123456), dt.datetime(2001, 1, 1)),
    ("at_tz", dt.datetime(2024, 5, 1, 21, 30, tzinfo=TOKYO), dt.datetime(2001, 1, 1, tzinfo=TOKYO)),
    ("clock", dt.time(12, 30, 15, 500000), dt.time(0, 0, 1)),
    ("span", dt.timedelta(days=1, seconds=5, microseconds=250000), dt.timedelta(minutes=90)),
    ("uid", uuid.UUID("9f1c0d4e-8a52-4a7b-9d3e-0c1f2a3b4c5d"), uuid.uuid4()),
    ("color", Color.GREEN, Color.RED),
    ("blob", b"\x00\xff binary", b"other"),
    ("data", {"a.b": 1, "$k": {"c.d": [1, 2]}, "x": None}, {"plain": [True, 1.5]}),
    ("ratio", 1.5, -2.25),
]


@pytest.mark.parametrize(
    ("name", "first", "second"), SAMPLE_VALUES, ids=[c[0] for c in SAMPLE_VALUES]
)
def test_a_column_value_comes_back_as_the_models_python_type(
    engine: Engine, collection: Any, name: str, first: Any, second: Any
) -> None:
    audit = new_log(collection, (Sample,))
    try:
        created, updated, loaded = round_trip(audit, engine, Sample, {name: first}, {name: second})
    finally:
        audit.close()

    assert_same(created.changes[name].new, first)
    assert_same(updated.changes[name].old, loaded[name])
    assert_same(updated.changes[name].new, second)


def test_a_type_decorator_value_comes_back_as_its_bound_form(
    engine: Engine, collection: Any
) -> None:
    """What process_bind_param gave is all the log has: README "Values"."""
    audit = new_log(collection, (Sample,))
    try:
        created, _, _ = round_trip(audit, engine, Sample, {"where": Point(3, 4)}, {"ratio": 1.0})
    finally:
        audit.close()
    assert created.changes["where"].new == "3,4"


@pytest.fixture
def flags_engine(tmp_path: Any) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'flags.db'}")
    Base.metadata.create_all(engine, tables=[Flags.__table__])  # type: ignore[list-item]
    yield engine
    engine.dispose()


FLAG_VALUES: list[tuple[str, Any, Any]] = [
    ("style", Style.BOLD, Style.ITALIC),
    ("styles", Style.BOLD | Style.ITALIC, Style(0)),
    ("huge", 2**70, -(2**64)),
    ("wide", Decimal(2**100), Decimal(-(2**64))),
]


@pytest.mark.parametrize(("name", "first", "second"), FLAG_VALUES, ids=[c[0] for c in FLAG_VALUES])
def test_flags_and_integers_past_64_bits_come_back_typed(
    flags_engine: Engine, collection: Any, name: str, first: Any, second: Any
) -> None:
    audit = new_log(collection, (Flags,))
    try:
        created, updated, loaded = round_trip(
            audit, flags_engine, Flags, {name: first}, {name: second}
        )
    finally:
        audit.close()

    assert_same(created.changes[name].new, first)
    assert_same(updated.changes[name].old, loaded[name])
    assert_same(updated.changes[name].new, second)


def test_an_int_flag_in_an_integer_column_equals_its_members(
    flags_engine: Engine, collection: Any
) -> None:
    audit = new_log(collection, (Flags,))
    try:
        created, _, _ = round_trip(
            audit, flags_engine, Flags, {"perms": Perm.READ | Perm.WRITE}, {"perms": 0}
        )
    finally:
        audit.close()
    assert created.changes["perms"].new == Perm.READ | Perm.WRITE


def test_json_keys_escaped_for_mongo_come_back_as_written(
    flags_engine: Engine, collection: Any
) -> None:
    audit = new_log(collection, (Sample,))
    Sample.metadata.create_all(flags_engine, tables=[Sample.__table__])  # type: ignore[list-item]
    data = {"a.b": {"$set": 1}, "nul\x00key": ["x.y"], "$": None, "$$": "$"}
    try:
        created, _, _ = round_trip(audit, flags_engine, Sample, {"data": data}, {"ratio": 1.0})
    finally:
        audit.close()

    stored = audit.collection.find_one({"_id": created.id})["changes"]["data"]["added"][0]
    assert "a.b" not in stored  # stored escaped ...
    assert created.changes["data"].new == data  # ... read back as written


def test_without_models_values_come_back_as_stored_in_plain_python(
    engine: Engine, collection: Any
) -> None:
    audit = new_log(collection, (Sample,))
    try:
        round_trip(
            audit,
            engine,
            Sample,
            {"price": Decimal("9.99"), "day": dt.date(2024, 5, 1), "blob": b"\x01"},
            {"ratio": 1.0},
        )
    finally:
        audit.close()

    _, created = AuditReader(collection).for_table("samples")
    assert created.changes["price"].new == Decimal("9.99")  # a Decimal128 is a Decimal
    assert created.changes["day"].new == "2024-05-01"  # the type is not known
    assert created.changes["blob"].new == b"\x01"


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    yield from postgresql_engine(Base.metadata)


PG_VALUES: list[tuple[str, Any, Any]] = [
    ("counts", [1, 2, 3], []),
    ("amounts", [Decimal("1.50"), Decimal("-2.25")], [Decimal("0.01")]),
    (
        "moments",
        [dt.datetime(2024, 5, 1, 9, 0, tzinfo=TOKYO)],
        [dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)],
    ),
    ("grid", [[1, 2], [3, 4]], [[5, 6]]),
    ("doc", {"a.b": [1, {"$in": 2}], "n": None}, {"k": "v"}),
    ("color", Color.RED, Color.GREEN),
    ("span", dt.timedelta(days=3, hours=4), dt.timedelta(seconds=1)),
    ("at", dt.datetime(2024, 5, 1, 9, 0, tzinfo=TOKYO), dt.datetime(2000, 1, 1, tzinfo=TOKYO)),
    ("ref", uuid.UUID("0b6f0d4e-8a52-4a7b-9d3e-0c1f2a3b4c5d"), uuid.uuid4()),
    ("tag", uuid.UUID("1b6f0d4e-8a52-4a7b-9d3e-0c1f2a3b4c5d"), uuid.uuid4()),
]


@pytest.mark.parametrize(("name", "first", "second"), PG_VALUES, ids=[c[0] for c in PG_VALUES])
def test_postgresql_types_come_back_typed(
    pg_engine: Engine, collection: Any, name: str, first: Any, second: Any
) -> None:
    audit = new_log(collection, (Reading,))
    try:
        created, updated, loaded = round_trip(
            audit, pg_engine, Reading, {name: first}, {name: second}
        )
    finally:
        audit.close()

    assert_same(created.changes[name].new, first)
    assert_same(updated.changes[name].old, loaded[name])
    assert_same(updated.changes[name].new, second)
    if isinstance(first, list) and first and isinstance(first[0], (Decimal, dt.datetime)):
        for found, expected in zip(created.changes[name].new, first, strict=True):
            assert_same(found, expected)
