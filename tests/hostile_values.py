"""Values built to break the normaliser, as hypothesis strategies, and what the tests of
hostile input share.

Hypothesis runs derandomized and without its example database: CI sees the same examples
on every run (a failure there reproduces locally), and nothing is written to the checkout.
"""

from __future__ import annotations

import datetime as dt
import enum
import fractions
import ipaddress
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from sqlalchemy import JSON

from tests.models import Color
from tests.test_normalise import Perm, Size, Style

# derandomize: the same examples on every run, in CI and locally; database=None: no
# .hypothesis directory in the checkout. Values reach hundreds of kilobytes (too_slow,
# data_too_large); no test asserts a time (deadline).
PROPERTIES = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Shade(str, enum.Enum):
    DARK = "dark.$"  # a value needing both of the key escapes


Odd = enum.Enum("Odd", {"lone\ud800surrogate": 1})


class SubMinuteOffset(dt.tzinfo):
    def __repr__(self) -> str:  # no address: equal values must read the same
        return "SubMinuteOffset()"

    def utcoffset(self, moment: Any) -> dt.timedelta:
        return dt.timedelta(hours=-3, seconds=7, microseconds=11)

    def tzname(self, moment: Any) -> str:
        return "odd"

    def dst(self, moment: Any) -> None:
        return None


class RaisingOffset(dt.tzinfo):
    def __repr__(self) -> str:  # no address: equal values must read the same
        return "RaisingOffset()"

    def utcoffset(self, moment: Any) -> dt.timedelta:
        raise RuntimeError("no offset today")


class NoOffset(dt.tzinfo):
    def __repr__(self) -> str:  # no address: equal values must read the same
        return "NoOffset()"

    def utcoffset(self, moment: Any) -> None:
        return None


class ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("SECRET-repr")


class HugeRepr:
    def __repr__(self) -> str:
        return "SECRET-huge" * 100_000


class SurrogateRepr:
    def __repr__(self) -> str:
        return "SECRET-\ud800" * 600


class Integral(int):
    pass


class Real(float):
    pass


class Text(str):
    def __str__(self) -> str:
        return "not the text"


SPECIAL_CHARACTERS = ".$\x00\ud800\udfff\u2400\uff0e\uff04é😀"
TEXT = st.text(st.one_of(st.characters(), st.sampled_from(SPECIAL_CHARACTERS)), max_size=12)
CLEAN_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
BIG_INTS = st.builds(
    lambda digits, sign: sign * 10**digits, st.integers(18, 6000), st.sampled_from([1, -1])
)
INTS = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(), BIG_INTS)
FLOATS = st.one_of(st.floats(), st.sampled_from([-0.0, math.inf, -math.inf, math.nan]))
ODD_DECIMALS = ["sNaN", "-sNaN12", "NaN123", "-NaN", "1E+999999", "-1E-999999", "1" * 40]
ODD_DECIMALS += ["0E-6200", "9" * 34 + "E+6111", "1.5E-6176", "-0", "Infinity"]
DECIMALS = st.one_of(st.decimals(), st.sampled_from([Decimal(d) for d in ODD_DECIMALS]))
OFFSETS = st.timedeltas(dt.timedelta(hours=-23, minutes=-59), dt.timedelta(hours=23, minutes=59))
TIMEZONES = st.one_of(
    st.none(),
    st.builds(dt.timezone, OFFSETS),
    st.sampled_from([dt.timezone.utc, SubMinuteOffset(), RaisingOffset(), NoOffset()]),
)
DATETIMES = st.builds(lambda moment, tz: moment.replace(tzinfo=tz), st.datetimes(), TIMEZONES)
TIMES = st.builds(lambda moment, tz: moment.replace(tzinfo=tz), st.times(), TIMEZONES)
IPS = st.one_of(
    st.ip_addresses(),
    st.builds(
        lambda a, n: ipaddress.ip_interface(f"{a}/{n}"), st.ip_addresses(v=4), st.integers(0, 32)
    ),
    st.builds(lambda a: ipaddress.ip_network(f"{a}/24", strict=False), st.ip_addresses(v=4)),
)
MEMBERS = st.sampled_from(
    [Color.RED, Size.SMALL, Shade.DARK, Perm.READ | Perm.WRITE, Perm(0), Style.BOLD]
) | st.builds(lambda: Odd(1))  # not sampled: hypothesis's reports would carry its raw name
ODD_OBJECTS = st.sampled_from([ReprRaises, HugeRepr, SurrogateRepr, object]).map(
    lambda make: make()
) | st.sampled_from([complex(1, 2), range(3)])
NUMBER_LIKE = st.one_of(
    st.builds(Integral, INTS),
    st.builds(Real, FLOATS),
    st.builds(fractions.Fraction, st.integers(), st.integers(1, 10**500)),
    st.builds(Text, TEXT),
)
HASHABLE = st.one_of(
    st.none(),
    st.booleans(),
    INTS,
    FLOATS,
    TEXT,
    st.binary(max_size=8),
    st.tuples(st.integers(), TEXT),
    st.decimals(allow_nan=False),
    st.dates(),
    st.uuids(),
    MEMBERS,
)
KEYS = st.one_of(TEXT, INTS, FLOATS, st.booleans(), st.none(), st.tuples(st.integers()), MEMBERS)
PLAIN_SCALARS = st.one_of(
    HASHABLE,
    DECIMALS,
    DATETIMES,
    TIMES,
    st.timedeltas(),
    st.binary(max_size=8).map(bytearray),
    IPS,
)
SCALARS = st.one_of(
    PLAIN_SCALARS,
    st.binary(max_size=8).map(memoryview),
    NUMBER_LIKE,
    ODD_OBJECTS,
    st.just(JSON.NULL),
)


def nested(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(KEYS, children, max_size=4),
    )


# Sets hold hashable leaves only, so they are leaves here, not a way to nest.
SETS = st.frozensets(HASHABLE, max_size=4) | st.sets(HASHABLE, max_size=4)
PLAIN_VALUES = st.recursive(PLAIN_SCALARS | SETS, nested, max_leaves=12)
VALUES = st.recursive(SCALARS | SETS, nested, max_leaves=12)


def deep(levels: int, kind: str) -> Any:
    value: Any = "bottom"
    for level in range(levels):
        shape = kind if kind != "mixed" else ("list", "dict", "tuple")[level % 3]
        value = {"k": value} if shape == "dict" else [value] if shape == "list" else (value,)
    return value


def cycle(kind: str) -> Any:
    """A structure that contains itself; pickle (a PickleType column) stores such values."""
    items: list[Any] = [1]
    if kind == "list":
        items.append(items)
        return items
    if kind == "twice":  # each level refers to itself twice: no exponential walk
        items.extend([items, items])
        return items
    holder: dict[str, Any] = {"items": items}
    items.append(holder)
    return holder if kind == "dict" else (items, holder)


DEEP = st.builds(deep, st.integers(0, 250), st.sampled_from(["list", "dict", "tuple", "mixed"]))
CYCLES = st.sampled_from(["list", "twice", "dict", "both"]).map(cycle)
HOSTILE = st.one_of(VALUES, DEEP, CYCLES, st.lists(st.one_of(DEEP, CYCLES), max_size=3))


def depth(value: Any) -> int:
    """Levels of arrays and documents, as MongoDB counts nesting."""
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


@contextmanager
def audit_log_records() -> Iterator[list[logging.LogRecord]]:
    """What the audit_mongo logger says at INFO and above while the block runs."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("audit_mongo")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
