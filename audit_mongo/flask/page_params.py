"""The history pages' query parameters, checked: what a request may ask for, refused with
a message (a 400 page) when it is not something the pages or the query API take."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from werkzeug.datastructures import MultiDict

from ..inputs import ACTIONS, check_id

PER_PAGE = 50  # entries on a page of the recent list, unless ?limit= says otherwise
MOST_PER_PAGE = 500  # the largest ?limit= the list takes
DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
END_OF_TIME = dt.datetime(9999, 12, 31, 23, 59, 59, 999000, dt.timezone.utc)  # ms: as BSON


class BadParameter(ValueError):
    """A query parameter the pages refuse (a 400 page shows the message)."""


def parse_key(text: str, what: str) -> Any:
    """A key or user id from the URL: its text, or a JSON array of strings and numbers for
    a composite key. An object (``{"$ne": 1}``) or a leading ``$`` is refused."""
    if text.startswith("{"):
        raise BadParameter(f"{what} must be a value, not an object: {text!r}")
    if not text.startswith("["):
        check_id(text, what)
        return text
    try:
        items = json.loads(text)
    except ValueError:
        items = None
    if not isinstance(items, list) or not items or not all(map(_plain_scalar, items)):
        raise BadParameter(
            f"a {what} starting with '[' is a JSON array of strings and numbers: {text!r}"
        )
    check_id(items, what)
    return tuple(items)


def _plain_scalar(item: Any) -> bool:
    return isinstance(item, (str, int, float)) and not isinstance(item, bool)


@dataclass(frozen=True)
class Filters:
    """The recent list's query parameters as given (echoed in the form and the links)."""

    table: str
    user: str
    actions: list[str]
    since: str
    until: str
    limit: str
    after: str
    repeated: list[str]  # single-valued parameters given more than once

    @classmethod
    def of(cls, args: MultiDict[str, str]) -> Filters:
        def one(name: str) -> str:
            return next((v.strip() for v in args.getlist(name) if v.strip()), "")

        single = ("table", "user", "since", "until", "limit", "after")
        return cls(
            table=one("table"),
            user=one("user"),
            actions=[a.strip() for a in args.getlist("action") if a.strip()],
            since=one("since"),
            until=one("until"),
            limit=one("limit"),
            after=one("after"),
            repeated=[n for n in single if len([v for v in args.getlist(n) if v.strip()]) > 1],
        )

    def query(self) -> dict[str, Any]:
        """The arguments of ``find()``; ``BadParameter`` (or the query API's own
        ``ValueError``/``TypeError``) for what can't be one."""
        if self.repeated:
            raise BadParameter(f"give {', '.join(self.repeated)} once, not repeated")
        query: dict[str, Any] = {"limit": parse_limit(self.limit)}
        if self.table:
            query["table"] = self.table
        if self.user:
            query["user_id"] = parse_key(self.user, "user id")
        if self.actions:
            query["actions"] = check_action_names(self.actions)
        if self.since:
            query["since"] = parse_moment(self.since, "since", end_of_day=False)
        if self.until:
            query["until"] = parse_moment(self.until, "until", end_of_day=True)
        if self.after:
            query["after"] = self.after
        return query

    def link_args(self) -> dict[str, Any]:
        """The filters to keep in the older/newest links."""
        given = {
            "table": self.table,
            "user": self.user,
            "action": self.actions,
            "since": self.since,
            "until": self.until,
            "limit": self.limit,
        }
        return {name: value for name, value in given.items() if value}


def check_action_names(actions: Iterable[str]) -> list[str]:
    chosen = list(actions)
    unknown = [a for a in chosen if a not in ACTIONS]
    if unknown:
        raise BadParameter(f"action is one of {', '.join(ACTIONS)}, not {unknown[0]!r}")
    return chosen


def parse_limit(text: str) -> int:
    """How many entries a page shows: 1 to ``MOST_PER_PAGE`` (default ``PER_PAGE``)."""
    if not text:
        return PER_PAGE
    if not (text.isascii() and text.isdigit() and len(text) <= 6) or not (
        1 <= int(text) <= MOST_PER_PAGE
    ):
        raise BadParameter(f"limit is a number from 1 to {MOST_PER_PAGE}, not {text!r}")
    return int(text)


def parse_moment(text: str, what: str, *, end_of_day: bool) -> dt.datetime:
    """A date (``2026-11-23``: its midnight UTC; for ``until``, the next midnight, so that
    the day is included) or an ISO datetime (naive: UTC; a ``Z`` suffix is taken)."""
    try:
        if DATE.fullmatch(text):
            day = dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), dt.timezone.utc)
            if not end_of_day:
                return day
            return day + dt.timedelta(days=1) if day.date() < dt.date.max else END_OF_TIME
        iso = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
        moment = dt.datetime.fromisoformat(iso)
        if moment.tzinfo is None:
            return moment.replace(tzinfo=dt.timezone.utc)
        return moment.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):
        raise BadParameter(
            f"{what} is a date like 2026-11-23 or a datetime like 2026-11-23T14:05:09Z, "
            f"not {text!r}"
        ) from None
