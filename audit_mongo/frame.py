"""Where a transaction's row changes wait: in memory, then on disk past ``SPILL_AT`` rows.

A ``Frame`` holds one transaction's (or savepoint's) net change per row, in the order the
rows were first changed. Netting needs every row's change until the commit, so a statement
touching millions of rows would otherwise hold them all in memory; past ``SPILL_AT`` rows a
frame moves to a private temporary SQLite file (deleted when closed) and memory stays flat.
``SpillingList`` does the same for a plain sequence (the rows a statement is about to change).
"""

from __future__ import annotations

import datetime as dt
import pickle
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any

from .changes import RowChange, RowKey, merge

# Rows kept in memory before a frame or list moves to disk: 100,000 row changes take about
# 100 MB, and a statement of that size runs in half the time it takes once spilled.
SPILL_AT = 100_000
READ_CHUNK = 1_000


class Frame:
    """Net changes per row, in first-change order; spills to disk past ``SPILL_AT`` rows."""

    __slots__ = ("_disk", "_evicted", "_rows", "has_moves")

    def __init__(self) -> None:
        self._rows: dict[RowKey, RowChange] = {}
        self._disk: _DiskRows | None = None
        self._evicted = 0
        self.has_moves = False  # whether a change updated a primary key

    def __len__(self) -> int:
        return len(self._disk) if self._disk is not None else len(self._rows)

    def __bool__(self) -> bool:
        return len(self) > 0

    def record(self, key: RowKey, change: RowChange) -> None:
        """Add ``change``, netted with an earlier change to the same row (found under its
        old key when the change updated the primary key)."""
        if change.previous_key is not None:
            self._arrive(key, change, self._pop(change.previous_key))
            return
        stored = self._get(key)
        merged = change if stored is None else merge(stored, change)
        if merged is None:
            if stored is not None:
                self._pop(key)
        else:
            self._set(key, merged, is_new=stored is None)

    def record_all(self, changes: Iterable[tuple[RowKey, RowChange]], may_move: bool) -> None:
        """Record the changes of one flush, statement or released savepoint.

        When rows of the batch changed their primary key (``may_move``), keys can be swapped
        or shifted within it: every moving row first leaves its old key, then the rows that
        kept theirs are recorded, then the moving rows take their new keys.
        """
        if not may_move:
            for key, change in changes:
                rows = self._rows
                if self._disk is None and key not in rows and len(rows) < SPILL_AT:
                    rows[key] = change  # a row's first change: nothing to net (most rows)
                else:
                    self.record(key, change)
            return
        batch, left = SpillingList(), Frame()
        try:
            for item in changes:
                batch.append(item)
                key, change = item
                if change.previous_key is not None:
                    earlier = self._pop(change.previous_key)
                    if earlier is not None:
                        left._set(change.previous_key, earlier, is_new=True)
            for key, change in _each(batch):
                if change.previous_key is None:
                    self.record(key, change)
            for key, change in _each(batch):
                if change.previous_key is not None:
                    self._arrive(key, change, left._pop(change.previous_key))
        finally:
            batch.close()
            left.close()

    def _arrive(self, key: RowKey, change: RowChange, earlier: RowChange | None) -> None:
        """A row whose key changed takes ``key``; whatever held it was another row (one
        deleted, or moved away) and is kept under a key of its own."""
        self.has_moves = True
        occupant = self._pop(key)
        if occupant is not None:
            self._evicted += 1
            self._set((key[0], (Evicted(self._evicted),)), occupant, is_new=True)
        merged = change if earlier is None else merge(earlier, change)
        if merged is not None:
            self._set(key, merged, is_new=True)

    def absorb(self, other: Frame) -> None:
        """Take over ``other``'s changes (a released savepoint's), netting each, then close it."""
        self.record_all(other.items(), other.has_moves)
        other.close()

    def items(self) -> Iterator[tuple[RowKey, RowChange]]:
        if self._disk is not None:
            yield from self._disk.items()
        else:
            yield from list(self._rows.items())

    def changes(self) -> Iterator[RowChange]:
        for _, change in self.items():
            yield change

    def close(self) -> None:
        self._rows = {}
        if self._disk is not None:
            self._disk.close()
            self._disk = None

    def _get(self, key: RowKey) -> RowChange | None:
        return self._disk.get(key) if self._disk is not None else self._rows.get(key)

    def _pop(self, key: RowKey) -> RowChange | None:
        return self._disk.pop(key) if self._disk is not None else self._rows.pop(key, None)

    def _set(self, key: RowKey, change: RowChange, is_new: bool) -> None:
        if self._disk is not None:
            self._disk.set(key, change, is_new)
            return
        self._rows[key] = change
        if len(self._rows) > SPILL_AT:
            self._disk = _DiskRows()
            for row_key, row_change in self._rows.items():
                self._disk.set(row_key, row_change, is_new=True)
            self._rows = {}


@dataclass(frozen=True)
class Evicted:
    """The key of a row whose key another row took in the same transaction."""

    number: int


def _each(items: SpillingList) -> Iterator[Any]:
    for chunk in items.chunks():
        yield from chunk


class _DiskRows:
    """A keyed, ordered store of pickled changes in a private temporary SQLite database."""

    def __init__(self) -> None:
        # "" is a temporary on-disk database SQLite deletes when the connection closes.
        self._db = sqlite3.connect("", check_same_thread=False, isolation_level=None)
        # A scratch file: no journal, no fsync; it is gone with the process anyway.
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute(
            "CREATE TABLE rows (key BLOB PRIMARY KEY, seq INTEGER NOT NULL, change BLOB)"
        )
        self._db.execute("CREATE INDEX rows_seq ON rows (seq)")
        self._count = 0
        self._next_seq = 0

    def __len__(self) -> int:
        return self._count

    def get(self, key: RowKey) -> RowChange | None:
        found = self._db.execute("SELECT change FROM rows WHERE key = ?", (_key(key),)).fetchone()
        return _load(found[0]) if found else None

    def pop(self, key: RowKey) -> RowChange | None:
        change = self.get(key)
        if change is not None:
            self._db.execute("DELETE FROM rows WHERE key = ?", (_key(key),))
            self._count -= 1
        return change

    def set(self, key: RowKey, change: RowChange, is_new: bool) -> None:
        """Store ``change``; a row already stored keeps its place (the order of first change)."""
        dumped_key, dumped = _key(key), _dump(change)
        if not is_new:
            self._db.execute("UPDATE rows SET change = ? WHERE key = ?", (dumped, dumped_key))
            return
        self._db.execute(
            "INSERT INTO rows (key, seq, change) VALUES (?, ?, ?)",
            (dumped_key, self._next_seq, dumped),
        )
        self._next_seq += 1
        self._count += 1

    def items(self) -> Iterator[tuple[RowKey, RowChange]]:
        cursor = self._db.execute("SELECT key, change FROM rows ORDER BY seq")
        while rows := cursor.fetchmany(READ_CHUNK):
            for key, change in rows:
                yield _load(key), _load(change)

    def close(self) -> None:
        self._db.close()


class SpillingList:
    """An append-only sequence kept in memory up to ``SPILL_AT`` items, then in a temporary
    file as pickled chunks, read back in order."""

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._file: IO[bytes] | None = None
        self._spilled = 0
        self._spilled_chunks = 0

    def __len__(self) -> int:
        return self._spilled + len(self._items)

    def append(self, item: Any) -> None:
        self._items.append(item)
        if len(self._items) >= SPILL_AT:
            if self._file is None:  # open until close(): it outlives any one call
                self._file = tempfile.TemporaryFile()  # noqa: SIM115
            pickle.dump(self._items, self._file, protocol=pickle.HIGHEST_PROTOCOL)
            self._spilled += len(self._items)
            self._spilled_chunks += 1
            self._items = []

    def chunks(self) -> Iterator[list[Any]]:
        """The items in order, a chunk at a time (at most ``SPILL_AT`` each)."""
        if self._file is not None:
            self._file.seek(0)
            for _ in range(self._spilled_chunks):
                yield pickle.load(self._file)
        if self._items:
            yield self._items

    def close(self) -> None:
        self._items = []
        if self._file is not None:
            self._file.close()
            self._file = None


def _key(key: RowKey) -> bytes:
    """A key's bytes, equal for keys that compare equal in memory (``Decimal("1")`` and
    ``Decimal("1.00")``, one instant in two time zones, a ``str`` subclass and its ``str``)."""
    return _dump(_canonical(key))


def _canonical(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_canonical(v) for v in value)
    if isinstance(value, (int, float, Decimal)):  # 1 == 1.0 == Decimal("1.00"), bool included
        return _canonical_number(value)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.timezone.utc)
    if isinstance(value, str) and type(value) is not str:
        return str(value)
    if isinstance(value, bytes) and type(value) is not bytes:
        return bytes(value)
    return value


def _canonical_number(value: int | float | Decimal) -> Any:
    if isinstance(value, int):
        return int(value)
    number = Decimal(value) if isinstance(value, float) else value
    if not number.is_finite():
        return str(number)
    if number == number.to_integral_value():
        return int(number)
    return number.normalize()


def _dump(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _load(data: bytes) -> Any:
    return pickle.loads(data)
