"""Every query the API sends is served by an index ensure_indexes() creates, and results
stream: a thin spy around the collection records each find()'s filter and sort, and counts
the documents read from Mongo."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from audit_mongo import AuditLog, AuditReader, reader, row_history
from audit_mongo.indexes import INDEXES
from audit_mongo.query import INDEX_BY_FIELDS
from tests.models import Client, Employee, Manager, Membership, Tag
from tests.query_helpers import (
    UTC,
    Find,
    SpyCollection,
    commit_times,
    controlled_clock,
    new_log,
)

INDEX_KEYS: dict[str, list[tuple[str, int]]] = {
    index.document["name"]: list(index.document["key"].items()) for index in INDEXES
}
PARTIAL: dict[str, dict[str, Any]] = {
    index.document["name"]: index.document.get("partialFilterExpression", {}) for index in INDEXES
}
# Fields an index could compare (what comes after them is the order: created_at, _id).
INDEXED = {name for keys in INDEX_KEYS.values() for name, _ in keys} - {"created_at", "_id"}


def equality_fields(filter: dict[str, Any]) -> set[str]:
    """The indexed fields ``filter`` compares for equality (``$eq``, or ``$in`` candidates);
    the others (action, entity, $or, $nor) filter what the index scan reaches."""
    found = set()
    for name, condition in filter.items():
        if name not in INDEXED:
            continue
        if not isinstance(condition, dict) or {"$eq", "$in"} & set(condition):
            found.add(name)
    return found


def check_served(find: Find, residual: frozenset[str] = frozenset()) -> str:
    """Check that one find() is an index's equality prefix, then its order; returns the
    index's name. ``residual``: equality fields the chosen index does not hold (filtered on
    the documents it reaches)."""
    equal = equality_fields(find.filter)
    assert residual <= equal, (residual, find.filter)
    served = equal - residual
    name = next(name for keys, name in INDEX_BY_FIELDS if set(keys) <= equal)
    keys = INDEX_KEYS[name]
    assert {field for field, _ in keys[: len(served)]} == served, (name, find.filter)
    order = keys[len(served) :]
    sort = find.sort or []
    reversed_order = [(field, -direction) for field, direction in order]
    assert sort in (order, reversed_order), (name, sort, find.filter)
    ranged = {"created_at"} & set(find.filter)
    assert ranged <= {field for field, _ in order}, (name, find.filter)
    for field, condition in PARTIAL[name].items():  # a partial index: the filter implies it
        assert condition == {"$exists": True}
        assert find.filter[field].get("$exists") is True, (name, find.filter)
    return name


@dataclass
class Data:
    client: Client
    moved: Client
    membership: Membership
    boss: Manager
    transaction: str
    times: list[dt.datetime]


@pytest.fixture
def spy(collection: Any) -> SpyCollection:
    return SpyCollection(collection)


@pytest.fixture
def audit(spy: SpyCollection) -> Iterator[AuditLog]:
    log = new_log(spy)
    yield log
    log.close()


@pytest.fixture
def data(
    audit: AuditLog, engine: Engine, spy: SpyCollection, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Data]:
    controlled_clock(monkeypatch)
    with Session(engine, expire_on_commit=False) as session:
        client, moved = Client(name="a"), Client(id=50, name="moved")
        boss = Manager(name="boss", budget=1)
        with audit.acting_as(42), audit.context(request_id="req-1"):
            session.add_all([client, moved, boss, Tag(label="t")])
            session.commit()
            membership = Membership(group="g", member_id=client.id)
            session.add(membership)
            session.commit()
        with audit.acting_as(7):
            client.name = "b"
            moved.id = 51
            session.commit()
            session.delete(boss)
            session.commit()
        (transaction,) = {d["transaction_id"] for d in spy.target.find({"object_id": 51})}
        yield Data(client, moved, membership, boss, transaction, commit_times(spy.target))


Call = Callable[[AuditLog, Data], Any]

SHAPES: dict[str, Call] = {
    "history": lambda log, d: list(log.history(d.client)),
    "history, limit": lambda log, d: list(log.history(d.client, limit=1)),
    "history across a key change": lambda log, d: list(log.history(d.moved)),
    "history, composite key": lambda log, d: list(log.history(d.membership)),
    "for_object, class": lambda log, d: list(log.for_object(Client, d.client.id)),
    "for_object, table name and text id": lambda log, d: list(
        log.for_object("clients", str(d.client.id))
    ),
    "for_object, every filter": lambda log, d: list(
        log.for_object(Client, 51, actions="update", since=d.times[0], until=d.times[-1], limit=5)
    ),
    "for_object, without models": lambda log, d: list(
        AuditReader(log.collection).for_object("clients", str(d.client.id))
    ),
    "updated_at": lambda log, d: log.updated_at(d.moved, "name"),
    "changed_by": lambda log, d: log.changed_by(d.client, "name"),
    "state_at": lambda log, d: log.state_at(Client, 51, d.times[0]),
    "state_at, subclass": lambda log, d: log.state_at(Manager, d.boss.id, d.times[0]),
    "by_user": lambda log, d: list(log.by_user(42)),
    "by_user, since and until": lambda log, d: list(
        log.by_user(42, since=d.times[0], until=d.times[-1])
    ),
    "by_user, nobody known": lambda log, d: list(log.by_user(None)),
    "by_user, actions and limit": lambda log, d: list(log.by_user(7, actions="delete", limit=2)),
    "for_table": lambda log, d: list(log.for_table(Client)),
    "for_table, every filter": lambda log, d: list(
        log.for_table(
            Client,
            actions=("delete",),
            fields=("email",),
            since=d.times[0],
            until=d.times[-1],
            limit=50,
        )
    ),
    "for_table, subclass": lambda log, d: list(log.for_table(Manager)),
    "for_table, base class": lambda log, d: list(log.for_table(Employee)),
    "for_transaction": lambda log, d: list(log.for_transaction(d.transaction)),
    "for_request": lambda log, d: list(log.for_request("req-1")),
    "find": lambda log, d: log.find(),
    "find, oldest first": lambda log, d: log.find(order="oldest"),
    "find, next page": lambda log, d: log.find(limit=1, after=log.find(limit=1).next_cursor),
    "find, next page oldest first": lambda log, d: log.find(
        limit=1, order="oldest", after=log.find(limit=1, order="oldest").next_cursor
    ),
    "find, table": lambda log, d: log.find(table=Client),
    "find, subclass": lambda log, d: log.find(table=Manager),
    "find, row": lambda log, d: log.find(table="clients", object_id=str(d.client.id)),
    "find, next page of a row": lambda log, d: log.find(
        table=Client, object_id=d.client.id, limit=1, after=log.find(limit=1).next_cursor
    ),
    "find, user": lambda log, d: log.find(user_id=42),
    "find, actions fields since until": lambda log, d: log.find(
        actions="update", fields="name", since=d.times[0], until=d.times[-1], limit=10
    ),
}

# Shapes with two equality fields no single index holds: served by one, filtered on the other.
RESIDUAL: dict[str, tuple[Call, frozenset[str]]] = {
    "by_user, table": (
        lambda log, d: list(log.by_user(42, table=Client)),
        frozenset({"table_name"}),
    ),
    "find, table and user": (
        lambda log, d: log.find(table=Client, user_id=42),
        frozenset({"table_name"}),
    ),
    "find, row and user": (
        lambda log, d: log.find(table=Client, object_id=d.client.id, user_id=7),
        frozenset({"current_user_id"}),
    ),
}


def test_every_index_the_queries_name_is_created() -> None:
    names = {name for _, name in INDEX_BY_FIELDS}
    assert names <= set(INDEX_KEYS)
    for keys, name in INDEX_BY_FIELDS:  # and its equality fields lead that index
        assert [field for field, _ in INDEX_KEYS[name][: len(keys)]] == list(keys)


def test_the_check_catches_a_query_no_index_serves() -> None:
    """The check itself: a sort the index does not give, a field between the equality
    fields and the order, a partial index its filter does not imply."""
    row = {"table_name": {"$eq": "clients"}, "object_id": {"$eq": 1}}
    newest = [("created_at", -1), ("_id", -1)]
    assert check_served(Find(row, newest, 10)) == "audit_row_history"
    with pytest.raises(AssertionError):
        check_served(Find(row, [("created_at", -1), ("_id", 1)], 10))
    with pytest.raises(AssertionError):
        check_served(Find(row, [("_id", -1)], 10))
    with pytest.raises(AssertionError):
        check_served(Find({"table_name": {"$eq": "c"}, "current_user_id": 1}, newest, 10))
    with pytest.raises(AssertionError):
        check_served(Find({"context.request_id": {"$eq": "r"}}, [("created_at", 1)], 10))


@pytest.mark.parametrize("shape", list(SHAPES))
def test_each_query_is_served_by_an_index(
    audit: AuditLog, data: Data, spy: SpyCollection, shape: str
) -> None:
    spy.reset()
    SHAPES[shape](audit, data)
    assert spy.finds, "no query sent"
    for find in spy.finds:
        check_served(find)


@pytest.mark.parametrize("shape", list(RESIDUAL))
def test_two_equality_fields_are_served_by_one_index_and_filtered_on_the_other(
    audit: AuditLog, data: Data, spy: SpyCollection, shape: str
) -> None:
    call, residual = RESIDUAL[shape]
    spy.reset()
    call(audit, data)
    main, *voids = spy.finds
    check_served(main, residual)
    for find in voids:
        check_served(find)


def test_the_shapes_use_every_index(audit: AuditLog, data: Data, spy: SpyCollection) -> None:
    used = set()
    for call in SHAPES.values():
        spy.reset()
        call(audit, data)
        used.update(check_served(find) for find in spy.finds)
    assert used | {"audit_chain"} == set(INDEX_KEYS)  # verify's: see the next test


def test_verify_walks_the_chains_in_the_order_of_their_index(
    audit: AuditLog, data: Data, spy: SpyCollection
) -> None:
    spy.reset()
    assert audit.verify() == []
    (find,) = spy.finds
    assert find.filter == {}
    assert find.sort == INDEX_KEYS["audit_chain"]
    assert find.batch_size > 0


def test_results_are_right_whatever_the_spy(audit: AuditLog, data: Data) -> None:
    """The shapes above return what they should: the spy does not hide empty answers."""
    assert [e.object_id for e in audit.history(data.moved)] == [51, 50]
    assert [e.action for e in audit.for_table(Manager)] == ["delete", "create"]
    assert len(list(audit.for_request("req-1"))) == 5
    assert audit.changed_by(data.client, "name") == 7


# -- streaming ------------------------------------------------------------------------------


@pytest.fixture
def many(audit: AuditLog, engine: Engine) -> int:
    """1,200 rows created in one commit by user 1."""
    with Session(engine) as session, audit.acting_as(1):
        session.add_all(Client(name=f"c{i}") for i in range(1_200))
        session.commit()
    return 1_200


@pytest.mark.parametrize(
    "read",
    [
        lambda log: log.for_table(Client),
        lambda log: log.by_user(1),
        lambda log: log.for_transaction(next(log.for_table(Client, limit=1)).transaction_id),
    ],
    ids=["for_table", "by_user", "for_transaction"],
)
def test_iterating_a_large_result_reads_it_in_batches(
    audit: AuditLog, many: int, spy: SpyCollection, read: Callable[[AuditLog], Iterator[Any]]
) -> None:
    entries = read(audit)
    spy.reset()

    next(entries)

    assert spy.pulled == reader.CHUNK < many  # the first batch, not the collection
    assert [find.batch_size for find in spy.finds[:1]] == [reader.CHUNK]
    assert 1 + sum(1 for _ in entries) == many
    assert spy.pulled == many


def test_a_limit_or_a_page_reads_no_more_than_it_needs(
    audit: AuditLog, many: int, spy: SpyCollection
) -> None:
    spy.reset()
    assert len(list(audit.for_table(Client, limit=3))) == 3
    assert spy.pulled == 3

    spy.reset()
    page = audit.find(limit=25)
    assert len(page) == 25
    assert spy.pulled == 26  # one more tells whether a next page exists


def test_a_long_row_history_is_read_in_batches(
    audit: AuditLog, engine: Engine, spy: SpyCollection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader, "CHUNK", 10)
    monkeypatch.setattr(row_history, "CHUNK", 10)
    with Session(engine) as session:
        client = Client(name="v0")
        session.add(client)
        session.commit()
        for version in range(1, 60):
            client.name = f"v{version}"
            session.commit()
        key = client.id
    spy.reset()

    newest = next(audit.for_object(Client, key))
    assert newest.changes["name"].new == "v59"
    assert spy.pulled == 10

    spy.reset()
    assert audit.updated_at(client, "name") == newest.created_at
    assert spy.pulled == 1  # one entry asked for: one read

    spy.reset()
    state = audit.state_at(Client, key, dt.datetime.now(UTC))
    assert state is not None and state["name"] == "v59"
    # The entry holding the key at that moment, then the row's history from it, in chunks.
    assert spy.pulled == 1 + 60
    assert len([f for f in spy.finds if "voids" in f.filter]) == 1 + 6
