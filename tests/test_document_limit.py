"""The 16 MiB rule: a document over MongoDB's limit is stored shrunk, by a documented rule
that keeps what each left-out part was (its type, length, size and SHA-256, and its head).

Most properties run with the limit lowered to 64 KiB, so that generated documents cross it
quickly; the real limit is shown on a many-to-many change of two million keys and on a
17 MiB text committed through SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import pickle
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import bson
import mongomock
import pytest
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, Integer, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from audit_mongo import AuditEntry, AuditLog, encoding
from audit_mongo.encoding import MAX_DOCUMENT_BYTES, digest, repair
from audit_mongo.normalise import column_value_to_bson, to_bson
from audit_mongo.reify import reify
from tests.hostile_values import PLAIN_VALUES, PROPERTIES, TEXT, ReprRaises

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")
SMALL_LIMIT = 64 * 1024
# The limit is lowered by a function-scoped fixture, the same for every example.
DOCUMENTS = settings(
    PROPERTIES,
    max_examples=100,
    suppress_health_check=[*PROPERTIES.suppress_health_check, HealthCheck.function_scoped_fixture],
)


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(encoding, "MAX_DOCUMENT_BYTES", SMALL_LIMIT)
    return SMALL_LIMIT


def document(changes: Any, **fields: Any) -> dict[str, Any]:
    return {
        "_id": ObjectId(b"\x01" * 12),
        "current_user_id": 42,
        "action": "update",
        "table_name": "t",
        "object_id": 5,
        "changes": changes,
        "schema_version": 1,
        **fields,
    }


def size(value: Any) -> int:
    return len(bson.encode(value))


def sha256(value: Any) -> str:
    """The digest the README documents, computed here on its own."""
    if isinstance(value, str):
        return hashlib.sha256(value.encode("utf-8")).hexdigest()
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    return hashlib.sha256(bson.encode({"v": value})).hexdigest()


# -- generated pathological documents ------------------------------------------------------

LONG_TEXT = st.builds(
    lambda n, c: c * n, st.integers(0, 120_000), st.sampled_from(["x", "é", "😀", "a\ud800"])
)
LONG_BINARY = st.builds(bytes, st.integers(0, 120_000))
MANY_KEYS = st.builds(lambda n: list(range(n)), st.integers(0, 12_000))
MANY_PAIRS = st.builds(lambda n: [[i, f"key {i}"] for i in range(n)], st.integers(0, 3_000))
NORMALISED = PLAIN_VALUES.map(lambda value: column_value_to_bson(value, None, None, "t.c"))
RAW = st.one_of(st.sets(st.integers(), max_size=3), st.decimals(), st.builds(ReprRaises))
VALUE = st.one_of(
    NORMALISED,
    LONG_TEXT,
    LONG_BINARY,
    MANY_KEYS,
    st.dictionaries(TEXT, LONG_TEXT, max_size=3),
    st.lists(LONG_TEXT, max_size=3),
    RAW,
)
SIDE = st.one_of(st.lists(VALUE, max_size=3), MANY_KEYS, MANY_PAIRS)
CHANGE = st.fixed_dictionaries({"added": SIDE, "deleted": SIDE})
MANY_FIELDS = st.builds(
    lambda n, value: {f"c{i}": {"added": [value], "deleted": []} for i in range(n)},
    st.integers(0, 2_000),
    st.one_of(st.integers(), st.text(max_size=60)),
)
CHANGES = st.one_of(st.dictionaries(TEXT, CHANGE, max_size=4), MANY_FIELDS)
DOCUMENTS_OVER_THE_LIMIT = st.builds(
    document,
    CHANGES,
    object_id=st.one_of(st.integers(), st.text(max_size=20), LONG_TEXT),
    context=st.dictionaries(TEXT, st.one_of(NORMALISED, LONG_TEXT), max_size=3),
)


def encodes(value: Any) -> bool:
    try:
        bson.encode({"v": value})
    except Exception:
        return False
    return True


@DOCUMENTS
@given(DOCUMENTS_OVER_THE_LIMIT)
def test_a_repaired_document_always_encodes_within_the_limit_with_its_id_and_fields(
    small_limit: int, original: dict[str, Any]
) -> None:
    before = pickle.dumps(original)

    repaired = repair(original)

    assert size(repaired) <= small_limit
    assert repaired["_id"] is original["_id"]
    assert list(repaired) == list(original)
    assert pickle.dumps(original) == before  # the original is left as it was


@DOCUMENTS
@given(DOCUMENTS_OVER_THE_LIMIT)
def test_repair_is_deterministic_and_leaves_a_document_that_fits_as_it_is(
    small_limit: int, original: dict[str, Any]
) -> None:
    repaired = repair(original)

    assert bson.encode(repair(original)) == bson.encode(repaired)
    assert repair(repaired) is repaired
    if encodes(original) and size(original) <= small_limit:
        assert repaired is original


@DOCUMENTS
@given(DOCUMENTS_OVER_THE_LIMIT)
def test_fields_other_than_changes_are_kept_when_changes_is_what_is_too_large(
    small_limit: int, original: dict[str, Any]
) -> None:
    others = {k: v for k, v in original.items() if k != "changes"}
    if not encodes(others) or size(others) > small_limit // 4:
        return

    repaired = repair(original)

    assert {k: v for k, v in repaired.items() if k != "changes"} == others


@DOCUMENTS
@given(DOCUMENTS_OVER_THE_LIMIT)
def test_every_marker_describes_the_value_it_stands_for(
    small_limit: int, original: dict[str, Any]
) -> None:
    repaired = repair(original)

    for name, change in repaired["changes"].items():
        before = original["changes"].get(name) if isinstance(change, dict) else None
        if not isinstance(before, dict) or "omitted" in change:
            continue  # a field marker, or the changes marker: checked by the stage tests
        for side, values in change.items():
            if values == before[side] or not encodes(before[side]):
                continue
            if isinstance(values[0], dict) and values[0].get("omitted") == "too many values":
                assert len(values) == 1
                check_marker(values[0], before[side])
                continue
            for stored, value in zip(values, before[side], strict=True):
                if stored is not value:
                    check_marker(stored, value)


def check_marker(marker: dict[str, Any], value: Any) -> None:
    assert marker["sha256"] == sha256(value)
    assert marker["bson_bytes"] == size({"v": value})
    assert marker["length"] == len(value)
    if isinstance(value, (str, bytes, list)):
        assert value[: len(marker["head"])] == marker["head"]
    assert size({"v": marker}) < size({"v": value})


# -- the rule, stage by stage --------------------------------------------------------------


def test_the_largest_values_are_truncated_first_and_only_as_many_as_needed(
    small_limit: int,
) -> None:
    changes = {f"c{i}": {"added": ["x" * (9_000 + i)], "deleted": []} for i in range(8)}

    repaired = repair(document(changes))

    truncated = [n for n, c in repaired["changes"].items() if isinstance(c["added"][0], dict)]
    assert truncated == ["c6", "c7"]  # 72 KiB of values: c7 alone would leave it over
    marker = repaired["changes"]["c7"]["added"][0]
    assert marker == {
        "omitted": "too large",
        "type": "string",
        "length": 9_007,
        "bson_bytes": size({"v": "x" * 9_007}),
        "sha256": hashlib.sha256(b"x" * 9_007).hexdigest(),
        "head": "x" * 100,
    }


def test_binary_arrays_and_documents_keep_their_first_items(small_limit: int) -> None:
    blob, keys = bytes(range(256)) * 300, list(range(20_000))
    record = {"title": "t", "body": "b" * 70_000, "tags": [1, 2]}
    changes = {"blob": {"added": [blob], "deleted": []}, "json": {"added": [keys, record]}}

    repaired = repair(document(changes))

    blob_marker = repaired["changes"]["blob"]["added"][0]
    assert blob_marker["type"] == "binData" and blob_marker["head"] == blob[:100]
    keys_marker, record_marker = repaired["changes"]["json"]["added"]
    assert keys_marker["type"] == "array" and keys_marker["head"] == list(range(10))
    assert record_marker["type"] == "object" and record_marker["length"] == 3
    assert record_marker["head"] == {"title": "t"}  # the body is over the head's 1 KiB


def test_a_collection_change_of_many_small_keys_becomes_a_list_marker(small_limit: int) -> None:
    keys = [[i, f"k{i}"] for i in range(5_000)]
    changes = {"tags": {"added": keys, "deleted": [[0, "old"]]}, "name": {"added": ["n"]}}

    repaired = repair(document(changes))

    (marker,) = repaired["changes"]["tags"]["added"]
    assert marker["omitted"] == "too many values"
    assert marker["length"] == 5_000
    assert marker["sha256"] == sha256(keys)
    assert marker["head"] == keys[:10]
    assert repaired["changes"]["tags"]["deleted"] == [[0, "old"]]
    assert repaired["changes"]["name"] == {"added": ["n"]}


def test_thousands_of_small_fields_become_field_markers_then_one_marker(
    small_limit: int,
) -> None:
    wide = {f"c{i}": {"added": ["v" * 200], "deleted": ["w" * 200]} for i in range(300)}
    wider = {f"c{i}": {"added": [i], "deleted": []} for i in range(20_000)}

    fields = repair(document(wide))["changes"]
    whole = repair(document(wider))["changes"]

    shrunk = [c for c in fields.values() if "omitted" in c]
    assert shrunk and len(shrunk) < len(fields)
    assert set(shrunk[0]) == {"omitted", "type", "length", "bson_bytes", "sha256"}
    assert whole["omitted"] == "too many fields"
    assert whole["length"] == 20_000
    assert whole["sha256"] == sha256(wider)


def test_a_context_value_too_large_is_truncated_and_the_request_id_kept(
    small_limit: int,
) -> None:
    context = {"request_id": "r-1", "note": "n" * 100_000}

    repaired = repair(document({"a": {"added": [1], "deleted": []}}, context=context))

    assert repaired["context"]["request_id"] == "r-1"
    assert repaired["context"]["note"]["sha256"] == sha256("n" * 100_000)
    assert repaired["changes"] == {"a": {"added": [1], "deleted": []}}


def test_equal_values_are_truncated_in_document_order(small_limit: int) -> None:
    changes = {f"c{i}": {"added": ["x" * 20_000], "deleted": []} for i in range(4)}

    repaired = repair(document(changes))

    assert [isinstance(c["added"][0], dict) for c in repaired["changes"].values()] == [
        True,
        False,
        False,
        False,
    ]


def test_a_repair_leaves_room_for_fields_added_after_it(small_limit: int) -> None:
    changes = {"body": {"added": ["x" * 100_000], "deleted": []}}

    repaired = repair(document(changes))
    repaired["chain"] = {"id": "c" * 32, "seq": 10**6, "hash": "h" * 64}

    assert size(repaired) <= small_limit


def test_repair_takes_a_lower_limit() -> None:
    original = document({"body": {"added": ["x" * 50_000], "deleted": []}})

    assert repair(original) is original
    assert size(repair(original, limit=40_000)) <= 40_000


def test_the_digest_of_a_value_you_hold_matches_its_marker(small_limit: int) -> None:
    text, amounts = "é" * 70_000, [Decimal(i) for i in range(8_000)]
    changes = {"body": {"added": [text]}, "amounts": {"added": [to_bson(amounts)]}}

    repaired = repair(document(changes))

    assert repaired["changes"]["body"]["added"][0]["sha256"] == digest(text)
    assert repaired["changes"]["amounts"]["added"][0]["sha256"] == digest(amounts)
    assert digest(text) == hashlib.sha256(text.encode()).hexdigest()


# -- the real limit --------------------------------------------------------------------------


def test_a_many_to_many_change_of_two_million_keys_is_stored_within_16_mib() -> None:
    keys = list(range(2_000_000))
    original = document({"tags": {"added": keys, "deleted": [7]}})

    repaired = repair(original)

    assert size(repaired) <= MAX_DOCUMENT_BYTES
    (marker,) = repaired["changes"]["tags"]["added"]
    assert marker["length"] == 2_000_000
    assert marker["sha256"] == hashlib.sha256(bson.encode({"v": keys})).hexdigest()
    assert repaired["changes"]["tags"]["deleted"] == [7]


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50))
    body: Mapped[str | None] = mapped_column(String)


@pytest.fixture
def notes_engine(tmp_path: Any) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'notes.db'}")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def test_a_17_mib_text_commits_and_its_document_keeps_length_digest_and_head(
    notes_engine: Engine,
) -> None:
    body = "Ω" + "h" * (17 * 1024 * 1024)
    collection = mongomock.MongoClient(tz_aware=True)["app"]["user_logs"]
    audit = AuditLog(collection, outbox=notes_engine)
    audit.track(Note)
    try:
        with Session(notes_engine) as session:
            note = Note(title="big", body=body)
            session.add(note)
            session.commit()
            assert session.query(Note).one().body == body  # the application's commit held
            (entry,) = audit.history(note)
    finally:
        audit.close()

    (stored,) = collection.find()
    assert size(stored) <= MAX_DOCUMENT_BYTES
    assert stored["changes"]["title"] == {"added": ["big"], "deleted": []}
    marker = stored["changes"]["body"]["added"][0]
    assert marker["length"] == len(body)
    assert marker["sha256"] == hashlib.sha256(body.encode()).hexdigest() == digest(body)
    assert marker["head"] == body[:100]
    assert entry.changes["body"].new == marker  # the query API reads it back as stored


def stored_document(changes: Any) -> dict[str, Any]:
    return {
        "_id": bson.ObjectId(),
        "action": "update",
        "table_name": "clients",
        "object_id": 1,
        "current_user_id": None,
        "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        "transaction_id": "t",
        "changes": changes,
    }


def test_a_field_shrunk_to_a_marker_reads_as_that_marker_on_both_sides() -> None:
    marker = {"omitted": "too many fields", "type": "object", "length": 2, "bson_bytes": 99}
    entry = AuditEntry.from_document(
        stored_document({"name": marker, "phone": {"added": ["1"], "deleted": ["2"]}}), None
    )

    assert entry.changes["name"].old == entry.changes["name"].new == marker
    assert entry.changes["phone"].new == "1"
    assert entry.changes_omitted is None


def test_changes_shrunk_to_one_marker_are_said_to_be_omitted() -> None:
    marker = {"omitted": "too many fields", "type": "object", "length": 700000}
    entry = AuditEntry.from_document(stored_document(marker), None)

    assert dict(entry.changes) == {}
    assert entry.changes_omitted == marker


@pytest.mark.parametrize(
    "value",
    [2**70, -(2**70), 10**5000, -(10**5000) + 7],
    ids=["2**70", "-2**70", "10**5000", "-10**5000+7"],
)
def test_an_integer_of_any_size_reads_back_as_itself(value: int) -> None:
    """Beyond 64 bits an int is stored as text: decimal, or hexadecimal past Python's limit
    on decimal conversion; the query API reads both back."""
    assert reify(to_bson(value), Integer()) == value
