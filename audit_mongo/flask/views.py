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

import logging

from flask import Blueprint, abort, render_template, request, url_for
from flask.typing import ResponseReturnValue
from pymongo.errors import PyMongoError
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from ..inputs import ACTIONS
from ..log_safety import log_failure
from .display import EntryView, entry_view
from .extension import current_log, current_state
from .page_params import Filters, parse_key

blueprint = Blueprint("audit_mongo", __name__, template_folder="templates")

TIMELINE_LIMIT = 1000  # the newest entries of a row its timeline shows
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


@blueprint.errorhandler(PyMongoError)
def mongo_unavailable(error: PyMongoError) -> ResponseReturnValue:
    """Mongo unreachable, or refusing to read (an application user that may only insert):
    a 503 page naming the error's kind, never its message or a traceback."""
    log_failure(logging.ERROR, error, "audit_mongo: the history pages could not read the log")
    message = (
        "The audit log could not be read: Mongo is unreachable or refused the query "
        f"({type(error).__name__}). Reading it needs the find privilege."
    )
    return error_page(503, "Audit log unavailable", message)


def error_page(status: int, title: str, message: str) -> ResponseReturnValue:
    return render_template("audit_mongo/error.html", title=title, message=message), status


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
