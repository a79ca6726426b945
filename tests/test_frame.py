"""A transaction's changes past SPILL_AT rows move to disk and behave exactly as in memory:
the same netting, the same order, the same documents."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, update
from sqlalchemy.orm import Session

from audit_mongo import AuditLog, frame
from audit_mongo.changes import RowChange, merge_collections
from audit_mongo.frame import Frame, SpillingList
from tests.conftest import stored
from tests.models import Client


def created(i: int) -> RowChange:
    return RowChange("t", i, "create", {}, {"n": i})


def updated(i: int, old: int, new: int) -> RowChange:
    return RowChange("t", i, "update", {"n": old}, {"n": new})


@pytest.fixture
def small_spill(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(frame, "SPILL_AT", 5)
    return 5


def test_a_spilled_frame_nets_and_keeps_first_change_order(small_spill: int) -> None:
    rows = Frame()
    for i in range(12):
        rows.record(("t", (i,)), created(i))
    rows.record(("t", (3,)), updated(3, 3, 30))  # nets into the create, keeps its place
    rows.record(("t", (4,)), RowChange("t", 4, "delete", {"n": 4}, {}))  # cancels the create

    assert rows._disk is not None  # past SPILL_AT rows it lives on disk
    changes = list(rows.changes())
    assert [c.object_id for c in changes] == [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11]
    assert changes[3].action == "create" and changes[3].new == {"n": 30}
    assert len(rows) == 11
    rows.close()


def test_a_spilled_frame_follows_a_key_change_and_absorbs_a_savepoint(small_spill: int) -> None:
    root, savepoint = Frame(), Frame()
    for i in range(8):
        root.record(("t", (i,)), updated(i, 0, 1))
    rekeyed = RowChange("t", 100, "update", {"id": 2}, {"id": 100}, previous_object_id=2)
    rekeyed.previous_key = ("t", (2,))
    savepoint.record(("t", (100,)), rekeyed)
    for i in range(8):
        savepoint.record(("t", (i + 50,)), created(i + 50))

    root.absorb(savepoint)

    by_id = {c.object_id: c for c in root.changes()}
    assert 2 not in by_id
    assert by_id[100].old == {"n": 0, "id": 2} and by_id[100].new == {"n": 1, "id": 100}
    assert by_id[100].previous_object_id == 2
    assert len(root) == 16  # 8 rows, one of them re-keyed, and 8 created
    root.close()


def test_a_spilling_list_returns_every_item_in_order(small_spill: int) -> None:
    items = SpillingList()
    for i in range(23):
        items.append(i)

    assert len(items) == 23
    assert [i for chunk in items.chunks() for i in chunk] == list(range(23))
    assert max(len(chunk) for chunk in items.chunks()) == small_spill
    items.close()


def run_transaction(engine: Engine, collection: Any) -> list[tuple[Any, ...]]:
    audit = AuditLog(collection)
    audit.track(Client)
    try:
        with Session(engine) as session:
            session.execute(insert(Client), [{"name": f"n{i}", "phone": "0"} for i in range(30)])
            first = [f"n{i}" for i in range(20)]
            session.execute(update(Client).where(Client.name.in_(first)).values(phone="1"))
            with session.begin_nested():
                last = [f"n{i}" for i in range(25, 30)]
                session.execute(delete(Client).where(Client.name.in_(last)))
            savepoint = session.begin_nested()
            session.execute(update(Client).values(name="lost"))
            savepoint.rollback()
            session.add(Client(name="orm"))
            session.commit()
    finally:
        audit.close()
    # the ids differ between runs on PostgreSQL (a sequence does not restart)
    documents = [
        (d["action"], {k: v for k, v in d["changes"].items() if k != "id"})
        for d in stored(collection)
    ]
    collection.delete_many({})
    return documents


def test_spilled_and_in_memory_transactions_write_the_same_documents(
    engine: Engine, collection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_memory = run_transaction(engine, collection)
    with Session(engine) as session:
        session.execute(delete(Client))
        session.commit()
    monkeypatch.setattr(frame, "SPILL_AT", 4)
    spilled = run_transaction(engine, collection)

    assert len(in_memory) == 26  # 25 rows kept of 30 created, and one from the ORM
    assert spilled == in_memory


def moved(old: int, new: int) -> RowChange:
    change = RowChange("t", new, "update", {"id": old}, {"id": new}, previous_object_id=old)
    change.previous_key = ("t", (old,))
    return change


@pytest.mark.parametrize("spill_at", [1_000, 1])
def test_keys_swapped_in_one_batch_stay_two_rows(
    spill_at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frame, "SPILL_AT", spill_at)
    rows = Frame()
    rows.record(("t", (1,)), updated(1, 0, 1))
    rows.record(("t", (2,)), updated(2, 0, 2))

    rows.record_all([(("t", (2,)), moved(1, 2)), (("t", (1,)), moved(2, 1))], may_move=True)

    by_id = {c.object_id: c for c in rows.changes()}
    assert by_id[2].previous_object_id == 1 and by_id[2].old == {"n": 0, "id": 1}
    assert by_id[1].previous_object_id == 2 and by_id[1].old == {"n": 0, "id": 2}
    assert len(rows) == 2
    rows.close()


@pytest.mark.parametrize("spill_at", [1_000, 1])
def test_a_row_moving_into_a_deleted_rows_key_keeps_the_delete(
    spill_at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frame, "SPILL_AT", spill_at)
    rows = Frame()
    rows.record(("t", (1,)), updated(1, 0, 1))
    rows.record_all([(("t", (30,)), moved(1, 30))], may_move=True)
    rows.record(("t", (2,)), RowChange("t", 2, "delete", {"n": 2}, {}))
    rows.record_all([(("t", (2,)), moved(30, 2))], may_move=True)

    changes = list(rows.changes())
    assert [(c.action, c.object_id, c.previous_object_id) for c in changes] == [
        ("delete", 2, None),
        ("update", 2, 1),
    ]
    assert changes[1].old == {"n": 0, "id": 1} and changes[1].new == {"n": 1, "id": 2}
    rows.close()


def test_keys_equal_in_memory_are_equal_on_disk(small_spill: int) -> None:
    rows = Frame()
    for i in range(small_spill + 1):
        rows.record(("t", (Decimal(i),)), created(i))
    rows.record(("t", (Decimal("3.00"),)), updated(3, 3, 30))
    paris = dt.timezone(dt.timedelta(hours=1))
    rows.record(("t", (dt.datetime(2026, 1, 1, 1, tzinfo=paris),)), created(90))
    rows.record(("t", (dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),)), updated(90, 90, 91))

    assert rows._disk is not None
    changes = {c.object_id: c for c in rows.changes()}
    assert changes[3].action == "create" and changes[3].new == {"n": 30}
    assert changes[90].new == {"n": 91}
    assert len(rows) == small_spill + 2
    rows.close()


def test_collection_changes_net_out_by_related_key_composite_included() -> None:
    earlier = {"tags": ([1, [2, "b"]], [3])}
    later = {"tags": ([3, 4], [[2, "b"]]), "owners": ([9], [])}

    assert merge_collections(earlier, later) == {"tags": ([1, 4], []), "owners": ([9], [])}
