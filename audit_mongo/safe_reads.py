"""Reading the application's database without ever breaking its transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection

UNREADABLE: dict[str, str] = {"omitted": "could not be read"}  # a value a read could not get

# Dialects where a failed statement aborts the whole transaction: reads there go in a savepoint.
ABORTING_DIALECTS = frozenset(("postgresql", "cockroachdb"))


@contextmanager
def read_guard(connection: Connection) -> Iterator[None]:
    """Where a failed read would abort the application's transaction (PostgreSQL), run it in
    a savepoint; elsewhere (and outside a transaction block: AUTOCOMMIT) a failed read harms
    nothing, and a savepoint would fail while a caller's RETURNING cursor is open (SQLite).

    Every read gets its savepoint: what makes a read fail (column privileges) can change
    within a connection (``SET ROLE``).
    """
    if not guarded(connection):
        yield
        return
    with connection.begin_nested():
        yield


def guarded(connection: Connection) -> bool:
    """Whether ``read_guard`` runs its block in a savepoint on ``connection`` (so that a
    failure there also undoes what the block wrote)."""
    return connection.dialect.name in ABORTING_DIALECTS and not in_autocommit(connection)


def in_autocommit(connection: Connection) -> bool:
    """Whether each statement on ``connection`` commits by itself (AUTOCOMMIT isolation)."""
    level = connection.get_execution_options().get("isolation_level")
    if level is None:
        # create_engine(isolation_level=...) is kept on the dialect, with no public accessor.
        level = getattr(connection.engine.dialect, "_on_connect_isolation_level", None)
    return bool(level == "AUTOCOMMIT")
