"""The values of audited rows never appear in the library's log at INFO or above, nor in the
exceptions it raises to the application: an audit log holds personal data and secrets, and
application logs are read by many more people than the audit log.

A canary (a string, bytes and a number) is committed, then every failure path is made to
carry it: in the documents a stand-in Mongo quotes back, in an exception's message, in a
database error. The records at INFO and above (message, exception text) and the exceptions
the application receives (their whole chain) must not show it; the DEBUG record that
follows each failure keeps the full exception for whoever needs to debug.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import bson
import mongomock
import pytest
from bson.errors import InvalidDocument
from click.testing import CliRunner
from pymongo import MongoClient
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    DuplicateKeyError,
    NotPrimaryError,
    OperationFailure,
    WriteError,
)
from sqlalchemy import Engine, String, TypeDecorator, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from audit_mongo import AuditLog, AuditReader, AuditWriteError, capture, normalise, statements
from audit_mongo import commit_delivery as commit_delivery_module
from audit_mongo.cli import deliver as deliver_command
from audit_mongo.cli import main
from audit_mongo.commit_delivery import CommitDelivery
from audit_mongo.outbox import Outbox
from tests.fakes import closed_loopback_port
from tests.models import Client, Sample
from tests.test_cli import cli_url

TEXT = "canary-7f3c19e2"
BYTES = b"canary-bytes-5d1a"
NUMBER = 918273645.25
CANARIES = (TEXT, BYTES.decode(), "918273645")


# -- what is shown, and where --------------------------------------------------------------


def shown_at_info_or_above(records: Sequence[logging.LogRecord]) -> str:
    """What the library's records at INFO and above show: messages and exception texts."""
    shown = []
    for record in records:
        ours = record.name == "audit_mongo" or record.name.startswith("audit_mongo.")
        if not ours or record.levelno < logging.INFO:
            continue
        shown.append(record.getMessage())
        if record.exc_info:
            shown.append(logging.Formatter().formatException(record.exc_info))
        if record.exc_text:
            shown.append(record.exc_text)
    return "\n".join(shown)


def shown_at_debug(records: Sequence[logging.LogRecord]) -> str:
    return "\n".join(
        logging.Formatter().format(record)
        for record in records
        if record.name == "audit_mongo" and record.levelno == logging.DEBUG
    )


def assert_no_values_shown(records: Sequence[logging.LogRecord], *, in_debug: bool) -> None:
    """Something was logged at INFO or above (the failure path was taken), without a
    canary; with ``in_debug``, the exception carried one, and DEBUG shows it in full."""
    shown = shown_at_info_or_above(records)
    assert shown, "nothing logged at INFO or above: the failure path was not taken"
    for canary in CANARIES:
        assert canary not in shown, shown
    if in_debug:
        assert TEXT in shown_at_debug(records)


def exception_chain(exc: BaseException) -> str:
    """The messages of ``exc`` and of every exception it carries as cause or context,
    shown in a traceback or not."""
    texts: list[str] = []
    todo: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while todo:
        each = todo.pop()
        if each is None or id(each) in seen:
            continue
        seen.add(id(each))
        texts.append(f"{type(each).__name__}: {each}")
        todo += [each.__cause__, each.__context__]
    return "\n".join(texts)


def assert_no_values_raised(exc: BaseException) -> None:
    chain = exception_chain(exc)
    for canary in CANARIES:
        assert canary not in chain, chain


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="audit_mongo")
    return caplog


# -- stand-ins and helpers ---------------------------------------------------------------


class Refusing:
    """A collection refusing every insert with ``error(documents)``: a server quoting the
    documents (or one of their values) back, as validation and duplicate-key errors do."""

    def __init__(self, error: Callable[[Sequence[Any]], BaseException]) -> None:
        self.error = error
        self.calls = 0

    def insert_many(self, documents: Sequence[Any], ordered: bool = True) -> None:
        self.calls += 1
        raise self.error(documents)


def log_of(mongo: Any, engine: Engine | None = None, **options: Any) -> AuditLog:
    audit = AuditLog(mongo, outbox=engine, timeout=0.3, **options)
    audit.track(Client)
    audit.track(Sample)
    return audit


def commit_secrets(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(Client(name=TEXT, email=f"{TEXT}@example.com", phone=str(NUMBER)))
        session.add(Sample(blob=BYTES, ratio=NUMBER, data={"note": TEXT}))
        session.commit()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def down(documents: Sequence[Any]) -> BaseException:
    return AutoReconnect("127.0.0.1:27017: [Errno 111] Connection refused")


# -- Mongo refusing or unreachable ---------------------------------------------------------


def duplicate_key(documents: Sequence[Any]) -> BaseException:
    changes = documents[0]["changes"]
    return DuplicateKeyError(
        f"E11000 duplicate key error collection: app.user_logs index: name dup key: "
        f"{{ name: {changes['name']['added'][0]!r} }}",
        11000,
        {"code": 11000, "codeName": "DuplicateKey", "keyValue": changes},
    )


def failed_validation(documents: Sequence[Any]) -> BaseException:
    return OperationFailure(
        "Document failed validation",
        121,
        {"codeName": "DocumentValidationFailure", "errInfo": {"failing": documents}},
    )


def refused_in_bulk(documents: Sequence[Any]) -> BaseException:
    errors = [
        {"index": i, "code": 121, "errmsg": f"refused {d!r}", "op": d}
        for i, d in enumerate(documents)
    ]
    return BulkWriteError({"writeErrors": errors, "nInserted": 0})


REFUSALS = [
    pytest.param(duplicate_key, "DuplicateKeyError: code 11000 DuplicateKey", id="duplicate"),
    pytest.param(
        failed_validation,
        "OperationFailure: code 121 DocumentValidationFailure",
        id="OperationFailure-validation",
    ),
    pytest.param(
        lambda documents: WriteError(f"refused {documents!r}", 2, None),
        "WriteError: code 2",
        id="WriteError",
    ),
    pytest.param(
        lambda documents: NotPrimaryError("not primary", {"writeErrors": [{"op": documents}]}),
        "NotPrimaryError: not primary",
        id="NotPrimaryError-with-the-server-reply",
    ),
    pytest.param(refused_in_bulk, "BulkWriteError: write error codes [121]", id="BulkWriteError"),
    pytest.param(
        lambda documents: InvalidDocument(f"cannot encode object: {documents!r}"),
        "InvalidDocument: details not shown",
        id="InvalidDocument",
    ),
]


@pytest.mark.parametrize(("error", "summary"), REFUSALS)
def test_mongo_refusing_the_documents(
    engine: Engine, error: Callable[[Sequence[Any]], BaseException], summary: str, logged: Any
) -> None:
    mongo = Refusing(error)
    audit = log_of(mongo)
    try:
        commit_secrets(engine)
        assert audit.deliver_pending() == 0  # delivering again fails the same way
    finally:
        audit.close()

    assert mongo.calls >= 2
    assert f"2 of 2 audit documents were not written ({summary})" in (
        shown_at_info_or_above(logged.records)
    )
    assert_no_values_shown(logged.records, in_debug=True)


def test_mongo_refusing_a_strict_commit(engine: Engine, logged: Any) -> None:
    audit = log_of(Refusing(failed_validation), strict=True)
    try:
        with pytest.raises(AuditWriteError) as refused:
            commit_secrets(engine)
    finally:
        audit.close()

    assert_no_values_raised(refused.value)
    assert_no_values_shown(logged.records, in_debug=True)


def test_mongo_unreachable(engine: Engine, logged: Any) -> None:
    client: Any = MongoClient(
        f"mongodb://127.0.0.1:{closed_loopback_port()}/app", serverSelectionTimeoutMS=300
    )
    try:
        audit = log_of(client.app.user_logs)
        try:
            commit_secrets(engine)
            assert audit.pending() == 2
        finally:
            audit.close()
    finally:
        client.close()

    assert "ServerSelectionTimeoutError" in shown_at_info_or_above(logged.records)
    assert_no_values_shown(logged.records, in_debug=False)


class SizeLimited:
    """Refuses, as a server does, each document over 16 MiB, quoting it back (as mongomock
    does in ``op``); stores the others in ``target``."""

    LIMIT = 16 * 1024 * 1024

    def __init__(self, target: Any) -> None:
        self.target = target

    def insert_many(self, documents: Sequence[Any], ordered: bool = True) -> None:
        too_large = {i for i, d in enumerate(documents) if len(bson.encode(d)) > self.LIMIT}
        accepted = [d for i, d in enumerate(documents) if i not in too_large]
        if accepted:
            self.target.insert_many(accepted)
        errors = [
            {"index": i, "code": 10334, "errmsg": "BSONObjectTooLarge", "op": documents[i]}
            for i in sorted(too_large)
        ]
        if errors:
            raise BulkWriteError({"writeErrors": errors, "nInserted": len(documents) - len(errors)})


def test_a_document_over_16_mib(engine: Engine, collection: Any, logged: Any) -> None:
    audit = log_of(SizeLimited(collection))
    try:
        with Session(engine) as session:
            session.add(Sample(blob=BYTES * (17 * 1024 * 1024 // len(BYTES)), data=TEXT))
            session.commit()
    finally:
        audit.close()

    (document,) = collection.find()
    assert document["changes"]["blob"]["added"][0]["omitted"] == "too large"
    assert document["changes"]["data"]["added"] == [TEXT]
    assert_no_values_shown(logged.records, in_debug=False)


# -- values the library cannot store -------------------------------------------------------


class Loud(TypeDecorator[str]):
    """A user's type whose reads fail, quoting the value."""

    impl = String(50)
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        raise ValueError(f"cannot read {value!r}")


class Secretive:
    """A value with no BSON form, whose repr is the secret."""

    def __repr__(self) -> str:
        return f"Secretive({TEXT!r})"


def test_a_value_bson_cannot_encode(
    engine: Engine, collection: Any, logged: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(normalise, "_warned", set())  # warned once per process otherwise
    audit = log_of(collection)
    try:
        with Session(engine) as session:
            session.add(Sample(pickled=Secretive()))
            session.commit()
    finally:
        audit.close()

    (document,) = collection.find()
    assert TEXT in document["changes"]["pickled"]["added"][0]["repr"]  # the log keeps it
    assert_no_values_shown(logged.records, in_debug=False)


class LoudBase(DeclarativeBase):
    pass


class Note(LoudBase):
    __tablename__ = "loud_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str | None] = mapped_column(Loud)


def test_a_type_decorator_failing_on_an_old_value(
    engine: Engine, collection: Any, logged: Any
) -> None:
    LoudBase.metadata.create_all(engine)
    audit = log_of(collection)
    audit.track(Note)
    try:
        with Session(engine) as session:
            note = Note(text=TEXT)
            session.add(note)
            session.commit()
            note.text = "new"  # expired: the old value is read, and the read fails
            session.commit()
    finally:
        audit.close()

    assert collection.find_one({"action": "update"})["changes"]["text"]["deleted"] == [
        {"omitted": "could not be read"}
    ]

    assert_no_values_shown(logged.records, in_debug=True)


# -- defects in capture --------------------------------------------------------------------


def raising(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError(f"a defect, with {TEXT!r} at hand")


@pytest.mark.parametrize(
    "defect",
    ["_row_change", "note"],
    ids=["a row change that cannot be captured", "a row that cannot be noted"],
)
def test_a_capture_defect(
    engine: Engine,
    collection: Any,
    monkeypatch: pytest.MonkeyPatch,
    logged: Any,
    defect: str,
) -> None:
    monkeypatch.setattr(capture, defect, raising)
    audit = log_of(collection)
    try:
        commit_secrets(engine)
    finally:
        audit.close()

    assert_no_values_shown(logged.records, in_debug=True)


@pytest.mark.parametrize("step", ["before", "after"])
def test_a_statement_that_cannot_be_captured(
    engine: Engine, collection: Any, monkeypatch: pytest.MonkeyPatch, logged: Any, step: str
) -> None:
    audit = log_of(collection)
    try:
        with Session(engine) as session:
            session.add(Client(name="a"))
            session.commit()
            monkeypatch.setattr(statements, step, raising)
            session.execute(update(Client).values(name=TEXT))
            session.commit()
    finally:
        audit.close()

    assert_no_values_shown(logged.records, in_debug=True)


@pytest.mark.parametrize("strict", [False, True], ids=["after the commit", "strict"])
def test_documents_that_cannot_be_built(
    engine: Engine, collection: Any, monkeypatch: pytest.MonkeyPatch, logged: Any, strict: bool
) -> None:
    monkeypatch.setattr(commit_delivery_module, "build_documents", raising)
    audit = log_of(collection, strict=strict)
    try:
        if strict:
            with pytest.raises(AuditWriteError) as refused:
                commit_secrets(engine)
            assert_no_values_raised(refused.value)
        else:
            commit_secrets(engine)
    finally:
        audit.close()

    assert_no_values_shown(logged.records, in_debug=True)


# -- the outbox and the background writer --------------------------------------------------


def test_the_outbox_failing(engine: Engine, monkeypatch: pytest.MonkeyPatch, logged: Any) -> None:
    def refuse(self: Outbox, connection: Any, data: bytes, count: int) -> int:
        # As PostgreSQL does, the database quotes the row it refused.
        detail = Exception(f"DETAIL: Key (documents)=({data!r}) already exists.")
        raise IntegrityError("INSERT INTO audit_mongo_outbox ...", (data,), detail)

    audit = log_of(Refusing(down), engine)
    monkeypatch.setattr(Outbox, "insert", refuse)
    try:
        commit_secrets(engine)  # not in the outbox, nor in Mongo: kept in memory
        assert audit.pending() == 2
    finally:
        audit.close()

    messages = shown_at_info_or_above(logged.records)
    assert "could not add a transaction's audit documents to the outbox" in messages
    assert "the outbox could not take pending documents" in messages
    assert_no_values_shown(logged.records, in_debug=True)


def test_the_background_writer_failing(
    engine: Engine, collection: Any, monkeypatch: pytest.MonkeyPatch, logged: Any
) -> None:
    monkeypatch.setattr(CommitDelivery, "_write_parcels", raising)
    monkeypatch.setattr(CommitDelivery, "_drain", raising)  # its sweep, at once when idle
    audit = log_of(collection, background=True)
    try:
        commit_secrets(engine)

        def both_logged() -> bool:
            messages = shown_at_info_or_above(logged.records)
            return "failed to write a batch" in messages and "could not drain" in messages

        assert wait_until(both_logged)
    finally:
        monkeypatch.undo()  # let close() write what is left
        audit.close()

    assert_no_values_shown(logged.records, in_debug=True)


# -- what the application supplies ---------------------------------------------------------


@pytest.mark.parametrize("loader", ["user_loader", "context_loader"])
def test_a_loader_raising_with_a_value(
    engine: Engine, collection: Any, logged: Any, loader: str
) -> None:
    audit = log_of(collection)
    setattr(audit, loader, raising)
    try:
        commit_secrets(engine)
    finally:
        audit.close()

    assert_no_values_shown(logged.records, in_debug=True)


@pytest.mark.parametrize(
    "snapshot",
    [
        {"user_id": 1, "context": {"note": TEXT}, "extra": 1},
        {"user_id": {"$oid": TEXT}, "context": {}},
        {"user_id": 1, "context": {"at": {"$date": TEXT}}},
        {"user_id": 1, "context": [TEXT]},
        [TEXT],
    ],
    ids=["a key too many", "a bad ObjectId", "a bad date", "a list for context", "a list"],
)
def test_a_snapshot_refused_without_its_values(collection: Any, snapshot: Any) -> None:
    audit = log_of(collection)
    try:
        with (
            pytest.raises(ValueError, match="snapshot") as refused,
            audit.restore_context(snapshot),
        ):
            pass
    finally:
        audit.close()

    assert_no_values_raised(refused.value)


@pytest.mark.parametrize(
    "object_id",
    [{"$gt": TEXT}, f"${TEXT}", frozenset([TEXT, "b"]), [1, {"name": TEXT}]],
    ids=["a mapping", "a $ string", "a set", "a mapping in a composite key"],
)
def test_a_refused_object_id_is_not_echoed(collection: Any, object_id: Any) -> None:
    with pytest.raises(ValueError) as refused:
        AuditReader(collection).for_object("clients", object_id)

    assert_no_values_raised(refused.value)


def test_an_object_without_history_is_not_shown(
    collection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Client, "__repr__", lambda self: f"Client(name={self.name!r})")
    audit = log_of(collection)
    try:
        with pytest.raises(ValueError, match="no primary key yet") as unflushed:
            audit.history(Client(name=TEXT))
        with pytest.raises(TypeError, match="not an instance of a mapped class") as unmapped:
            audit.history(Secretive())
    finally:
        audit.close()

    assert_no_values_raised(unflushed.value)
    assert_no_values_raised(unmapped.value)


# -- the command line ----------------------------------------------------------------------


def test_the_deliver_command_with_mongo_refusing(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, logged: Any
) -> None:
    audit = log_of(Refusing(down), engine)
    try:
        commit_secrets(engine)  # waits in the outbox
    finally:
        audit.close()
    refusing = Refusing(duplicate_key)
    monkeypatch.setattr(
        deliver_command, "open_log", lambda settings: (mongomock.MongoClient(), refusing)
    )
    result = CliRunner().invoke(
        main, ["deliver", "--outbox-url", cli_url(engine), "--mongo-uri", "mongodb://m.test/app"]
    )

    assert result.exit_code == 1, result.output
    assert refusing.calls >= 1
    for canary in CANARIES:
        assert canary not in result.output
    assert_no_values_shown(logged.records, in_debug=True)


def test_the_deliver_command_watching_through_a_failed_round(logged: Any) -> None:
    class Failing:
        def deliver_pending(self) -> int:
            raising()
            return 0

    stop = threading.Event()
    stop.set()  # one round
    deliver_command._watch(Failing(), stop, 0.0)  # type: ignore[arg-type]

    assert_no_values_shown(logged.records, in_debug=True)
