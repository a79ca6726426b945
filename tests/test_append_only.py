"""Append-only: the application's Mongo user needs nothing but the ``insert`` action on the
audit collection. Whatever the delivery mode, the write path sends the server ``insert``
commands into that collection and nothing else (no find, update, delete, createIndexes);
the indexes are an administrator's separate step, and reading is an auditor's.

The server is scripted with mockupdb (a real pymongo ``MongoClient`` over a loopback socket)
as a MongoDB with access control whose connection is authenticated as a user holding the
privileges a test gives it (README, "Least privilege"). It answers what any authenticated
user may run (the driver's handshake and monitoring, ``ping``, ``buildInfo``,
``endSessions``, ``connectionStatus``, and ``listCollections`` with ``authorizedCollections``
and ``nameOnly``) and, for every other command, checks the privilege action MongoDB
requires for it: refused commands get MongoDB's ``Unauthorized`` error (code 13). It
records every command it receives."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import mongomock
import pytest
from click.testing import CliRunner
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError, OperationFailure
from sqlalchemy import Engine, Table, create_engine, delete, event, insert, select, update
from sqlalchemy.orm import Session

from audit_mongo import AuditLog, AuditReader, AuditSetupError
from audit_mongo.cli import main as audit_mongo_cli
from audit_mongo.indexes import ensure_indexes
from tests.models import Account, Base, Client

mockupdb = pytest.importorskip("mockupdb")

DATABASE, COLLECTION = "app", "user_logs"
ON_THE_LOG = {"db": DATABASE, "collection": COLLECTION}

# The roles of README "Least privilege", as the privileges connectionStatus reports.
INSERT_ONLY = [{"resource": ON_THE_LOG, "actions": ["insert"]}]
AUDITOR = [{"resource": ON_THE_LOG, "actions": ["find", "changeStream", "listIndexes"]}]
INDEX_ADMIN = [{"resource": ON_THE_LOG, "actions": ["listIndexes", "createIndex", "collMod"]}]

# What any connection may run, whoever its user: the handshake and monitoring, and the end
# of the sessions it used. Not part of what the log asks of the server. (Lower case: the
# server takes isMaster/ismaster and buildInfo/buildinfo alike.)
UNPRIVILEGED = frozenset({"hello", "ismaster", "ping", "buildinfo", "endsessions"})
STARTUP_CHECK = ["listCollections", "connectionStatus"]

# The privilege action MongoDB requires for each command (its "Privilege Actions" page); a
# command not listed here is refused, as a user-defined role grants nothing else.
REQUIRED_ACTIONS: dict[str, tuple[str, ...]] = {
    "insert": ("insert",),
    "find": ("find",),
    "getmore": ("find",),
    "count": ("find",),
    "distinct": ("find",),
    "aggregate": ("find",),  # and changeStream for a $changeStream pipeline
    "update": ("update",),
    "delete": ("remove",),
    "findandmodify": ("find", "update"),
    "listindexes": ("listIndexes",),
    "createindexes": ("createIndex",),
    "dropindexes": ("dropIndex",),
    "collmod": ("collMod",),
    "drop": ("dropCollection",),
    "create": ("createCollection",),
}

LOG_TIMEOUT = 2.0  # AuditLog(timeout=): a commit's Mongo write while the server answers
OUTAGE_TIMEOUT = 0.3  # ... and while it drops every insert, to keep those commits short


@dataclass(frozen=True)
class Received:
    """One command the server received, and whether it refused it."""

    name: str
    database: str
    target: Any  # the command's first value: a collection name, or 1
    body: dict[str, Any]
    refused: bool


class AccessControlledMongo:
    """A MongoDB whose connections are authenticated as a user with ``privileges``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections = 0
        self.reset(INSERT_ONLY)
        self.server: Any = mockupdb.MockupDB()
        self.server.autoresponds(self._answer)

    def reset(self, privileges: list[dict[str, Any]]) -> None:
        """An empty collection, no commands received, a user with ``privileges``."""
        with self._lock:
            self.privileges = privileges
            self.outage = False  # while True, a connection that sends an insert is dropped
            self.received: list[Received] = []
            self.failures: list[str] = []  # commands this stand-in failed to answer
            self.indexes: list[dict[str, Any]] = [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]
            self._stored: Any = mongomock.MongoClient()[DATABASE][COLLECTION]

    @property
    def uri(self) -> str:
        return f"mongodb://{self.server.address_string}/{DATABASE}"

    def commands(self) -> list[Received]:
        """What the server was asked, besides the handshake, monitoring and endSessions."""
        with self._lock:
            return [r for r in self.received if r.name.lower() not in UNPRIVILEGED]

    def documents(self) -> list[dict[str, Any]]:
        """The audit documents the server stored, in the order it took them."""
        with self._lock:
            return list(self._stored.find({}, sort=[("$natural", 1)]))

    # -- the server's side -----------------------------------------------------------

    def _answer(self, request: Any) -> bool:
        name = str(request.command_name)
        body = dict(request.doc)
        database = str(request.namespace)
        refused = not self._allowed(name.lower(), database, body)
        with self._lock:
            self.received.append(Received(name, database, body.get(name), body, refused))
        if refused:
            return bool(
                request.command_err(
                    code=13,
                    errmsg=f"not authorized on {database} to execute command "
                    f"{{ {name}: {body.get(name)!r} }}",
                    codeName="Unauthorized",
                )
            )
        try:
            return bool(self._perform(request, name.lower(), body))
        except Exception as exc:  # a bug of this stand-in: fail the test, not hang it
            with self._lock:
                self.failures.append(f"{name}: {exc!r}")
            return bool(request.command_err(code=1, errmsg=f"test server failed: {exc!r}"))

    def _allowed(self, name: str, database: str, body: dict[str, Any]) -> bool:
        if name in UNPRIVILEGED or name == "connectionstatus":
            return True
        if name == "listcollections":
            # Any authenticated user may list the collections it has privileges on.
            if body.get("authorizedCollections") and body.get("nameOnly"):
                return True
            return self._may(("listCollections",), database, "")
        actions = REQUIRED_ACTIONS.get(name)
        target = body.get(request_name(body))
        if actions is None or not isinstance(target, str):
            return False
        pipeline = body.get("pipeline") or [{}]
        if name == "aggregate" and "$changeStream" in pipeline[0]:
            actions = (*actions, "changeStream")
        return self._may(actions, database, target)

    def _may(self, actions: tuple[str, ...], database: str, collection: str) -> bool:
        granted: set[str] = set()
        for privilege in self.privileges:
            resource = privilege["resource"]
            if resource.get("anyResource") or (
                resource.get("db") in ("", database)
                and resource.get("collection") in ("", collection)
            ):
                granted.update(privilege["actions"])
        return set(actions) <= granted

    def _perform(self, request: Any, name: str, body: dict[str, Any]) -> Any:
        if name in ("hello", "ismaster"):
            with self._lock:
                self._connections += 1
                connection = self._connections
            # A standalone MongoDB 7.0 (wire version 21) that supports sessions.
            primary = "isWritablePrimary" if name == "hello" else "ismaster"
            return request.ok(
                {
                    primary: True,
                    "helloOk": True,
                    "maxBsonObjectSize": 16 * 1024 * 1024,
                    "maxMessageSizeBytes": 48_000_000,
                    "maxWriteBatchSize": 100_000,
                    "localTime": dt.datetime.now(dt.timezone.utc),
                    "logicalSessionTimeoutMinutes": 30,
                    "connectionId": connection,
                    "minWireVersion": 0,
                    "maxWireVersion": 21,
                    "readOnly": False,
                }
            )
        if name == "buildinfo":
            return request.ok(version="7.0.0", versionArray=[7, 0, 0, 0])
        if name == "connectionstatus":
            return request.ok(
                authInfo={
                    "authenticatedUsers": [{"user": "app", "db": "admin"}],
                    "authenticatedUserRoles": [{"role": "auditWriter", "db": "admin"}],
                    "authenticatedUserPrivileges": self.privileges,
                }
            )
        if name == "listcollections":
            mine = self._may((), DATABASE, COLLECTION) and any(
                p["resource"] == ON_THE_LOG for p in self.privileges
            )
            batch = [{"name": COLLECTION, "type": "collection"}] if mine else []
            return request.ok(cursor={"id": 0, "ns": f"{DATABASE}.$cmd", "firstBatch": batch})
        if name == "insert":
            return self._insert(request, body)
        if name == "find":
            return request.ok(
                cursor={"id": 0, "ns": namespace(body), "firstBatch": self._find(body)}
            )
        if name == "listindexes":
            return request.ok(cursor={"id": 0, "ns": namespace(body), "firstBatch": self.indexes})
        if name == "createindexes":
            before = len(self.indexes)
            names = {index["name"] for index in self.indexes}
            self.indexes += [dict(i) for i in body["indexes"] if i["name"] not in names]
            return request.ok(numIndexesBefore=before, numIndexesAfter=len(self.indexes))
        if name == "collmod":
            changed = body["index"]
            for index in self.indexes:
                if index["name"] == changed["name"]:
                    index["expireAfterSeconds"] = changed["expireAfterSeconds"]
            return request.ok()
        return request.ok()

    def _insert(self, request: Any, body: dict[str, Any]) -> Any:
        if self.outage:
            return request.hangup()
        errors = []
        for position, document in enumerate(body["documents"]):
            try:
                with self._lock:
                    self._stored.insert_one(dict(document))
            except DuplicateKeyError:
                errors.append({"index": position, "code": 11000, "errmsg": "E11000 duplicate"})
        taken = len(body["documents"]) - len(errors)
        return request.ok(n=taken, writeErrors=errors) if errors else request.ok(n=taken)

    def _find(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        sort = list((body.get("sort") or {}).items()) or None
        with self._lock:
            cursor = self._stored.find(body.get("filter") or {}, body.get("projection"), sort=sort)
            if body.get("limit"):
                cursor = cursor.limit(abs(int(body["limit"])))
            return list(cursor)


def request_name(body: dict[str, Any]) -> str:
    return next(iter(body))


def namespace(body: dict[str, Any]) -> str:
    return f"{body['$db']}.{body[request_name(body)]}"


@pytest.fixture(scope="module")
def server() -> Iterator[AccessControlledMongo]:
    running = AccessControlledMongo()
    running.server.run()
    yield running
    running.server.stop()


@pytest.fixture
def mongo(server: AccessControlledMongo) -> AccessControlledMongo:
    """The server, emptied, its connections authenticated as an insert-only user."""
    server.reset(INSERT_ONLY)
    return server


@pytest.fixture
def user_logs(mongo: AccessControlledMongo) -> Iterator[Any]:
    """The audit collection, through a real pymongo client."""
    client: Any = MongoClient(mongo.uri, serverSelectionTimeoutMS=5000)
    yield client[DATABASE][COLLECTION]
    client.close()


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Engine]:
    """The application's database: a SQLite file (the outbox and the writer thread need
    one engine whose pool gives each thread its own connection)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


Row = tuple[str, str, Any]  # (table_name, action, object_id) of one audit document


def orm_workload(engine: Engine, audit: AuditLog) -> list[Row]:
    """Two commits through a Session: three creates, then an update and a delete.
    Returns the documents they should give."""
    audit.track(Client)
    audit.track(Account, exclude=("password",))
    with Session(engine) as session, audit.acting_as(7):
        session.add_all([Client(id=1, name="Acme"), Client(id=2, name="Bolt")])
        session.add(Account(id=1, login="ann", password="secret"))
        session.commit()
        acme, bolt = session.get(Client, 1), session.get(Client, 2)
        assert acme is not None and bolt is not None
        acme.name = "Acme Ltd"
        session.delete(bolt)
        session.commit()
    return [
        ("clients", "create", 1),
        ("clients", "create", 2),
        ("accounts", "create", 1),
        ("clients", "update", 1),
        ("clients", "delete", 2),
    ]


def core_workload(engine: Engine) -> list[Row]:
    """Core statements on connections no Session owns (``core_statements=True``)."""
    clients = cast(Table, Client.__table__)
    with engine.begin() as connection:
        connection.execute(insert(clients).values(id=3, name="Core"))
        connection.execute(update(clients).where(clients.c.id == 3).values(name="Core Ltd"))
    with engine.begin() as connection:
        connection.execute(delete(clients).where(clients.c.id == 1))
    return [("clients", "create", 3), ("clients", "delete", 1)]


def committed_clients(engine: Engine) -> list[tuple[int, str | None]]:
    with Session(engine) as session:
        return [(c.id, c.name) for c in session.scalars(select(Client).order_by(Client.id))]


def rows(documents: list[dict[str, Any]]) -> Counter[Row]:
    return Counter((d["table_name"], d["action"], d["object_id"]) for d in documents)


def assert_append_only(mongo: AccessControlledMongo, logs_started: int = 1) -> None:
    """Every command beyond the handshake was the start-up check of each log, then inserts
    into the audit collection; none was refused."""
    commands = mongo.commands()
    summary = [(c.name, c.database, c.target, c.refused) for c in commands]
    check = [c for c in commands if c.name in STARTUP_CHECK]
    assert [c.name for c in check] == STARTUP_CHECK * logs_started, summary
    for listing in check[::2]:
        # The form of listCollections a user without the listCollections action may run.
        assert listing.body["authorizedCollections"] is True, summary
        assert listing.body["nameOnly"] is True, summary
    writes = [c for c in commands if c.name not in STARTUP_CHECK]
    assert writes, summary
    assert all(
        (c.name, c.database, c.target) == ("insert", DATABASE, COLLECTION) for c in writes
    ), summary
    assert not any(c.refused for c in commands), summary
    assert mongo.failures == []


def sent_ids(mongo: AccessControlledMongo) -> list[Any]:
    """The _id of every document sent in an insert (answered or not)."""
    return [d["_id"] for c in mongo.commands() if c.name == "insert" for d in c.body["documents"]]


# -- the write path, in each delivery mode ---------------------------------------------------


@dataclass(frozen=True)
class Mode:
    name: str
    options: Callable[[Engine], dict[str, Any]]
    core: bool = False


MODES = [
    Mode("direct", lambda engine: {}),
    Mode("outbox", lambda engine: {"outbox": engine}),
    Mode("background", lambda engine: {"outbox": engine, "background": True}),
    Mode("background-in-memory", lambda engine: {"background": True}),
    Mode("strict", lambda engine: {"outbox": engine, "strict": True}),
    Mode("core-statements", lambda engine: {"outbox": engine, "core_statements": True}, True),
]


@pytest.mark.parametrize("mode", MODES, ids=[m.name for m in MODES])
def test_every_delivery_mode_only_inserts_into_the_audit_collection(
    mongo: AccessControlledMongo, user_logs: Any, database: Engine, mode: Mode
) -> None:
    audit = AuditLog(user_logs, timeout=LOG_TIMEOUT, **mode.options(database))
    try:
        expected = orm_workload(database, audit)
        if mode.core:
            expected += core_workload(database)
        assert audit.flush(timeout=10)
        assert audit.pending() == 0
    finally:
        audit.close()

    assert committed_clients(database) == ([(3, "Core Ltd")] if mode.core else [(1, "Acme Ltd")])
    assert_append_only(mongo)
    stored = mongo.documents()
    assert rows(stored) == Counter(expected)
    sent = sent_ids(mongo)
    assert set(sent) == {d["_id"] for d in stored}
    # Each document sent once: the background writer's first sweep of the outbox waits an
    # interval, so it does not claim the rows of the commits it has queued.
    assert len(sent) == len(expected)


def test_strict_mode_cancels_a_failed_commit_by_inserting_void_documents(
    mongo: AccessControlledMongo, user_logs: Any, database: Engine
) -> None:
    """A COMMIT failing after strict mode's write is not undone by deleting or updating
    what was written: void documents are inserted after it."""

    def refuse(connection: Any) -> None:
        raise RuntimeError("the database refused the COMMIT")

    audit = AuditLog(user_logs, timeout=LOG_TIMEOUT, outbox=database, strict=True)
    audit.track(Client)
    event.listen(database, "commit", refuse)  # runs after audit_mongo's pre-commit write
    try:
        with Session(database) as session:
            session.add(Client(id=1, name="never"))
            with pytest.raises(RuntimeError, match="refused the COMMIT"):
                session.commit()
            session.rollback()
    finally:
        event.remove(database, "commit", refuse)
        audit.close()

    assert committed_clients(database) == []
    assert_append_only(mongo)
    assert rows(mongo.documents()) == Counter([("clients", "create", 1), ("clients", "void", 1)])


@pytest.mark.parametrize("store", ["outbox", "memory"])
@pytest.mark.parametrize("recovery", ["deliver_pending", "next-commit"])
def test_work_pending_after_an_outage_is_delivered_with_inserts_only(
    mongo: AccessControlledMongo, user_logs: Any, database: Engine, store: str, recovery: str
) -> None:
    outbox: dict[str, Any] = {"outbox": database} if store == "outbox" else {}
    audit = AuditLog(user_logs, timeout=OUTAGE_TIMEOUT, **outbox)
    try:
        mongo.outage = True
        expected = orm_workload(database, audit)
        assert committed_clients(database) == [(1, "Acme Ltd")]  # the outage broke no commit
        assert audit.pending() == len(expected)
        assert mongo.documents() == []

        mongo.outage = False
        user_logs.database.command("ping")  # the client sees the server again
        if recovery == "deliver_pending":
            assert audit.deliver_pending() == len(expected)
        else:
            with Session(database) as session:
                session.add(Client(id=9, name="after the outage"))
                session.commit()
            expected.append(("clients", "create", 9))
        assert audit.pending() == 0
    finally:
        audit.close()

    assert_append_only(mongo)
    assert rows(mongo.documents()) == Counter(expected)


def test_the_deliver_command_only_inserts(
    mongo: AccessControlledMongo, user_logs: Any, database: Engine
) -> None:
    """``audit-mongo deliver`` (cron or a sidecar) runs as the same insert-only user."""
    audit = AuditLog(user_logs, timeout=OUTAGE_TIMEOUT, outbox=database)
    mongo.outage = True
    try:
        expected = orm_workload(database, audit)
    finally:
        audit.close()  # the application stops with its documents in the outbox
    mongo.outage = False
    user_logs.database.command("ping")

    result = CliRunner().invoke(
        audit_mongo_cli,
        ["deliver", "--outbox-url", str(database.url), "--mongo-uri", mongo.uri],
    )

    assert result.exit_code == 0, result.output
    assert f"delivered {len(expected)}, pending 0" in result.output
    assert_append_only(mongo, logs_started=2)
    assert rows(mongo.documents()) == Counter(expected)


def test_a_flask_application_only_inserts(mongo: AccessControlledMongo, tmp_path: Path) -> None:
    from audit_mongo.flask import AuditMongo, current_log
    from tests.flask_app_factory import Client as FlaskClientModel
    from tests.flask_app_factory import User, create_app, db

    extension = AuditMongo()
    extension.track(FlaskClientModel)
    extension.track(User)
    app = create_app(
        extension,
        f"sqlite:///{tmp_path / 'flask.db'}",
        AUDIT_MONGO_URI=mongo.uri,
        AUDIT_MONGO_CLIENT_OPTIONS={"serverSelectionTimeoutMS": 5000},
    )
    assert app.config["AUDIT_MONGO_ENSURE_INDEXES"] is False  # the default: no createIndexes
    try:
        with app.app_context():
            db.session.add(User(id=1, name="alice"))
            db.session.commit()
        web = app.test_client()
        assert web.post("/login/1").status_code == 200
        assert web.post("/clients", data={"name": "Acme"}).get_data(as_text=True) == "1"
        assert web.post("/clients/1/name", data={"name": "Acme Ltd"}).status_code == 200
        with app.app_context():
            renamed = db.session.get(FlaskClientModel, 1)
            assert renamed is not None and renamed.name == "Acme Ltd"
            assert current_log().pending() == 0
    finally:
        with app.app_context():
            current_log().close()
            db.engine.dispose()

    assert_append_only(mongo)
    stored = mongo.documents()
    assert rows(stored) == Counter(
        [("users", "create", 1), ("clients", "create", 1), ("clients", "update", 1)]
    )


# -- the other roles: indexes are an administrator's step, reading an auditor's -------------


def test_ensure_indexes_is_refused_to_the_insert_only_user(
    mongo: AccessControlledMongo, user_logs: Any, database: Engine
) -> None:
    audit = AuditLog(user_logs, outbox=database)
    try:
        with pytest.raises(AuditSetupError) as refused:
            audit.ensure_indexes()
        expected = orm_workload(database, audit)  # the log itself goes on working
    finally:
        audit.close()

    assert "administrative step" in str(refused.value)
    assert "listIndexes, createIndex and collMod" in str(refused.value)
    names = [(c.name, c.refused) for c in mongo.commands() if c.name not in STARTUP_CHECK]
    # It stops at its first command (listing the indexes): no createIndexes is even sent.
    assert names[0] == ("listIndexes", True)
    assert [n for n in names[1:] if n[0] != "insert"] == []
    assert mongo.indexes == [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]
    assert rows(mongo.documents()) == Counter(expected)


def test_the_index_administrator_role_is_enough_to_create_and_change_the_indexes(
    mongo: AccessControlledMongo, user_logs: Any
) -> None:
    mongo.privileges = INDEX_ADMIN
    first = ensure_indexes(user_logs, retention=dt.timedelta(days=30))
    changed = ensure_indexes(user_logs, retention=dt.timedelta(days=7))

    assert first == changed and first[-1] == "audit_retention"
    assert {c.name for c in mongo.commands()} == {"listIndexes", "createIndexes", "collMod"}
    assert not any(c.refused for c in mongo.commands())
    ttl = next(index for index in mongo.indexes if index["name"] == "audit_retention")
    assert ttl["expireAfterSeconds"] == 7 * 86_400


@pytest.mark.parametrize(
    ("missing", "retention_change"),
    [("listIndexes", False), ("createIndex", False), ("collMod", True)],
)
def test_each_action_of_the_index_administrator_role_is_needed(
    mongo: AccessControlledMongo, user_logs: Any, missing: str, retention_change: bool
) -> None:
    actions = [a for a in INDEX_ADMIN[0]["actions"] if a != missing]
    mongo.privileges = [{"resource": ON_THE_LOG, "actions": actions}]
    if retention_change:
        ensure_indexes(user_logs, retention=dt.timedelta(days=30))

    with pytest.raises(OperationFailure) as refused:
        ensure_indexes(user_logs, retention=dt.timedelta(days=7))

    assert refused.value.code == 13


def test_the_auditor_role_reads_the_log_with_find_alone(
    mongo: AccessControlledMongo, user_logs: Any, database: Engine
) -> None:
    audit = AuditLog(user_logs, outbox=database)
    try:
        expected = orm_workload(database, audit)
    finally:
        audit.close()
    mongo.privileges = AUDITOR
    written = len(mongo.commands())

    reader = AuditReader(user_logs, models=[Client, Account])
    page = reader.find(limit=10)
    timeline = list(reader.for_object("clients", 1))
    mine = list(reader.find(user_id=7, table="accounts", limit=10))

    assert Counter((e.table_name, e.action, e.object_id) for e in page) == Counter(expected)
    assert [e.action for e in timeline] == ["update", "create"]
    assert [e.object_id for e in mine] == [1]
    reads = mongo.commands()[written:]
    assert reads and {(c.name, c.target) for c in reads} == {("find", COLLECTION)}
    assert not any(c.refused for c in reads)
