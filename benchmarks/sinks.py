"""Where audit_mongo and the blog post's listeners send their documents.

- ``driver``: a stand-in collection that does what pymongo does to a document before it
  reaches the socket (an ``_id`` when there is none, ``bson.encode``) and then drops it, so
  the figures are what the auditing code costs, without any store's cost;
- ``mongomock``: an in-memory Mongo, which costs far more per document than a server's
  client does (it copies, validates and indexes every document in Python);
- ``server``: a real MongoDB named by ``AUDIT_MONGO_URI``; the collection is dropped
  before each run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument
from pymongo.results import InsertManyResult, InsertOneResult

SINK_KINDS = ("driver", "mongomock", "server")
LABELS = {"driver": "driver cost", "mongomock": "mongomock", "server": "server"}
DATABASE = "audit_mongo_bench"
COLLECTION = "user_logs"
SERVER_VARIABLE = "AUDIT_MONGO_URI"


class EncodingCollection:
    """Takes inserts as a pymongo ``Collection`` would, encodes each document as pymongo
    does before sending it, and keeps only its ``_id`` (12 bytes in one ``bytearray``), so
    that documents sent twice are counted once, as a server (duplicate key) would keep
    them, and can be told apart."""

    name = COLLECTION
    full_name = f"{DATABASE}.{COLLECTION}"

    def __init__(self) -> None:
        self.sent = 0
        self._object_ids = bytearray()
        self._other_ids: list[Any] = []

    def insert_many(
        self, documents: Iterable[MutableMapping[str, Any]], ordered: bool = True, **_: Any
    ) -> InsertManyResult:
        ids = [self._take(document) for document in documents]
        return InsertManyResult(ids, acknowledged=True)

    def insert_one(self, document: MutableMapping[str, Any], **_: Any) -> InsertOneResult:
        return InsertOneResult(self._take(document), acknowledged=True)

    def _take(self, document: MutableMapping[str, Any]) -> Any:
        inserted = _encode(document)
        if isinstance(inserted, bson.ObjectId):
            self._object_ids += inserted.binary
        else:
            self._other_ids.append(inserted)
        self.sent += 1
        return inserted

    def with_options(self, **_: Any) -> EncodingCollection:
        return self

    def count_documents(self, query: Mapping[str, Any], **_: Any) -> int:
        """Distinct documents, as a server would hold them (after the clock has stopped)."""
        ids = self._object_ids
        object_ids = {bytes(ids[i : i + 12]) for i in range(0, len(ids), 12)}
        return len(object_ids) + len(set(map(repr, self._other_ids)))


def _encode(document: MutableMapping[str, Any]) -> Any:
    """pymongo's insert: an ``_id`` unless the document has one (or is raw BSON), then the
    BSON encoding (which takes a raw document's bytes as they are)."""
    if not isinstance(document, RawBSONDocument) and "_id" not in document:
        document["_id"] = bson.ObjectId()
    bson.encode(document)
    return document["_id"]


@dataclass
class Sink:
    """A collection and what closes it."""

    kind: str
    collection: Any
    client: Any = None

    @property
    def label(self) -> str:
        return LABELS[self.kind]

    def count(self) -> int:
        return int(self.collection.count_documents({}))

    def duplicates(self) -> int:
        """Documents sent more than once (only the driver-cost sink sees them: a server or
        mongomock refuses the copy with a duplicate key, which audit_mongo counts as
        delivered)."""
        if isinstance(self.collection, EncodingCollection):
            return self.collection.sent - self.count()
        return 0

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def unavailable(kind: str) -> str | None:
    """Why the sink cannot be used here, or None."""
    if kind == "mongomock":
        try:
            import mongomock  # noqa: F401
        except ImportError:
            return "mongomock is not installed: pip install -e '.[bench]'"
    if kind == "server" and not os.environ.get(SERVER_VARIABLE):
        return f"--sink server needs {SERVER_VARIABLE}=mongodb://host:27017"
    return None


def open_sink(kind: str) -> Sink:
    """A fresh, empty sink of ``kind``."""
    if kind == "driver":
        return Sink(kind, EncodingCollection())
    if kind == "mongomock":
        import mongomock

        client = mongomock.MongoClient(tz_aware=True)
        return Sink(kind, client[DATABASE][COLLECTION], client)
    if kind == "server":
        import pymongo

        client = pymongo.MongoClient(os.environ[SERVER_VARIABLE], tz_aware=True)
        collection = client[DATABASE][COLLECTION]
        collection.drop()
        return Sink(kind, collection, client)
    raise ValueError(f"unknown sink {kind!r}: one of {', '.join(SINK_KINDS)}")
