"""Hostile input to the history pages, generated with hypothesis: arbitrary query strings
(the pages' own parameters and others, repeated, with operators, unicode, NUL, huge numbers,
dates out of range, cursors that are not one) and arbitrary rows, requested as a user the
permission grants. No answer is a 5xx, no page carries a ``<script>`` unescaped, and a
query is refused with a 400 exactly when one of its parameters is bad.

The application is the one of ``test_flask_views`` (Flask-SQLAlchemy, Flask-Login, the
pages under /audit), built once for the module: the pages only read. Runs are
deterministic (``derandomize=True``, no example database)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import string
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from bson import ObjectId
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_mongo.flask.page_params import MOST_PER_PAGE
from audit_mongo.inputs import ACTIONS
from audit_mongo.query import encode_cursor
from tests.hostile_values import PROPERTIES
from tests.test_flask_views import XSS, admin_only, close, make_app

FUZZ = settings(PROPERTIES, max_examples=200)

KNOWN_TABLES = ("clients", "users")  # the application's tracked tables
SINGLE = ("table", "user", "since", "until", "limit", "after")  # given at most once
PARAMETERS = (*SINGLE, "action")
INT64_MAX = 2**63 - 1
ERROR_MESSAGE = '<p class="message error" role="alert">'


# -- the application --------------------------------------------------------------------


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """The application, with a log whose stored values are hostile too: a client named
    ``<script>...``, one created by a user whose id is that text, renamed, deleted and
    moved rows."""
    application = make_app(admin_only, Path(tmp_path_factory.mktemp("hypothesis")))
    web = application.test_client()
    web.post("/login/1")
    for name in ("Acme", XSS, "Bolt", "Moving"):
        assert web.post("/clients", data={"name": name}).status_code == 200
    web.post("/clients/1/name", data={"name": "Acme Ltd"}, headers={"User-Agent": XSS})
    web.post("/clients/3/delete")
    web.post("/clients/4/move/40")
    web.post(f"/clients/as/{quote(XSS, safe='')}")
    yield application
    close(application)


@pytest.fixture(scope="module")
def web(app: Flask) -> FlaskClient:
    """A client logged in as the admin, whom the permission grants."""
    client = app.test_client()
    assert client.post("/login/1").status_code == 200
    return client


def get(web: FlaskClient, path: str, query: str = "") -> tuple[int, str]:
    response = web.get(path, query_string=query)
    body = response.get_data(as_text=True)
    assert response.status_code < 500, (path, query, body)
    assert "<script" not in body.lower(), (path, query)
    return response.status_code, body


# -- hostile text --------------------------------------------------------------------------

OPERATOR_NAMES = ("$gt", "$ne", "$where", "$regex", "$exists", "$in", "$expr", "__proto__")
HOSTILE = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "$where",
    "$ne",
    "{}",
    '{"$gt": ""}',
    '{"$ne": null}',
    "[]",
    "[{}]",
    '["$x"]',
    "[1,",
    "[1e400]",
    "[true]",
    "[null]",
    "null",
    "NaN",
    "-Infinity",
    "1e308",
    "0x10",
    "1_000",
    "٣",
    "\u202eevil",
    "\ufeff",
    "' OR 1=1 --",
    "../..",
    XSS,
    '"><script>alert(1)</script>',
    "<ScRiPt src=//x>",
    "javascript:alert(1)",
    "0000-00-00",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59.999999-14:00",
    "2026-02-30",
    "2026-11-23T25:00",
    "20261123",
]

operators = st.dictionaries(
    st.sampled_from(OPERATOR_NAMES),
    st.one_of(st.text(max_size=10), st.integers(), st.none(), st.booleans()),
    min_size=1,
    max_size=3,
).map(json.dumps)
long_text = st.builds(
    lambda piece, times: piece * times,
    st.sampled_from(["9", "a", "😀", "$", "\x00", "<", "%", "-"]),
    st.integers(1000, 20_000),
)
numbers = st.one_of(
    st.integers(-(10**30), 10**30),
    st.integers(-5, MOST_PER_PAGE + 5),
    st.floats(allow_nan=True, allow_infinity=True),
).map(str)
date_like = st.builds(
    "{:04d}-{:02d}-{:02d}".format,
    st.integers(0, 99_999),
    st.integers(0, 99),
    st.integers(0, 99),
)
datetimes = st.builds(
    lambda moment, zone: moment.replace(tzinfo=zone).isoformat(),
    st.datetimes(),
    st.one_of(  # naive, or a fixed offset, in or out of range
        st.none(),
        st.integers(-24 * 60 + 1, 24 * 60 - 1).map(lambda m: dt.timezone(dt.timedelta(minutes=m))),
    ),
)
cursors = st.one_of(
    st.binary(max_size=64).map(lambda raw: base64.urlsafe_b64encode(raw).decode()),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30)),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=6,
    ).map(lambda value: base64.urlsafe_b64encode(json.dumps(value).encode()).decode()),
    st.text(alphabet=string.ascii_letters + string.digits + "-_=!.", max_size=80),
)
hostile_text = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(max_size=40),
    operators,
    long_text,
    numbers,
    date_like,
    datetimes,
    cursors,
    st.sampled_from([*KNOWN_TABLES, *ACTIONS]),
    st.builds(lambda before, after: before + XSS + after, st.text(max_size=4), st.text(max_size=4)),
)
keys = st.one_of(
    st.sampled_from(PARAMETERS),
    st.sampled_from(["user[$ne]", "table[]", "$where", "x", "", "LIMIT", "after "]),
    st.text(max_size=12),
)
RAW = ["%", "%zz", "&&==&", "user", "user=%FF%FE", "a;b=c", "=x", "limit=%00", "?&?", "%E2%80"]


@st.composite
def query_strings(draw: st.DrawFn) -> str:
    """Any query string: pairs of (parameter, hostile value), some repeated, sometimes
    followed by a raw, malformed piece of URL encoding."""
    pairs: list[tuple[str, str]] = draw(st.lists(st.tuples(keys, hostile_text), max_size=8))
    repeat: bool = draw(st.booleans())
    if pairs and repeat:
        pairs += draw(st.lists(st.sampled_from(pairs), min_size=1, max_size=3))
    query = urlencode(pairs)
    raw = draw(st.lists(st.sampled_from(RAW), max_size=2))
    return "&".join([query, *raw]) if raw else query


@FUZZ
@given(query=query_strings())
def test_any_query_string_gives_the_recent_list_or_a_400_page(web: FlaskClient, query: str) -> None:
    status, body = get(web, "/audit/", query)

    assert status in (200, 400), (query, body)
    if status == 400:
        assert ERROR_MESSAGE in body and "Bad request" in body, query


# -- a 400 exactly when a parameter is bad ---------------------------------------------------


def _padded(values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Surrounding blanks are ignored: the pages strip each value."""
    return st.builds(
        lambda left, value, right: left + value + right,
        st.sampled_from(["", " ", "\t"]),
        values,
        st.sampled_from(["", " ", "\n"]),
    )


def _nonblank(values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return values.filter(lambda text: text.strip() != "")


moments = st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(9000, 12, 31))
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
no_digits = st.text(alphabet=st.characters(blacklist_categories=("Nd", "Cs")), min_size=1)
VALID: dict[str, st.SearchStrategy[str]] = {
    "table": _padded(st.sampled_from(KNOWN_TABLES)),
    "user": st.one_of(
        st.integers(-(2**63), INT64_MAX).map(str),
        _nonblank(st.text(max_size=30)).filter(lambda t: t.strip()[0] not in "${["),
        st.lists(st.one_of(st.integers(-1000, 1000), st.text(string.ascii_letters)), min_size=1)
        .filter(lambda items: not any(str(i).startswith("$") for i in items))
        .map(json.dumps),
    ),
    "action": _padded(st.sampled_from(ACTIONS)),
    "since": st.one_of(
        moments.map(lambda m: m.date().isoformat()),
        moments.map(dt.datetime.isoformat),
        moments.map(lambda m: m.isoformat() + "Z"),
        st.builds(lambda m, zone: m.replace(tzinfo=zone).isoformat(), moments, offsets),
    ),
    "limit": st.integers(1, MOST_PER_PAGE).map(str),
    "after": st.builds(
        encode_cursor,
        st.datetimes(
            min_value=dt.datetime(1971, 1, 1),
            max_value=dt.datetime(9000, 1, 1),
            timezones=st.just(dt.timezone.utc),
        ),
        st.binary(min_size=12, max_size=12).map(ObjectId),
    ),
}
VALID["until"] = VALID["since"]
INVALID: dict[str, st.SearchStrategy[str]] = {
    "table": st.one_of(
        st.builds(lambda t: "$" + t, st.text(max_size=10)),
        _nonblank(st.text(max_size=20)).filter(lambda t: t.strip() not in KNOWN_TABLES),
        st.sampled_from(["Clients", "client", "clients.x", "users\x00", XSS]),
    ),
    "user": st.one_of(
        st.builds(lambda t: "$" + t, st.text(max_size=10)),
        operators,
        st.sampled_from(["{", "[", "[]", "[{}]", '["$x"]', "[1,", "[1e400]", "[true]", "[null]"]),
    ),
    "action": _nonblank(st.text(max_size=12)).filter(lambda t: t.strip() not in ACTIONS),
    "since": st.one_of(
        _nonblank(no_digits),
        st.builds("2026-{:02d}-{:02d}".format, st.integers(13, 99), st.integers(1, 28)),
        st.builds("2026-02-{:02d}".format, st.integers(30, 99)),
        st.sampled_from(
            ["9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+14:00", "2026-11-23T25:00"]
        ),
    ),
    "limit": st.one_of(
        st.integers(-2, 0).map(str),  # just out of range, and far
        st.integers(MOST_PER_PAGE + 1, MOST_PER_PAGE + 600).map(str),
        st.integers(max_value=0).map(str),
        st.integers(min_value=MOST_PER_PAGE + 1).map(str),
        st.sampled_from(["٣", "1.5", "1e2", "+5", "0x10", "1_0", "9" * 5000, "ten"]),
    ),
    "after": st.one_of(
        st.binary(max_size=40).map(lambda raw: base64.urlsafe_b64encode(b"\xff" + raw).decode()),
        st.sampled_from(
            [
                base64.urlsafe_b64encode(value.encode()).decode()
                for value in (
                    '[true, "000000000000000000000000"]',
                    '[1.5, "000000000000000000000000"]',
                    '[1, "zz"]',
                    '[1, {"$gt": 1}]',
                    '{"$gt": 1}',
                    "[1]",
                    '[1e30, "000000000000000000000000"]',
                    '[99999999999999999999, "000000000000000000000000"]',
                )
            ]
        ),
    ),
}
INVALID["until"] = INVALID["since"]


# What the 400 page says about each bad parameter (HTML-escaped, like any value).
SAYS = {
    "table": "table",  # unknown table ..., table name may not start with ...
    "user": "user id",
    "action": "action is one of",
    "since": "since is a date",
    "until": "until is a date",
    "limit": "limit is a number from 1 to 500",
    "after": "not a page cursor",
}


@st.composite
def labelled_queries(draw: st.DrawFn) -> tuple[str, str | None]:
    """A query string and what its 400 page must say (None: it must be answered). Of the
    parameters given, at most one is bad, or one single-valued parameter is given twice;
    parameters the pages do not know are mixed in (they are ignored)."""
    names = draw(st.lists(st.sampled_from(PARAMETERS), unique=True, max_size=7))
    bad = draw(st.one_of(st.none(), st.sampled_from(names))) if names else None
    repeated = None
    if bad is None and names and draw(st.integers(0, 3)) == 0:
        repeated = draw(st.sampled_from(names))
    pairs = [(name, draw((INVALID if name == bad else VALID)[name])) for name in names]
    if repeated is not None:
        pairs += draw(st.lists(VALID[repeated].map(lambda v: (repeated, v)), min_size=1))
    pairs += draw(st.lists(st.tuples(keys.filter(lambda k: k not in PARAMETERS), hostile_text)))
    order = draw(st.permutations(range(len(pairs))))
    query = urlencode([pairs[i] for i in order])
    if bad is not None:
        return query, SAYS[bad]
    if repeated is not None and repeated != "action":  # action is the one repeatable
        return query, f"give {repeated} once"
    return query, None


def error_message(body: str) -> str | None:
    if ERROR_MESSAGE not in body:
        return None
    return body.split(ERROR_MESSAGE, 1)[1].split("</p>", 1)[0]


@FUZZ
@given(case=labelled_queries())
def test_the_list_refuses_a_query_exactly_when_a_parameter_is_bad(
    web: FlaskClient, case: tuple[str, str | None]
) -> None:
    query, says = case

    status, body = get(web, "/audit/", query)

    message = error_message(body)
    if says is None:
        assert (status, message) == (200, None), (query, body)
    else:
        assert status == 400, (query, says, body)
        assert message is not None and says in message, (query, says, message)


# -- one row's timeline ------------------------------------------------------------------------


@FUZZ
@given(table=st.one_of(st.sampled_from(KNOWN_TABLES), hostile_text), key=hostile_text)
def test_any_row_path_gives_a_timeline_a_redirect_a_400_or_a_404(
    web: FlaskClient, table: str, key: str
) -> None:
    path = f"/audit/{quote(table, safe='')}/{quote(key, safe='')}"

    status, _ = get(web, path)

    # A redirect: Werkzeug's routing merges empty path segments ("/audit//").
    assert status in (200, 400, 404) or 300 <= status < 400, (path, status)


def _plain_segment(text: str) -> bool:
    """Text that stays one path segment of the route: no slash, not empty, not a dot
    segment."""
    return text.strip() != "" and "/" not in text and text not in (".", "..")


# An integer key, in or beyond 64 bits (the log stores one beyond as its text): a row
# the log may have. Anything else is not a key of an integer column.
keys_of_int = st.one_of(st.integers(-5, 60), st.integers(-(10**40), 10**40)).map(str)
not_int_keys = st.one_of(
    st.builds(lambda t: "$" + t, st.text(max_size=10)),
    operators,
    st.text(max_size=20).filter(lambda t: not (t.lstrip("-").isdigit() and t.isascii())),
    st.sampled_from(["1.0", "+1", " 1", "1 ", "1_0", "٣", "0x1", "1e3", "9" * 5000]),
).filter(_plain_segment)
unknown_tables = st.text(min_size=1, max_size=20).filter(
    lambda t: _plain_segment(t) and t not in KNOWN_TABLES
)


@FUZZ
@given(
    case=st.one_of(
        st.tuples(st.sampled_from(KNOWN_TABLES), keys_of_int, st.just(True)),
        st.tuples(st.sampled_from(KNOWN_TABLES), not_int_keys, st.just(False)),
        st.tuples(unknown_tables, keys_of_int | not_int_keys, st.just(False)),
    ),
    query=query_strings(),
)
def test_the_timeline_refuses_exactly_a_bad_table_or_key(
    web: FlaskClient, case: tuple[str, str, bool], query: str
) -> None:
    table, key, good = case
    path = f"/audit/{quote(table, safe='')}/{quote(key, safe='')}"

    status, body = get(web, path, query)  # the timeline takes no query parameters

    if good:
        assert status in (200, 404), (path, body)
        if status == 404:
            assert "no entries for" in body
    else:
        assert status == 400, (path, body)
        assert ERROR_MESSAGE in body


def test_a_row_with_entries_and_hostile_stored_values_is_shown_escaped(web: FlaskClient) -> None:
    """The deterministic anchor of the cases above: rows the log has are pages, stored
    ``<script>`` is text."""
    for key in ("1", "2", "3", "40"):
        status, body = get(web, f"/audit/clients/{key}")
        assert status == 200, key
    _, body = get(web, "/audit/clients/2")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
