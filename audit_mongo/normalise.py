"""Turn Python column values into values that BSON can encode and a person can read.

One representation per Python type (the README's value table is the contract):

==========================  ==============================================================
Python value                stored as
==========================  ==============================================================
None, bool, str, float      itself (NaN and ±inf stay BSON doubles)
SQLAlchemy's ``JSON.NULL``  None, as the JSON null it stands for (it is an int subclass)
int                         itself within signed 64 bits, else its decimal string
Decimal                     ``Decimal128``; a decimal that needs more than 34 digits: string
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
set, frozenset              sorted array
anything else               a TypeDecorator's bind value if the column has one, else the
                            fallback ``{"unrepresentable": "<type>", "repr": "<repr>"}``
==========================  ==============================================================
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import ipaddress
import logging
import math
import numbers
import uuid
from collections.abc import Callable, Mapping
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
    if converter is None:
        converter = _converter_for_subclass(type(value))
    return converter(value)


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
    type_name = f"{type(value).__module__}.{type(value).__qualname__}"
    _warn_once(where, type_name)
    try:
        text = repr(value)
    except Exception:
        text = "<repr failed>"
    return {"unrepresentable": type_name, "repr": _safe_str(text[:REPR_LIMIT])}


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
    if not isinstance(key, str):
        key = _json_key(key)
    if "." in key:
        key = key.replace(".", DOT_ESCAPE)
    if key.startswith("$"):
        key = DOLLAR_ESCAPE + key[1:]
    if "\x00" in key:
        key = key.replace("\x00", NUL_ESCAPE)
    return _safe_str(key)


def _json_key(key: Any) -> str:
    """Non-string keys become what ``json.dumps`` would make of them."""
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    return str(key)


def _identity(value: Any) -> Any:
    return value


def _str(value: str) -> str:
    return value if value.isascii() else _safe_str(value)


def _safe_str(value: str) -> str:
    """Replace lone surrogates, which UTF-8 (and so BSON) cannot carry, by U+FFFD."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in value)
    return value


def _int(value: int) -> int | str:
    return value if INT64_MIN <= value <= INT64_MAX else str(value)


def _decimal(value: Decimal) -> Decimal128 | str:
    try:
        return Decimal128(value)
    except (InvalidOperation, ArithmeticError, ValueError):
        return str(value)


def _datetime(value: dt.datetime) -> str:
    if value.utcoffset() is not None:
        with contextlib.suppress(OverflowError):  # near datetime.min/max: keep the offset
            value = value.astimezone(dt.timezone.utc)
    return value.isoformat()


def _isoformat(value: dt.date | dt.time) -> str:
    return value.isoformat()


def _timedelta(value: dt.timedelta) -> float:
    return value.total_seconds()


def _float(value: float) -> float:
    return value


def _bytes(value: bytes | bytearray | memoryview) -> bytes:
    return bytes(value)


def _dict(value: Mapping[Any, Any]) -> dict[str, Any]:
    return {escape_key(k): to_bson(v) for k, v in value.items()}


def _list(value: list[Any] | tuple[Any, ...]) -> list[Any]:
    return [to_bson(v) for v in value]


def _set(value: set[Any] | frozenset[Any]) -> list[Any]:
    items = [to_bson(v) for v in value]
    try:
        return sorted(items)
    except TypeError:  # mixed types: any stable order will do
        return sorted(items, key=lambda item: (type(item).__name__, repr(item)))


def _enum(value: enum.Enum) -> str:
    return value.name


def _flag(value: enum.Flag) -> Any:
    return to_bson(value.value)


def _sqlalchemy_symbol(value: Any) -> None:
    """``JSON.NULL`` is a JSON null; SQLAlchemy's symbols are ints only by implementation."""
    if value is JSON.NULL:
        return None
    raise Unrepresentable(repr(value))


def _unknown(value: Any) -> Any:
    raise Unrepresentable(type(value).__qualname__)


_CONVERTERS: dict[type, Converter] = {
    type(None): _identity,
    bool: _identity,
    str: _str,
    int: _int,
    float: _float,
    Decimal: _decimal,
    dt.datetime: _datetime,
    dt.date: _isoformat,
    dt.time: _isoformat,
    dt.timedelta: _timedelta,
    uuid.UUID: str,
    ipaddress.IPv4Address: str,
    ipaddress.IPv6Address: str,
    ipaddress.IPv4Interface: str,
    ipaddress.IPv6Interface: str,
    ipaddress.IPv4Network: str,
    ipaddress.IPv6Network: str,
    type(JSON.NULL): _sqlalchemy_symbol,
    bytes: _bytes,
    bytearray: _bytes,
    memoryview: _bytes,
    dict: _dict,
    list: _list,
    tuple: _list,
    set: _set,
    frozenset: _set,
    Decimal128: _identity,
    ObjectId: _identity,
    Binary: _identity,
    Int64: _identity,
}

# Checked in this order for subclasses; Enum first so an IntEnum is stored by name.
_BASES: tuple[tuple[type | tuple[type, ...], Converter], ...] = (
    (enum.Flag, _flag),
    (enum.Enum, _enum),
    (bool, _identity),
    (numbers.Integral, lambda v: _int(int(v))),  # int subclasses, numpy integers
    (numbers.Real, lambda v: float(v)),  # float subclasses, numpy floats
    (str, lambda v: _str(str(v))),
    (dt.datetime, _datetime),
    (dt.date, _isoformat),
    (dt.time, _isoformat),
    (dt.timedelta, _timedelta),
    (Decimal, _decimal),
    (uuid.UUID, str),
    (IP_VALUES, str),
    (Mapping, _dict),
    (list, _list),
    (tuple, _list),
    (set, _set),
    (frozenset, _set),
    ((bytes, bytearray, memoryview), _bytes),
)


def _converter_for_subclass(cls: type) -> Converter:
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
