"""track(), the blog post's event.listen wiring, exclusions, and close()."""

from __future__ import annotations

import gc
import weakref
from typing import Any, ClassVar

from sqlalchemy import Engine, String, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from audit_mongo import AuditLog
from tests.conftest import only, stored, wire_like_the_blog_post
from tests.models import Account, Client


def test_tracking_a_declarative_base_tracks_every_mapped_subclass(
    engine: Engine, collection: Any
) -> None:
    class Base(DeclarativeBase):
        pass

    audit = AuditLog(collection)
    audit.track(Base)

    class Late(Base):  # mapped after track(): still tracked
        __tablename__ = "late"
        id: Mapped[int] = mapped_column(primary_key=True)
        label: Mapped[str] = mapped_column(String(10))

    Base.metadata.create_all(engine)
    try:
        with Session(engine) as s:
            s.add(Late(label="x"))
            s.commit()
    finally:
        audit.close()

    assert only(collection)["table_name"] == "late"


def test_both_wiring_styles_at_once_still_write_one_document(
    engine: Engine, collection: Any
) -> None:
    audit = AuditLog(collection)
    wired = wire_like_the_blog_post(audit, (Client,))
    audit.track(Client)
    audit.track(Client)
    try:
        with Session(engine) as s:
            client = Client(name="a")
            s.add(client)
            s.commit()
            client.name = "b"
            s.commit()
    finally:
        audit.close()
        for target, name, receiver in wired:
            event.remove(target, name, receiver)

    assert [d["action"] for d in stored(collection)] == ["create", "update"]


def test_track_returns_the_model_so_it_works_as_a_decorator(collection: Any) -> None:
    audit = AuditLog(collection)
    try:
        assert audit.track(Client) is Client
    finally:
        audit.close()


def test_exclusions_add_up_across_calls_and_base_classes(engine: Engine, collection: Any) -> None:
    class Base(DeclarativeBase):
        pass

    class User(Base):
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
        password: Mapped[str] = mapped_column(String(20))
        ssn: Mapped[str] = mapped_column(String(20))
        pin: Mapped[str] = mapped_column(String(20))
        name: Mapped[str] = mapped_column(String(20))

    audit = AuditLog(collection, exclude=("pin",))
    audit.track(Base, exclude=("password",))
    audit.track(User, exclude=("ssn",))
    audit.track(User)  # no exclude: takes nothing away
    Base.metadata.create_all(engine)
    try:
        with Session(engine) as s:
            s.add(User(password="hunter2", ssn="123", pin="0000", name="ann"))
            s.commit()
    finally:
        audit.close()

    assert set(only(collection)["changes"]) == {"id", "name"}


def test_excluded_attributes_are_never_recorded(engine: Engine, collection: Any) -> None:
    audit = AuditLog(collection, exclude=("phone",))
    audit.track(Account, exclude=("password",))
    audit.track(Client)
    try:
        with Session(engine) as s:
            account = Account(login="ann", password="secret")
            s.add_all([account, Client(name="c", phone="555")])
            s.commit()
            account.password = "changed"  # only an excluded attribute changes: no document
            s.commit()
            s.delete(account)
            s.commit()
    finally:
        audit.close()

    documents = stored(collection)
    assert [(d["table_name"], d["action"]) for d in documents] == [
        ("accounts", "create"),
        ("clients", "create"),
        ("accounts", "delete"),
    ]
    for document in documents:
        assert "password" not in document["changes"]
        assert "phone" not in document["changes"]


def test_close_removes_every_listener_the_log_added(engine: Engine) -> None:
    audit = AuditLog.from_uri("mongomock://")
    audit.track(Client)
    collection = audit.collection

    audit.close()
    audit.close()  # idempotent

    with Session(engine) as s:
        s.add(Client(name="after close"))
        s.flush()
        assert audit.uncommitted_changes(s) == []
        s.commit()
    assert list(collection.find()) == []
    # Nothing SQLAlchemy holds (mapper or Session listeners) keeps the closed log alive.
    closed = weakref.ref(audit)
    del audit
    gc.collect()
    assert closed() is None


def test_wiring_by_hand_then_tracking_still_reaches_subclasses(
    engine: Engine, collection: Any
) -> None:
    class Base(DeclarativeBase):
        pass

    class Person(Base):
        __tablename__ = "people"
        id: Mapped[int] = mapped_column(primary_key=True)
        kind: Mapped[str] = mapped_column(String(10))
        __mapper_args__: ClassVar[dict[str, Any]] = {
            "polymorphic_on": "kind",
            "polymorphic_identity": "person",
        }

    class Vip(Person):
        __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "vip"}

    audit = AuditLog(collection)
    wired = wire_like_the_blog_post(audit, (Person,))
    audit.track(Person)
    Base.metadata.create_all(engine)
    try:
        with Session(engine) as s:
            s.add_all([Person(), Vip()])
            s.commit()
    finally:
        audit.close()
        for target, name, receiver in wired:
            event.remove(target, name, receiver)

    assert sorted(d["changes"]["kind"]["added"][0] for d in stored(collection)) == ["person", "vip"]


def test_receivers_wired_by_hand_do_nothing_after_close(engine: Engine, collection: Any) -> None:
    audit = AuditLog(collection)
    wired = wire_like_the_blog_post(audit, (Client,))
    audit.close()
    try:
        with Session(engine) as s:
            s.add(Client(name="x"))
            s.commit()
    finally:
        for target, name, receiver in wired:
            event.remove(target, name, receiver)

    assert stored(collection) == []


def test_two_logs_each_write_their_own_documents(engine: Engine) -> None:
    first, second = AuditLog.from_uri("mongomock://"), AuditLog.from_uri("mongomock://")
    first.track(Client)
    second.track(Account)
    try:
        with Session(engine) as s:
            s.add_all([Client(name="c"), Account(login="a")])
            s.commit()
        assert [d["table_name"] for d in first.collection.find()] == ["clients"]
        assert [d["table_name"] for d in second.collection.find()] == ["accounts"]
    finally:
        first.close()
        second.close()
