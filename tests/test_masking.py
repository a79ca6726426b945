"""Masked attributes: recorded as changed, their values hidden everywhere the log keeps them
(README "Sensitive values")."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import bson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymongo.errors import OperationFailure
from sqlalchemy import (
    Column,
    Date,
    Engine,
    ForeignKey,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from audit_mongo import AuditLog, frame, masking
from audit_mongo.masking import Masker, masked_digest
from audit_mongo.testing import assert_audited, masked
from tests.conftest import engine_of, stored
from tests.fakes import FailingCollection

KEY = b"an application secret"
SECRET = "hunter2-raw-secret"
PLACEHOLDER = "[masked]"


class Base(DeclarativeBase):
    pass


member_keys = Table(
    "member_keys",
    Base.metadata,
    Column("member_id", ForeignKey("members.id"), primary_key=True),
    Column("key_id", ForeignKey("keys.id"), primary_key=True),
)


class Key(Base):
    __tablename__ = "keys"
    id: Mapped[int] = mapped_column(primary_key=True)


class Member(Base):
    __tablename__ = "members"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str | None] = mapped_column(String(50))
    password_hash: Mapped[str | None] = mapped_column(String(100))
    reset_token: Mapped[str | None] = mapped_column(String(100))
    ApiKey: Mapped[str | None] = mapped_column(String(100))
    pin: Mapped[int | None]
    born: Mapped[dt.date | None] = mapped_column(Date)
    # Named like a secret, but a collection: masked only when a mask names it.
    api_keys: Mapped[list[Key]] = relationship(secondary=member_keys)


class Staff(Base):
    __tablename__ = "staff"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str | None] = mapped_column(String(50))
    badge: Mapped[str | None] = mapped_column(String(50))
    password: Mapped[str | None] = mapped_column(String(100))
    __mapper_args__: ClassVar[dict[str, Any]] = {
        "polymorphic_on": "kind",
        "polymorphic_identity": "staff",
    }


class Admin(Staff):
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "admin"}


class Root(Admin):
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "root"}


def digest(table: str, attribute: str, value: Any, key: bytes = KEY) -> str:
    """The README's stored form, computed here from its definition."""
    message = f"{table}.{attribute}".encode() + b"\x00" + bson.encode({"v": value})
    return "hmac-sha256:" + hmac.new(key, message, hashlib.sha256).hexdigest()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The conftest's engine, with this module's tables."""
    yield from engine_of(request.param, tmp_path, Base.metadata)


OpenLog = Callable[..., AuditLog]


@pytest.fixture
def open_log(collection: Any) -> Iterator[OpenLog]:
    """``open_log(**options)``: an ``AuditLog`` tracking Member and Staff, closed at the end."""
    logs: list[AuditLog] = []

    def opened(*, collection_: Any = collection, **options: Any) -> AuditLog:
        log = AuditLog(collection_, **options)
        log.track(Member)
        log.track(Staff)
        logs.append(log)
        return log

    yield opened
    for log in logs:
        log.close()


def saved(session: Session, *objects: Any) -> None:
    session.add_all(objects)
    session.commit()


def changes(collection: Any, action: str | None = None) -> list[dict[str, Any]]:
    query = {} if action is None else {"action": action}
    return [d["changes"] for d in stored(collection, **query)]


def sides(document_changes: dict[str, Any], name: str) -> tuple[list[Any], list[Any]]:
    field = document_changes[name]
    return field["deleted"], field["added"]


# -- the stored forms -------------------------------------------------------------------------


def test_orm_create_update_and_delete_store_the_placeholder(
    open_log: OpenLog, session: Session, collection: Any
) -> None:
    open_log()
    member = Member(name="ann", password_hash=SECRET)
    saved(session, member)
    member.password_hash = SECRET + "-2"
    session.commit()
    session.delete(member)
    session.commit()

    created, updated, deleted = changes(collection)
    assert sides(created, "password_hash") == ([], [PLACEHOLDER])
    assert sides(created, "name") == ([], ["ann"])
    assert updated == {"password_hash": {"added": [PLACEHOLDER], "deleted": [PLACEHOLDER]}}
    assert sides(deleted, "password_hash") == ([PLACEHOLDER], [])


def test_with_a_mask_key_orm_changes_store_the_documented_digest(
    open_log: OpenLog, session: Session, collection: Any
) -> None:
    open_log(mask_key=KEY, mask=("pin", "born"))
    member = Member(password_hash=SECRET, pin=1234, born=dt.date(1990, 1, 2))
    saved(session, member)
    member.password_hash = "other"
    session.commit()
    session.delete(member)
    session.commit()

    created, updated, deleted = changes(collection)
    assert sides(created, "password_hash") == ([], [digest("members", "password_hash", SECRET)])
    assert sides(created, "pin") == ([], [digest("members", "pin", 1234)])
    assert sides(created, "born") == ([], [digest("members", "born", "1990-01-02")])
    assert sides(updated, "password_hash") == (
        [digest("members", "password_hash", SECRET)],
        [digest("members", "password_hash", "other")],
    )
    assert sides(deleted, "password_hash") == ([digest("members", "password_hash", "other")], [])
    assert masked_digest(KEY, "members", "password_hash", "other") == digest(
        "members", "password_hash", "other"
    )


@pytest.mark.parametrize("mask_key", [None, KEY], ids=["placeholder", "digest"])
def test_bulk_statements_store_masked_values(
    open_log: OpenLog, session: Session, collection: Any, mask_key: bytes | None
) -> None:
    def hidden(value: str) -> str:
        return PLACEHOLDER if mask_key is None else digest("members", "password_hash", value)

    open_log(mask_key=mask_key)
    session.execute(insert(Member), [{"id": 1, "password_hash": "a"}, {"id": 2, "name": "b"}])
    session.commit()
    session.execute(update(Member).where(Member.id == 1).values(password_hash="a2"))
    session.commit()
    session.bulk_update_mappings(Member, [{"id": 2, "password_hash": "b2"}])  # type: ignore[arg-type]
    session.commit()
    session.execute(delete(Member).where(Member.id == 1))
    session.commit()

    first, second, by_update, by_mapping, by_delete = changes(collection)
    assert sides(first, "password_hash") == ([], [hidden("a")])
    assert "password_hash" not in second  # a create lists no nulls
    assert by_update == {"password_hash": {"added": [hidden("a2")], "deleted": [hidden("a")]}}
    assert by_mapping == {"password_hash": {"added": [hidden("b2")], "deleted": [None]}}
    assert sides(by_delete, "password_hash") == ([hidden("a2")], [])


def test_equal_values_give_equal_digests_and_columns_never_share_one(
    open_log: OpenLog, session: Session, collection: Any
) -> None:
    open_log(mask_key=KEY)
    saved(
        session,
        Member(id=1, password_hash="same"),
        Member(id=2, password_hash="same"),
        Member(id=3, password_hash="different", reset_token="same"),
    )

    one, two, three = (c["password_hash"]["added"][0] for c in changes(collection))
    token = changes(collection)[2]["reset_token"]["added"][0]
    assert one == two
    assert three != one
    assert token != one


@given(st.text(), st.text())
def test_a_masker_gives_equal_forms_exactly_for_equal_values(first: str, second: str) -> None:
    masker = Masker(KEY)
    one, two = masker.mask("t", "a", first), masker.mask("t", "a", second)
    assert (one == two) == (first == second)
    assert masker.mask("t", "b", first) != one


def test_null_stays_null_so_whether_a_value_is_set_is_visible(
    open_log: OpenLog, session: Session, collection: Any
) -> None:
    open_log()
    member = Member(name="ann")
    saved(session, member)
    member.password_hash = SECRET
    session.commit()
    member.password_hash = None
    session.commit()

    _, set_, cleared = changes(collection)
    assert sides(set_, "password_hash") == ([None], [PLACEHOLDER])
    assert sides(cleared, "password_hash") == ([PLACEHOLDER], [None])


# -- which attributes are masked ----------------------------------------------------------------


def test_the_default_mask_covers_names_with_a_secret_word_in_any_case(
    open_log: OpenLog, session: Session, collection: Any
) -> None:
    open_log()
    saved(session, Member(name="ann", password_hash="p", reset_token="t", ApiKey="k", pin=7))

    (created,) = changes(collection)
    assert {k: v["added"] for k, v in created.items() if k != "id"} == {
        "name": ["ann"],
        "password_hash": [PLACEHOLDER],
        "reset_token": [PLACEHOLDER],
        "ApiKey": [PLACEHOLDER],
        "pin": [7],
    }


def test_the_default_mask_is_off_with_default_mask_false(
    open_log: OpenLog, session: Session, collection: Any
) -> None:
    open_log(default_mask=False)
    saved(session, Member(password_hash="p", reset_token="t", ApiKey="k"))

    (created,) = changes(collection)
    assert [created[k]["added"] for k in ("password_hash", "reset_token", "ApiKey")] == [
        ["p"],
        ["t"],
        ["k"],
    ]


def passwords_by_class(collection: Any, action: str) -> dict[str, Any]:
    """The password each staff document records (new; old for a delete), by row class."""
    found = {}
    for document in stored(collection, table_name="staff", action=action):
        field = document["changes"]["password"]
        found[document["entity"]] = (field["deleted"] if action == "delete" else field["added"])[0]
    return found


@pytest.mark.parametrize(
    ("log_default", "admin_default", "masked_for"),
    [(True, False, {"Staff"}), (False, True, {"Admin", "Root"})],
    ids=["turned-off", "turned-on"],
)
def test_a_models_default_mask_setting_holds_for_its_subclasses(
    open_log: OpenLog,
    session: Session,
    collection: Any,
    log_default: bool,
    admin_default: bool,
    masked_for: set[str],
) -> None:
    log = open_log(default_mask=log_default)
    log.track(Admin, default_mask=admin_default)
    saved(session, Staff(id=1, password="p"), Admin(id=2, password="p"), Root(id=3, password="p"))
    session.execute(update(Staff).values(password="q"))  # a statement: masked row by row
    session.commit()

    for action, value in (("create", "p"), ("update", "q")):
        assert passwords_by_class(collection, action) == {
            name: PLACEHOLDER if name in masked_for else value
            for name in ("Staff", "Admin", "Root")
        }


def test_a_model_mask_adds_to_the_logs_and_holds_for_subclasses(
    open_log: OpenLog, session: Session, collection: Any
) -> None:
    log = open_log(mask=("name",), default_mask=False)
    log.track(Admin, mask=("badge",))
    saved(
        session,
        Staff(id=1, name="s", badge="b1"),
        Admin(id=2, name="a", badge="b2"),
        Root(id=3, name="r", badge="b3"),
        Member(id=1, name="m"),
    )
    session.execute(update(Staff).values(badge=Staff.badge + "!"))
    session.commit()

    created = {(d["table_name"], d["object_id"]): d["changes"] for d in stored(collection)[:4]}
    assert [created[("staff", i)]["name"]["added"] for i in (1, 2, 3)] == [[PLACEHOLDER]] * 3
    assert [created[("staff", i)]["badge"]["added"] for i in (1, 2, 3)] == [
        ["b1"],
        [PLACEHOLDER],
        [PLACEHOLDER],
    ]
    assert created[("members", 1)]["name"]["added"] == [PLACEHOLDER]
    updated = {d["object_id"]: d["changes"]["badge"] for d in stored(collection, action="update")}
    assert updated == {
        1: {"added": ["b1!"], "deleted": ["b1"]},
        2: {"added": [PLACEHOLDER], "deleted": [PLACEHOLDER]},
        3: {"added": [PLACEHOLDER], "deleted": [PLACEHOLDER]},
    }


def test_an_excluded_attribute_stays_excluded_when_masked_too(
    open_log: OpenLog, session: Session, collection: Any
) -> None:
    log = open_log(exclude=("password_hash",), mask=("name",))
    log.track(Member, exclude=("name",))
    saved(session, Member(name="ann", password_hash="p", pin=1))

    (created,) = changes(collection)
    assert "password_hash" not in created and "name" not in created
    assert created["pin"]["added"] == [1]


def test_a_mask_naming_an_attribute_the_model_lacks_is_ignored_like_an_exclusion(
    open_log: OpenLog, session: Session, collection: Any
) -> None:
    log = open_log(mask=("nickname",), exclude=("nickname",))
    log.track(Member, mask=("no_such",))
    saved(session, Member(name="ann"))

    (created,) = changes(collection)
    assert created["name"]["added"] == ["ann"]
    with pytest.raises(ValueError, match="no attribute 'no_such'"):
        list(log.for_table(Member, fields=("no_such",)))


@pytest.mark.parametrize(
    ("mask", "recorded"), [((), 8), (("api_keys",), PLACEHOLDER)], ids=["default", "named"]
)
def test_many_to_many_keys_are_masked_only_when_the_mask_names_the_collection(
    open_log: OpenLog, session: Session, collection: Any, mask: tuple[str, ...], recorded: Any
) -> None:
    open_log(mask=mask)
    member = Member(id=1)
    saved(session, member)
    member.api_keys.append(Key(id=8))
    session.commit()

    assert changes(collection, "update") == [{"api_keys": {"added": [recorded], "deleted": []}}]


def test_a_mask_on_the_primary_key_leaves_the_row_identified(
    open_log: OpenLog,
    session: Session,
    collection: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(masking, "_warned", set())  # the warning is logged once per process
    open_log(mask=("id",))
    with caplog.at_level(logging.WARNING, logger="audit_mongo"):
        saved(session, Member(id=41, name="ann"))

    document = stored(collection)[0]
    assert document["object_id"] == 41
    assert document["changes"]["id"]["added"] == [41]
    assert "members.id is masked, but it identifies the row" in caplog.text
    assert "41" not in caplog.text


def test_a_mask_on_the_discriminator_leaves_each_rows_class_known(
    open_log: OpenLog, session: Session, collection: Any
) -> None:
    open_log(mask=("kind",))
    saved(session, Admin(id=1, name="a"))
    session.execute(update(Staff).values(name="b"))
    session.commit()

    created, updated = stored(collection)
    assert created["changes"]["kind"]["added"] == ["admin"]
    assert (created["entity"], updated["entity"]) == ("Admin", "Admin")


# -- change detection on the real values ---------------------------------------------------------


@pytest.mark.parametrize("mask_key", [None, KEY], ids=["placeholder", "digest"])
def test_an_unchanged_masked_value_is_not_recorded_and_a_changed_one_is(
    open_log: OpenLog, session: Session, collection: Any, mask_key: bytes | None
) -> None:
    open_log(mask_key=mask_key)
    member = Member(id=1, name="ann", password_hash="a")
    saved(session, member)
    collection.delete_many({})

    member.password_hash = "a"  # the same value
    session.commit()
    session.execute(update(Member).values(password_hash="a"))
    session.commit()
    member.password_hash = "b"
    session.flush()
    member.password_hash = "a"  # back where it was within the transaction: no net change
    session.commit()
    assert changes(collection) == []

    member.password_hash = "b"
    session.flush()
    member.password_hash = "c"  # two changes in one transaction: still a change
    session.commit()
    session.execute(update(Member).values(password_hash="d"))
    session.commit()
    assert [list(c) for c in changes(collection)] == [["password_hash"], ["password_hash"]]


# -- where values wait: never the raw secret ------------------------------------------------------


class SpillFiles:
    """Stands in for the modules ``frame`` spills with, keeping each spill in a named file
    under ``folder`` so that a test can read the bytes written to disk."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir()
        self.folder = folder
        self.opened: list[Path] = []

    def _next(self, suffix: str) -> Path:
        path = self.folder / f"spill{len(self.opened)}{suffix}"
        self.opened.append(path)
        return path

    def connect(self, _name: str, **options: Any) -> sqlite3.Connection:
        return sqlite3.connect(self._next(".db"), **options)

    def TemporaryFile(self) -> Any:  # the name tempfile gives it
        return self._next(".pickle").open("w+b")

    def written(self) -> bytes:
        return b"".join(path.read_bytes() for path in sorted(self.folder.iterdir()))


def test_a_spilled_transaction_never_holds_the_raw_secret(
    open_log: OpenLog,
    engine: Engine,
    collection: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    spills = SpillFiles(tmp_path / "spills")
    monkeypatch.setattr(frame, "SPILL_AT", 5)
    monkeypatch.setattr(frame, "sqlite3", SimpleNamespace(connect=spills.connect))
    monkeypatch.setattr(frame, "tempfile", SimpleNamespace(TemporaryFile=spills.TemporaryFile))
    open_log()
    with Session(engine) as session:
        session.add_all(Member(id=i, name="n", password_hash=f"{SECRET}-{i}") for i in range(12))
        session.flush()
        session.execute(update(Member).values(password_hash=f"{SECRET}-new"))
        session.commit()

    written = spills.written()
    assert {p.suffix for p in spills.opened} == {".db", ".pickle"}  # both kinds spilled
    assert PLACEHOLDER.encode() in written
    assert SECRET.encode() not in written
    assert len(stored(collection)) == 12


def test_the_outbox_never_holds_the_raw_secret(
    open_log: OpenLog, engine: Engine, collection: Any
) -> None:
    refusing = FailingCollection(OperationFailure("not authorized", code=13))
    log = open_log(collection_=refusing, outbox=engine, mask_key=KEY)
    with Session(engine) as session:
        saved(session, Member(name="ann", password_hash=SECRET))
        session.execute(update(Member).values(password_hash=SECRET + "-2"))
        session.commit()

    assert log.outbox is not None and log.pending() == 2
    with engine.connect() as conn:
        held = b"".join(conn.scalars(select(log.outbox.table.c.documents)))
    assert digest("members", "password_hash", SECRET).encode() in held
    assert SECRET.encode() not in held


# -- reading masked values back --------------------------------------------------------------------


@pytest.mark.parametrize("mask_key", [None, KEY], ids=["placeholder", "digest"])
def test_the_query_api_gives_masked_values_as_stored(
    open_log: OpenLog, session: Session, mask_key: bytes | None
) -> None:
    def hidden(attribute: str, value: Any) -> str:
        return PLACEHOLDER if mask_key is None else digest("members", attribute, value)

    log = open_log(mask=("pin", "born"), mask_key=mask_key)
    member = Member(name="ann", password_hash="p", pin=1234, born=dt.date(1990, 1, 2))
    saved(session, member)
    member.pin = 4321
    session.commit()

    newest, oldest = log.history(member)
    assert newest.changes["pin"].old == hidden("pin", 1234)
    assert newest.changes["pin"].new == hidden("pin", 4321)
    assert oldest.changes["born"].new == hidden("born", "1990-01-02")
    state = log.state_at(Member, member.id, dt.datetime.now(dt.timezone.utc))
    assert state is not None
    assert (state["pin"], state["born"], state["name"]) == (
        hidden("pin", 4321),
        hidden("born", "1990-01-02"),
        "ann",
    )
    assert [e.action for e in log.for_object(Member, str(member.id))] == ["update", "create"]
    assert [e.action for e in log.for_table(Member, fields=("password_hash",))] == ["create"]
    assert log.updated_at(member, "pin") == newest.created_at


def test_assert_audited_takes_the_stored_form_or_masked(
    open_log: OpenLog, session: Session
) -> None:
    log = open_log(mask_key=KEY)
    member = Member(name="ann")
    saved(session, member)
    member.password_hash = "p"
    session.commit()

    assert_audited(member, "update", {"password_hash": (None, masked)}, log=log)
    stored_form = digest("members", "password_hash", "p")
    assert_audited(member, "update", {"password_hash": stored_form}, log=log)
    with pytest.raises(AssertionError, match="<masked>"):
        assert_audited(member, "update", {"password_hash": (masked, masked)}, log=log)
    with pytest.raises(AssertionError):
        assert_audited(member, "create", {"name": masked}, log=log)  # a plain value


# -- bad input ----------------------------------------------------------------------------------


def test_masks_given_as_a_string_are_refused(open_log: OpenLog, collection: Any) -> None:
    with pytest.raises(TypeError, match="mask is a collection of attribute names, not a string"):
        AuditLog(collection, mask="password")
    log = open_log()
    with pytest.raises(TypeError, match="mask is a collection"):
        log.track(Member, mask="pin")


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        (
            {"mask_key": 12345},
            TypeError,
            "mask_key is an application secret, bytes or str, not int",
        ),
        ({"mask_key": bytearray(b"k")}, TypeError, "not bytearray"),
        ({"mask_key": ""}, ValueError, "mask_key needs 16\\+ bytes"),
        ({"mask_key": "12345"}, ValueError, "mask_key needs 16\\+ bytes"),
        ({"default_mask": "no"}, TypeError, "default_mask is True or False"),
    ],
)
def test_a_bad_mask_key_or_default_mask_is_refused_without_showing_the_key(
    collection: Any, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as raised:
        AuditLog(collection, **options)
    assert "12345" not in str(raised.value)


def test_a_per_model_default_mask_must_be_a_flag(open_log: OpenLog) -> None:
    log = open_log()
    with pytest.raises(TypeError, match="default_mask is True or False, not 1"):
        log.track(Member, default_mask=1)  # type: ignore[arg-type]
