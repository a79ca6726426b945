"""The parameter types of the ``audit-mongo`` commands: seconds, durations, moments,
ids and table names. Each refuses a bad value with a usage error (exit status 2)."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from ..inputs import check_id, check_name

if TYPE_CHECKING:  # generic from click 8.4; older releases cannot be subscripted at run time
    ParamType = click.ParamType[Any]
else:
    ParamType = click.ParamType


class Seconds(ParamType):
    """A positive number of seconds."""

    name = "seconds"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = math.nan
        if not (seconds > 0 and math.isfinite(seconds)):
            self.fail(f"expected a positive number of seconds, got {value!r}", param, ctx)
        return seconds


# -- durations and moments -------------------------------------------------------------

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
AGE = re.compile(r"\s*(\d+)\s*([smhd])\s*", re.IGNORECASE)
AGE_HELP = "30s, 15m, 2h, 7d"


def parse_age(text: str) -> dt.timedelta | None:
    """``30s``, ``15m``, ``2h``, ``7d`` as a timedelta; None for anything else."""
    found = AGE.fullmatch(text)
    if found is None:
        return None
    return dt.timedelta(seconds=int(found[1]) * UNITS[found[2].lower()])


class Duration(ParamType):
    """A positive duration: ``30s``, ``15m``, ``2h``, ``7d``, or a number of seconds."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> dt.timedelta:
        if isinstance(value, dt.timedelta):
            return value
        try:
            age = parse_age(str(value)) or dt.timedelta(seconds=float(value))
        except (ValueError, OverflowError):
            age = None
        if age is None or not age > dt.timedelta(0):
            self.fail(f"expected a duration like {AGE_HELP} or seconds, got {value!r}", param, ctx)
        return age


class Moment(ParamType):
    """A point in time: an age before now (``2h``), or an ISO date or datetime (naive: UTC)."""

    name = "time"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        try:
            return parse_moment(str(value))
        except (ValueError, OverflowError):
            self.fail(
                f"expected an age like {AGE_HELP} or an ISO date or datetime like "
                f"2026-01-01 or 2026-01-01T12:00:00Z, got {value!r}",
                param,
                ctx,
            )


def parse_moment(text: str) -> dt.datetime:
    """An age before now, or an ISO date/datetime; aware UTC."""
    age = parse_age(text)
    if age is not None:
        return dt.datetime.now(dt.timezone.utc) - age
    iso = text.strip()
    if iso[-1:] in ("Z", "z"):
        iso = iso[:-1] + "+00:00"
    moment = dt.datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)


# -- ids and names -----------------------------------------------------------------------


class Key(ParamType):
    """A primary key or user id as text: a value (numeric text matches both an integer and
    a string id), or a JSON array for a composite key (``'[1, "a"]'``, types exact)."""

    name = "id"

    def __init__(self, what: str) -> None:
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return parse_key(value, self.what)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def parse_key(text: str, what: str) -> str | tuple[Any, ...]:
    if text.startswith("{"):
        raise ValueError(
            f"{what} must be a value or a JSON array, not an object (query operators are "
            f"refused): {text!r}"
        )
    if not text.startswith("["):
        check_id(text, what)
        return text
    try:
        items = json.loads(text)
    except json.JSONDecodeError:
        items = None
    if not isinstance(items, list) or not items or not all(map(_scalar, items)):
        raise ValueError(
            f"a {what} starting with '[' must be a JSON array of strings and numbers, like "
            f"'[1, \"a\"]': {text!r}"
        )
    check_id(items, what)
    return tuple(items)


def _scalar(item: Any) -> bool:
    return isinstance(item, (str, int, float)) and not isinstance(item, bool)


class OptionalArgument(click.Argument):
    """An argument that may be left out (``[USER_ID]`` in the usage line), named without
    the brackets in error messages (``Invalid value for 'USER_ID'``)."""

    def __init__(self, param_decls: Sequence[str], **attrs: Any) -> None:
        attrs["required"] = False
        super().__init__(param_decls, **attrs)

    def get_error_hint(self, ctx: click.Context | None) -> str:
        return f"'{self.human_readable_name}'"


class TableName(ParamType):
    """A table name: a plain string, never an operator (no leading ``$``)."""

    name = "table"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return check_name(value, "table name")
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
