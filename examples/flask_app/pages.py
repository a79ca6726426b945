"""The example's pages: log in and out, list, create, edit and delete clients. Every page
but the login form needs a logged-in user. No CSRF tokens: a demo (see the package's
docstring)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import login_required, login_user, logout_user
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response

from .models import DEMO_USERS, Client, User, db

FIELD_LIMIT = 255


def register_pages(app: Flask) -> None:
    app.add_url_rule("/login", view_func=login, methods=["GET", "POST"])
    app.add_url_rule("/logout", view_func=logout, methods=["POST"])
    app.add_url_rule("/", view_func=client_list)
    app.add_url_rule("/clients/new", view_func=client_create, methods=["GET", "POST"])
    app.add_url_rule(
        "/clients/<int:client_id>/edit", view_func=client_edit, methods=["GET", "POST"]
    )
    app.add_url_rule(
        "/clients/<int:client_id>/delete", view_func=client_delete, methods=["GET", "POST"]
    )
    app.jinja_env.globals["history_url"] = history_url


def history_url(client_id: int) -> str:
    """The history page of one client: the audit blueprint's timeline of its row."""
    return url_for("audit_mongo.timeline", table=Client.__tablename__, object_id=client_id)


def login() -> ResponseReturnValue:
    error = None
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        user = db.session.get(User, username) if username else None
        if user is not None and user.check_password(password):
            login_user(user)
            flash(f"Logged in as {user.id}.")
            return redirect(_local_target(request.args.get("next")) or url_for("client_list"))
        error = "Wrong user name or password."
    status = 401 if error else 200
    return render_template("example/login.html", error=error, demo_users=DEMO_USERS), status


def logout() -> Response:
    logout_user()
    flash("Logged out.")
    return redirect(url_for("login"))


@login_required
def client_list() -> str:
    clients = db.session.scalars(select(Client).order_by(Client.name, Client.id)).all()
    return render_template("example/clients.html", clients=clients)


@login_required
def client_create() -> str | Response:
    values, errors = _form_values()
    if request.method == "POST" and not errors:
        client = Client(**values)
        db.session.add(client)
        if _committed(errors):
            flash(f"Created {client.name}.")
            return redirect(url_for("client_list"))
    return _form_page(None, values, errors)


@login_required
def client_edit(client_id: int) -> str | Response:
    client = db.get_or_404(Client, client_id)
    if request.method == "GET":
        values = {"name": client.name, "email": client.email, "phone": client.phone}
        return _form_page(client, values, {})
    values, errors = _form_values()
    if not errors:
        for key, value in values.items():
            setattr(client, key, value)
        if _committed(errors):
            flash(f"Saved {client.name}.")
            return redirect(url_for("client_list"))
    return _form_page(client, values, errors)


@login_required
def client_delete(client_id: int) -> str | Response:
    client = db.get_or_404(Client, client_id)
    if request.method == "POST":
        name = client.name
        db.session.delete(client)
        db.session.commit()
        flash(f"Deleted {name}; its history stays in the audit trail.")
        return redirect(url_for("client_list"))
    return render_template("example/delete.html", client=client)


def _form_values() -> tuple[dict[str, str | None], dict[str, str]]:
    """The client form's values (blank optional fields are None) and its errors by field;
    no errors on a GET."""
    values: dict[str, str | None] = {
        key: request.form.get(key, "").strip() or None for key in ("name", "email", "phone")
    }
    errors: dict[str, str] = {}
    if request.method != "POST":
        return values, errors
    if not values["name"]:
        errors["name"] = "A name is required."
    if values["email"] is not None and "@" not in values["email"]:
        errors["email"] = "An email address has an @."
    for key, value in values.items():
        if value is not None and len(value) > FIELD_LIMIT:
            errors[key] = f"At most {FIELD_LIMIT} characters."
    return values, errors


def _committed(errors: dict[str, str]) -> bool:
    """Commit; on a unique email taken by another client, roll back and say so."""
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        errors["email"] = "Another client has this email address."
        return False
    return True


def _form_page(
    client: Client | None, values: dict[str, str | None], errors: dict[str, str]
) -> str | Response:
    page = render_template("example/client_form.html", client=client, values=values, errors=errors)
    return Response(page, status=400 if errors else 200, mimetype="text/html")


def _local_target(target: str | None) -> str | None:
    """``target`` if it is a path on this site (no scheme, no host), else None: the login
    form's ``next`` must not send anyone elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None
