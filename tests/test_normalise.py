"""Every value a column can hold is stored in one documented, BSON-safe form."""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import logging
import math
import uuid
from decimal import Decimal
from typing import Any

import bson
import pytest
from bson import Binary, Decimal128
from sqlalchemy import JSON
from sqlalchemy.orm import Session

from audit_mongo import AuditLog, normalise
from audit_mongo.normalise import column_value_to_bson, to_bson
from tests.conftest import only
from tests.models import Color, Opaque, Point, PointType, Sample

UTC = dt.timezone.utc


@pytest.fixture(autouse=True)
def forget_earlier_warnings() -> None:
    """The fallback warning is logged once per column and type per process."""
    normalise._warned.clear()


PLUS_TWO = dt.timezone(dt.timedelta(hours=2))


class Size(enum.IntEnum):
    SMALL = 1


class Shade(str, enum.Enum):
    DARK = "dark"


class Perm(enum.IntFlag):
    READ = 1
    WRITE = 2


class Style(enum.Flag):
    BOLD = 1
    ITALIC = 2


class Integral(int):
    """Stands for numpy's integers: registered as numbers.Integral."""


class FloatLike(float):
    pass


class ProxyLike:
    """Like werkzeug's LocalProxy: has every dunder, __index__ included, and is no int."""

    def __index__(self) -> int:
        raise TypeError("'AnonymousUserMixin' object cannot be interpreted as an integer")


CASES: list[tuple[str, Any, Any]] = [
    ("none", None, None),
    ("bool", True, True),
    ("str", "héllo", "héllo"),
    ("int", 42, 42),
    ("int64 max", 2**63 - 1, 2**63 - 1),
    ("int64 min", -(2**63), -(2**63)),
    ("int beyond 64 bits", 2**64, "18446744073709551616"),
    ("negative int beyond 64 bits", -(2**70), str(-(2**70))),
    ("float", 1.5, 1.5),
    ("Decimal", Decimal("9.99"), Decimal128("9.99")),
    ("Decimal over 34 digits", Decimal("1." + "1" * 40), "1." + "1" * 40),
    ("Decimal NaN", Decimal("NaN"), Decimal128("NaN")),
    ("naive datetime", dt.datetime(2024, 5, 1, 12, 30, 0, 123456), "2024-05-01T12:30:00.123456"),
    (
        "aware datetime",
        dt.datetime(2024, 5, 1, 12, 30, tzinfo=PLUS_TWO),
        "2024-05-01T10:30:00+00:00",
    ),
    ("date", dt.date(2024, 5, 1), "2024-05-01"),
    ("time", dt.time(12, 30, 15, 500000), "12:30:15.500000"),
    ("aware time", dt.time(12, 30, tzinfo=PLUS_TWO), "12:30:00+02:00"),
    ("timedelta", dt.timedelta(days=1, seconds=1, microseconds=500000), 86401.5),
    ("UUID", uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
    ("IPv4 address (INET)", ipaddress.ip_address("10.0.0.1"), "10.0.0.1"),
    ("IPv6 address (INET)", ipaddress.ip_address("2001:db8:0::1"), "2001:db8::1"),
    ("IPv4 interface (INET)", ipaddress.ip_interface("10.0.0.1/24"), "10.0.0.1/24"),
    ("IPv6 interface (INET)", ipaddress.ip_interface("2001:db8::1/64"), "2001:db8::1/64"),
    ("IPv4 network (CIDR)", ipaddress.ip_network("10.0.0.0/8"), "10.0.0.0/8"),
    ("IPv6 network (CIDR)", ipaddress.ip_network("2001:db8::/32"), "2001:db8::/32"),
    ("JSON.NULL, SQLAlchemy's JSON null (an int subclass)", JSON.NULL, None),
    ("Enum", Color.RED, "RED"),
    ("IntEnum", Size.SMALL, "SMALL"),
    ("str Enum", Shade.DARK, "DARK"),
    ("IntFlag", Perm.READ | Perm.WRITE, 3),
    ("empty IntFlag", Perm(0), 0),
    ("Flag", Style.BOLD | Style.ITALIC, 3),
    ("int subclass", Integral(7), 7),
    ("float subclass", FloatLike(1.5), 1.5),
    (
        "aware datetime that overflows in UTC",
        dt.datetime(9999, 12, 31, 23, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        "9999-12-31T23:00:00-05:00",
    ),
    ("bytes", b"\x00\x01", b"\x00\x01"),
    ("bytearray", bytearray(b"ab"), b"ab"),
    ("memoryview", memoryview(b"ab"), b"ab"),
    ("list", [1, Decimal("2")], [1, Decimal128("2")]),
    ("tuple", (1, "a"), [1, "a"]),
    ("set", {3, 1, 2}, [1, 2, 3]),
    ("frozenset of mixed types", frozenset({1, "a"}), [1, "a"]),
    ("nested dict", {"a": {"b": [dt.date(2024, 1, 1)]}}, {"a": {"b": ["2024-01-01"]}}),
    ("dotted key", {"a.b": 1}, {"a\uff0eb": 1}),
    ("dollar key", {"$set": {"$inc": 1}}, {"\uff04set": {"\uff04inc": 1}}),
    ("non-string keys", {2: "a", None: "b", False: "c"}, {"2": "a", "null": "b", "false": "c"}),
    ("NUL in a key", {"a\x00b": 1}, {"a\u2400b": 1}),
    ("lone surrogate", "a\ud800b", "a\ufffdb"),
]


@pytest.mark.parametrize(("value", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_type_has_one_documented_form_that_bson_encodes(value: Any, expected: Any) -> None:
    result = to_bson(value)
    assert result == expected
    assert type(result) is type(expected)
    bson.encode({"v": result})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_stay_doubles(value: float) -> None:
    result = to_bson(value)
    assert isinstance(result, float)
    assert bson.decode(bson.encode({"v": result}))["v"] == value or math.isnan(value)


def test_bytes_round_trip_as_bson_binary() -> None:
    decoded = bson.decode(bson.encode({"v": to_bson(b"\x00\xff")}))["v"]
    assert decoded == b"\x00\xff"
    assert isinstance(Binary(decoded), Binary)


def test_unknown_type_uses_the_type_decorator_then_the_fallback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert column_value_to_bson(Point(1, 2), PointType(), None, "t.where") == "1,2"

    with caplog.at_level(logging.WARNING, logger="audit_mongo"):
        stored = column_value_to_bson(complex(1, 2), None, None, "t.odd")
    assert stored == {"unrepresentable": "builtins.complex", "repr": "(1+2j)"}
    bson.encode({"v": stored})
    assert "t.odd" in caplog.text
    assert "builtins.complex" in caplog.text
    assert "(1+2j)" not in caplog.text  # the value itself is never logged


def test_an_object_that_only_looks_like_an_int_falls_back_instead_of_raising() -> None:
    stored = column_value_to_bson(ProxyLike(), None, None, "user id")
    assert stored["unrepresentable"].endswith("ProxyLike")


def test_a_type_decorator_that_raises_falls_back_instead_of_raising() -> None:
    class Broken(PointType):
        def process_bind_param(self, value: Any, dialect: Any) -> str:
            raise RuntimeError("boom")

    stored = column_value_to_bson(Point(1, 2), Broken(), None, "t.where")
    assert stored["unrepresentable"].endswith("Point")


def test_every_value_type_in_a_real_row_is_stored_and_encodes(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    token = uuid.uuid4()
    session.add(
        Sample(
            price=Decimal("9.99"),
            day=dt.date(2024, 5, 1),
            at=dt.datetime(2024, 5, 1, 12, 30, 0, 250),
            at_tz=dt.datetime(2024, 5, 1, 12, 30, tzinfo=PLUS_TWO),
            clock=dt.time(8, 15),
            span=dt.timedelta(minutes=90),
            uid=token,
            color=Color.GREEN,
            blob=b"\x00\x01\x02",
            data={"a.b": [1, 2], "$k": {"nested": True}, "big": 2**70, "n": None},
            ratio=math.nan,
            where=Point(3, 4),
            odd=Opaque(),
        )
    )
    session.commit()

    added = {k: v["added"][0] for k, v in only(collection)["changes"].items()}
    assert added["price"] == Decimal128("9.99")
    assert added["day"] == "2024-05-01"
    assert added["at"] == "2024-05-01T12:30:00.000250"
    assert added["at_tz"] == "2024-05-01T10:30:00+00:00"
    assert added["clock"] == "08:15:00"
    assert added["span"] == 5400.0
    assert added["uid"] == str(token)
    assert added["color"] == "GREEN"
    assert added["blob"] == b"\x00\x01\x02"
    assert added["data"] == {
        "a\uff0eb": [1, 2],
        "\uff04k": {"nested": True},
        "big": str(2**70),
        "n": None,
    }
    assert math.isnan(added["ratio"])
    assert added["where"] == "3,4"
    assert added["odd"] == "opaque"  # the column's TypeDecorator gives the stored form


def test_mutating_a_json_value_after_flush_does_not_alter_the_captured_change(
    audit: AuditLog, session: Session, collection: Any
) -> None:
    data = {"tags": ["a"]}
    sample = Sample(data=data)
    session.add(sample)
    session.flush()
    data["tags"].append("b")  # in place, after the change was captured
    session.commit()

    assert only(collection)["changes"]["data"]["added"] == [{"tags": ["a"]}]


def test_value_with_no_bson_form_is_stored_as_the_fallback_and_the_commit_succeeds(
    audit: AuditLog, session: Session, collection: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="audit_mongo"):
        session.add(Sample(pickled=Opaque()))
        session.commit()

    stored = only(collection)["changes"]["pickled"]["added"][0]
    assert stored == {"unrepresentable": "tests.models.Opaque", "repr": "Opaque()"}
    assert "samples.pickled" in caplog.text
    assert session.query(Sample).count() == 1
