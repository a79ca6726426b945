"""The history pages: a blueprint with the recent changes (filterable by table, user,
action and date, paged) and one row's timeline, old → new per field. Server-rendered HTML
from the Jinja templates under ``templates/audit_mongo/`` (an application can override any
of them with its own ``audit_mongo/<name>.html``).

Mount it, and grant access through the extension's ``permission`` callback; without one, or
when it returns anything but ``True``, every page answers 403::

    from flask_login import current_user
    from audit_mongo.flask import AuditMongo
    from audit_mongo.flask.views import blueprint as audit_pages

    audit_ext = AuditMongo(
        permission=lambda: current_user.is_authenticated and current_user.is_admin
    )

    def create_app():
        app = Flask(__name__)
        ...
        audit_ext.init_app(app, db=db)
        app.register_blueprint(audit_pages, url_prefix="/audit")
        return app

Audit data is user input: every stored value reaches the page through Jinja's autoescaping
(never ``|safe``), so a stored ``<script>`` shows as text. A bad query parameter (an
operator, an unknown table, a date that is not one, a cursor not from these pages, a
limit too large) is a 400 page saying what is wrong, never a 500.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, abort, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from ..entry import AuditEntry, Change
from ..inputs import ACTIONS, check_id
from .extension import current_log, current_state

blueprint = Blueprint("audit_mongo", __name__, template_folder="templates")

PER_PAGE = 50  # entries on a page of the recent list, unless ?limit= says otherwise
MOST_PER_PAGE = 500  # the largest ?limit= the list takes
TIMELINE_LIMIT = 1000  # the newest entries of a row its timeline shows
FOLD = 80  # characters of a value shown before it is folded into a <details>
CONTEXT_FIRST = ("request_id", "remote_addr", "method", "path", "endpoint", "user_agent")
DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
END_OF_TIME = dt.datetime(9999, 12, 31, 23, 59, 59, 999000, dt.timezone.utc)  # ms: as BSON
REFUSED = (ValueError, TypeError, OverflowError)  # bad input, as the query API reports it

# Defence in depth on top of escaping: the pages run no script, load nothing from
# elsewhere, are never framed, and are not kept in caches (audit data is sensitive).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


class BadParameter(ValueError):
    """A query parameter the pages refuse (a 400 page shows the message)."""


# -- access ------------------------------------------------------------------------------


@blueprint.before_request
def require_permission() -> None:
    """403 unless the extension's ``permission`` callback exists and returns exactly
    ``True`` (not merely a truthy value): ``AuditMongo(permission=lambda: ...)``. It is
    called in the request, so it can look at ``flask_login.current_user``."""
    permission = current_state().extension.permission
    if permission is None or permission() is not True:
        abort(403)


@blueprint.after_request
def add_security_headers(response: Response) -> Response:
    """Every answer of the pages, errors included, carries ``SECURITY_HEADERS``."""
    response.headers.update(SECURITY_HEADERS)
    return response


@blueprint.errorhandler(400)
def bad_request(error: HTTPException) -> ResponseReturnValue:
    """A 400 as a page of the history pages, with the reason (escaped like any value)."""
    return error_page(400, "Bad request", error.description or "bad request")


def error_page(status: int, title: str, message: str) -> ResponseReturnValue:
    return render_template("audit_mongo/error.html", title=title, message=message), status


# -- what the pages show -----------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """A stored value as a person reads it: its whole ``text`` and, for a long one, the
    ``folded`` start shown until the reader unfolds it (None: short enough to show)."""

    text: str
    folded: str | None
    kind: str  # a CSS class: "text", "null" or "value"


@dataclass(frozen=True)
class FieldChange:
    """One attribute of an entry: ``old`` → ``new`` (None: the side the entry doesn't
    have), or for a collection the related keys ``added`` and ``removed``."""

    name: str
    old: Shown | None
    new: Shown | None
    collection: bool
    added: list[Shown]
    removed: list[Shown]


@dataclass(frozen=True)
class EntryView:
    """An ``AuditEntry`` ready for the templates: every stored value as ``Shown`` text."""

    id: str  # the document's _id, for an anchor
    when: str  # 2026-11-23 14:05:09 UTC
    when_iso: str
    action: str
    who: str | None  # None: nobody known
    who_url: str | None
    table: str
    object_id: str
    row_url: str | None  # None: the key can't be put in a URL
    entity: str | None
    previous_id: str | None  # the key before this change, if it changed the key
    fields: list[FieldChange]
    context: list[tuple[str, Shown]]

    @property
    def deleted(self) -> bool:
        return self.action == "delete"


def readable_time(moment: dt.datetime) -> str:
    """``2026-11-23 14:05:09 UTC``: entries' times are aware UTC."""
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def value_text(value: Any) -> str:
    """A value as text: strings quoted (``repr``: an empty or blank string, ``"5"`` and
    ``5``, ``"None"`` and NULL stay apart), JSON as JSON, dates in ISO form."""
    if value is None:
        return "NULL"
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, (dict, list)):
        try:
            return json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            return repr(value)
    if isinstance(value, str):
        return repr(value)
    return str(value)


def shown(value: Any, *, quoted: bool = True) -> Shown:
    """``value`` as text, folded when long; ``quoted=False``: a string as it is."""
    text = value if isinstance(value, str) and not quoted else value_text(value)
    folded = text[:FOLD] + "…" if len(text) > FOLD else None
    kind = "null" if value is None else "text" if isinstance(value, str) else "value"
    return Shown(text, folded, kind)


def key_text(key: Any) -> str:
    """A key or user id as the pages write it (and read it back, see ``parse_key``): a
    composite key as a JSON array, anything else as its text."""
    if isinstance(key, (tuple, list)):
        return json.dumps(list(key), ensure_ascii=False, default=str)
    return str(key)


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


def url_safe(text: str) -> bool:
    """Whether a key's text survives as a path segment (no empty, "." or ".." part)."""
    return all(part not in ("", ".", "..") for part in text.split("/"))


def field_change(name: str, change: Change) -> FieldChange:
    if change.collection:
        added, removed = [shown(v) for v in change.added], [shown(v) for v in change.deleted]
        return FieldChange(name, None, None, True, added, removed)
    old = shown(change.deleted[0]) if change.deleted else None
    new = shown(change.added[0]) if change.added else None
    return FieldChange(name, old, new, False, [], [])


def context_items(context: Mapping[str, Any]) -> list[tuple[str, Shown]]:
    """The request context, the usual keys first, then the rest in name order."""
    names = [k for k in CONTEXT_FIRST if k in context]
    names += sorted(k for k in context if k not in CONTEXT_FIRST)
    return [
        (name, shown(context[name], quoted=False)) for name in names if context[name] is not None
    ]


def entry_view(entry: AuditEntry) -> EntryView:
    object_id = key_text(entry.object_id) if entry.object_id is not None else ""
    who = key_text(entry.user_id) if entry.user_id is not None else None
    linkable = bool(entry.table_name) and "/" not in entry.table_name and url_safe(object_id)
    previous = entry.previous_object_id
    return EntryView(
        id=str(entry.id),
        when=readable_time(entry.created_at),
        when_iso=entry.created_at.isoformat(),
        action=entry.action,
        who=who,
        who_url=url_for(".recent", user=who) if who else None,
        table=entry.table_name,
        object_id=object_id,
        row_url=(
            url_for(".timeline", table=entry.table_name, object_id=object_id) if linkable else None
        ),
        entity=entry.entity,
        previous_id=key_text(previous) if previous is not None else None,
        fields=[field_change(name, change) for name, change in entry.changes.items()],
        context=context_items(entry.context),
    )


# -- the recent list -----------------------------------------------------------------------


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


@blueprint.get("/")
def recent() -> ResponseReturnValue:
    """The newest changes, filtered by ``table``, ``user``, ``action`` (repeatable),
    ``since`` and ``until``; ``limit`` per page, ``after``: the cursor of the older page."""
    filters = Filters.of(request.args)
    try:
        page = current_log().find(**filters.query())
    except REFUSED as exc:
        return render_recent(filters, [], None, error=str(exc)), 400
    older = None
    if page.next_cursor is not None:
        older = url_for(".recent", **filters.link_args(), after=page.next_cursor)
    return render_recent(filters, [entry_view(e) for e in page], older)


def render_recent(
    filters: Filters, entries: list[EntryView], older: str | None, *, error: str | None = None
) -> str:
    return render_template(
        "audit_mongo/recent.html",
        filters=filters,
        actions=ACTIONS,
        entries=entries,
        older=older,
        newest=url_for(".recent", **filters.link_args()) if filters.after else None,
        error=error,
    )


# -- one row -------------------------------------------------------------------------------


@blueprint.get("/<table>/<path:object_id>")
def timeline(table: str, object_id: str) -> ResponseReturnValue:
    """One row's entries, newest first (``for_object``), across changes of its key; a
    deleted row with the values it had. ``object_id`` is the key's text, or a JSON array
    for a composite key."""
    try:
        key = parse_key(object_id, "object id")
        found = list(current_log().for_object(table, key, limit=TIMELINE_LIMIT + 1))
    except REFUSED as exc:
        abort(400, description=str(exc))
    if not found:
        return error_page(404, "No such row", f"The log has no entries for {table} {object_id}.")
    entries = [entry_view(e) for e in found[:TIMELINE_LIMIT]]
    return render_template(
        "audit_mongo/timeline.html",
        table=table,
        object_id=object_id,
        entries=entries,
        deleted=entries[0] if entries[0].deleted else None,
        truncated=len(found) > TIMELINE_LIMIT,
        limit=TIMELINE_LIMIT,
    )
