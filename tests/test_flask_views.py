"""The history pages (``audit_mongo.flask.views``) on a Flask-SQLAlchemy + Flask-Login
application whose log is written by real requests: access, what the pages show, filters and
paging, escaping of stored values, and 400 (never 500) for hostile query parameters."""

from __future__ import annotations

import base64
import datetime as dt
import html
import random
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_login import current_user
from pymongo.errors import OperationFailure

from audit_mongo.flask import AuditMongo, current_log, views
from audit_mongo.flask.views import blueprint
from tests.flask_app_factory import Client, User, create_app, db

ADMIN, OTHER = 1, 2
XSS = "<script>alert(1)</script>"
ESCAPED_XSS = "&lt;script&gt;alert(1)&lt;/script&gt;"
ENTRY = re.compile(r'<tr id="entry-([0-9a-f]+)" class="action-(\w+)">')


def admin_only() -> bool:
    return bool(current_user.is_authenticated and current_user.id == ADMIN)


def make_app(permission: Callable[[], Any] | None, tmp_path: Any) -> Flask:
    """The test application with the pages under /audit and a few more routes."""
    extension = AuditMongo(permission=permission)
    extension.track(Client)
    extension.track(User)
    app = create_app(extension, f"sqlite:///{tmp_path / 'app.db'}")
    app.register_blueprint(blueprint, url_prefix="/audit")
    add_routes(app)
    with app.app_context():
        db.session.add_all([User(id=ADMIN, name="alice"), User(id=OTHER, name="bob")])
        db.session.commit()
    return app


def add_routes(app: Flask) -> None:
    @app.post("/clients/<int:client_id>/delete")
    def delete_client(client_id: int) -> str:
        db.session.delete(db.session.get(Client, client_id))
        db.session.commit()
        return "ok"

    @app.post("/clients/<int:client_id>/move/<int:new_id>")
    def move_client(client_id: int, new_id: int) -> str:
        client = db.session.get(Client, client_id)
        assert client is not None
        client.id = new_id
        db.session.commit()
        return "ok"

    @app.post("/clients/as/<path:someone>")
    def create_client_as(someone: str) -> str:
        log = current_log()
        with log.acting_as(someone), log.context(note="<img src=x onerror=alert(2)>"):
            db.session.add(Client(name="made as someone"))
            db.session.commit()
        return "ok"


def close(app: Flask) -> None:
    with app.app_context():
        current_log().close()
        db.engine.dispose()


@pytest.fixture
def app(tmp_path: Any) -> Iterator[Flask]:
    application = make_app(admin_only, tmp_path)
    yield application
    close(application)


@pytest.fixture
def web(app: Flask) -> FlaskClient:
    """A client logged in as the admin (the permission callback grants user 1)."""
    client = app.test_client()
    client.post("/login/1")
    return client


def page(web: FlaskClient, url: str, **options: Any) -> str:
    response = web.get(url, **options)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_data(as_text=True)


def entries(body: str) -> list[tuple[str, str]]:
    """The (document id, action) of each entry a page lists, in its order."""
    return ENTRY.findall(body)


def stored_ids(app: Flask, **query: Any) -> list[str]:
    """Ids of the stored documents matching ``query``, newest first."""
    with app.app_context():
        found = current_log().collection.find(query).sort([("created_at", -1), ("_id", -1)])
        return [str(d["_id"]) for d in found]


def stored_before(app: Flask, moment: dt.datetime) -> list[str]:
    """Ids of the documents stored before ``moment``, newest first."""
    with app.app_context():
        return [str(e.id) for e in current_log().find(limit=1000) if e.created_at < moment]


def last_day(app: Flask) -> dt.date:
    with app.app_context():
        return current_log().find(limit=1).entries[0].created_at.date()


def older_link(body: str) -> str | None:
    found = re.search(r'<a href="([^"]+)" rel="next">', body)
    return html.unescape(found[1]) if found else None


# -- access ---------------------------------------------------------------------------------


@pytest.mark.parametrize("who", [None, OTHER])
def test_the_pages_refuse_anyone_the_permission_does_not_grant(app: Flask, who: int | None) -> None:
    web = app.test_client()
    web.post("/clients", data={"name": "secret name"})
    if who is not None:
        web.post(f"/login/{who}")
    for url in ("/audit/", "/audit/clients/1", "/audit/?user=$ne", "/audit/nope/1"):
        response = web.get(url)
        assert response.status_code == 403
        assert "secret name" not in response.get_data(as_text=True)


@pytest.mark.parametrize("permission", [None, lambda: False, lambda: "yes", lambda: 1])
def test_no_permission_callback_or_one_not_returning_true_denies(
    tmp_path: Any, permission: Callable[[], Any] | None
) -> None:
    app = make_app(permission, tmp_path)
    try:
        web = app.test_client()
        web.post("/login/1")
        assert web.get("/audit/").status_code == 403
        assert web.get("/audit/users/1").status_code == 403
    finally:
        close(app)


def test_the_permission_callback_grants_access(web: FlaskClient) -> None:
    response = web.get("/audit/")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert "script-src" not in response.headers["Content-Security-Policy"]  # none runs
    assert response.headers["X-Content-Type-Options"] == "nosniff"


# -- the recent list ------------------------------------------------------------------------


def test_the_list_shows_each_change_with_old_and_new_and_who_made_it(web: FlaskClient) -> None:
    web.post("/clients", data={"name": "Acme"})
    web.post("/login/2")
    web.post("/clients/1/name", data={"name": "Acme Ltd"})
    web.post("/login/1")

    body = page(web, "/audit/")
    assert [action for _, action in entries(body)] == ["update", "create", "create", "create"]
    assert re.search(
        r"&#39;Acme&#39;</span> <span class=\"arrow\">→</span> "
        r"<span class=\"text\">&#39;Acme Ltd&#39;",
        body,
    )
    assert '<a href="/audit/?user=2">2</a>' in body  # bob renamed it
    assert '<a href="/audit/?user=1">1</a>' in body  # alice created it
    assert "nobody known" in body  # the users, made outside a request
    assert '<a href="/audit/clients/1">clients 1</a>' in body
    assert re.search(r">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</time>", body)
    assert 'path: <span class="text">/clients/1/name</span>' in body
    assert 'remote_addr: <span class="text">127.0.0.1</span>' in body
    assert "request_id: " in body


def test_a_long_value_is_folded_with_the_whole_of_it_in_details(web: FlaskClient) -> None:
    long_name = "word " * 100
    web.post("/clients", data={"name": long_name})

    body = page(web, "/audit/?table=clients")
    folded = re.search(
        r"<details class=\"text\"><summary>([^<]*)</summary>"
        r"<span class=\"full\">([^<]*)</span></details>",
        body,
    )
    assert folded is not None
    summary = html.unescape(folded[1])
    assert len(summary) == 81 and summary.endswith("…") and long_name.startswith(summary[1:-1])
    assert html.unescape(folded[2]) == repr(long_name)


def test_filter_by_table(app: Flask, web: FlaskClient) -> None:
    web.post("/clients", data={"name": "A"})

    body = page(web, "/audit/?table=clients")
    assert [e[0] for e in entries(body)] == stored_ids(app, table_name="clients")
    body = page(web, "/audit/?table=users")
    assert [e[0] for e in entries(body)] == stored_ids(app, table_name="users")
    assert 'value="users"' in body  # the form shows the filter


def test_filter_by_user(app: Flask, web: FlaskClient) -> None:
    web.post("/clients", data={"name": "by alice"})
    web.post("/login/2")
    web.post("/clients", data={"name": "by bob"})
    web.post("/clients/1/name", data={"name": "renamed by bob"})
    web.post("/login/1")

    body = page(web, "/audit/?user=2")
    assert [e[0] for e in entries(body)] == stored_ids(app, current_user_id=2)
    assert [e[1] for e in entries(body)] == ["update", "create"]
    assert not set(stored_ids(app, current_user_id=1)) & {e[0] for e in entries(body)}


def test_filter_by_action_one_or_several(app: Flask, web: FlaskClient) -> None:
    web.post("/clients", data={"name": "A"})
    web.post("/clients/1/name", data={"name": "B"})
    web.post("/clients/1/delete")

    body = page(web, "/audit/?action=delete")
    assert [e[1] for e in entries(body)] == ["delete"]
    body = page(web, "/audit/?action=update&action=delete&table=clients")
    assert [e[1] for e in entries(body)] == ["delete", "update"]
    assert 'value="delete" checked' in body and 'value="create">' in body


def test_filter_by_date_and_by_datetime(app: Flask, web: FlaskClient) -> None:
    web.post("/clients", data={"name": "early"})
    time.sleep(0.02)
    middle = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.02)
    web.post("/clients", data={"name": "late"})
    day = last_day(app)

    assert [e[0] for e in entries(page(web, f"/audit/?since={quote(middle.isoformat())}"))] == (
        stored_ids(app, object_id=2, table_name="clients")
    )
    until = middle.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    early = entries(page(web, f"/audit/?until={until}"))
    assert [e[0] for e in early] == stored_before(app, middle)
    assert [e[1] for e in early] == ["create", "create", "create"]  # a client, two users
    assert len(entries(page(web, f"/audit/?since={day}&until={day}"))) == 4  # the day included
    assert entries(page(web, f"/audit/?since={day + dt.timedelta(days=1)}")) == []
    assert entries(page(web, f"/audit/?until={day - dt.timedelta(days=1)}")) == []


def test_the_older_link_pages_through_every_entry_once_keeping_the_filters(
    app: Flask, web: FlaskClient
) -> None:
    for number in range(7):
        web.post("/clients", data={"name": f"client {number}"})

    seen: list[str] = []
    url: str | None = "/audit/?table=clients&limit=3"
    while url is not None:
        body = page(web, url)
        seen += [e[0] for e in entries(body)]
        url = older_link(body)
        if url is not None:
            assert "table=clients" in url and "limit=3" in url and "after=" in url
            assert "« Newest" in page(web, url)
    assert seen == stored_ids(app, table_name="clients")
    assert len(seen) == len(set(seen)) == 7


# -- one row's timeline ----------------------------------------------------------------------


def test_the_timeline_shows_a_rows_life_newest_first_and_its_deleted_values(
    app: Flask, web: FlaskClient
) -> None:
    web.post("/clients", data={"name": "Acme"})
    web.post("/clients", data={"name": "another row"})
    web.post("/clients/1/name", data={"name": "Acme Ltd"})
    web.post("/clients/1/delete")

    body = page(web, "/audit/clients/1")
    assert [e[1] for e in entries(body)] == ["delete", "update", "create"]
    assert [e[0] for e in entries(body)] == stored_ids(app, table_name="clients", object_id=1)
    assert "another row" not in body
    assert '<span class="badge deleted">deleted</span>' in body
    banner = body.split("This row was deleted at", 1)[1].split("</div>", 1)[0]
    assert "&#39;Acme Ltd&#39;" in banner and '<span class="field">id</span>' in banner
    # The delete itself: the values the row had, → ∅.
    delete_row = body.split('class="action-delete">', 1)[1].split("</tr>", 1)[0]
    assert re.search(
        r"&#39;Acme Ltd&#39;</span> <span class=\"arrow\">→</span> "
        r"<span class=\"absent\"",
        delete_row,
    )


def test_the_timeline_follows_a_key_change_and_says_what_the_key_was(web: FlaskClient) -> None:
    web.post("/clients", data={"name": "moving"})
    web.post("/clients/1/move/40")

    body = page(web, "/audit/clients/40")
    assert [e[1] for e in entries(body)] == ["update", "create"]
    assert "key was 1" in body
    assert "was 1" in page(web, "/audit/?table=clients")


def test_a_row_the_log_never_saw_is_a_404_page(web: FlaskClient) -> None:
    response = web.get("/audit/clients/12345")
    assert response.status_code == 404
    assert "no entries for clients 12345" in response.get_data(as_text=True)


@pytest.mark.parametrize("url", ["/audit/", "/audit/clients/1"])
def test_a_log_mongo_refuses_to_read_is_a_503_page(
    app: Flask, web: FlaskClient, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """An application user that may only insert (see Least privilege) cannot read."""

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise OperationFailure("not authorized on app to execute command { find: ...", 13)

    with app.app_context():
        monkeypatch.setattr(current_log().collection, "find", refused)
    response = web.get(url)

    assert response.status_code == 503
    body = response.get_data(as_text=True)
    assert "could not be read" in body and "OperationFailure" in body
    assert "not authorized" not in body and "Traceback" not in body
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")


# -- escaping ----------------------------------------------------------------------------------


def test_stored_values_are_escaped_in_text_and_in_links(web: FlaskClient) -> None:
    web.post("/clients", data={"name": XSS}, headers={"User-Agent": f"agent {XSS}"})
    web.post(f"/clients/as/{quote(XSS, safe='')}")

    for url in ("/audit/", "/audit/clients/1", "/audit/clients/2", f"/audit/?user={quote(XSS)}"):
        body = page(web, url)
        assert "<script" not in body and "<img" not in body, url
        assert ESCAPED_XSS in body, url
    listing = page(web, "/audit/")
    assert f'user_agent: <span class="text">agent {ESCAPED_XSS}</span>' in listing
    assert 'note: <span class="text">&lt;img src=x onerror=alert(2)&gt;</span>' in listing
    # The acting user's id as a link: quoted in the href, escaped in the text.
    assert f'<a href="/audit/?user=%3Cscript%3Ealert(1)%3C/script%3E">{ESCAPED_XSS}</a>' in listing


def test_parameters_echoed_in_the_form_are_escaped_in_attributes(web: FlaskClient) -> None:
    hostile = '"><script>alert(1)</script><input x="'
    for name in ("user", "since", "table"):
        body = web.get(f"/audit/?{name}={quote(hostile)}").get_data(as_text=True)
        assert "<script" not in body
        echoed = re.search(rf'<input name="{name}" value="([^"]*)"', body)
        assert echoed is not None and html.unescape(echoed[1]) == hostile
        assert "&#34;&gt;&lt;script&gt;" in echoed[1]


# -- bad parameters ------------------------------------------------------------------------------

CURSOR_NOT_A_POSITION = base64.urlsafe_b64encode(b'["a", "b"]').decode()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/audit/?user=$ne", "may not start with &#39;$&#39;"),
        ("/audit/?user=" + quote('{"$ne": null}'), "not an object"),
        ("/audit/?user=" + quote('[{"$gt": 1}]'), "JSON array of strings and numbers"),
        ("/audit/?table=nope", "unknown table &#39;nope&#39;"),
        ("/audit/?table=$where", "may not start with &#39;$&#39;"),
        ("/audit/?action=drop", "action is one of create, update, delete"),
        ("/audit/?since=yesterday", "since is a date like 2026-11-23"),
        ("/audit/?until=2026-02-30", "until is a date like 2026-11-23"),
        ("/audit/?since=9999-12-31T23:00:00-05:00", "since is a date"),
        ("/audit/?after=garbage", "not a page cursor"),
        (f"/audit/?after={CURSOR_NOT_A_POSITION}", "not a page cursor"),
        ("/audit/?limit=100000", "limit is a number from 1 to 500"),
        ("/audit/?limit=0", "limit is a number from 1 to 500"),
        ("/audit/?limit=-5", "limit is a number from 1 to 500"),
        ("/audit/?limit=" + "9" * 5000, "limit is a number from 1 to 500"),
        ("/audit/?table=clients&table=users", "give table once"),
        ("/audit/clients/$gt", "may not start with &#39;$&#39;"),
        ("/audit/clients/" + quote('{"$ne": 1}'), "not an object"),
        ("/audit/clients/abc", "not a valid int"),
        ("/audit/clients/" + quote("[1, 2]"), "key of 1 column"),
        ("/audit/nope/1", "unknown table &#39;nope&#39;"),
    ],
)
def test_a_bad_parameter_is_a_400_page_saying_what_is_wrong(
    web: FlaskClient, url: str, message: str
) -> None:
    response = web.get(url)
    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert message in body
    assert response.headers["Cache-Control"] == "no-store"


def test_until_the_last_day_there_is_is_everything(web: FlaskClient) -> None:
    assert len(entries(page(web, "/audit/?until=9999-12-31"))) == 2


# -- fuzzing -----------------------------------------------------------------------------------

PARAMETERS = ("table", "user", "action", "since", "until", "limit", "after", "user[$ne]", "x")
VALUES = [
    "",
    " ",
    "$ne",
    "$where",
    "{}",
    '{"$ne": null}',
    '{"$gt": ""}',
    "[]",
    "[{}]",
    '["$x"]',
    "[1,",
    "[1, 2]",
    "[true]",
    "[null]",
    "[1e400]",
    '[[1], "a"]',
    "null",
    "true",
    "0",
    "-0",
    "1",
    "-1",
    "9" * 30,
    "-" + "9" * 30,
    "9223372036854775808",
    "1e308",
    "NaN",
    "Infinity",
    "0x10",
    "1_000",
    "٣",
    "\U0001d7d9",  # a mathematical digit one
    "\x00",
    "a\x00b",
    "\u202eevil",
    "\ud800",
    "é",
    "😀" * 40,
    "a" * 3000,
    XSS,
    "' OR 1=1 --",
    "../..",
    "/",
    "\\",
    "clients",
    "users",
    "create",
    "delete",
    "update",
    "__proto__",
    "2026-02-30",
    "0000-01-01",
    "0001-01-01",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31",
    "9999-12-31T23:59:59.999999-14:00",
    "2026-11-23T25:00",
    "2026-11-23Z",
    "2026-11-23T14:05:09z",
    "20261123",
    base64.urlsafe_b64encode(b'[1e30, "x"]').decode(),
    base64.urlsafe_b64encode(b'[99999999999999999999, "' + b"0" * 24 + b'"]').decode(),
    base64.urlsafe_b64encode(b'[-99999999999999, "' + b"f" * 24 + b'"]').decode(),
    base64.urlsafe_b64encode(b'[true, "' + b"0" * 24 + b'"]').decode(),
    base64.urlsafe_b64encode(b'[1, {"$gt": 1}]').decode(),
    base64.urlsafe_b64encode(b"{}").decode(),
]
RAW_QUERIES = ["%", "%zz", "&&==&", "user", "user=%FF%FE", "a;b=c", "=x", "limit=%00", "?&?"]


def hostile_queries(count: int, seed: int = 20261123) -> Iterator[str]:
    """Query strings built from hostile values: operators, unicode, huge numbers, empty and
    repeated parameters, cursors that are not one, and raw malformed encodings."""
    chance = random.Random(seed)
    yield from RAW_QUERIES
    for parameter in PARAMETERS:
        for value in VALUES:
            yield urlencode({parameter: value}, errors="surrogatepass")
    for _ in range(count):
        pairs = [
            (chance.choice(PARAMETERS), chance.choice(VALUES)) for _ in range(chance.randint(1, 6))
        ]
        if chance.random() < 0.2:
            pairs += pairs  # repeated parameters
        query = urlencode(pairs, errors="surrogatepass")
        yield query + "&" + chance.choice(RAW_QUERIES) if chance.random() < 0.1 else query


def test_fuzzed_query_parameters_never_make_the_list_fail(web: FlaskClient) -> None:
    web.post("/clients", data={"name": "Acme"})
    for query in hostile_queries(400):
        response = web.get("/audit/", query_string=query)
        assert response.status_code in (200, 400), (query, response.get_data(as_text=True))
        assert "<script" not in response.get_data(as_text=True), query


def test_fuzzed_rows_never_make_the_timeline_fail(web: FlaskClient) -> None:
    web.post("/clients", data={"name": "Acme"})
    chance = random.Random(7)
    tables = ["clients", "users", "nope", "$x", "%00", "a.b", XSS]
    for value in [*VALUES, *(chance.choice(VALUES) + chance.choice(VALUES) for _ in range(100))]:
        for table in tables:
            path = f"/audit/{quote(table, safe='')}/{quote(value, safe='', errors='surrogatepass')}"
            query = chance.choice(list(hostile_queries(0)))
            response = web.get(path, query_string=query)
            assert response.status_code < 500, (path, response.get_data(as_text=True))
            assert "<script" not in response.get_data(as_text=True), path


def test_every_template_is_in_the_package_data_glob() -> None:
    """setup.cfg ships ``templates/audit_mongo/*.html``: a template elsewhere would be
    missing from an installed wheel."""
    folder = Path(views.__file__).parent / "templates"
    everything = {p for p in folder.rglob("*") if p.is_file()}
    assert everything == set(folder.glob("audit_mongo/*.html"))
    setup = (Path(__file__).parents[1] / "setup.cfg").read_text()
    assert "audit_mongo.flask = templates/audit_mongo/*.html" in setup
