"""The Flask example application (examples/flask_app) through Flask's test client, with real
Flask-Login sessions: logging in with the form, creating, editing and deleting clients, and
each client's history page showing every change and who made it."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from audit_mongo.flask import current_log
from examples.flask_app import create_app
from examples.flask_app.models import DEMO_USERS, Client, db

REPOSITORY = Path(__file__).resolve().parent.parent


def make_app(tmp_path: Path) -> Flask:
    return create_app(
        {"SECRET_KEY": "test", "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'example.db'}"}
    )


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    application = make_app(tmp_path)
    yield application
    with application.app_context():
        current_log().close()
        db.engine.dispose()


@pytest.fixture
def web(app: Flask) -> FlaskClient:
    return app.test_client()


def log_in(web: FlaskClient, username: str, password: str | None = None) -> Any:
    if password is None:
        password = DEMO_USERS[username]
    return web.post("/login", data={"username": username, "password": password})


def documents(app: Flask) -> list[dict[str, Any]]:
    with app.app_context():
        return list(current_log().collection.find().sort([("created_at", 1), ("_id", 1)]))


def client_id(app: Flask, name: str) -> int:
    with app.app_context():
        return db.session.execute(db.select(Client.id).filter_by(name=name)).scalar_one()


def text_of(html: str) -> str:
    """The page's text, tags dropped and whitespace folded, for assertions on what shows."""
    html = re.sub(r"<style>.*?</style>", " ", html, flags=re.DOTALL)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def test_anonymous_visitors_are_sent_to_the_login_form(app: Flask, web: FlaskClient) -> None:
    for path in ("/", "/clients/new", "/clients/1/edit", "/clients/1/delete", "/audit/"):
        response = web.get(path)
        assert response.status_code == 302, path
        assert response.location.startswith("/login?next="), path
    assert web.post("/clients/1/delete").status_code == 302
    assert web.post("/clients/new", data={"name": "X"}).status_code == 302
    assert [d["action"] for d in documents(app)] == ["create", "create"]  # the seed only


def test_the_login_page_names_the_demo_users(web: FlaskClient) -> None:
    page = text_of(web.get("/login").text)
    assert "alice / wonderland" in page
    assert "bob / builder" in page


def test_the_login_rejects_a_wrong_password_and_an_unknown_user(web: FlaskClient) -> None:
    for username, password in (("alice", "builder"), ("mallory", "wonderland"), ("alice", "")):
        response = log_in(web, username, password)
        assert response.status_code == 401
        assert "Wrong user name or password." in response.text
    assert web.get("/").status_code == 302  # still anonymous


def test_logging_in_and_out(web: FlaskClient) -> None:
    response = log_in(web, "alice")
    assert response.status_code == 302
    assert response.location == "/"
    page = web.get("/")
    assert page.status_code == 200
    assert "Logged in as alice" in text_of(page.text)
    assert "Company A" in page.text

    assert web.post("/logout").location == "/login"
    assert web.get("/").status_code == 302


def test_the_login_goes_back_to_a_local_page_only(web: FlaskClient) -> None:
    redirect = web.get("/clients/new").location
    response = web.post(redirect, data={"username": "bob", "password": "builder"})
    assert response.location == "/clients/new"

    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:x"):
        web.post("/logout")
        response = web.post(
            "/login", query_string={"next": target}, data={"username": "bob", "password": "builder"}
        )
        assert response.location == "/", target


def test_the_seeded_clients_were_created_by_nobody(app: Flask) -> None:
    creates = documents(app)
    assert [(d["action"], d["current_user_id"]) for d in creates] == [
        ("create", None),
        ("create", None),
    ]
    assert creates[0]["changes"]["name"] == {"added": ["Company A"], "deleted": []}


def test_creating_editing_and_deleting_a_client_is_audited_as_the_logged_in_user(
    app: Flask, web: FlaskClient
) -> None:
    log_in(web, "alice")
    response = web.post(
        "/clients/new", data={"name": "Company C", "email": "c@example.com", "phone": ""}
    )
    assert response.location == "/"
    assert "Created Company C." in web.get("/").text
    new_id = client_id(app, "Company C")

    log_in(web, "bob")
    edit = web.get(f"/clients/{new_id}/edit")
    assert 'value="c@example.com"' in edit.text
    response = web.post(
        f"/clients/{new_id}/edit",
        data={"name": "Company C Ltd", "email": "c@example.com", "phone": "+1 555 0199"},
    )
    assert response.location == "/"

    log_in(web, "alice")
    assert "Delete Company C Ltd?" in web.get(f"/clients/{new_id}/delete").text
    assert web.post(f"/clients/{new_id}/delete").location == "/"
    listing = web.get("/").text
    assert "Deleted Company C Ltd" in listing
    assert f'id="client-{new_id}"' not in listing

    made = [d for d in documents(app) if d["object_id"] == new_id]
    assert [(d["action"], d["current_user_id"]) for d in made] == [
        ("create", "alice"),
        ("update", "bob"),
        ("delete", "alice"),
    ]
    assert made[1]["changes"] == {
        "name": {"added": ["Company C Ltd"], "deleted": ["Company C"]},
        "phone": {"added": ["+1 555 0199"], "deleted": [None]},
    }
    assert made[1]["context"]["endpoint"] == "client_edit"
    assert made[1]["context"]["path"] == f"/clients/{new_id}/edit"


def test_a_form_with_errors_is_shown_again_and_records_nothing(
    app: Flask, web: FlaskClient
) -> None:
    log_in(web, "alice")
    before = len(documents(app))

    response = web.post("/clients/new", data={"name": " ", "email": "no-at-sign"})
    assert response.status_code == 400
    assert "A name is required." in response.text
    assert "An email address has an @." in response.text

    taken = "contact@company-a.example"
    response = web.post("/clients/new", data={"name": "Copycat", "email": taken})
    assert response.status_code == 400
    assert "Another client has this email address." in response.text
    assert 'value="Copycat"' in response.text  # what was typed is kept

    company_b = client_id(app, "Company B")
    response = web.post(f"/clients/{company_b}/edit", data={"name": "B", "email": taken})
    assert response.status_code == 400
    assert "Another client has this email address." in response.text

    assert len(documents(app)) == before
    assert web.get("/clients/999/edit").status_code == 404


def test_client_values_are_escaped(app: Flask, web: FlaskClient) -> None:
    log_in(web, "alice")
    web.post("/clients/new", data={"name": "<script>alert(1)</script>"})
    page = web.get("/").text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_each_client_links_to_its_history_page(app: Flask, web: FlaskClient) -> None:
    log_in(web, "alice")
    company_a = client_id(app, "Company A")
    history = f"/audit/clients/{company_a}"
    assert f'href="{history}"' in web.get("/").text
    assert f'href="{history}"' in web.get(f"/clients/{company_a}/edit").text
    assert 'href="/audit/"' in web.get("/").text  # the recent changes


def shows_change(page: str, field: str, old: str | None, new: str) -> bool:
    """Whether ``page`` (text) shows ``field: old → new``; strings may be quoted, a missing
    old value is ∅."""
    before = "∅" if old is None else f"'?{re.escape(old)}'?"
    return re.search(rf"{field} ?: {before} → '?{re.escape(new)}'?", page) is not None


def test_the_history_page_shows_each_change_and_who_made_it(app: Flask, web: FlaskClient) -> None:
    log_in(web, "alice")
    web.post("/clients/new", data={"name": "Company C", "email": "c@example.com"})
    new_id = client_id(app, "Company C")
    log_in(web, "bob")
    web.post(f"/clients/{new_id}/edit", data={"name": "Company C Ltd", "email": "c@example.com"})

    page = web.get(f"/audit/clients/{new_id}")
    assert page.status_code == 200
    newest, oldest = text_of(page.text).split(" UTC ")[1:3]  # newest first
    assert newest.startswith("bob update")
    assert shows_change(newest, "name", "Company C", "Company C Ltd")
    assert "email" not in newest  # unchanged
    assert f"/clients/{new_id}/edit" in newest  # the request's path
    assert oldest.startswith("alice create")
    assert shows_change(oldest, "name", None, "Company C")
    assert shows_change(oldest, "email", None, "c@example.com")

    log_in(web, "alice")
    web.post(f"/clients/{new_id}/delete")
    page = text_of(web.get(f"/audit/clients/{new_id}").text)
    assert "deleted" in page
    newest = page.split(" UTC ")[2]  # the deletion notice's time, then the entries
    assert newest.startswith("alice delete")
    assert "Company C Ltd" in newest


def test_the_recent_changes_page_lists_every_clients_changes(app: Flask, web: FlaskClient) -> None:
    log_in(web, "bob")
    company_b = client_id(app, "Company B")
    web.post(
        f"/clients/{company_b}/edit",
        data={"name": "Company B", "email": "hello@company-b.example", "phone": "+1 555 0123"},
    )
    page = text_of(web.get("/audit/").text)
    assert f"bob update clients {company_b}" in page
    assert re.search(r"phone ?: NULL → '?\+1 555 0123'?", page)
    assert page.count("create clients") == 2  # the seed, by nobody known


def test_anonymous_visitors_log_in_and_come_back_to_the_history_page(web: FlaskClient) -> None:
    response = web.get("/audit/clients/1")
    assert response.status_code == 302
    response = web.post(response.location, data={"username": "bob", "password": "builder"})
    assert response.location == "/audit/clients/1"
    assert web.get(response.location).status_code == 200


def test_client_values_are_escaped_on_the_history_page(app: Flask, web: FlaskClient) -> None:
    log_in(web, "alice")
    web.post("/clients/new", data={"name": "<script>alert(1)</script>"})
    page = web.get(f"/audit/clients/{client_id(app, '<script>alert(1)</script>')}").text
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_the_readme_command_finds_the_app_factory() -> None:
    """``flask --app examples/flask_app`` imports the folder as the package ``flask_app``
    (not ``examples.flask_app``) and calls its ``create_app()``."""
    listed = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "examples/flask_app", "routes"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    for endpoint in ("login", "client_edit", "client_delete", "audit_mongo.timeline"):
        assert re.search(rf"^{re.escape(endpoint)} ", listed, re.MULTILINE), listed
