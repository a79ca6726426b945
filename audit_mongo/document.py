"""The audit document, schema version 1: one per row per committed transaction.

Field names are fixed; they are what people query from the Mongo shell::

    {
      "_id": ObjectId(...),            # assigned here, kept on every redelivery
      "current_user_id": 42,           # null when nobody is known
      "context": {"request_id": "..."},  # only when the commit ran in a context() block
      "action": "update",              # "create" | "update" | "delete"
      "table_name": "clients",
      "object_id": 5,                  # a list for a composite primary key
      "changes": {"name": {"added": ["New"], "deleted": ["Old"]}},
      "created_at": ISODate(...),      # UTC, the same for every document of one commit
      "transaction_id": "0b6f...",     # the same for every document of one commit
      "schema_version": 1
    }

In strict mode a document is written before its transaction commits; if that commit then
fails, a "void" document with the same table, row and transaction follows it::

    {"action": "void", "voids": ObjectId(<the written document's _id>), "changes": {}, ...}
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from bson import ObjectId

from .actor import Acting
from .changes import RowChange
from .masking import Masked, stored

SCHEMA_VERSION = 1
COUNTER_LIMIT = 1 << 24  # an ObjectId's counter is 3 bytes
PROCESS_LIMIT = 1 << 40  # and its per-process random part 5


class ObjectIdSequence:
    """ObjectIds that strictly increase within this process, whatever the clock does.

    ``bson.ObjectId()`` orders ids by its 3-byte counter within a second, and that counter
    starts at a random value and wraps: ids built across the wrap sort out of order. Here the
    5-byte per-process part is bumped when the counter wraps, and the time never goes back,
    so sorting by ``_id`` gives the order documents were built in. A forked child draws a
    new random part, as pymongo does.
    """

    def __init__(self, counter: int | None = None) -> None:
        self._lock = threading.Lock()
        self._pid = -1
        self._second = 0
        self._process = 0
        self._counter = counter

    def take(self, count: int) -> Iterator[ObjectId]:
        with self._lock:
            if self._pid != os.getpid():
                self._start_process()
            second = self._second = max(self._second, int(time.time()))
            ids: list[ObjectId] = []
            while len(ids) < count:
                ids.extend(self._run(second, count - len(ids)))
        return iter(ids)

    def _start_process(self) -> None:
        self._pid = os.getpid()
        self._process = int.from_bytes(os.urandom(5), "big")
        if self._counter is None:
            self._counter = int.from_bytes(os.urandom(3), "big")

    def _run(self, second: int, wanted: int) -> list[ObjectId]:
        """Up to ``wanted`` consecutive ids, stopping where the counter wraps (then the
        process part is bumped for the next run)."""
        first = (self._counter or 0) + 1
        if first == COUNTER_LIMIT:
            first = 0
            self._process = (self._process + 1) % PROCESS_LIMIT
        last = min(first + wanted, COUNTER_LIMIT) - 1
        self._counter = last
        prefix = second.to_bytes(4, "big") + self._process.to_bytes(5, "big")
        return [ObjectId(prefix + n.to_bytes(3, "big")) for n in range(first, last + 1)]


_object_ids = ObjectIdSequence()


def new_object_id() -> ObjectId:
    """The next ``_id`` of this process's sequence (a chain's filler takes one)."""
    return next(_object_ids.take(1))


def new_transaction_id() -> str:
    return str(uuid.uuid4())


def commit_time() -> dt.datetime:
    """Now in UTC, cut to the millisecond BSON keeps, so a read-back equals what was built."""
    now = dt.datetime.now(dt.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def build_documents(
    row_changes: Iterable[RowChange],
    acting: Acting,
    *,
    transaction_id: str,
    created_at: dt.datetime,
) -> list[dict[str, Any]]:
    """One document per row change, in the order the changes happened."""
    changes = list(row_changes)
    ids = _object_ids.take(len(changes))
    user_id, context = acting.user_id, acting.context
    documents = []
    for change in changes:
        document = {
            "_id": next(ids),
            "current_user_id": user_id,
            "action": change.action,
            "table_name": change.table_name,
            "object_id": change.object_id,
            "changes": changes_field(change),
            "created_at": created_at,
            "transaction_id": transaction_id,
            "schema_version": SCHEMA_VERSION,
        }
        if context:
            document["context"] = dict(context)
        if change.entity is not None:
            document["entity"] = change.entity
        if change.previous_object_id is not None:
            document["previous_object_id"] = change.previous_object_id
        documents.append(document)
    return documents


def changes_field(change: RowChange) -> dict[str, dict[str, list[Any]]]:
    """``{attribute: {"added": [...], "deleted": [...]}}``, as the blog post stored it; a
    many-to-many collection lists the keys of the related rows added and removed. A masked
    value is stored in its masked form."""
    # One pass per change, with the masked-value check inline rather than a call per value:
    # this runs for every row of every commit.
    if change.action == "update":
        new = change.new
        field = {
            k: {
                "added": [n.stored if type(n := new[k]) is Masked else n],
                "deleted": [v.stored if type(v) is Masked else v],
            }
            for k, v in change.old.items()
        }
    elif change.action == "create":
        field = {
            k: {"added": [v.stored if type(v) is Masked else v], "deleted": []}
            for k, v in change.new.items()
        }
    else:
        field = {
            k: {"added": [], "deleted": [v.stored if type(v) is Masked else v]}
            for k, v in change.old.items()
        }
    for name, (added, deleted) in change.collections.items():
        field[name] = {"added": [stored(k) for k in added], "deleted": [stored(k) for k in deleted]}
    return field


class Written(NamedTuple):
    """What a void document needs of a document written before a commit that then failed."""

    id: Any
    table_name: str
    object_id: Any
    user_id: Any
    transaction_id: str

    @classmethod
    def of(cls, document: dict[str, Any]) -> Written:
        return cls(
            document["_id"],
            document["table_name"],
            document["object_id"],
            document["current_user_id"],
            document["transaction_id"],
        )


def build_voids(written: Iterable[Written], created_at: dt.datetime) -> list[dict[str, Any]]:
    """One "void" document per written document, saying its change never committed."""
    items = list(written)
    ids = _object_ids.take(len(items))
    return [
        {
            "_id": next(ids),
            "current_user_id": item.user_id,
            "action": "void",
            "table_name": item.table_name,
            "object_id": item.object_id,
            "changes": {},
            "created_at": created_at,
            "transaction_id": item.transaction_id,
            "schema_version": SCHEMA_VERSION,
            "voids": item.id,
        }
        for item in items
    ]
