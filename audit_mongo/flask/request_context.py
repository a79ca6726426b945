"""What a Flask request tells about a commit: who is logged in (Flask-Login) and where the
request came from. Both are asked at commit time and never raise: outside a request, or
without Flask-Login, they give nothing."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from flask import current_app, has_request_context, request
from sqlalchemy import inspect
from sqlalchemy.orm.state import InstanceState

REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
USER_AGENT_LIMIT = 512
# Kept in the request's WSGI environ, not in g: g belongs to the application context, which
# a test or script may keep pushed across many requests.
REQUEST_ID = "audit_mongo.request_id"
EXTRA = "audit_mongo.context"  # add_request_context()'s values


def logged_in_user_id() -> Any:
    """The logged-in Flask-Login user's id as the user model holds it (``current_user.id``,
    else the mapped user's primary key, else ``get_id()``); None outside a request, without
    a login manager, or for an anonymous user."""
    if not has_request_context() or getattr(current_app, "login_manager", None) is None:
        return None
    from flask_login import current_user

    user = current_user._get_current_object()  # the user itself, not the proxy
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    user_id = getattr(user, "id", None)
    if user_id is not None:
        return user_id
    state = inspect(user, raiseerr=False)
    if isinstance(state, InstanceState) and state.identity is not None:
        return user  # a mapped user: the log records its primary key, in its own type
    return user.get_id()


def request_context_loader(header: str) -> Callable[[], Mapping[str, Any] | None]:
    """A ``context_loader`` giving the current request's ``remote_addr`` (as Flask sees it:
    behind a proxy, configure ``ProxyFix`` so that it is the client's), ``user_agent``,
    ``method``, ``path``, ``endpoint`` and ``request_id`` (from ``header``, else made up)."""

    def load() -> Mapping[str, Any] | None:
        if not has_request_context():
            return None
        return {
            "request_id": request_id(header),
            "remote_addr": request.remote_addr,
            "user_agent": request.user_agent.string[:USER_AGENT_LIMIT] or None,
            "method": request.method,
            "path": request.path,
            "endpoint": request.endpoint,
            **request.environ.get(EXTRA, {}),
        }

    return load


def request_id(header: str) -> str:
    """This request's id: the ``header`` the client or a proxy sent, if it looks like an id
    (letters, digits and ``._:@/+=-``, at most 128), else one made up; the same for the
    whole request."""
    known: str | None = request.environ.get(REQUEST_ID)
    if known is None:
        sent = request.headers.get(header, "")
        known = sent if REQUEST_ID_PATTERN.fullmatch(sent) else uuid.uuid4().hex
        request.environ[REQUEST_ID] = known
    return known


def add_request_context(values: Mapping[str, Any]) -> None:
    """Add ``values`` to the context of the current request's later commits."""
    if not has_request_context():
        raise RuntimeError("add_request_context() outside a request: use log.context() instead")
    request.environ.setdefault(EXTRA, {}).update(values)
