"""Each document is encoded once: the bytes the seal signs, with the link and hash appended,
are the bytes sent to Mongo (pymongo takes them as a raw document). They must be exactly
what ``bson.encode`` gives for the document as the pipeline keeps it, or a real server would
store something other than what the pending stores, ``verify`` and mongomock see."""

from __future__ import annotations

import datetime as dt
from typing import Any

import bson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_mongo.chain import CHAIN_FIELD, Chain, Chains, seal, signed_bytes
from audit_mongo.delivery import MongoWriter
from audit_mongo.document import new_object_id
from audit_mongo.encoding import MAX_DOCUMENT_BYTES
from audit_mongo.normalise import column_value_to_bson
from audit_mongo.signing import SigningKeys
from tests.hostile_values import HOSTILE, PROPERTIES

KEYS = [SigningKeys(), SigningKeys({"2026-12": b"k" * 32})]
NOW = dt.datetime(2026, 12, 5, 3, 4, 5, 678000, tzinfo=dt.timezone.utc)


def document(value: Any, *, created_at: Any = NOW) -> dict[str, Any]:
    return {
        "_id": new_object_id(),
        "current_user_id": 7,
        "action": "update",
        "table_name": "clients",
        "object_id": 5,
        "changes": {"name": {"added": [value], "deleted": ["old"]}},
        "created_at": created_at,
        "transaction_id": "t",
        "schema_version": 1,
    }


def assert_sent_as_encoded(sent: bytes, sealed: dict[str, Any], keys: SigningKeys) -> None:
    assert sent == bson.encode(sealed)
    link = sealed[CHAIN_FIELD]
    assert keys.matches(link.get("key"), signed_bytes(sealed), link["hash"])


@pytest.mark.parametrize("keys", KEYS, ids=["hashed", "signed"])
@settings(PROPERTIES)
@given(values=st.lists(HOSTILE, min_size=1, max_size=4))
def test_the_bytes_sent_are_the_sealed_document_encoded(
    keys: SigningKeys, values: list[Any]
) -> None:
    chain = Chain.start()  # several documents: links with prev, prev_id and prev_at
    for value in values:
        normalised = column_value_to_bson(value, None, None, "clients.name")
        sealed = document(normalised)
        sent, repaired = seal(sealed, chain, keys)
        assert not repaired
        assert_sent_as_encoded(sent, sealed, keys)


@settings(PROPERTIES, max_examples=40)
@given(value=HOSTILE)
def test_a_document_repaired_by_the_seal_is_sent_as_repaired(value: Any) -> None:
    """Raw values (not normalised) that BSON refuses are repaired in place before signing."""
    sealed = document({"raw": value, "set": {1, 2}})
    sent, repaired = seal(sealed, Chain.start(), KEYS[1])
    assert repaired
    assert_sent_as_encoded(sent, sealed, KEYS[1])


def test_a_document_too_large_is_shrunk_and_sent_as_shrunk() -> None:
    sealed = document("x" * MAX_DOCUMENT_BYTES)
    sent, repaired = seal(sealed, Chain.start(), KEYS[0])
    assert repaired
    assert len(sent) <= MAX_DOCUMENT_BYTES
    assert_sent_as_encoded(sent, sealed, KEYS[0])


def test_known_bytes_are_used_as_they_are_and_give_the_same_result() -> None:
    """The outbox path: the document's BSON is already known, so it is not encoded again."""
    from_outbox, encoded = document("a"), document("a")
    encoded["_id"] = from_outbox["_id"]
    keys = KEYS[1]
    first, _ = seal(encoded, Chain("c" * 32, 0), keys)
    second, _ = seal(from_outbox, Chain("c" * 32, 0), keys, bson.encode(document_copy(from_outbox)))
    assert first == second
    assert_sent_as_encoded(second, from_outbox, keys)


def document_copy(sealed: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sealed.items() if k != CHAIN_FIELD}


def test_a_link_past_int32_positions_is_encoded_as_bson_would() -> None:
    chain = Chain("c" * 32, 0, seq=2**31 + 5, prev_hash="f" * 64, prev_id=new_object_id())
    chain.prev_at = NOW
    sealed = document("a")
    sent, _ = seal(sealed, chain, KEYS[0])
    assert_sent_as_encoded(sent, sealed, KEYS[0])


class RecordingCollection:
    """What a collection receives; keeps the objects themselves, as pymongo gets them."""

    def __init__(self) -> None:
        self.received: list[Any] = []

    def insert_many(self, documents: list[Any], ordered: bool = True) -> Any:
        self.received.extend(documents)
        return type("Result", (), {"inserted_ids": [d["_id"] for d in documents]})()


def test_the_writer_hands_pymongo_the_sealed_bytes_and_mongomock_the_same_dict() -> None:
    collection = RecordingCollection()
    writer = MongoWriter(collection, keys=KEYS[1])
    documents = [document("a"), document("b")]
    assert writer.write(documents) == 2
    for received, kept in zip(collection.received, documents, strict=True):
        assert received == kept  # a dict, as mongomock and fakes read it
        assert received.raw == bson.encode(kept)  # what pymongo's encoder sends instead
        assert bson.encode(received) == bson.encode(kept)


def test_a_redelivered_document_is_sent_as_the_dict_it_is() -> None:
    """A document linked before (pending, sent again) keeps its link and is encoded by
    the driver: there are no bytes of it to reuse."""
    collection = RecordingCollection()
    writer = MongoWriter(collection, keys=KEYS[0])
    linked = document("a")
    Chains(KEYS[0]).seal([linked])
    writer.write([linked])
    assert collection.received == [linked]
    assert not hasattr(collection.received[0], "raw")
