"""Turn Python column values into values that BSON can encode and a person can read.

One representation per Python type (the README's value table is the contract):

==========================  ==============================================================
Python value                stored as
==========================  ==============================================================
None, bool, str, float      itself (NaN and ±inf stay BSON doubles)
SQLAlchemy's ``JSON.NULL``  None, as the JSON null it stands for (it is an int subclass)
int                         itself within signed 64 bits, else its decimal string (hex,
                            ``0x...``, past Python's limit on decimal conversion)
Decimal                     ``Decimal128``; a decimal it cannot hold exactly: its string
datetime                    ISO 8601 string; aware values converted to UTC (``+00:00``)
                            unless that overflows (years 1 and 9999), then with their offset
date / time                 ISO 8601 string (a time keeps its own UTC offset)
timedelta                   float seconds
UUID                        canonical string
ipaddress address/network   canonical string (what PostgreSQL prints for INET and CIDR)
Enum member                 its name (a Flag member: its value)
bytes, bytearray, memview   BSON binary
dict                        document; keys made strings, "." and a leading "$" escaped
list, tuple                 array
set, frozenset              sorted array (nulls, numbers, strings, binary, arrays, others)
anything else               a TypeDecorator's bind value if the column has one, else the
                            fallback ``{"unrepresentable": "<type>", "repr": "<repr>"}``
==========================  ==============================================================

Arrays and documents nested more than ``MAX_NESTING`` levels deep, and a container met again
inside itself (a list holding itself), are stored as small markers (``{"omitted": "too
deep", ...}``, ``{"omitted": "circular reference", ...}``) instead of their contents.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import ipaddress
import logging
import math
import numbers
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from bson import Binary, Decimal128, Int64, ObjectId
from sqlalchemy.types import JSON

logger = logging.getLogger("audit_mongo")

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
REPR_LIMIT = 1000
DOT_ESCAPE = "\uff0e"  # FULLWIDTH FULL STOP, MongoDB's suggested stand-in for "."
DOLLAR_ESCAPE = "\uff04"  # FULLWIDTH DOLLAR SIGN, for a leading "$"
NUL_ESCAPE = "\u2400"  # SYMBOL FOR NULL: BSON keys are C strings
# MongoDB refuses documents nested deeper than 100 levels. A column value sits 4 levels down
# (changes.<attribute>.added.<n>) and a size marker's head 2 more (see encoding.py), so a
# value keeps 90 levels of arrays and documents; a deeper one becomes a marker.
MAX_NESTING = 90
# JSON's names for the floats that have no digits, as json.dumps writes them as keys.
_JSON_FLOAT_KEYS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_SURROGATE = re.compile("[\ud800-\udfff]")

Converter = Callable[[Any], Any]
# psycopg loads INET as an address or an interface (a subclass), CIDR as a network.
IP_VALUES = (
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
)


class Unrepresentable(Exception):
    """Raised inside this module for a value with no BSON form; never leaves it."""


def to_bson(value: Any) -> Any:
    """Return the BSON-safe form of ``value``.

    >>> to_bson(Decimal("9.99"))
    Decimal128('9.99')
    >>> to_bson({"a.b": {2, 1}}) == {"a\\uff0eb": [1, 2]}
    True

    Raises ``Unrepresentable`` for a value of a type it does not know; use
    ``column_value_to_bson`` for column values, which never raises.
    """
    converter = _CONVERTERS.get(type(value))
    if converter is None or isinstance(converter, _Container):
        return _Walk().convert(value)
    return converter(value)  # a plain value, the usual case: no walk to set up


def kept_as_is(value: Any) -> bool:
    """Whether ``value`` is stored as it is: an ASCII ``str``, an ``int`` within 64 bits, a
    ``float``, a ``bool`` or None (exact types, not subclasses). Most column values are; the
    callers that handle one per row of a commit skip the conversion for them."""
    kind = type(value)
    if kind is str:
        return bool(value.isascii())
    if kind is int:
        return bool(INT64_MIN <= value <= INT64_MAX)
    return kind in _KEPT_AS_IS


_KEPT_AS_IS = frozenset({type(None), bool, float})


def column_value_to_bson(value: Any, column_type: Any, dialect: Any, where: str) -> Any:
    """Return the BSON-safe form of a column value; never raises.

    A value of a type ``to_bson`` does not know is passed through the column's
    TypeDecorator (``process_bind_param`` for ``dialect``) when it has one, and otherwise
    stored in the fallback form, with a warning naming ``where`` (the column).
    """
    try:
        return to_bson(value)
    except Exception:  # Unrepresentable, or a converter choking on an odd value
        pass
    process = getattr(column_type, "process_bind_param", None)
    if process is not None:
        try:
            return to_bson(process(value, dialect))
        except Exception:  # a user's TypeDecorator may raise anything
            pass
    return fallback(value, where)


def fallback(value: Any, where: str) -> dict[str, str]:
    """The documented stand-in for a value that has no BSON form."""
    type_name = _safe_str(f"{type(value).__module__}.{type(value).__qualname__}")
    _warn_once(where, type_name)
    try:
        text = repr(value)[:REPR_LIMIT]
    except Exception:
        text = "<repr failed>"
    return {"unrepresentable": type_name, "repr": _safe_str(text)}


_warned: set[tuple[str, str]] = set()


def _warn_once(where: str, type_name: str) -> None:
    if (where, type_name) in _warned:
        return
    _warned.add((where, type_name))
    logger.warning(
        "audit_mongo: %s holds a %s, which has no BSON form; stored as "
        "{'unrepresentable': type, 'repr': ...} (logged once per column and type)",
        where,
        type_name,
    )


def escape_key(key: Any) -> str:
    """A dict key as a BSON field name: a string, queryable from the Mongo shell."""
    key = str.__str__(key) if isinstance(key, str) else _json_key(key)
    if "." in key:
        key = key.replace(".", DOT_ESCAPE)
    if key.startswith("$"):
        key = DOLLAR_ESCAPE + key[1:]
    if "\x00" in key:
        key = key.replace("\x00", NUL_ESCAPE)
    return _safe_str(key)


def _json_key(key: Any) -> str:
    """Non-string keys become what ``json.dumps`` would make of them (an Enum member that
    json.dumps refuses: its name, as for values)."""
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):  # IntEnum and IntFlag members too: json.dumps writes the number
        return int.__repr__(key)
    if isinstance(key, float):
        text = float.__repr__(key)
        return _JSON_FLOAT_KEYS.get(text, text)
    if isinstance(key, enum.Enum) and isinstance(key.name, str):
        return key.name
    return str(key)


class _Walk:
    """One conversion: knows the containers it is inside, to stop at a cycle or too deep."""

    def __init__(self) -> None:
        self.enclosing: list[int] = []  # ids of the containers being converted

    def convert(self, value: Any) -> Any:
        converter = _CONVERTERS.get(type(value))
        if converter is None:
            converter = _converter_for_subclass(type(value))
        if isinstance(converter, _Container):
            return self._container(value, converter)
        return converter(value)

    def _container(self, value: Any, container: _Container) -> Any:
        enclosing = self.enclosing
        if len(enclosing) >= MAX_NESTING:
            return {"omitted": "too deep", "type": container.bson_type, "length": len(value)}
        if id(value) in enclosing:
            return {"omitted": "circular reference", "type": container.bson_type}
        enclosing.append(id(value))
        converted = container.items(self, value)
        enclosing.pop()  # not on an exception: that ends the whole conversion
        return converted


@dataclass(frozen=True)
class _Container:
    """How a container's items are converted, and the BSON type it becomes."""

    items: Callable[[_Walk, Any], Any]
    bson_type: str  # "array" or "object", as a marker standing in for it says


def _identity(value: Any) -> Any:
    return value


def _str(value: str) -> str:
    return value if value.isascii() else _safe_str(value)


def _str_subclass(value: str) -> str:
    return _str(str.__str__(value))  # the text itself, whatever the subclass's __str__ says


def _safe_str(value: str) -> str:
    """Replace lone surrogates, which UTF-8 (and so BSON) cannot carry, by U+FFFD."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", value)
    return value


def _text(value: Any) -> str:
    return _safe_str(str(value))


def _int(value: int) -> int | str:
    if INT64_MIN <= value <= INT64_MAX:
        return value
    try:
        return int.__repr__(value)
    except ValueError:  # more digits than sys.get_int_max_str_digits() allows
        return hex(value)


def _int64(value: Int64) -> int | str:
    return value if INT64_MIN <= value <= INT64_MAX else _int(int(value))


def _decimal(value: Decimal) -> Decimal128 | str:
    try:
        return Decimal128(value)
    except (InvalidOperation, ArithmeticError, ValueError):
        return str(value)


def _datetime(value: dt.datetime) -> str:
    if value.utcoffset() is not None:
        with contextlib.suppress(OverflowError):  # near datetime.min/max: keep the offset
            value = value.astimezone(dt.timezone.utc)
    return dt.datetime.isoformat(value)


def _date(value: dt.date) -> str:
    return dt.date.isoformat(value)


def _time(value: dt.time) -> str:
    return dt.time.isoformat(value)


def _timedelta(value: dt.timedelta) -> float:
    return dt.timedelta.total_seconds(value)


def _float(value: float) -> float:
    return value


def _bytes(value: bytes | bytearray | memoryview) -> bytes:
    return bytes(value)


def _dict_items(walk: _Walk, value: Mapping[Any, Any]) -> dict[str, Any]:
    return {escape_key(k): walk.convert(v) for k, v in value.items()}


def _list_items(walk: _Walk, value: list[Any] | tuple[Any, ...]) -> list[Any]:
    return [walk.convert(v) for v in value]


def _set_items(walk: _Walk, value: set[Any] | frozenset[Any]) -> list[Any]:
    pairs = [(walk.convert(v), v) for v in value]
    pairs.sort(key=lambda pair: _set_order(*pair))
    return [stored for stored, _ in pairs]


def _set_order(stored: Any, original: Any = None) -> tuple[Any, ...]:
    """A total order on a set's items, so that its array does not depend on the order the
    set was built in: nulls, numbers (by the original value, so an int beyond 64 bits sits
    among the others; NaN first), strings, binary, arrays (item by item), then anything
    else by type and repr."""
    number = _number(stored, original)
    if number is not None:
        if is_nan(number):  # NaN orders with nothing (a Decimal NaN raises): NaNs come first
            return (1, 0, type(stored).__name__, repr(stored))
        return (1, 1, number, type(stored).__name__)
    if stored is None:
        return (0,)
    if isinstance(stored, str):
        return (2, stored)
    if isinstance(stored, bytes):
        return (3, bytes(stored), getattr(stored, "subtype", 0))
    if isinstance(stored, list):
        return (4, tuple(_set_order(item) for item in stored))
    return (5, type(stored).__name__, repr(stored))


def _number(stored: Any, original: Any) -> int | float | Decimal | None:
    if isinstance(original, (int, float, Decimal)) and not isinstance(original, enum.Enum):
        return original
    if isinstance(stored, Decimal128):
        return stored.to_decimal()
    if isinstance(stored, (int, float)):
        return stored
    return None


def _enum(value: enum.Enum) -> str:
    return _safe_str(value.name)


def _flag(value: enum.Flag) -> Any:
    return to_bson(value.value)


def _sqlalchemy_symbol(value: Any) -> None:
    """``JSON.NULL`` is a JSON null; SQLAlchemy's symbols are ints only by implementation."""
    if value is JSON.NULL:
        return None
    raise Unrepresentable(repr(value))


def _unknown(value: Any) -> Any:
    raise Unrepresentable(type(value).__qualname__)


_OBJECT = _Container(_dict_items, "object")
_ARRAY = _Container(_list_items, "array")
_SET = _Container(_set_items, "array")

_CONVERTERS: dict[type, Converter | _Container] = {
    type(None): _identity,
    bool: _identity,
    str: _str,
    int: _int,
    float: _float,
    Decimal: _decimal,
    dt.datetime: _datetime,
    dt.date: _date,
    dt.time: _time,
    dt.timedelta: _timedelta,
    uuid.UUID: _text,
    ipaddress.IPv4Address: _text,
    ipaddress.IPv6Address: _text,
    ipaddress.IPv4Interface: _text,
    ipaddress.IPv6Interface: _text,
    ipaddress.IPv4Network: _text,
    ipaddress.IPv6Network: _text,
    type(JSON.NULL): _sqlalchemy_symbol,
    bytes: _bytes,
    bytearray: _bytes,
    memoryview: _bytes,
    dict: _OBJECT,
    list: _ARRAY,
    tuple: _ARRAY,
    set: _SET,
    frozenset: _SET,
    Decimal128: _identity,
    ObjectId: _identity,
    Binary: _identity,
    Int64: _int64,
}

# Checked in this order for subclasses; Enum first so an IntEnum is stored by name.
_BASES: tuple[tuple[type | tuple[type, ...], Converter | _Container], ...] = (
    (enum.Flag, _flag),
    (enum.Enum, _enum),
    (bool, _identity),
    (numbers.Integral, lambda v: _int(int(v))),  # int subclasses, numpy integers
    (numbers.Real, lambda v: float(v)),  # float subclasses, numpy floats
    (str, _str_subclass),
    (dt.datetime, _datetime),
    (dt.date, _date),
    (dt.time, _time),
    (dt.timedelta, _timedelta),
    (Decimal, _decimal),
    (uuid.UUID, _text),
    (IP_VALUES, _text),
    (Mapping, _OBJECT),
    ((list, tuple), _ARRAY),
    ((set, frozenset), _SET),
    ((bytes, bytearray, memoryview), _bytes),
)


def _converter_for_subclass(cls: type) -> Converter | _Container:
    """Find (and cache) the converter for a subclass of a known type, e.g. an Enum."""
    found = next((conv for base, conv in _BASES if issubclass(cls, base)), None)
    if found is None:
        return _unknown
    _CONVERTERS[cls] = found
    return found


def is_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, Decimal) and value.is_nan()
