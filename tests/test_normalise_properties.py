"""Hostile values: whatever a row holds, the normaliser gives a value BSON encodes within
MongoDB's nesting limit, never raises, gives equal results for equal input, and keeps the
documented forms; a row of such values commits and is audited. (The strategies and the
hypothesis settings are in tests/hostile_values.py.)"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import struct
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import bson
import mongomock
import pytest
from bson import Decimal128
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    JSON,
    DateTime,
    Integer,
    LargeBinary,
    Numeric,
    PickleType,
    String,
    TypeDecorator,
    create_engine,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from audit_mongo import AuditLog
from audit_mongo.capture import _bson, _recorded
from audit_mongo.masking import Masker
from audit_mongo.masking import stored as as_stored
from audit_mongo.normalise import (
    MAX_NESTING,
    column_value_to_bson,
    escape_key,
    kept_as_is,
    to_bson,
)
from audit_mongo.table_info import TableInfo
from tests.hostile_values import (
    CLEAN_TEXT,
    CYCLES,
    DATETIMES,
    DECIMALS,
    DEEP,
    FLOATS,
    HOSTILE,
    INTS,
    IPS,
    MEMBERS,
    ODD_OBJECTS,
    PLAIN_SCALARS,
    PLAIN_VALUES,
    PROPERTIES,
    SETS,
    TEXT,
    TIMES,
    Integral,
    Perm,
    RaisingOffset,
    ReprRaises,
    Shade,
    Size,
    Text,
    audit_log_records,
    deep,
    depth,
    nested,
)
from tests.models import Client

PIPELINE = settings(PROPERTIES, max_examples=60)


def stored(value: Any) -> Any:
    return column_value_to_bson(value, None, None, "hostile.value")


def encoded(value: Any) -> bytes:
    return bson.encode({"v": stored(value)})


# -- every value ---------------------------------------------------------------------------


@PROPERTIES
@given(HOSTILE)
def test_any_value_is_stored_in_a_form_bson_encodes_within_mongodbs_nesting_limit(
    value: Any,
) -> None:
    result = stored(value)

    bson.encode({"v": result})
    # changes.<attribute>.added.<n> puts a value 4 levels down; MongoDB allows 100 in all
    assert depth(result) <= MAX_NESTING + 1


@PROPERTIES
@given(HOSTILE)
def test_the_same_value_is_always_stored_the_same_way(value: Any) -> None:
    assert encoded(value) == encoded(value)


@PROPERTIES
@given(PLAIN_VALUES)
def test_equal_values_are_stored_the_same_way(value: Any) -> None:
    """Except in the fallback, which keeps Python's ``repr``: a set inside it reads in the
    set's iteration order, which a copy need not share."""
    form = stored(value)
    assume(not (isinstance(form, dict) and "unrepresentable" in form))
    assert encoded(copy.deepcopy(value)) == bson.encode({"v": form})


class ReorderedSet(set[Any]):
    """A set that yields its items in a given order: a set's order depends on how it was
    built (the order of insertion, of removals), which the stored array must not."""

    def __init__(self, items: list[Any]) -> None:
        super().__init__(items)
        self.order = items

    def __iter__(self) -> Iterator[Any]:
        return iter(self.order)


SET_ITEMS = st.one_of(
    INTS,
    FLOATS,
    TEXT,
    st.binary(max_size=4),
    st.decimals(allow_nan=False),
    st.none(),
    st.tuples(st.integers(), FLOATS),
    MEMBERS,
)

NUMBERS_AND_NAN = st.one_of(st.just(math.nan), st.integers(-3, 3), st.floats(-3, 3))


@PROPERTIES
@given(
    st.one_of(st.lists(SET_ITEMS, max_size=8), st.lists(NUMBERS_AND_NAN, max_size=6)).map(
        lambda items: list(set(items))
    ),
    st.data(),
)
def test_a_set_is_stored_the_same_whatever_order_it_yields_its_items(
    items: list[Any], data: st.DataObject
) -> None:
    reordered = data.draw(st.permutations(items))

    assert encoded(ReorderedSet(reordered)) == encoded(ReorderedSet(items))


@PROPERTIES
@given(st.one_of(st.sets(st.integers()), st.sets(CLEAN_TEXT), st.sets(st.floats(allow_nan=False))))
def test_a_set_of_sortable_values_is_stored_as_its_sorted_array(values: set[Any]) -> None:
    assert to_bson(values) == [to_bson(value) for value in sorted(values)]


@pytest.mark.parametrize("kind", ["list", "dict", "tuple", "mixed"])
def test_nesting_beyond_the_limit_is_cut_with_a_marker_and_the_rest_kept(kind: str) -> None:
    kept, cut = to_bson(deep(MAX_NESTING, kind)), to_bson(deep(MAX_NESTING + 1, kind))

    assert depth(kept) == MAX_NESTING and "omitted" not in json.dumps(kept)
    innermost = cut
    for _ in range(MAX_NESTING):
        innermost = innermost["k"] if isinstance(innermost, dict) else innermost[0]
    assert innermost["omitted"] == "too deep"
    assert innermost["length"] == 1
    assert innermost["type"] in ("array", "object")


def test_a_value_containing_itself_is_stored_with_the_repeat_marked() -> None:
    items: list[Any] = ["a"]
    items.append({"back": items})

    assert to_bson(items) == ["a", {"back": {"omitted": "circular reference", "type": "array"}}]


def test_a_value_referring_to_itself_many_times_is_walked_once_per_reference() -> None:
    items: list[Any] = []
    items.extend([items] * 50)  # a naive depth-limited walk would visit 50**90 lists

    assert to_bson(items) == [{"omitted": "circular reference", "type": "array"}] * 50


# -- the documented forms ------------------------------------------------------------------


def as_int(text: str) -> int:
    return int(text, 16) if "0x" in text else int(text)


@PROPERTIES
@given(st.one_of(INTS, st.builds(Integral, INTS)))
def test_an_int_is_itself_within_64_bits_else_its_exact_digits(value: int) -> None:
    result = to_bson(value)

    if -(2**63) <= value < 2**63:
        assert type(result) is int and result == value
    else:
        assert isinstance(result, str) and as_int(result) == value


@PROPERTIES
@given(FLOATS)
def test_a_float_is_kept_bit_for_bit(value: float) -> None:
    result = bson.decode(bson.encode({"v": to_bson(value)}))["v"]

    assert struct.pack("<d", result) == struct.pack("<d", value)


@PROPERTIES
@given(DECIMALS)
def test_a_decimal_is_a_decimal128_of_the_same_value_else_its_exact_string(value: Decimal) -> None:
    result = to_bson(value)

    if isinstance(result, Decimal128):
        back = result.to_decimal()
        assert back.is_nan() == value.is_nan() and back.is_snan() == value.is_snan()
        assert back.is_signed() == value.is_signed()
        assert back.is_nan() or back == value
    else:
        assert Decimal(result).compare_total(value) == 0


@PROPERTIES
@given(TEXT)
def test_a_string_is_itself_with_lone_surrogates_replaced(value: str) -> None:
    result = to_bson(value)

    expected = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value)
    assert result == expected
    assert to_bson(Text(value)) == expected  # a subclass's text, not what its __str__ says


@PROPERTIES
@given(DATETIMES.filter(lambda moment: not isinstance(moment.tzinfo, RaisingOffset)))
def test_a_datetime_is_an_iso_string_of_the_same_moment(value: dt.datetime) -> None:
    result = to_bson(value)

    back = dt.datetime.fromisoformat(result)
    assert back == value
    assert (back.utcoffset() is None) == (value.utcoffset() is None)


@PROPERTIES
@given(TIMES.filter(lambda moment: not isinstance(moment.tzinfo, RaisingOffset)), st.dates())
def test_dates_and_times_are_iso_strings_of_the_same_value(time: dt.time, day: dt.date) -> None:
    assert dt.time.fromisoformat(to_bson(time)).utcoffset() == time.utcoffset()
    assert dt.time.fromisoformat(to_bson(time)).replace(tzinfo=None) == time.replace(tzinfo=None)
    assert dt.date.fromisoformat(to_bson(day)) == day


@PROPERTIES
@given(st.timedeltas(), st.uuids(), IPS, st.binary())
def test_intervals_uuids_addresses_and_bytes_keep_their_documented_forms(
    span: dt.timedelta, token: uuid.UUID, address: Any, data: bytes
) -> None:
    assert to_bson(span) == span.total_seconds()
    assert uuid.UUID(to_bson(token)) == token
    assert to_bson(address) == str(address)
    assert to_bson(bytearray(data)) == to_bson(memoryview(data)) == data


@PROPERTIES
@given(
    st.one_of(
        TEXT,
        INTS.filter(lambda n: abs(n) < 10**4000),
        FLOATS,
        st.booleans(),
        st.none(),
        st.sampled_from([Size.SMALL, Perm.READ, Shade.DARK]),
    )
)
def test_a_key_is_what_json_dumps_makes_of_it_then_escaped(key: Any) -> None:
    (json_key,) = json.loads(json.dumps({key: 0}))
    expected = json_key.replace(".", "\uff0e").replace("\x00", "\u2400")
    expected = "\uff04" + expected[1:] if expected.startswith("$") else expected
    expected = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in expected)

    assert escape_key(key) == expected
    assert list(to_bson({key: 0})) == [expected]


# -- values no converter knows ---------------------------------------------------------------


class Gadget:
    """A value only its column's TypeDecorator knows, with a secret in its repr."""

    def __init__(self, serial: int) -> None:
        self.serial = serial

    def __repr__(self) -> str:
        return f"Gadget(SECRET-{self.serial})"


class OneShotType(TypeDecorator[Gadget]):
    """Binds a gadget once (the application's INSERT); binding it again raises, as an
    encrypting type does when its key is gone: the audit's call meets the raise."""

    impl = String(40)
    cache_ok = True

    def process_bind_param(self, value: Gadget | None, dialect: Any) -> str | None:
        if value is None:
            return None
        if getattr(value, "bound", False):
            raise RuntimeError(f"{value!r} was bound already")
        value.bound = True  # type: ignore[attr-defined]
        return f"gadget {value.serial}"

    def process_result_value(self, value: str | None, dialect: Any) -> Any:
        return value


class AlwaysRaisesType(TypeDecorator[Any]):
    impl = String(10)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str:
        raise ValueError(f"cannot bind {value!r}")


@PROPERTIES
@given(st.one_of(ODD_OBJECTS, st.builds(Gadget, st.integers()), CYCLES, DEEP))
def test_a_type_decorator_that_raises_gives_the_fallback_and_no_value_is_logged(value: Any) -> None:
    with audit_log_records() as records:
        result = column_value_to_bson(value, AlwaysRaisesType(), None, "t.odd")

    bson.encode({"v": result})
    if isinstance(result, dict) and "unrepresentable" in result:
        assert len(result["repr"]) <= 1000
    assert not any("SECRET" in record.getMessage() for record in records)


# -- the whole pipeline ----------------------------------------------------------------------


class Base(DeclarativeBase):
    pass


class HostileRow(Base):
    """A row of every kind of column, for values generated to break the audit."""

    __tablename__ = "hostile_rows"
    id: Mapped[int] = mapped_column(primary_key=True)
    document: Mapped[Any] = mapped_column(JSON, nullable=True)
    pickled: Mapped[Any] = mapped_column(PickleType, nullable=True)
    label: Mapped[str | None] = mapped_column(String)
    count: Mapped[int | None] = mapped_column(Integer)
    amount: Mapped[Decimal | None] = mapped_column(Numeric(30, 10))
    happened: Mapped[dt.datetime | None] = mapped_column(DateTime)
    blob: Mapped[bytes | None] = mapped_column(LargeBinary)
    gadget: Mapped[Any] = mapped_column(OneShotType, nullable=True)


JSON_KEYS = st.one_of(TEXT, st.integers(-(10**30), 10**30), FLOATS, st.booleans(), st.none())
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**100), 10**100), FLOATS, TEXT),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(JSON_KEYS, kids, max_size=4),
    max_leaves=15,
)
PICKLABLE = st.recursive(
    st.one_of(PLAIN_SCALARS, SETS, st.builds(Integral, INTS), st.builds(ReprRaises)),
    nested,
    max_leaves=12,
)
ROWS = st.fixed_dictionaries(
    {
        "document": st.one_of(JSON_VALUES, DEEP.filter(lambda v: not isinstance(v, tuple))),
        "pickled": st.one_of(PICKLABLE, CYCLES, DEEP),
        "label": st.one_of(st.none(), CLEAN_TEXT),
        "count": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
        "amount": st.one_of(st.none(), st.decimals(-(10**19), 10**19, places=10)),
        "happened": st.one_of(st.none(), DATETIMES),
        "blob": st.one_of(st.none(), st.binary(max_size=64)),
        "gadget": st.one_of(st.none(), st.builds(Gadget, st.integers())),
    }
)
UPDATES = st.fixed_dictionaries({"document": JSON_VALUES, "pickled": PICKLABLE})


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """A SQLite database with hostile rows, audited into mongomock."""
    engine = create_engine(f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'app.db'}")
    Base.metadata.create_all(engine)
    collection = mongomock.MongoClient(tz_aware=True)["audit"]["user_logs"]
    audit = AuditLog(collection)
    audit.track(HostileRow)
    yield engine, collection
    audit.close()
    engine.dispose()


@PIPELINE
@given(row=ROWS, update=UPDATES)
def test_rows_of_hostile_values_commit_and_every_document_encodes(
    pipeline: tuple[Any, Any], row: dict[str, Any], update: dict[str, Any]
) -> None:
    engine, collection = pipeline
    collection.delete_many({})  # SQLite gives a deleted row's id to the next row
    with audit_log_records() as records, Session(engine, expire_on_commit=False) as session:
        hostile = HostileRow(**row)
        session.add(hostile)
        session.commit()
        for name, value in update.items():
            setattr(hostile, name, value)
        session.commit()
        session.delete(hostile)
        session.commit()

    documents = list(collection.find({"table_name": "hostile_rows", "object_id": hostile.id}))
    actions = [d["action"] for d in documents]
    assert actions in (["create", "update", "delete"], ["create", "delete"])
    for document in documents:
        bson.encode(document)
        assert all(
            depth(v) <= MAX_NESTING + 1
            for change in document["changes"].values()
            for side in change.values()
            for v in side
        )
    assert not any("SECRET" in record.getMessage() for record in records)


CLIENT_INFO = TableInfo.of(sa_inspect(Client), frozenset(), frozenset({"email"}), Masker(b"m" * 32))


@settings(PROPERTIES)
@given(value=st.one_of(HOSTILE, PLAIN_SCALARS), attribute=st.sampled_from(["name", "email"]))
def test_capture_records_plain_values_as_the_general_path_does(value: Any, attribute: str) -> None:
    """Capture keeps a plain value of an unmasked attribute as it is, without a call: the
    result must be the one normalising and masking it would give."""
    fast = _recorded(CLIENT_INFO, [(attribute, value)], None)[attribute]
    general = _bson(CLIENT_INFO, attribute, value, None)
    assert type(fast) is type(general)
    assert bson.encode({"v": as_stored(fast)}) == bson.encode({"v": as_stored(general)})


@settings(PROPERTIES)
@given(value=st.one_of(HOSTILE, PLAIN_SCALARS, INTS, TEXT))
def test_a_value_kept_as_it_is_is_what_normalising_it_gives(value: Any) -> None:
    """Capture and statements skip converting the values kept_as_is() accepts: for each, the
    normaliser must return that very value."""
    if kept_as_is(value):
        assert to_bson(value) is value
        bson.encode({"v": value})
