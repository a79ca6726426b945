"""``audit-mongo history / user / recent / export``: what they find and how they show it,
on logs written by real ORM sessions (an ``AuditLog`` on a mongomock server that the
command line, opening its ``--uri`` with ``pymongo.MongoClient``, reaches too)."""

from __future__ import annotations

import copy
import csv
import datetime as dt
import io
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import mongomock
import pymongo
import pytest
from bson import Decimal128, ObjectId, json_util
from click.testing import CliRunner, Result
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from audit_mongo import AuditLog
from audit_mongo.cli import main
from audit_mongo.cli.output import JSON_OPTIONS
from tests.models import Client, Country, Membership, Sample

SERVER = ("mongo.test", 27017)
URI = "mongodb://mongo.test/app"
TRACKED = (Client, Membership, Country, Sample)
SETTINGS = ("AUDIT_MONGO_URI", "AUDIT_MONGO_COLLECTION", "AUDIT_MONGO_OUTBOX_URL")


# -- shared by the test_cli_* modules ----------------------------------------------------


@contextmanager
def mongo_server() -> Iterator[Any]:
    """A Mongo server only this process sees: while it runs, every ``pymongo.MongoClient``
    for it (the command's included) shares one in-memory store. Yields ``app.user_logs``."""
    with mongomock.patch(servers=(SERVER,)):
        client: Any = pymongo.MongoClient(URI, tz_aware=True)
        try:
            yield client.app.user_logs
        finally:
            client.close()


@contextmanager
def recording(collection: Any) -> Iterator[AuditLog]:
    audit = AuditLog(collection)
    for model in TRACKED:
        audit.track(model)
    try:
        yield audit
    finally:
        audit.close()


def cli(command: str, *arguments: str, uri: str = URI) -> Result:
    """``audit-mongo COMMAND --uri URI ARGUMENTS...`` through click's test runner."""
    return CliRunner().invoke(main, [command, "--uri", uri, *arguments])


def json_lines(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return [json_util.loads(line, json_options=JSON_OPTIONS) for line in result.stdout.splitlines()]


def blocks(result: Result) -> list[list[str]]:
    """The table output: one list of lines (header, then fields) per entry."""
    assert result.exit_code == 0, result.output
    return [block.splitlines() for block in result.stdout.split("\n\n") if block.strip()]


def without_schema_version(document: dict[str, Any]) -> dict[str, Any]:
    """The stored form the CLI prints: all but the schema version and the chain link
    (``audit-mongo verify`` checks those)."""
    return {k: v for k, v in document.items() if k not in ("schema_version", "chain")}


@pytest.fixture(autouse=True)
def no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)


@dataclass
class Story:
    """What the ORM did: client ``client_id`` created by 42 (int), renamed by "42" (str);
    a membership and a country (key "123") created by 7, the country deleted by 7."""

    collection: Any
    client_id: int


@pytest.fixture
def story(engine: Engine) -> Iterator[Story]:
    with mongo_server() as collection, recording(collection) as audit, Session(engine) as session:
        with audit.acting_as(42):
            client = Client(name="Company B", email="b@example.com", phone="555")
            session.add(client)
            session.commit()
        with audit.acting_as("42"):
            client.name = "Company A"
            client.phone = None
            session.commit()
        with audit.acting_as(7):
            session.add(Membership(group="admins", member_id=client.id, role="owner"))
            session.commit()
            session.add(Country(code="123", name="One two three"))
            session.commit()
            country = session.get(Country, "123")  # get_one: SQLAlchemy 2.0.22+
            assert country is not None
            session.delete(country)
            session.commit()
        yield Story(collection, client.id)


# -- history -------------------------------------------------------------------------------


def test_history_shows_a_rows_changes_newest_first_with_old_and_new_values(story: Story) -> None:
    result = cli("history", "clients", str(story.client_id))

    update, create = blocks(result)
    assert " UTC  update  clients  id 1  user '42'  tx " in update[0]
    assert update[1:] == ["  name   'Company B' → 'Company A'", "  phone  '555' → None"]
    assert " UTC  create  clients  id 1  user 42  tx " in create[0]
    assert create[1:] == [
        "  id     ∅ → 1",
        "  name   ∅ → 'Company B'",
        "  email  ∅ → 'b@example.com'",
        "  phone  ∅ → '555'",
    ]
    assert result.stderr == ""


def test_history_header_shows_the_time_in_utc_and_a_short_transaction_id(story: Story) -> None:
    document = story.collection.find_one({"action": "update"})

    (header, *_), _ = blocks(cli("history", "clients", "1"))

    when = document["created_at"].astimezone(dt.timezone.utc)
    assert header.startswith(
        when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d} UTC"
    )
    assert header.endswith(f"tx {document['transaction_id'][:8]}")


def test_history_json_is_one_document_per_line_in_the_stored_form(story: Story) -> None:
    entries = json_lines(cli("history", "clients", "1", "--json"))

    stored = sorted(story.collection.find({"table_name": "clients"}), key=lambda d: d["_id"])
    assert entries == [without_schema_version(d) for d in reversed(stored)]
    update, create = entries
    assert update["changes"] == {
        "name": {"added": ["Company A"], "deleted": ["Company B"]},
        "phone": {"added": [None], "deleted": ["555"]},
    }
    assert (update["current_user_id"], create["current_user_id"]) == ("42", 42)
    assert isinstance(update["_id"], ObjectId)
    assert update["created_at"].tzinfo is not None


def test_history_filters_by_action_time_and_limit(story: Story) -> None:
    assert [e["action"] for e in json_lines(cli("history", "clients", "1", "--json"))] == [
        "update",
        "create",
    ]
    only_create = cli("history", "clients", "1", "--action", "create", "--json")
    assert [e["action"] for e in json_lines(only_create)] == ["create"]
    newest = cli("history", "clients", "1", "--limit", "1", "--json")
    assert [e["action"] for e in json_lines(newest)] == ["update"]
    future = cli("history", "clients", "1", "--since", "2999-01-01")
    assert (future.exit_code, future.stdout, future.stderr) == (0, "", "no entries\n")


def test_a_numeric_id_matches_integer_and_string_object_ids(story: Story) -> None:
    """Without a model the command cannot know the key's type: "123" is the country's
    string key, "1" the client's integer key (and, in an export, a string "1" key too)."""
    create = story.collection.find_one({"table_name": "clients", "action": "create"})
    as_text = copy.deepcopy(create)
    as_text.update(_id=ObjectId(), object_id="1")
    story.collection.insert_one(as_text)

    clients = json_lines(cli("history", "clients", "1", "--json"))
    countries = json_lines(cli("history", "countries", "123", "--json"))
    exported = json_lines(cli("export", "--table", "clients", "--id", "1"))

    assert (clients[0]["object_id"], clients[0]["action"]) == (1, "update")
    assert [(e["object_id"], e["action"]) for e in countries] == [
        ("123", "delete"),
        ("123", "create"),
    ]
    assert countries[0]["changes"]["name"] == {"added": [], "deleted": ["One two three"]}
    assert sorted(repr(e["object_id"]) for e in exported) == ["'1'", "1", "1"]


def test_a_negative_id_follows_a_double_dash(engine: Engine) -> None:
    with mongo_server() as collection, recording(collection), Session(engine) as session:
        session.add(Client(id=-5, name="below zero"))
        session.commit()

        result = cli("history", "clients", "--", "-5")

    ((header, *fields),) = blocks(result)
    assert "create  clients  id -5  user None" in header
    assert "  name  ∅ → 'below zero'" in fields


def test_a_composite_key_is_given_as_a_json_array_with_exact_types(story: Story) -> None:
    found = cli("history", "memberships", '["admins", 1]')
    wrong_type = cli("history", "memberships", '["admins", "1"]')

    ((header, *fields),) = blocks(found)
    assert "create  memberships  id ('admins', 1)  user 7" in header
    assert fields == ["  group      ∅ → 'admins'", "  member_id  ∅ → 1", "  role       ∅ → 'owner'"]
    assert (wrong_type.exit_code, wrong_type.stdout) == (0, "")
    assert "no entries" in wrong_type.stderr


# -- user ------------------------------------------------------------------------------------


def test_user_matches_integer_and_string_user_ids_newest_first(story: Story) -> None:
    entries = json_lines(cli("user", "42", "--json"))

    assert [(e["action"], e["current_user_id"]) for e in entries] == [
        ("update", "42"),
        ("create", 42),
    ]
    assert entries[0]["changes"]["name"] == {"added": ["Company A"], "deleted": ["Company B"]}


def test_user_table_output_and_filters(story: Story) -> None:
    everything = blocks(cli("user", "7"))
    countries = blocks(cli("user", "7", "--table", "countries", "--action", "delete"))
    newest = json_lines(cli("user", "42", "--limit", "1", "--json"))

    assert [block[0].split("  ")[1:3] for block in everything] == [
        ["delete", "countries"],
        ["create", "countries"],
        ["create", "memberships"],
    ]
    ((header, *fields),) = countries
    assert "delete  countries  id '123'  user 7" in header
    assert fields == ["  code  '123' → ∅", "  name  'One two three' → ∅"]
    assert [e["current_user_id"] for e in newest] == ["42"]
    assert cli("user", "nobody").stderr == "no entries\n"


def test_nobody_asks_for_the_changes_no_user_was_known_for(engine: Engine) -> None:
    """``by_user(None)`` on the command line: ``user --nobody`` and ``export --nobody``."""
    with mongo_server() as collection, recording(collection) as audit, Session(engine) as session:
        client = Client(name="by nobody")
        session.add(client)
        session.commit()
        with audit.acting_as(7):
            client.name = "by seven"
            session.commit()
        with audit.acting_as(0):  # a falsy id is someone
            client.name = "by zero"
            session.commit()
        client.name = "by nobody again"
        session.commit()

        user = json_lines(cli("user", "--nobody", "--json"))
        table = blocks(cli("user", "--nobody", "--table", "clients", "--action", "create"))
        exported = json_lines(cli("export", "--nobody"))
        rows = csv_rows(cli("export", "--nobody", "--format", "csv", "--action", "update"))
        seven = json_lines(cli("export", "--user", "7"))

    assert [(e["action"], e["current_user_id"]) for e in user] == [
        ("update", None),
        ("create", None),
    ]
    assert [e["changes"]["name"]["added"] for e in user] == [["by nobody again"], ["by nobody"]]
    ((header, *_),) = table
    assert "create  clients  id 1  user None" in header
    assert exported == list(reversed(user))  # oldest first
    assert [(r["action"], r["user_id"], r["new"]) for r in rows] == [
        ("update", "", "by nobody again")
    ]
    assert [e["changes"]["name"]["added"] for e in seven] == [["by seven"]]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["user"], "Missing argument 'USER_ID' (or --nobody"),
        (["user", "7", "--nobody"], "give USER_ID or --nobody, not both"),
        (["user", "--nobody", "7"], "give USER_ID or --nobody, not both"),
        (["export", "--user", "7", "--nobody"], "give --user or --nobody, not both"),
    ],
)
def test_nobody_and_a_user_id_exclude_each_other(arguments: list[str], message: str) -> None:
    with mongo_server():
        result = cli(*arguments)

    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Usage: audit-mongo " in result.stderr
    assert result.stdout == ""


# -- recent ----------------------------------------------------------------------------------


def backdate(story: Story, hours: float, **query: Any) -> dt.datetime:
    """Move the documents ``query`` matches ``hours`` back in time; return the moment."""
    moment = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=hours)
    story.collection.update_many(query, {"$set": {"created_at": moment}})
    return moment


def test_recent_shows_the_latest_entries_with_table_action_and_limit(story: Story) -> None:
    latest = json_lines(cli("recent", "--json"))
    two = json_lines(cli("recent", "--limit", "2", "--json"))
    client_updates = blocks(cli("recent", "--table", "clients", "--action", "update"))
    creates_or_deletes = json_lines(
        cli("recent", "--action", "create", "--action", "delete", "--json")
    )

    assert [(e["table_name"], e["action"]) for e in latest] == [
        ("countries", "delete"),
        ("countries", "create"),
        ("memberships", "create"),
        ("clients", "update"),
        ("clients", "create"),
    ]
    assert two == latest[:2]
    ((_, *fields),) = client_updates
    assert fields == ["  name   'Company B' → 'Company A'", "  phone  '555' → None"]
    assert [e["action"] for e in creates_or_deletes] == ["delete", "create", "create", "create"]


def test_since_and_until_take_a_relative_age(story: Story) -> None:
    backdate(story, 3, table_name="clients", action="create")

    recent = json_lines(cli("recent", "--since", "2h", "--json"))
    older = json_lines(cli("recent", "--until", "2h", "--json"))
    in_minutes = json_lines(cli("recent", "--since", "200m", "--until", "150m", "--json"))
    in_days = json_lines(cli("history", "clients", "1", "--since", "1d", "--json"))

    assert len(recent) == 4
    assert ("clients", "create") not in [(e["table_name"], e["action"]) for e in recent]
    assert [(e["table_name"], e["action"]) for e in older] == [("clients", "create")]
    assert in_minutes == older
    assert [e["action"] for e in in_days] == ["update", "create"]


def test_since_and_until_take_an_iso_date_or_datetime_naive_meaning_utc(story: Story) -> None:
    moment = backdate(story, 3, table_name="clients", action="create")
    after = (moment + dt.timedelta(minutes=30)).replace(tzinfo=None).isoformat()
    # the same wall-clock time at +05:00 is five hours earlier: before the backdated entry
    earlier = (moment + dt.timedelta(minutes=30)).replace(tzinfo=None).isoformat() + "+05:00"
    zulu = (moment - dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    assert len(json_lines(cli("recent", "--since", after, "--json"))) == 4
    assert len(json_lines(cli("recent", "--since", earlier, "--json"))) == 5
    assert len(json_lines(cli("recent", "--since", zulu, "--json"))) == 5
    assert len(json_lines(cli("recent", "--since", "2000-01-01", "--json"))) == 5
    assert json_lines(cli("recent", "--until", "2000-01-01", "--json")) == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--since", "yesterday"], "Invalid value for '--since': expected an age like 30s"),
        (["--until", "2h30"], "Invalid value for '--until': expected an age like 30s"),
        (["--since", "2026-13-01"], "or an ISO date or datetime like 2026-01-01"),
        (["--since", "1h", "--until", "2h"], "--since must be before --until"),
        (["--action", "void"], "Invalid value for '--action'"),
        (["--limit", "0"], "Invalid value for '--limit'"),
        (["--limit", "10001"], "Invalid value for '--limit'"),
    ],
)
def test_bad_filters_are_usage_errors(story: Story, arguments: list[str], message: str) -> None:
    result = cli("recent", *arguments)

    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""


# -- export ----------------------------------------------------------------------------------


def test_export_jsonl_round_trips_to_the_stored_documents_oldest_first(story: Story) -> None:
    result = cli("export")

    exported = json_lines(result)
    stored = sorted(story.collection.find(), key=lambda d: (d["created_at"], d["_id"]))
    assert exported == [without_schema_version(d) for d in stored]
    assert result.stderr == "exported 5 entries\n"
    assert json_lines(cli("export", "--json")) == exported
    assert json_lines(cli("export", "--format", "jsonl")) == exported


def test_export_jsonl_keeps_every_stored_type(engine: Engine) -> None:
    """Decimal128, binary, sub-documents, dates: json_util.loads gives back what is stored."""
    with mongo_server() as collection, recording(collection), Session(engine) as session:
        sample = Sample(
            price=Decimal("9.99"),
            blob=b"\x00\xff",
            data={"a": [1, {"b": None}], "c.d": "e"},
            at=dt.datetime(2024, 5, 1, 12, 30, 0, 123456),
            ratio=1.5,
            uid=uuid.UUID(int=7),
        )
        session.add(sample)
        session.commit()
        sample.price = Decimal("10.50")
        session.commit()
        stored = list(collection.find(sort=[("_id", 1)]))

        exported = json_lines(cli("export"))
        table = cli("history", "samples", str(sample.id))

    assert exported == [without_schema_version(d) for d in stored]
    assert exported[0]["changes"]["price"]["added"] == [Decimal128("9.99")]
    assert exported[0]["changes"]["blob"]["added"] == [b"\x00\xff"]
    assert "  price  Decimal('9.99') → Decimal('10.50')" in table.stdout


DOLLAR, DOT, NUL = "\uff04", "\uff0e", "\u2400"  # how a key's "$", "." and NUL are stored


def test_json_output_gives_context_and_json_keys_as_stored_not_unescaped(engine: Engine) -> None:
    """The API gives ``context`` back with the keys the application wrote (``$where``);
    JSON output is the stored document, whose keys are escaped (``\uff04where``)."""
    context = {"$where": 1, "a.b": 2, "nul\x00": {"c.d": [{"$in": 3}]}}
    with mongo_server() as collection, recording(collection) as audit, Session(engine) as session:
        with audit.context(**context):
            session.add(Sample(data={"$where": 1, "a.b": {"$gt": 2}}))
            session.commit()
        (document,) = collection.find()

        outputs = {
            "history": json_lines(cli("history", "samples", "1", "--json")),
            "recent": json_lines(cli("recent", "--json")),
            "user": json_lines(cli("user", "--nobody", "--json")),
            "export": json_lines(cli("export")),
        }
        api_context = dict(audit.find().entries[0].context)

    assert api_context == context  # the API unescapes: the command line must not follow it
    assert document["context"] == {
        f"{DOLLAR}where": 1,
        f"a{DOT}b": 2,
        f"nul{NUL}": {f"c{DOT}d": [{f"{DOLLAR}in": 3}]},
    }
    assert document["changes"]["data"]["added"] == [
        {f"{DOLLAR}where": 1, f"a{DOT}b": {f"{DOLLAR}gt": 2}}
    ]
    for command, lines in outputs.items():
        assert lines == [without_schema_version(document)], command


def test_export_filters_by_table_id_user_action_and_time(story: Story) -> None:
    backdate(story, 3, table_name="clients", action="create")

    def exported(*arguments: str) -> list[tuple[str, str]]:
        return [(e["table_name"], e["action"]) for e in json_lines(cli("export", *arguments))]

    assert exported("--table", "clients", "--id", "1") == [
        ("clients", "create"),
        ("clients", "update"),
    ]
    assert exported("--user", "42") == [("clients", "create"), ("clients", "update")]
    assert exported("--user", "7", "--action", "delete") == [("countries", "delete")]
    assert exported("--since", "2h", "--table", "clients") == [("clients", "update")]
    assert exported("--until", "2h") == [("clients", "create")]
    needs_table = cli("export", "--id", "1")
    assert needs_table.exit_code == 2
    assert "--id needs --table" in needs_table.stderr


def test_export_user_leaves_numeric_text_to_the_reader_across_pages(
    story: Story, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--user 42`` is one query matching 42 and "42" (the reader's): paged one entry at
    a time, each comes once, oldest first."""
    monkeypatch.setattr("audit_mongo.cli.queries.EXPORT_PAGE", 1)

    entries = json_lines(cli("export", "--user", "42"))

    assert [(e["action"], e["current_user_id"]) for e in entries] == [
        ("create", 42),
        ("update", "42"),
    ]


def csv_rows(result: Result) -> list[dict[str, str]]:
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(io.StringIO(result.stdout)))


def test_export_csv_has_one_row_per_changed_field(story: Story) -> None:
    rows = csv_rows(cli("export", "--format", "csv", "--table", "clients"))

    assert list(rows[0]) == [
        "id",
        "created_at",
        "table_name",
        "object_id",
        "action",
        "user_id",
        "transaction_id",
        "field",
        "old",
        "new",
    ]
    assert [(r["action"], r["field"], r["old"], r["new"]) for r in rows] == [
        ("create", "id", "", "1"),
        ("create", "name", "", "Company B"),
        ("create", "email", "", "b@example.com"),
        ("create", "phone", "", "555"),
        ("update", "name", "Company B", "Company A"),
        ("update", "phone", "555", ""),
    ]
    create = story.collection.find_one({"table_name": "clients", "action": "create"})
    assert rows[0]["id"] == str(create["_id"])
    assert rows[0]["created_at"] == create["created_at"].isoformat(timespec="milliseconds")
    assert (rows[0]["object_id"], rows[0]["user_id"]) == ("1", "42")
    assert rows[0]["transaction_id"] == create["transaction_id"]
    memberships = csv_rows(cli("export", "--format", "csv", "--table", "memberships"))
    assert {r["object_id"] for r in memberships} == {'["admins", 1]'}


FORMULAS = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tlead", "\rlead"]


def test_export_csv_neutralises_spreadsheet_formulas(engine: Engine) -> None:
    with mongo_server() as collection, recording(collection) as audit, Session(engine) as session:
        with audit.acting_as("=1+2"):
            session.add_all([Client(name=text, phone="ok") for text in FORMULAS])
            session.commit()

        rows = csv_rows(cli("export", "--format", "csv"))

    names = [r["new"] for r in rows if r["field"] == "name"]
    assert names == ["'" + text for text in FORMULAS]
    assert {r["new"] for r in rows if r["field"] == "phone"} == {"ok"}
    assert {r["user_id"] for r in rows} == {"'=1+2"}
    ids = [r["new"] for r in rows if r["field"] == "id"]
    assert ids == [str(n) for n in range(1, 7)]  # numbers are left alone


@pytest.mark.parametrize("form", ["jsonl", "csv"])
def test_a_long_export_reports_progress_on_stderr_and_keeps_stdout_data(
    story: Story, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    quiet = cli("export", "--format", form)  # fewer entries than PROGRESS_EVERY: no progress
    monkeypatch.setattr("audit_mongo.cli.queries.PROGRESS_EVERY", 2)
    monkeypatch.setattr("audit_mongo.cli.queries.EXPORT_PAGE", 2)  # three pages

    result = cli("export", "--format", form)

    assert (result.exit_code, quiet.exit_code) == (0, 0)
    assert quiet.stderr == "exported 5 entries\n"
    assert result.stdout == quiet.stdout  # the same data, not a progress line in it
    assert "exported" not in result.stdout
    assert result.stderr.splitlines() == [
        "exported 2 entries…",
        "exported 4 entries…",
        "exported 5 entries",
    ]
    if form == "jsonl":
        assert len(json_lines(result)) == 5
    else:
        assert len({r["id"] for r in csv_rows(result)}) == 5


def test_export_counts_one_entry_in_the_singular(
    story: Story, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = cli("export", "--table", "memberships")
    none = cli("export", "--table", "nowhere")
    monkeypatch.setattr("audit_mongo.cli.queries.PROGRESS_EVERY", 1)
    every_one = cli("export", "--table", "clients")

    assert (len(json_lines(one)), one.stderr) == (1, "exported 1 entry\n")
    assert (none.exit_code, none.stdout, none.stderr) == (0, "", "exported 0 entries\n")
    assert len(json_lines(every_one)) == 2
    assert every_one.stderr.splitlines() == [
        "exported 1 entry…",
        "exported 2 entries…",
        "exported 2 entries",
    ]


# -- what stored data may not do to a terminal ------------------------------------------------


def test_the_table_escapes_control_characters_and_folds_long_values(engine: Engine) -> None:
    hostile = "\x1b[2J\x1b[31mred\x07\r\n" + "x" * 100
    with mongo_server() as collection, recording(collection) as audit, Session(engine) as session:
        with audit.acting_as("\x1b]0;title\x07"):
            session.add(Client(name=hostile, phone="\u202eevil"))
            session.commit()
        document = collection.find_one()
        collection.insert_one({**document, "_id": ObjectId(), "table_name": "\x1b[1mbold"})

        table = cli("recent")
        as_json = cli("recent", "--json")

    assert "\x1b" not in table.stdout and "\x07" not in table.stdout and "\r" not in table.stdout
    assert "\u202e" not in table.stdout
    assert "  name   ∅ → '\\x1b[2J\\x1b[31mred\\x07\\r\\nxxx" in table.stdout
    name_line = next(line for line in table.stdout.splitlines() if line.startswith("  name"))
    assert name_line.endswith("…") and len(name_line.split("→ ")[1]) == 60
    assert "  phone  ∅ → '\\u202eevil'" in table.stdout
    assert "user '\\x1b]0;title\\x07'" in table.stdout
    assert "'\\x1b[1mbold'" in table.stdout
    assert "\x1b" not in as_json.stdout and "\u202e" not in as_json.stdout
    assert json_lines(as_json)[1]["changes"]["name"]["added"] == [hostile]


# -- injection attempts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["history", "clients", '{"$gt": 1}'], "Invalid value for 'ID'"),
        (["history", "clients", "$gt"], "may not start with '$'"),
        (["history", "$clients", "1"], "Invalid value for 'TABLE'"),
        (["history", "memberships", '[{"$gt": 1}, 1]'], "must be a JSON array of strings"),
        (["history", "memberships", '["$where", 1]'], "may not start with '$'"),
        (["history", "memberships", "[1, 2"], "must be a JSON array of strings"),
        (["user", '{"$ne": null}'], "Invalid value for 'USER_ID'"),
        (["user", "$where"], "may not start with '$'"),
        (["user", "1", "--table", "$where"], "Invalid value for '--table'"),
        (["recent", "--table", "$where"], "table name may not start with '$'"),
        (["export", "--user", '{"$gt": ""}'], "Invalid value for '--user'"),
        (["export", "--table", "clients", "--id", '{"$exists": true}'], "Invalid value for '--id'"),
        (["tail", "--table", "$where"], "Invalid value for '--table'"),
    ],
)
def test_operators_in_ids_users_and_table_names_are_refused(
    story: Story, arguments: list[str], message: str
) -> None:
    command, *rest = arguments

    result = cli(command, *rest)

    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stdout == ""
