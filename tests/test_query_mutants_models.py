"""What the query side knows of the models, found unchecked by mutation testing of
catalog.py and reify.py: deeper and concrete hierarchies, key text of enum, boolean, date
and string keys, which names are fields, models mapped or tracked after the first query,
and values the column's type does not explain. Logs are written by real ORM sessions."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from sqlalchemy import Boolean, Date, Engine, Enum, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from audit_mongo import AuditLog, AuditReader
from audit_mongo.tracking import Tracking
from tests.conftest import TRACKED
from tests.models import Account, Article, Base, Client, Color, Manager, Membership, Sample, Tag
from tests.query_helpers import Clock, commit_times, new_log, saved


class MutantBase(DeclarativeBase):
    pass


class Vehicle(MutantBase):
    """Single-table inheritance two levels deep: Vehicle, Car, SportsCar."""

    __tablename__ = "vehicles"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str | None] = mapped_column(String(20))
    __mapper_args__: ClassVar[dict[str, Any]] = {
        "polymorphic_on": "kind",
        "polymorphic_identity": "vehicle",
    }


class Car(Vehicle):
    seats: Mapped[int | None] = mapped_column(nullable=True)
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "car"}


class SportsCar(Car):
    turbo: Mapped[bool | None] = mapped_column(nullable=True)
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "sports"}


class Pet(MutantBase):
    __tablename__ = "pets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str | None] = mapped_column(String(20))


class Dog(Pet):
    """Concrete-table inheritance: its own table, every column its own."""

    __tablename__ = "dogs"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str | None] = mapped_column(String(20))
    bark: Mapped[str | None] = mapped_column(String(20))
    __mapper_args__: ClassVar[dict[str, Any]] = {"concrete": True}


class Hue(enum.Enum):
    RED = "r"
    BLUE = "b"


class Paint(MutantBase):
    """An Enum primary key."""

    __tablename__ = "paints"
    hue: Mapped[Hue] = mapped_column(Enum(Hue), primary_key=True)
    label: Mapped[str | None] = mapped_column(String(20))


class Switch(MutantBase):
    """A composite key with a Boolean part."""

    __tablename__ = "switches"
    room: Mapped[str] = mapped_column(String(20), primary_key=True)
    lit: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    label: Mapped[str | None] = mapped_column(String(20))


class Rate(MutantBase):
    """A Date primary key."""

    __tablename__ = "rates"
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    label: Mapped[str | None] = mapped_column(String(20))


MUTANT_MODELS = (Vehicle, Car, SportsCar, Pet, Dog, Paint, Switch, Rate)


class DecoyBase(DeclarativeBase):
    """Another registry mapping a table named "clients" (say, a migration's copy)."""


class ClientCopy(DecoyBase):
    __tablename__ = "clients"
    id: Mapped[str] = mapped_column(String(20), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(20))


class DecoyNote(DecoyBase):
    __tablename__ = "decoy_notes"
    id: Mapped[int] = mapped_column(primary_key=True)


@pytest.fixture
def audit(collection: Any) -> Iterator[AuditLog]:
    log = new_log(collection)
    yield log
    log.close()


@pytest.fixture
def mutant_engine(tmp_path: Any) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'mutants.db'}")
    MutantBase.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def mutant_audit(collection: Any) -> Iterator[AuditLog]:
    log = new_log(collection, models=MUTANT_MODELS)
    yield log
    log.close()


# -- classes behind a table -------------------------------------------------------------------


def test_a_subclasss_rows_include_its_own_subclasses_rows_and_their_fields(
    mutant_audit: AuditLog, mutant_engine: Engine, clock: Clock
) -> None:
    with Session(mutant_engine) as session:
        car, fast = Car(name="car", seats=4), SportsCar(name="fast", seats=2, turbo=True)
        saved(session, Vehicle(name="bike"), car, fast)
        fast.turbo = False
        session.commit()
        car_id, fast_id = car.id, fast.id

    def rows(model: Any, **filters: Any) -> list[tuple[str, Any]]:
        return [(e.action, e.object_id) for e in mutant_audit.for_table(model, **filters)]

    assert sorted(rows(Car, actions="create")) == [("create", car_id), ("create", fast_id)]
    assert rows(Car, fields="turbo") == [("update", fast_id), ("create", fast_id)]
    assert [e.entity for e in mutant_audit.find(table=Car, object_id=fast_id)] == [
        "SportsCar",
        "SportsCar",
    ]
    assert [e.action for e in mutant_audit.for_object(Car, fast_id)] == ["update", "create"]
    assert rows(SportsCar, actions="create") == [("create", fast_id)]


def test_concrete_table_classes_keep_their_own_table(
    mutant_audit: AuditLog, mutant_engine: Engine, clock: Clock
) -> None:
    with Session(mutant_engine, expire_on_commit=False) as session:
        dog, cat = Dog(id=3, name="rex", bark="woof"), Pet(id=3, name="cat")
        saved(session, dog, cat)

    (entry,) = mutant_audit.history(dog)
    assert (entry.table_name, entry.changes["bark"].new) == ("dogs", "woof")
    assert [e.changes["name"].new for e in mutant_audit.for_object(Dog, "3")] == ["rex"]
    assert [e.changes["name"].new for e in mutant_audit.for_object(Pet, "3")] == ["cat"]
    assert [e.table_name for e in mutant_audit.for_table(Dog)] == ["dogs"]


# -- key text ---------------------------------------------------------------------------------


def test_key_text_is_parsed_for_enum_boolean_and_date_keys(
    mutant_audit: AuditLog, mutant_engine: Engine
) -> None:
    with Session(mutant_engine) as session:
        saved(
            session,
            Paint(hue=Hue.RED, label="paint"),
            Switch(room="hall", lit=True, label="on"),
            Switch(room="hall", lit=False, label="off"),
            Rate(day=dt.date(2024, 5, 1), label="rate"),
        )

    def labels(model: Any, key: Any) -> list[Any]:
        return [e.changes["label"].new for e in mutant_audit.for_object(model, key)]

    assert labels(Paint, "RED") == ["paint"]  # a member's name, as stored
    with pytest.raises(ValueError, match="'PURPLE' is not a member of Hue"):
        mutant_audit.for_object(Paint, "PURPLE")
    assert labels(Switch, ("hall", "1")) == ["on"]
    assert labels(Switch, ("hall", "true")) == ["on"]
    assert labels(Switch, ("hall", "0")) == ["off"]
    assert labels(Rate, "2024-05-01") == ["rate"]
    with pytest.raises(ValueError, match="not a valid date"):
        mutant_audit.for_object(Rate, "2024-02-30")


def test_a_string_key_keeps_its_trailing_blanks(audit: AuditLog, session: Session) -> None:
    saved(session, Client(id=7, name="member"))
    saved(session, Membership(group="admins ", member_id=7, role="padded"))  # VARCHAR: kept
    saved(session, Membership(group="admins", member_id=7, role="plain"))

    def roles(key: Any) -> list[Any]:
        return [e.changes["role"].new for e in audit.for_object(Membership, key)]

    assert roles(("admins ", "7")) == ["padded"]
    assert roles(("admins", 7)) == ["plain"]


# -- which names are fields ---------------------------------------------------------------------


def test_a_many_to_many_collection_is_a_field_a_many_to_one_relationship_is_not(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    article = Article(title="a", tags=[Tag(label="x")])
    saved(session, article)
    article.title = "b"
    session.commit()
    article.tags.append(Tag(label="y"))
    session.commit()
    created, _, tagged = commit_times(audit.collection)[:3]

    assert [e.created_at for e in audit.for_table(Article, fields="tags")] == [tagged, created]
    assert audit.updated_at(article, "tags") == tagged
    with pytest.raises(ValueError, match="no attribute 'author'"):
        list(audit.for_table(Article, fields="author"))  # recorded as author_id
    assert list(audit.for_table(Article, fields="author_id")) == []  # never set


# -- models the catalog learns of late ----------------------------------------------------------


def test_a_class_mapped_after_a_readers_first_query_is_found(
    collection: Any, tmp_path: Any
) -> None:
    class LateBase(DeclarativeBase):
        pass

    class Early(LateBase):
        __tablename__ = "early_rows"
        id: Mapped[int] = mapped_column(primary_key=True)

    typed = AuditReader(collection, models=[LateBase])
    assert list(typed.for_table("early_rows")) == []

    class Late(LateBase):  # mapped after the reader's first query
        __tablename__ = "late_rows"
        id: Mapped[int] = mapped_column(primary_key=True)
        label: Mapped[str | None] = mapped_column(String(20))

    engine = create_engine(f"sqlite:///{tmp_path / 'late.db'}")
    LateBase.metadata.create_all(engine)
    audit = new_log(collection, models=(Late,))
    try:
        with Session(engine) as session:
            saved(session, Late(id=1, label="x"))
        (entry,) = typed.for_object("late_rows", "1")
        assert (entry.object_id, entry.changes["label"].new) == (1, "x")
    finally:
        audit.close()
        engine.dispose()


def test_an_exclusion_added_after_the_first_query_is_known_by_table_name(audit: AuditLog) -> None:
    assert list(audit.for_table("accounts", fields="password")) == []  # recorded so far
    audit.track(Account, exclude=("password",))
    with pytest.raises(ValueError, match="password is excluded"):
        list(audit.for_table("accounts", fields="password"))


def test_an_exclusion_added_after_the_first_query_is_known_by_class(
    audit: AuditLog, session: Session
) -> None:
    assert list(audit.for_table(Account, fields="password")) == []  # recorded so far
    audit.track(Account, exclude=("password",))
    account = Account(login="ann", password="secret")
    saved(session, account)

    assert audit.state_at(Account, account.id, dt.datetime.now(dt.timezone.utc)) == {
        "id": account.id,
        "login": "ann",
        "notes": None,
    }
    with pytest.raises(ValueError, match="password is excluded"):
        list(audit.for_table(Account, fields="password"))


@pytest.mark.parametrize("decoy_first", [True, False], ids=["decoy first", "decoy last"])
def test_the_tracked_class_wins_when_two_registries_map_a_table_name(
    collection: Any,
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
    decoy_first: bool,
) -> None:
    registries = [DecoyBase.registry, Base.registry]
    ordered = registries if decoy_first else registries[::-1]
    # Whichever order the registries come in (a set's order is arbitrary):
    monkeypatch.setattr(Tracking, "known_registries", lambda self: ordered)
    audit = new_log(collection, models=(*TRACKED, DecoyNote))
    try:
        client = Client(name="a")
        saved(session, client)

        (entry,) = audit.for_object("clients", str(client.id))
        assert entry.object_id == client.id
    finally:
        audit.close()


# -- values the column's type does not explain --------------------------------------------------


def test_values_assigned_in_another_python_type_come_back_typed(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    long_decimal = Decimal("1." + "1" * 40)  # beyond Decimal128's 34 digits: stored as text
    floated = Sample(price=9.99, ratio=Decimal("1.5"))  # a float in Numeric, a Decimal in Float
    wide = Sample(price=long_decimal)
    saved(session, floated, wide)

    def new(obj: Any, name: str) -> Any:
        (entry,) = audit.history(obj)
        return entry.changes[name].new

    assert repr(new(floated, "price")) == "Decimal('9.99')"
    assert new(floated, "ratio") == 1.5 and type(new(floated, "ratio")) is float
    assert new(wide, "price") == long_decimal and isinstance(new(wide, "price"), Decimal)


@pytest.fixture
def sqlite_session(tmp_path: Any) -> Iterator[Session]:
    """SQLite, which keeps what it is given whatever the column's declared type."""
    engine = create_engine(f"sqlite:///{tmp_path / 'loose.db'}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        yield session
    engine.dispose()


def test_values_not_in_the_columns_stored_form_come_back_as_stored(
    audit: AuditLog, sqlite_session: Session
) -> None:
    odd = Sample(price=True, color="r")  # a bool in Numeric; an Enum given a member's value
    boss = Manager(name="boss", budget="lots")  # text in an INTEGER column
    saved(sqlite_session, odd, boss)

    (sample,) = audit.history(odd)
    assert sample.changes["price"].new is True  # not a decimal's stored form: as stored
    assert sample.changes["color"].new is Color.RED
    (manager,) = audit.history(boss)
    assert manager.changes["budget"].new == "lots"
