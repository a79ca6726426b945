"""The Flask extension with Flask-SQLAlchemy and real Flask-Login sessions: the logged-in
user acts, each document carries its request, and nothing breaks outside requests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import mongomock
import pytest
from flask import Flask
from flask_login import UserMixin, login_user
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.middleware.proxy_fix import ProxyFix

from audit_mongo import AuditLog
from audit_mongo.flask import AuditMongo, current_log
from tests.flask_app_factory import Client, User, create_app, db


@pytest.fixture
def extension() -> AuditMongo:
    audit_ext = AuditMongo()
    audit_ext.track(Client)
    return audit_ext


@pytest.fixture
def app(extension: AuditMongo, tmp_path: Any) -> Iterator[Flask]:
    application = create_app(extension, f"sqlite:///{tmp_path / 'app.db'}")
    with application.app_context():
        db.session.add_all([User(id=1, name="alice"), User(id=2, name="bob")])
        db.session.commit()
    yield application
    with application.app_context():
        current_log().close()
        db.engine.dispose()


def documents(app: Flask) -> list[dict[str, Any]]:
    with app.app_context():
        return list(current_log().collection.find().sort([("created_at", 1), ("_id", 1)]))


def test_the_logged_in_users_id_is_the_actor_and_anonymous_is_null(app: Flask) -> None:
    web = app.test_client()
    web.post("/clients", data={"name": "anonymous"})
    web.post("/login/1")
    web.post("/clients", data={"name": "by alice"})
    web.post("/logout")
    web.post("/login/2")
    web.post("/clients/1/name", data={"name": "renamed by bob"})

    actors = [(d["action"], d["current_user_id"]) for d in documents(app)]
    assert actors == [("create", None), ("create", 1), ("update", 2)]


def test_each_document_carries_its_request(app: Flask) -> None:
    web = app.test_client()
    web.post(
        "/clients",
        data={"name": "A"},
        headers={"User-Agent": "tests/1.0", "X-Request-ID": "req-123"},
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
    )

    (document,) = documents(app)
    assert document["context"] == {
        "request_id": "req-123",
        "remote_addr": "203.0.113.9",
        "user_agent": "tests/1.0",
        "method": "POST",
        "path": "/clients",
        "endpoint": "create_client",
    }


def test_a_request_without_a_usable_id_gets_one_made_up_the_same_for_the_whole_request(
    app: Flask,
) -> None:
    @app.post("/two")
    def two() -> str:
        for name in ("one", "two"):
            db.session.add(Client(name=name))
            db.session.commit()
        return "ok"

    web = app.test_client()
    web.post("/two", headers={"X-Request-ID": "<script>alert(1)</script>"})
    web.post("/clients", data={"name": "next request"})

    first, second, third = (d["context"]["request_id"] for d in documents(app))
    assert first == second != third
    assert len(first) == 32 and first.isalnum()


def test_the_request_id_header_is_configurable(extension: AuditMongo, tmp_path: Any) -> None:
    app = create_app(
        extension,
        f"sqlite:///{tmp_path / 'app.db'}",
        AUDIT_MONGO_REQUEST_ID_HEADER="X-Correlation-ID",
    )
    try:
        app.test_client().post(
            "/clients", data={"name": "A"}, headers={"X-Correlation-ID": "corr-1"}
        )
        (document,) = documents(app)
        assert document["context"]["request_id"] == "corr-1"
    finally:
        with app.app_context():
            current_log().close()


def test_a_forwarded_for_header_is_not_trusted_without_proxy_fix(app: Flask) -> None:
    web = app.test_client()
    web.post(
        "/clients",
        data={"name": "A"},
        headers={"X-Forwarded-For": "198.51.100.7"},
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    web.post(
        "/clients",
        data={"name": "B"},
        headers={"X-Forwarded-For": "198.51.100.7"},
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )

    addresses = [d["context"]["remote_addr"] for d in documents(app)]
    assert addresses == ["10.0.0.2", "198.51.100.7"]


def test_outside_a_request_there_is_no_actor_and_no_context_and_no_error(app: Flask) -> None:
    with app.app_context():
        db.session.add(Client(name="from a CLI command"))
        db.session.commit()
        log = current_log()
        with log.acting_as(99), log.context(reason="backfill"):
            db.session.add(Client(name="with acting_as"))
            db.session.commit()

    first, second = documents(app)
    assert first["current_user_id"] is None and "context" not in first
    assert second["current_user_id"] == 99
    assert second["context"] == {"reason": "backfill"}


def test_acting_as_wins_over_the_logged_in_user_inside_a_request(app: Flask) -> None:
    @app.post("/as-system")
    def as_system() -> str:
        with current_log().acting_as("system"):
            db.session.add(Client(name="by the system"))
            db.session.commit()
        return "ok"

    web = app.test_client()
    web.post("/login/1")
    web.post("/as-system")

    (document,) = documents(app)
    assert document["current_user_id"] == "system"
    assert document["context"]["path"] == "/as-system"


def test_a_job_queued_in_a_request_is_attributed_to_whoever_queued_it(app: Flask) -> None:
    queued: list[dict[str, Any]] = []

    @app.post("/queue")
    def queue() -> str:
        queued.append(current_log().current_context())
        return "ok"

    web = app.test_client()
    web.post("/login/2")
    web.post("/queue", headers={"X-Request-ID": "req-9"})
    # The worker, later, outside any request:
    with app.app_context(), current_log().restore_context(queued[0]):
        db.session.add(Client(name="made by the job"))
        db.session.commit()

    (document,) = documents(app)
    assert document["current_user_id"] == 2
    assert document["context"]["request_id"] == "req-9"
    assert document["context"]["via"] == "job"


def test_the_outbox_is_the_applications_database(app: Flask) -> None:
    with app.app_context():
        log = current_log()
        assert log.outbox is not None
        assert log.outbox.engine is db.engine


def test_two_applications_keep_their_own_logs(extension: AuditMongo, tmp_path: Any) -> None:
    first = create_app(extension, f"sqlite:///{tmp_path / 'first.db'}")
    second = create_app(extension, f"sqlite:///{tmp_path / 'second.db'}")
    try:
        first.test_client().post("/clients", data={"name": "in the first"})
        second.test_client().post("/clients", data={"name": "in the second"})
        names = [
            [d["changes"]["name"]["added"][0] for d in documents(app)] for app in (first, second)
        ]
        assert names == [["in the first"], ["in the second"]]
        with pytest.raises(RuntimeError, match="2 applications"):
            _ = extension.log
    finally:
        for app in (first, second):
            with app.app_context():
                current_log().close()


def test_models_tracked_after_init_app_are_tracked_too(tmp_path: Any) -> None:
    audit_ext = AuditMongo()
    app = create_app(audit_ext, f"sqlite:///{tmp_path / 'app.db'}")
    try:
        audit_ext.track(Client)
        app.test_client().post("/clients", data={"name": "late"})
        assert [d["action"] for d in documents(app)] == ["create"]
        assert isinstance(audit_ext.log, AuditLog)
    finally:
        with app.app_context():
            current_log().close()


def test_config_keys_reach_the_log(extension: AuditMongo, tmp_path: Any) -> None:
    app = create_app(
        extension,
        f"sqlite:///{tmp_path / 'app.db'}",
        AUDIT_MONGO_COLLECTION="audit_trail",
        AUDIT_MONGO_DATABASE="records",
        AUDIT_MONGO_EXCLUDE=("phone",),
        AUDIT_MONGO_RETENTION=30,
        AUDIT_MONGO_ENSURE_INDEXES=True,
    )
    try:
        app.test_client().post("/clients", data={"name": "A"})
        with app.app_context():
            log = current_log()
            assert log.collection.full_name == "records.audit_trail"
            assert log.retention == dt.timedelta(days=30)
            assert "audit_retention" in log.collection.index_information()
            assert log.collection.count_documents({}) == 1
    finally:
        with app.app_context():
            current_log().close()


def test_a_missing_uri_is_a_clear_error(extension: AuditMongo, tmp_path: Any) -> None:
    with pytest.raises(RuntimeError, match="AUDIT_MONGO_URI is not set"):
        create_app(extension, f"sqlite:///{tmp_path / 'app.db'}", AUDIT_MONGO_URI="")


def test_a_collection_the_application_has_is_used_instead_of_a_uri(tmp_path: Any) -> None:
    """init_app(app, collection=...): an application with its own MongoClient hands the
    extension a collection; no AUDIT_MONGO_URI is needed and the config's other keys apply."""
    own = mongomock.MongoClient().records.audit_trail
    extension = AuditMongo()
    extension.track(Client)
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'own.db'}", AUDIT_MONGO_MASK=["phone"]
    )
    db.init_app(app)
    with app.app_context():
        db.create_all()
    extension.init_app(app, db=db, collection=own)
    try:
        with app.app_context():
            db.session.add(Client(name="acme", phone="+1 555 0100"))
            db.session.commit()
        changes = [d["changes"] for d in own.find()]
        assert [(c["name"]["added"], c["phone"]["added"]) for c in changes] == [
            (["acme"], ["[masked]"])
        ]
    finally:
        with app.app_context():
            current_log().close()


def test_metadata_added_for_a_request_joins_its_context_and_blocks_still_win(
    app: Flask, extension: AuditMongo
) -> None:
    @app.post("/tenant")
    def tenant() -> str:
        extension.add_request_context(tenant="acme", reason="import")
        with current_log().context(reason="GDPR erase"):
            db.session.add(Client(name="A"))
            db.session.commit()
        db.session.add(Client(name="B"))
        db.session.commit()
        return "ok"

    app.test_client().post("/tenant")
    app.test_client().post("/clients", data={"name": "next request"})

    first, second, third = (d["context"] for d in documents(app))
    assert (first["tenant"], first["reason"]) == ("acme", "GDPR erase")
    assert (second["tenant"], second["reason"]) == ("acme", "import")
    assert "tenant" not in third
    with app.app_context(), pytest.raises(RuntimeError, match="outside a request"):
        extension.add_request_context(tenant="x")


def test_request_ids_and_request_metadata_do_not_leak_into_the_next_request(
    app: Flask, extension: AuditMongo
) -> None:
    @app.post("/tagged")
    def tagged() -> str:
        extension.add_request_context(tenant="acme")
        db.session.add(Client(name="tagged"))
        db.session.commit()
        return "ok"

    with app.app_context():  # a test or script keeping one application context pushed
        web = app.test_client()
        web.post("/tagged")
        web.post("/clients", data={"name": "plain"})

    first, second = (d["context"] for d in documents(app))
    assert first["tenant"] == "acme" and "tenant" not in second
    assert first["request_id"] != second["request_id"]


def test_init_app_twice_on_one_application_is_refused(app: Flask, extension: AuditMongo) -> None:
    with pytest.raises(RuntimeError, match="already called"):
        extension.init_app(app, db=db)


class Member(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    """A user model whose key is not called id: Flask-Login's get_id() gives a string."""

    __tablename__ = "members"
    number: Mapped[int] = mapped_column(primary_key=True)

    def get_id(self) -> str:
        return str(self.number)


def test_a_mapped_user_without_an_id_attribute_acts_through_its_primary_key(
    extension: AuditMongo, tmp_path: Any
) -> None:
    app = create_app(extension, f"sqlite:///{tmp_path / 'app.db'}")
    app.login_manager.user_loader(lambda key: db.session.get(Member, int(key)))  # type: ignore[attr-defined]

    @app.post("/member-login")
    def member_login() -> str:
        login_user(db.session.get(Member, 7))
        return "ok"

    try:
        with app.app_context():
            db.session.add(Member(number=7))
            db.session.commit()
        web = app.test_client()
        web.post("/member-login")
        web.post("/clients", data={"name": "by member 7"})
        (document,) = [d for d in documents(app) if d["table_name"] == "clients"]
        assert document["current_user_id"] == 7  # the integer key, not "7"
    finally:
        with app.app_context():
            current_log().close()


def test_without_a_login_manager_nobody_is_known_and_nothing_breaks(
    extension: AuditMongo, tmp_path: Any
) -> None:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'bare.db'}", AUDIT_MONGO_URI="mongomock://"
    )
    db.init_app(app)
    with app.app_context():
        db.create_all()
    extension.init_app(app, db=db)

    @app.post("/add")
    def add() -> str:
        db.session.add(Client(name="no login manager"))
        db.session.commit()
        return "ok"

    try:
        assert app.test_client().post("/add").status_code == 200
        (document,) = documents(app)
        assert document["current_user_id"] is None
        assert document["context"]["path"] == "/add"
    finally:
        with app.app_context():
            current_log().close()
