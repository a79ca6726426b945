"""The mapped classes the workloads change, defined anew in each child process.

A factory rather than module-level classes, because some configurations must act before a
class is defined (SQLAlchemy-Continuum patches the mapper and needs ``__versioned__`` in
the class) or decorate it after (sqlaudit's ``@track_table``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def _unchanged(cls: type) -> type:
    return cls


@dataclass(frozen=True)
class ModelHooks:
    """What a configuration adds to the models: base classes placed before the declarative
    base (their ``__init_subclass__`` runs before the class is mapped), and a decorator
    applied once the class is mapped."""

    mixins: tuple[type, ...] = ()
    decorate: Callable[[type], type] = field(default=_unchanged)


@dataclass(frozen=True)
class Models:
    """The classes of one child process and the metadata holding their tables."""

    client: type
    item: type
    metadata: MetaData


def new_base() -> type[DeclarativeBase]:
    """A declarative base of its own (a registry per process, never shared)."""

    class Base(DeclarativeBase):
        pass

    return Base


def define_models(base: type, hooks: ModelHooks) -> Models:
    """``Client`` (the unit-of-work and Flask workloads) and ``Item`` (the bulk update) on
    ``base``, a ``DeclarativeBase`` subclass or Flask-SQLAlchemy's ``db.Model``."""

    class Client(*hooks.mixins, base):  # type: ignore[misc]
        __tablename__ = "clients"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        name: Mapped[str] = mapped_column(String(255))
        email: Mapped[str | None] = mapped_column(String(255))
        phone: Mapped[str | None] = mapped_column(String(255))

    class Item(*hooks.mixins, base):  # type: ignore[misc]
        __tablename__ = "items"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        name: Mapped[str] = mapped_column(String(40))
        count: Mapped[int] = mapped_column(Integer)

    return Models(hooks.decorate(Client), hooks.decorate(Item), base.metadata)
