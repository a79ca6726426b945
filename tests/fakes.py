"""Stand-ins for a Mongo collection that fail on purpose, or that several processes share."""

from __future__ import annotations

import socket
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

import bson
from bson.codec_options import CodecOptions
from pymongo.errors import BulkWriteError


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
