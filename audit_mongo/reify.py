"""Turn stored values back into the Python types a model uses: the inverse of ``normalise``
where it can be inverted.

A value is converted only from a form ``normalise`` produces for the column's Python type
(an ISO string for a ``DateTime``, float seconds for an ``Interval``, a name for an
``Enum``...); anything else (a fallback ``{"unrepresentable": ...}`` marker, a value stored
through a ``TypeDecorator``'s ``process_bind_param``, a masked value, a value the column
type does not explain) comes back as stored.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from bson import Binary, Decimal128
from sqlalchemy.types import JSON, TypeDecorator, TypeEngine

from .masking import is_stored_mask
from .normalise import DOLLAR_ESCAPE, DOT_ESCAPE, NUL_ESCAPE

Reviver = Callable[[Any], Any]


def reify(value: Any, column_type: TypeEngine[Any] | None) -> Any:
    """``value`` as stored, converted back to the Python type of ``column_type``.

    >>> from sqlalchemy import Date, Numeric
    >>> reify("2024-05-01", Date())
    datetime.date(2024, 5, 1)
    >>> reify(Decimal128("9.99"), Numeric())
    Decimal('9.99')
    """
    if value is None:
        return None
    if column_type is None or is_stored_mask(value):  # a masked value is no value of the type
        return plain(value)
    impl = column_type.impl_instance if isinstance(column_type, TypeDecorator) else column_type
    enum_class = getattr(impl, "enum_class", None)
    if isinstance(enum_class, type) and issubclass(enum_class, enum.Enum):
        return _member(enum_class, value)
    if isinstance(impl, JSON):
        return unescape_keys(plain(value))
    item_type = getattr(impl, "item_type", None)  # ARRAY
    if isinstance(value, list) and isinstance(item_type, TypeEngine):
        return [reify(item, item_type) for item in value]
    python_type = _python_type(column_type)
    if python_type is not None and issubclass(python_type, enum.Enum):
        return _member(python_type, value)  # a TypeDecorator for a Flag, say
    reviver = _REVIVERS.get(python_type) if python_type is not None else None
    if reviver is None:
        return plain(value)
    try:
        return reviver(value)
    except (ValueError, TypeError, ArithmeticError, InvalidOperation):
        return plain(value)  # not the form normalise gives that type: leave it as stored


def plain(value: Any) -> Any:
    """BSON-specific wrappers as plain Python: ``Decimal128`` → ``Decimal``, ``Binary`` →
    ``bytes``, recursively in sub-documents and arrays."""
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, Binary) and value.subtype == 0:
        return bytes(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _python_type(column_type: TypeEngine[Any]) -> type | None:
    try:
        python_type = column_type.python_type
    except (NotImplementedError, AttributeError):
        return None
    return python_type if isinstance(python_type, type) else None


def _member(enum_class: type[enum.Enum], value: Any) -> Any:
    if issubclass(enum_class, enum.Flag) or not isinstance(value, str):
        with contextlib.suppress(ValueError, TypeError):
            return enum_class(value)
        return value
    try:
        return enum_class[value]  # stored by name
    except KeyError:
        with contextlib.suppress(ValueError):
            return enum_class(value)  # a value an older version stored
        return value


def _datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):  # a BSON date someone wrote: aware UTC
        return value if value.tzinfo is None else value.astimezone(dt.timezone.utc)
    return dt.datetime.fromisoformat(_str(value))


def _date(value: Any) -> dt.date:
    return dt.date.fromisoformat(_str(value))


def _time(value: Any) -> dt.time:
    return dt.time.fromisoformat(_str(value))


def _timedelta(value: Any) -> dt.timedelta:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("interval not stored as seconds")
    return dt.timedelta(seconds=value)


def _uuid(value: Any) -> uuid.UUID:
    return uuid.UUID(_str(value))


def _int(value: Any) -> Any:
    if isinstance(value, str):  # beyond 64 bits: decimal, or hex past 4,300 digits
        return int(value, 16) if value.lstrip("-").startswith("0x") else int(value)
    return plain(value)


def _decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, bool):
        raise TypeError("a bool is not a decimal")
    if isinstance(value, (int, str)):  # a whole number, or a decimal of over 34 digits
        return Decimal(value)
    if isinstance(value, float):  # a float the application assigned to a Numeric column
        return Decimal(repr(value))
    raise TypeError("not a decimal")


def _float(value: Any) -> Any:
    if isinstance(value, Decimal128):  # a Decimal assigned to a Float column
        return float(value.to_decimal())
    return value


def _bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, Binary)):
        return bytes(value)
    raise TypeError("not binary")


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def unescape_keys(value: Any) -> Any:
    """A JSON document's (or a context's) keys as the application wrote them (see
    ``normalise.escape_key``)."""
    if isinstance(value, dict):
        return {_unescape_key(k): unescape_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unescape_keys(v) for v in value]
    return value


def _unescape_key(key: str) -> str:
    if key.startswith(DOLLAR_ESCAPE):
        key = "$" + key[1:]
    return key.replace(DOT_ESCAPE, ".").replace(NUL_ESCAPE, "\x00")


_REVIVERS: dict[type, Reviver] = {
    dt.datetime: _datetime,
    dt.date: _date,
    dt.time: _time,
    dt.timedelta: _timedelta,
    uuid.UUID: _uuid,
    int: _int,
    Decimal: _decimal,
    float: _float,
    bytes: _bytes,
}
