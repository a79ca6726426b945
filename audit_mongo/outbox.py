"""The transactional outbox: a table in the application's database holding the audit
documents of committed transactions until Mongo has confirmed them.

A transaction's documents are inserted into it by the transaction itself, just before its
COMMIT, so they are committed (or rolled back) with the changes they describe: a crash after
the commit loses nothing. One row holds up to 1,000 documents as concatenated BSON with
their ``_id`` fixed, and is deleted once Mongo has confirmed every one of them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import SQLAlchemyError

from .encoding import Document, decode_all, encode_all
from .log_safety import log_failure
from .pending import Claim, take_batches

logger = logging.getLogger("audit_mongo")

DEFAULT_TABLE = "audit_mongo_outbox"
ROWS_PER_CLAIM = 100
STORE_CHUNK = 1000  # documents per outbox row


class Outbox:
    """Pending audit documents in a table of ``engine``'s database.

    ``create()`` creates the table if it is missing; ``table`` is its definition, for
    migrations (e.g. Alembic) that manage the schema themselves.
    """

    def __init__(self, engine: Engine, table_name: str = DEFAULT_TABLE) -> None:
        if not isinstance(engine, Engine):
            raise TypeError(
                "outbox must be a synchronous sqlalchemy Engine on the application's database "
                "(for an AsyncEngine, pass create_engine() of the same database with a sync "
                f"driver); got {type(engine).__name__}"
            )
        self.engine = engine
        self.missing = False  # the table could not be created yet
        self.table = Table(
            table_name,
            MetaData(),
            Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
            Column("created_at", DateTime(timezone=True), nullable=False),
            Column("document_count", Integer, nullable=False),
            # A length, so that MySQL makes it a LONGBLOB, not a 64 KiB BLOB.
            Column("documents", LargeBinary(2**32 - 1), nullable=False),
        )
        # Built once: an insert and a delete run in every audited commit.
        self._insert = insert(self.table)
        chosen = self.table.c.id.in_(bindparam("keys", expanding=True))
        self._delete = delete(self.table).where(chosen)
        unclaimed = select(self.table.c.id).where(chosen).with_for_update(skip_locked=True)
        self._delete_unclaimed = delete(self.table).where(self.table.c.id.in_(unclaimed))

    def create(self) -> None:
        self.table.create(self.engine, checkfirst=True)
        self.missing = False

    def create_now_or_later(self) -> None:
        """Create the table if it is not there. An application must start even when its
        database is not reachable yet (or its user may not create tables): then this is
        logged and tried again where the table is next needed."""
        try:
            self.create()
        except SQLAlchemyError as exc:
            self.missing = True
            log_failure(
                logging.WARNING,
                exc,
                "audit_mongo: could not create the outbox table %s now; it is created "
                "when first needed",
                self.table.name,
            )

    def _ensure_table(self) -> None:
        if self.missing:
            self.create()

    def holds(self, connection: Connection) -> bool:
        """Whether ``connection`` writes to the outbox's database, so that the outbox rows
        can join its transaction."""
        engine = connection.engine
        if engine.pool is self.engine.pool:
            return True
        identity = _database(engine.url)
        return identity is not None and identity == _database(self.engine.url)

    def insert(self, connection: Connection, data: bytes, count: int) -> int:
        """Add one row of ``count`` encoded documents in ``connection``'s transaction."""
        if self.missing:  # in the transaction: on PostgreSQL, inside its savepoint
            self.table.create(connection, checkfirst=True)
            self.missing = False
        values = {"created_at": dt.datetime.now(dt.timezone.utc), "document_count": count}
        result = connection.execute(self._insert, {**values, "documents": data})
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def store(self, documents: Sequence[Document]) -> None:
        """Keep ``documents`` in a transaction of the outbox's own."""
        self._ensure_table()
        with self.engine.begin() as connection:
            for start in range(0, len(documents), STORE_CHUNK):
                chunk, encoded = encode_all(documents[start : start + STORE_CHUNK])
                self.insert(connection, b"".join(encoded), len(chunk))

    def only(self, keys: Sequence[int]) -> OutboxRows:
        """These rows of the outbox, as pending work ``deliver_pending`` can drain."""
        return OutboxRows(self, tuple(keys))

    def keep_links(self, key: int, documents: Sequence[Document]) -> bool:
        """Store row ``key``'s documents again as sent, linked into a chain (see
        ``chain``), so that whoever delivers them later sends the same links; False (and
        logged) when that failed."""
        try:
            with self.engine.begin() as connection:
                self._rewrite(connection, key, documents)
        except Exception as exc:
            message = "audit_mongo: an outbox row could not keep its documents' links"
            log_failure(logging.ERROR, exc, message)
            return False
        return True

    def _rewrite(self, connection: Connection, key: int, documents: Sequence[Document]) -> None:
        kept, encoded = encode_all(documents)
        row = self.table.c.id == key
        connection.execute(
            update(self.table)
            .where(row)
            .values(document_count=len(kept), documents=b"".join(encoded))
        )

    def forget(self, keys: Sequence[int]) -> bool:
        """Delete delivered rows in a transaction of the outbox's own; False (logged) when
        that failed."""
        if not keys:
            return True
        try:
            with self.engine.begin() as connection:
                self.delete(connection, keys)
        except Exception as exc:
            message = "audit_mongo: %d delivered outbox rows could not be deleted"
            log_failure(logging.ERROR, exc, message, len(keys))
            return False
        return True

    def delete(self, connection: Connection, keys: Sequence[int]) -> None:
        """Delete delivered rows in ``connection``'s transaction. On PostgreSQL, rows another
        process has claimed (and is delivering, so will delete) are skipped, not waited for."""
        skip_claimed = connection.dialect.name == "postgresql"
        statement = self._delete_unclaimed if skip_claimed else self._delete
        connection.execute(statement, {"keys": list(keys)})

    def count(self, only: Sequence[int] | None = None) -> int:
        self._ensure_table()
        query = select(func.coalesce(func.sum(self.table.c.document_count), 0))
        if only is not None:
            query = query.where(self.table.c.id.in_(only))
        with self.engine.connect() as connection:
            return int(connection.scalar(query) or 0)

    @contextmanager
    def claim(self, after: int, limit: int, only: Sequence[int] | None = None) -> Iterator[Claim]:
        """The oldest rows after ``after`` (of ``only``, if given), about ``limit``
        documents, locked (where the database can) so that another process delivering at
        the same time skips them."""
        self._ensure_table()
        columns = self.table.c
        chosen = columns.id > after
        if only is not None:
            chosen = chosen & columns.id.in_(only)
        query = (
            select(columns.id, columns.document_count, columns.documents)
            .where(chosen)
            .order_by(columns.id)
            .limit(ROWS_PER_CLAIM)
            .with_for_update(skip_locked=True)
        )
        with self.engine.begin() as connection:
            rows: Any = connection.execute(query)  # (id, document_count, documents)
            claim = Claim(take_batches(rows, limit, decode_all))
            # Rows left unread keep the cursor, and on SQLite its read lock, open: another
            # process's delete would then wait for this one's, and this one's for it.
            rows.close()
            yield claim
            for batch in claim.linked:
                self._rewrite(connection, batch.key, batch.documents)
            if claim.delivered:
                connection.execute(delete(self.table).where(columns.id.in_(claim.delivered)))


def _database(url: URL) -> tuple[Any, ...] | None:
    """What names a database whatever the driver; None when only the pool can tell."""
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return None
    return (url.get_backend_name(), url.host, url.port, url.database, url.username)


class OutboxRows:
    """Some rows of an outbox, as a pending store: a claim takes only them."""

    def __init__(self, outbox: Outbox, keys: tuple[int, ...]) -> None:
        self.outbox = outbox
        self.keys = keys

    def store(self, documents: Sequence[Document]) -> None:
        self.outbox.store(documents)

    def count(self) -> int:
        return self.outbox.count(only=self.keys)

    def claim(self, after: int, limit: int) -> AbstractContextManager[Claim]:
        return self.outbox.claim(after, limit, only=self.keys)
