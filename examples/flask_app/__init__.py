"""audit_mongo's Flask example: a small client book whose every change is audited.

Log in as a demo user, create, edit and delete clients, and open each client's history
page (the ``audit_mongo.flask.views`` blueprint, mounted at ``/audit``)::

    pip install -e '.[flask,memory]' && flask --app examples/flask_app run

Runs on SQLite (a temporary file, removed at exit; set ``DATABASE_URL`` for another
database) and an in-memory Mongo (``mongomock://``; set ``AUDIT_MONGO_URI``, for example
``mongodb://localhost:27017/app``, to write to a real server). Everything starts afresh
at each start unless both are set.

A demo, not a template for production: the forms carry no CSRF token (use Flask-WTF or
similar in a real application), the demo users and their passwords are shown on the
login page, and without ``SECRET_KEY`` in the environment a random one is made at start,
so sessions end when the process does.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

from flask import Flask, abort, current_app
from flask_login import LoginManager, current_user

from audit_mongo.flask import AuditMongo
from audit_mongo.flask.views import blueprint as history_pages

from .models import Client, User, db, seed
from .pages import register_pages


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The example application. ``config`` overrides the defaults (tests pass their own
    ``SQLALCHEMY_DATABASE_URI``)."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=os.environ.get("SECRET_KEY") or secrets.token_hex(32),
        AUDIT_MONGO_URI=os.environ.get("AUDIT_MONGO_URI", "mongomock://"),
        AUDIT_MONGO_ENSURE_INDEXES=True,
    )
    app.config.update(config or {})
    if "SQLALCHEMY_DATABASE_URI" not in app.config:
        app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get("DATABASE_URL") or _scratch_sqlite()

    db.init_app(app)
    login_manager = LoginManager(app)
    login_manager.login_view = "login"
    login_manager.user_loader(_load_user)

    # The logged-in user acts in every audit document; the history pages are for them too.
    audit_ext = AuditMongo(app, db=db, permission=_may_read_history)
    audit_ext.track(Client)
    with app.app_context():
        seed()

    register_pages(app)
    app.register_blueprint(history_pages, url_prefix="/audit")  # a client's history, recent changes
    return app


def _load_user(user_id: str) -> User | None:
    return db.session.get(User, user_id)


def _may_read_history() -> bool:
    """The history pages' permission: any logged-in user. An anonymous visitor is sent to
    the login form (and back afterwards), as on the other pages, rather than shown a 403."""
    if not current_user.is_authenticated:
        abort(current_app.login_manager.unauthorized())  # type: ignore[attr-defined]
    return True


def _scratch_sqlite() -> str:
    """A SQLite file in a new temporary folder, removed when the process exits: with the
    in-memory Mongo, data and audit trail start and end together."""
    folder = tempfile.mkdtemp(prefix="audit-mongo-example-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return f"sqlite:///{os.path.join(folder, 'clients.db')}"
