"""``AuditMongo``: the Flask extension, in the ``init_app`` style of Flask-SQLAlchemy and
Flask-Login.

::

    db = SQLAlchemy(model_class=Base)
    audit_ext = AuditMongo()
    audit_ext.track(Client)

    def create_app():
        app = Flask(__name__)
        app.config["AUDIT_MONGO_URI"] = "mongodb://mongo1:27017/app"
        db.init_app(app)
        audit_ext.init_app(app, db=db)   # the log's outbox is db.engine
        return app
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, NamedTuple

from flask import Flask, current_app, has_app_context

from ..log import AuditLog
from .request_context import add_request_context, logged_in_user_id, request_context_loader

EXTENSION = "audit_mongo"

# Config keys read by init_app(), with their defaults (AUDIT_MONGO_URI has none).
DEFAULTS: dict[str, Any] = {
    "AUDIT_MONGO_COLLECTION": "user_logs",
    "AUDIT_MONGO_DATABASE": None,
    "AUDIT_MONGO_CLIENT_OPTIONS": {},
    "AUDIT_MONGO_OUTBOX": True,
    "AUDIT_MONGO_STRICT": False,
    "AUDIT_MONGO_BACKGROUND": False,
    "AUDIT_MONGO_TIMEOUT": 2.0,
    "AUDIT_MONGO_EXCLUDE": (),
    "AUDIT_MONGO_MASK": (),
    "AUDIT_MONGO_MASK_KEY": None,
    "AUDIT_MONGO_DEFAULT_MASK": True,
    "AUDIT_MONGO_RETENTION": None,
    "AUDIT_MONGO_SIGNING_KEYS": None,
    "AUDIT_MONGO_SIGNING_KEY_ID": None,
    "AUDIT_MONGO_ENSURE_INDEXES": False,
    "AUDIT_MONGO_REQUEST_ID_HEADER": "X-Request-ID",
}

Permission = Callable[[], bool]


class Tracked(NamedTuple):
    """A model ``AuditMongo.track()`` named, with what it said of it."""

    model: type
    exclude: Collection[str]
    mask: Collection[str]
    default_mask: bool | None


@dataclass
class AuditState:
    """What one application holds in ``app.extensions["audit_mongo"]``."""

    extension: AuditMongo
    log: AuditLog


class AuditMongo:
    """Audits a Flask-SQLAlchemy application's row changes, with the logged-in Flask-Login
    user as the actor and the request (address, agent, method, path, endpoint, request id)
    as the context of each document.

    :param app: the application, for ``init_app`` at once.
    :param db: the ``flask_sqlalchemy.SQLAlchemy``; its engines are what the log records
        and its default engine is the log's outbox.
    :param permission: called in a request to the history pages
        (``audit_mongo.flask.views``); they answer 403 unless it returns True.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        db: Any = None,
        permission: Permission | None = None,
        collection: Any = None,
    ) -> None:
        self.permission = permission
        self._tracked: list[Tracked] = []
        self._logs: list[AuditLog] = []
        if app is not None:
            self.init_app(app, db=db, collection=collection)

    def init_app(self, app: Flask, *, db: Any = None, collection: Any = None) -> None:
        """Open the application's log from its ``AUDIT_MONGO_*`` config and track the
        models named by ``track()``. Adds the ``flask audit`` commands.

        ``collection``: a pymongo collection the application already has (from its own
        ``MongoClient``), used instead of ``AUDIT_MONGO_URI``, ``AUDIT_MONGO_DATABASE``,
        ``AUDIT_MONGO_COLLECTION`` and ``AUDIT_MONGO_CLIENT_OPTIONS``."""
        if EXTENSION in app.extensions:  # a second log would record every change twice
            raise RuntimeError("AuditMongo.init_app() was already called for this application")
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, copy.copy(value))  # not one dict shared by every app
        log = _open_log(app, db, collection)
        log.user_loader = logged_in_user_id
        log.context_loader = request_context_loader(app.config["AUDIT_MONGO_REQUEST_ID_HEADER"])
        for tracked in self._tracked:
            _track(log, tracked)
        if app.config["AUDIT_MONGO_ENSURE_INDEXES"]:
            try:
                log.ensure_indexes()
            except BaseException:  # no half-started log left listening
                log.close()
                raise
        app.extensions[EXTENSION] = AuditState(self, log)
        self._logs.append(log)
        from .commands import audit_commands  # here: commands imports this module

        app.cli.add_command(audit_commands)

    def track(
        self,
        model: type,
        *,
        exclude: Collection[str] = (),
        mask: Collection[str] = (),
        default_mask: bool | None = None,
    ) -> type:
        """Record ``model``'s changes in every application's log, present and future, as
        ``AuditLog.track()`` does. Returns ``model``, so it works as a class decorator."""
        tracked = Tracked(model, exclude, mask, default_mask)
        self._tracked.append(tracked)
        self._logs = [log for log in self._logs if not log.closed]
        for log in self._logs:
            _track(log, tracked)
        return model

    def add_request_context(self, **values: Any) -> None:
        """Add ``values`` (say, the tenant) to the context of the current request's commits
        from now on; ``log.context()`` blocks still win on a shared key. ``RuntimeError``
        outside a request."""
        add_request_context(values)

    @property
    def log(self) -> AuditLog:
        """The current application's ``AuditLog`` (the only one's, outside an app context)."""
        if has_app_context():
            return current_log()
        if len(self._logs) == 1:
            return self._logs[0]
        raise RuntimeError(
            "AuditMongo.log outside an application context: "
            f"{len(self._logs)} applications have a log; use `with app.app_context():`"
        )


def _track(log: AuditLog, tracked: Tracked) -> None:
    log.track(
        tracked.model,
        exclude=tracked.exclude,
        mask=tracked.mask,
        default_mask=tracked.default_mask,
    )


def current_log() -> AuditLog:
    """The ``AuditLog`` of the current application (``RuntimeError`` if it has none)."""
    return current_state().log


def current_state() -> AuditState:
    state = current_app.extensions.get(EXTENSION)
    if not isinstance(state, AuditState):
        raise RuntimeError("this application has no AuditMongo: call audit_ext.init_app(app)")
    return state


def _open_log(app: Flask, db: Any, collection: Any) -> AuditLog:
    config = app.config
    uri = config.get("AUDIT_MONGO_URI")
    engine, engines = None, None
    if db is not None:
        with app.app_context():  # Flask-SQLAlchemy's engines are per application
            engine = db.engine
            engines = list(db.engines.values())
    options = _log_options(config, engine, engines)
    if collection is not None:
        return AuditLog(collection, **options)
    if not uri:
        raise RuntimeError(
            "AUDIT_MONGO_URI is not set: a mongodb:// URI (or mongomock:// for an in-memory "
            "Mongo, for trying things and tests), or pass init_app(app, collection=...)"
        )
    return AuditLog.from_uri(
        uri,
        config["AUDIT_MONGO_COLLECTION"],
        database=config["AUDIT_MONGO_DATABASE"],
        client_options=dict(config["AUDIT_MONGO_CLIENT_OPTIONS"]),
        **options,
    )


def _log_options(config: Any, engine: Any, engines: Any) -> dict[str, Any]:
    """AuditLog's options from the config (but where its collection is)."""
    return dict(
        outbox=engine if config["AUDIT_MONGO_OUTBOX"] else None,
        engines=engines,
        strict=config["AUDIT_MONGO_STRICT"],
        background=config["AUDIT_MONGO_BACKGROUND"],
        timeout=config["AUDIT_MONGO_TIMEOUT"],
        exclude=config["AUDIT_MONGO_EXCLUDE"],
        mask=config["AUDIT_MONGO_MASK"],
        mask_key=config["AUDIT_MONGO_MASK_KEY"],
        default_mask=config["AUDIT_MONGO_DEFAULT_MASK"],
        retention=_retention(config["AUDIT_MONGO_RETENTION"]),
        signing_keys=config["AUDIT_MONGO_SIGNING_KEYS"],
        signing_key_id=config["AUDIT_MONGO_SIGNING_KEY_ID"],
    )


def _retention(value: Any) -> dt.timedelta | None:
    """A timedelta, or a number of days (config files hold numbers)."""
    if value is None or isinstance(value, dt.timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.timedelta(days=value)
    raise TypeError(f"AUDIT_MONGO_RETENTION is a timedelta or a number of days, not {value!r}")
