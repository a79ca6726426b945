"""state_at: a row's column values as of a moment, rebuilt from the log written by real
sessions (the rules are in audit_mongo/state.py's docstring)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete
from sqlalchemy.orm import Session

from audit_mongo import AuditLog
from tests.models import Account, Article, Client, Employee, Engineer, Manager, Sample, Tag
from tests.query_helpers import UTC, Clock, commit_times, new_log, saved

SECOND = dt.timedelta(seconds=1)


@pytest.fixture
def audit(collection: Any) -> Iterator[AuditLog]:
    log = new_log(collection)
    yield log
    log.close()


def test_a_row_is_rebuilt_from_its_create_and_the_changes_up_to_the_moment(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    client = Client(name="A", email="a@example.com")
    saved(session, client)
    client.name = "B"
    session.commit()
    client.phone = "555"
    session.commit()
    created, renamed, phoned = commit_times(audit.collection)

    def state(when: dt.datetime) -> dict[str, Any] | None:
        return audit.state_at(Client, client.id, when)

    assert state(created - SECOND) is None  # before the create
    assert state(created) == {"id": client.id, "name": "A", "email": "a@example.com", "phone": None}
    assert state(renamed - SECOND / 2) == state(created)  # between two commits
    assert state(renamed) == {**state(created), "name": "B"}  # type: ignore[dict-item]
    assert state(phoned + dt.timedelta(days=365)) == {
        "id": client.id,
        "name": "B",
        "email": "a@example.com",
        "phone": "555",
    }
    assert audit.state_at("clients", str(client.id), renamed) == state(renamed)


def test_the_moment_counts_to_the_microsecond_though_the_log_keeps_milliseconds(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    client = Client(name="A")
    saved(session, client)
    client.name = "B"
    session.commit()
    _, renamed = commit_times(audit.collection)

    just_before = audit.state_at(Client, client.id, renamed - dt.timedelta(microseconds=500))
    just_after = audit.state_at(Client, client.id, renamed + dt.timedelta(microseconds=500))

    assert just_before is not None and just_before["name"] == "A"
    assert just_after is not None and just_after["name"] == "B"


def test_a_naive_moment_is_utc_and_an_aware_one_is_converted(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    client = Client(name="A")
    saved(session, client)
    client.name = "B"
    session.commit()
    _, renamed = commit_times(audit.collection)
    in_tokyo = renamed.astimezone(dt.timezone(dt.timedelta(hours=9)))

    def name_at(when: dt.datetime) -> Any:
        state = audit.state_at(Client, client.id, when)
        return state and state["name"]

    assert name_at(renamed.replace(tzinfo=None)) == "B"
    assert name_at(renamed.replace(tzinfo=None) - SECOND / 2) == "A"
    assert name_at(in_tokyo) == "B"
    assert name_at(in_tokyo - SECOND / 2) == "A"


def test_a_deleted_row_has_its_values_until_the_delete_and_none_after(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    client = Client(name="A", phone="1")
    saved(session, client)
    key = client.id
    client.phone = "2"
    session.commit()
    session.execute(delete(Client).where(Client.id == key))  # a bulk statement
    session.commit()
    _, changed, deleted = commit_times(audit.collection)

    assert audit.state_at(Client, key, deleted - SECOND / 2) == {
        "id": key,
        "name": "A",
        "email": None,
        "phone": "2",
    }
    assert audit.state_at(Client, key, deleted) is None
    assert audit.state_at(Client, key, deleted + SECOND) is None
    assert audit.state_at(Client, key, changed) is not None


def test_a_key_used_again_after_a_delete_gives_each_rows_values_in_its_time(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    old = Client(id=5, name="old")
    saved(session, old)
    session.delete(old)
    session.commit()
    saved(session, Client(id=5, name="new", email="new@example.com"))
    old_created, deleted, new_created = commit_times(audit.collection)

    assert audit.state_at(Client, 5, old_created) == {
        "id": 5,
        "name": "old",
        "email": None,
        "phone": None,
    }
    assert audit.state_at(Client, 5, deleted) is None
    assert audit.state_at(Client, 5, new_created) == {
        "id": 5,
        "name": "new",
        "email": "new@example.com",
        "phone": None,
    }


def test_when_the_log_starts_after_the_row_existed_later_old_values_fill_in(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    client = Client(name="A", email="a@example.com", phone="1")
    with audit.disabled():
        saved(session, client)  # written before the log began
    client.name = "B"
    session.commit()
    client.phone = "2"
    session.commit()
    renamed, phoned = commit_times(audit.collection)

    # only the attributes the log knows: email never changed, so it is unknown
    assert audit.state_at(Client, client.id, renamed - SECOND) == {"name": "A", "phone": "1"}
    assert audit.state_at(Client, client.id, renamed) == {"name": "B", "phone": "1"}
    assert audit.state_at(Client, client.id, phoned) == {"name": "B", "phone": "2"}

    session.delete(client)  # a delete lists every column: from then on all are known
    session.commit()
    assert audit.state_at(Client, client.id, renamed - SECOND) == {
        "id": client.id,
        "name": "A",
        "email": "a@example.com",
        "phone": "1",
    }
    assert audit.state_at(Client, client.id, phoned) == {
        "id": client.id,
        "name": "B",
        "email": "a@example.com",
        "phone": "2",
    }


def test_a_row_with_no_entry_is_none(audit: AuditLog, session: Session) -> None:
    assert audit.state_at(Client, 12345, dt.datetime.now(UTC)) is None


def test_a_primary_key_change_is_followed_back_to_the_old_key(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    client = Client(id=1, name="A")
    saved(session, client)
    client.id = 10
    session.commit()
    client.name = "B"
    session.commit()
    created, moved, renamed = commit_times(audit.collection)

    def state(key: int, when: dt.datetime) -> Any:
        found = audit.state_at(Client, key, when)
        return found and (found["id"], found["name"])

    assert state(10, created) == (1, "A")  # the row now at 10, before its key changed
    assert state(10, moved) == (10, "A")
    assert state(10, renamed) == (10, "B")
    assert state(1, created) == (1, "A")  # the row that held 1 then


def test_a_key_change_is_followed_back_only_to_that_rows_create(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    earlier = Client(id=1, name="earlier")
    saved(session, earlier)
    session.delete(earlier)
    session.commit()
    later = Client(id=1, name="later")
    saved(session, later)
    later.id = 10
    session.commit()
    earlier_created, _, later_created, _ = commit_times(audit.collection)

    assert audit.state_at(Client, 10, earlier_created) is None  # another row then, at 1
    later_then = audit.state_at(Client, 10, later_created)
    assert later_then is not None and later_then["name"] == "later"
    earlier_then = audit.state_at(Client, 1, earlier_created)
    assert earlier_then is not None and earlier_then["name"] == "earlier"


def test_joined_and_single_table_inheritance_give_the_classs_columns(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    boss = Manager(name="boss", budget=10)
    coder = Engineer(name="coder", skill="sql")
    saved(session, boss, coder)
    boss.budget = 20
    coder.skill = "python"
    session.commit()
    created, changed = commit_times(audit.collection)

    assert audit.state_at(Manager, boss.id, created) == {
        "id": boss.id,
        "kind": "manager",
        "name": "boss",
        "skill": None,  # the base table's column, null for a manager
        "budget": 10,
    }
    boss_then = audit.state_at(Employee, boss.id, changed)
    assert boss_then is not None and boss_then["budget"] == 20
    assert audit.state_at("employees", coder.id, changed) == {
        "id": coder.id,
        "kind": "engineer",
        "name": "coder",
        "skill": "python",
    }


def test_values_are_typed_and_collections_and_excluded_attributes_left_out(
    audit: AuditLog, session: Session, clock: Clock
) -> None:
    audit.track(Account, exclude=("password",))
    sample = Sample(price=Decimal("9.99"), day=dt.date(2024, 5, 1))
    article = Article(title="Hello", tags=[Tag(label="news")])
    account = Account(login="ann", password="secret")
    saved(session, sample, article, account)
    sample.price = Decimal("10.50")
    session.commit()
    created, _ = commit_times(audit.collection)

    sample_then = audit.state_at(Sample, sample.id, created)
    assert sample_then is not None
    assert sample_then["price"] == Decimal("9.99")
    assert isinstance(sample_then["price"], Decimal)
    assert sample_then["day"] == dt.date(2024, 5, 1)
    assert audit.state_at(Article, article.id, created) == {
        "id": article.id,
        "title": "Hello",
        "author_id": None,
    }
    assert audit.state_at(Account, account.id, created) == {
        "id": account.id,
        "login": "ann",
        "notes": None,
    }
