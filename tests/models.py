"""Models the tests audit: the blog post's Client, and models exercising value types and keys."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    CHAR,
    JSON,
    Column,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    Integer,
    Interval,
    LargeBinary,
    Numeric,
    PickleType,
    String,
    Table,
    Text,
    Time,
    TypeDecorator,
    Uuid,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Client(Base):
    """The blog post's model."""

    __tablename__ = "clients"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255), unique=True)
    phone: Mapped[str | None] = mapped_column(String(255))


class Account(Base):
    """Attribute keys that differ from column names, a secret, a deferred column."""

    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column("user_name", String(50))
    password: Mapped[str | None] = mapped_column(String(100))
    notes: Mapped[str | None] = deferred(mapped_column(Text))


class Color(enum.Enum):
    RED = "r"
    GREEN = "g"


class Point:
    """A value type only a TypeDecorator knows how to store."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __hash__(self) -> int:
        return hash((self.x, self.y))


class PointType(TypeDecorator[Point]):
    impl = String(50)
    cache_ok = True

    def process_bind_param(self, value: Point | None, dialect: Any) -> str | None:
        return None if value is None else f"{value.x},{value.y}"

    def process_result_value(self, value: str | None, dialect: Any) -> Point | None:
        if value is None:
            return None
        x, y = value.split(",")
        return Point(int(x), int(y))


class Opaque:
    """A value with no BSON form and no TypeDecorator: stored in the fallback form."""

    def __repr__(self) -> str:
        return "Opaque()"


class OpaqueType(TypeDecorator[Opaque]):
    impl = String(10)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else "opaque"

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return value


class Sample(Base):
    """One column per kind of value the normaliser handles."""

    __tablename__ = "samples"
    id: Mapped[int] = mapped_column(primary_key=True)
    price: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    day: Mapped[dt.date | None] = mapped_column(Date)
    at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    at_tz: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    clock: Mapped[dt.time | None] = mapped_column(Time)
    span: Mapped[dt.timedelta | None] = mapped_column(Interval)
    uid: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    color: Mapped[Color | None] = mapped_column(Enum(Color))
    blob: Mapped[bytes | None] = mapped_column(LargeBinary)
    data: Mapped[Any] = mapped_column(JSON, nullable=True)
    ratio: Mapped[float | None]
    where: Mapped[Point | None] = mapped_column(PointType)
    odd: Mapped[Any] = mapped_column(OpaqueType, nullable=True)
    pickled: Mapped[Any] = mapped_column(PickleType, nullable=True)


class Membership(Base):
    """A composite primary key with a string part."""

    __tablename__ = "memberships"
    group: Mapped[str] = mapped_column(String(20), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("clients.id"), primary_key=True)
    role: Mapped[str | None] = mapped_column(String(20))


class Device(Base):
    """A UUID primary key."""

    __tablename__ = "devices"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    label: Mapped[str | None] = mapped_column(String(20))


class Country(Base):
    """A CHAR primary key: PostgreSQL returns it blank-padded."""

    __tablename__ = "countries"
    code: Mapped[str] = mapped_column(CHAR(3), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(50))


class Untracked(Base):
    """A model the tests never track."""

    __tablename__ = "untracked"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str | None] = mapped_column(String(20))


article_tags = Table(
    "article_tags",
    Base.metadata,
    Column("article_id", ForeignKey("articles.id"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id"), primary_key=True),
)


class Tag(Base):
    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(20))


class Article(Base):
    """A many-to-many collection and a many-to-one reference."""

    __tablename__ = "articles"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str | None] = mapped_column(String(50))
    author_id: Mapped[int | None] = mapped_column(ForeignKey("clients.id"))
    author: Mapped[Client | None] = relationship()
    tags: Mapped[list[Tag]] = relationship(secondary=article_tags)


class Employee(Base):
    """Joined-table inheritance (Manager) and single-table inheritance (Engineer)."""

    __tablename__ = "employees"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str | None] = mapped_column(String(50))
    skill: Mapped[str | None] = mapped_column(String(50))  # Engineer's, in the base table
    __mapper_args__: ClassVar[dict[str, Any]] = {
        "polymorphic_on": "kind",
        "polymorphic_identity": "employee",
    }


class Manager(Employee):
    __tablename__ = "managers"
    id: Mapped[int] = mapped_column(ForeignKey("employees.id"), primary_key=True)
    budget: Mapped[int | None]
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "manager"}


class Engineer(Employee):
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "engineer"}


class Stamped(Base):
    """Values the database computes: a server default, an onupdate SQL expression, a
    server-side onupdate, a Python onupdate and a version counter."""

    __tablename__ = "stamped"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), server_default="fresh")
    revision: Mapped[int] = mapped_column(server_default=text("1"))
    shout: Mapped[str | None] = mapped_column(String(20), onupdate=func.upper("changed"))
    touched: Mapped[int | None] = mapped_column(onupdate=lambda: 7)
    version: Mapped[int] = mapped_column(default=1)
    __mapper_args__: ClassVar[dict[str, Any]] = {"version_id_col": version}


legacy_table = Table(
    "legacy_items",
    Base.metadata,
    Column("item_no", Integer, primary_key=True, key="number"),
    Column("item_name", String(30), key="label"),  # name, key and attribute all differ
)


class LegacyItem:
    """Mapped imperatively to a Table (no __tablename__), attribute keys unlike its columns."""

    def __init__(self, number: int, title: str | None = None) -> None:
        self.number = number
        self.title = title


Base.registry.map_imperatively(
    LegacyItem,
    legacy_table,
    properties={"number": legacy_table.c.number, "title": legacy_table.c.label},
)


class Node(Base):
    """A reference SQLAlchemy writes with a second UPDATE (post_update)."""

    __tablename__ = "nodes"
    id: Mapped[int] = mapped_column(primary_key=True)
    favorite_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id"))
    favorite: Mapped[Node | None] = relationship(remote_side=[id], post_update=True)
