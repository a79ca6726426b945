"""A table name is looked up again once the log tracks more classes (found by mutation
testing of ModelCatalog after model() learnt to drop its cached models on its own). Logs
are written by real ORM sessions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from tests.models import Client
from tests.query_helpers import new_log, saved


class OtherBase(DeclarativeBase):
    """Another registry that also maps a table named "clients", with a text key."""


class ClientByName(OtherBase):
    __tablename__ = "clients"
    id: Mapped[str] = mapped_column(String(20), primary_key=True)


class Note(OtherBase):
    __tablename__ = "other_notes"
    id: Mapped[int] = mapped_column(primary_key=True)


def test_a_table_name_is_answered_by_a_class_tracked_after_the_first_query(
    collection: Any, session: Session
) -> None:
    audit = new_log(collection, models=(Note,))  # knows only OtherBase: its "clients"
    try:
        assert list(audit.for_table("clients")) == []
        audit.track(Client)  # now the tracked Client is the class behind "clients"
        client = Client(name="a")
        saved(session, client)

        (entry,) = audit.for_object("clients", str(client.id))  # "1" is the integer 1
        assert entry.object_id == client.id
    finally:
        audit.close()
