"""Stand-ins for a Mongo collection that fail on purpose, or that several processes share."""

from __future__ import annotations

import socket
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import bson
from bson.codec_options import CodecOptions
from pymongo.errors import BulkWriteError, OperationFailure


def closed_loopback_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FailingCollection:
    """A collection whose insert_many raises ``error`` every time."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    def insert_many(self, documents: Any, ordered: bool = True) -> None:
        self.calls += 1
        raise self.error


class FailsOnce:
    """The first insert raises ``error`` (a cut-off connection, a refusal not retried);
    the rest reach ``target``."""

    def __init__(self, target: Any, error: BaseException) -> None:
        self.target = target
        self.error = error
        self.calls = 0

    def insert_many(self, documents: Any, ordered: bool = True) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise self.error
        return self.target.insert_many(documents, ordered=ordered)


class Switchable:
    """Delegates to ``target``, which a test swaps to bring Mongo "back"."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.calls = 0

    def insert_many(self, documents: Sequence[Any], ordered: bool = True) -> Any:
        self.calls += 1
        return self.target.insert_many(documents, ordered=ordered)


class DropsMidBatch:
    """Stores the first ``stored`` documents of the first batch, then fails with ``error``
    (a connection dropped in the middle of a batch); later calls reach ``target``."""

    def __init__(self, target: Any, stored: int, error: BaseException) -> None:
        self.target = target
        self.stored = stored
        self.error = error
        self.calls = 0

    def insert_many(self, documents: Sequence[Any], ordered: bool = True) -> Any:
        self.calls += 1
        if self.calls == 1:
            self.target.insert_many(list(documents)[: self.stored], ordered=ordered)
            raise self.error
        return self.target.insert_many(documents, ordered=ordered)


class FileCollection:
    """A collection kept in a SQLite file, so that several processes share it, with
    Mongo's ``_id`` uniqueness: a duplicate raises the ``BulkWriteError`` (code 11000) a
    real server sends. For the multi-process tests when no real MongoDB is configured."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS docs (id BLOB PRIMARY KEY, doc BLOB)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def insert_many(self, documents: Sequence[Any], ordered: bool = True) -> None:
        errors = []
        with self._lock, self._connect() as db:
            for index, document in enumerate(documents):
                key = bson.encode({"_id": document["_id"]})
                try:
                    db.execute("INSERT INTO docs VALUES (?, ?)", (key, bson.encode(document)))
                except sqlite3.IntegrityError:
                    errors.append({"index": index, "code": 11000, "errmsg": "E11000 duplicate"})
        if errors:
            inserted = len(documents) - len(errors)
            raise BulkWriteError(
                {"writeErrors": errors, "writeConcernErrors": [], "nInserted": inserted}
            )

    def find(self) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute("SELECT doc FROM docs").fetchall()
        return [bson.decode(row[0], CodecOptions(tz_aware=True)) for row in rows]


class Gate:
    """Holds every write until the test opens the gate; ``entered`` is set once a write
    waits (a batch in flight)."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.open = threading.Event()
        self.entered = threading.Event()

    def insert_many(self, documents: Sequence[Any], ordered: bool = True) -> Any:
        self.entered.set()
        self.open.wait(10)
        return self.target.insert_many(documents, ordered=ordered)


class Validator:
    """Refuses, as a collection validator does (write error code 121), each document
    ``refuses`` picks, and writes the others to ``target``."""

    def __init__(self, target: Any, refuses: Callable[[Mapping[str, Any]], bool]) -> None:
        self.target = target
        self.refuses = refuses

    def insert_many(self, documents: Sequence[Any], ordered: bool = True) -> None:
        errors = [
            {"index": index, "code": 121, "errmsg": "Document failed validation"}
            for index, document in enumerate(documents)
            if self.refuses(document)
        ]
        accepted = [document for document in documents if not self.refuses(document)]
        if accepted:
            self.target.insert_many(accepted, ordered=ordered)
        if errors:
            raise BulkWriteError(
                {"writeErrors": errors, "writeConcernErrors": [], "nInserted": len(accepted)}
            )


class RefusesBatches:
    """Fails a whole batch holding a document ``refuses`` picks, with a server error that is
    not a validator's (a primary stepping down, say); writes other batches to ``target``."""

    def __init__(self, target: Any, refuses: Callable[[Mapping[str, Any]], bool]) -> None:
        self.target = target
        self.refuses = refuses

    def insert_many(self, documents: Sequence[Any], ordered: bool = True) -> Any:
        if any(self.refuses(document) for document in documents):
            raise OperationFailure("not primary", code=10107)
        return self.target.insert_many(documents, ordered=ordered)
