"""``audit-mongo tail``: follow new entries as they arrive.

On a replica set (or sharded cluster) a change stream delivers each inserted document.
Where the server refuses change streams (a standalone server: code 40573) or the client has
none (mongomock), new documents are found by polling: every ``--interval`` the window of
the last ``--lookback`` (by ``created_at``) is read, and documents not seen before are
shown. The window matters because documents delivered late (from the outbox, after an
outage) carry their commit's ``created_at``, which can be well in the past when they
arrive; one delivered later than the window is not shown by polling.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing
from typing import Any

import click
from pymongo.errors import OperationFailure

from ..entry import AuditEntry, utc
from ..inputs import ACTIONS
from .options import LogSettings, log_options, opened
from .output import render
from .params import Duration, Moment, Seconds, TableName

SEEN_LIMIT = 100_000  # ids polling keeps at each poll (see SeenIds); the window narrows to them
ORDER = [("created_at", 1), ("_id", 1)]


@click.command(short_help="Follow new entries as they arrive.")
@click.option("--table", type=TableName(), help="Only this table's entries.")
@click.option("--since", type=Moment(), help="First show the entries since then: 1h, 2026-01-01.")
@click.option(
    "--interval",
    type=Seconds(),
    default=1.0,
    show_default=True,
    help="Seconds between two polls (when change streams are not available).",
)
@click.option(
    "--lookback",
    type=Duration(),
    default="5m",
    show_default=True,
    help="How far back polling looks for documents delivered late.",
)
@click.option("--stop-after", type=click.IntRange(min=1), help="Stop after this many entries.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one entry per line.")
@log_options
def tail(
    log: LogSettings,
    table: str | None,
    since: dt.datetime | None,
    interval: float,
    lookback: dt.timedelta,
    stop_after: int | None,
    as_json: bool,
) -> None:
    """Follow new entries as they arrive, oldest first, until Ctrl-C (exit status 0) or
    --stop-after entries."""
    match: dict[str, Any] = {"action": {"$in": list(ACTIONS)}}
    if table is not None:
        match["table_name"] = table
    with opened(log) as collection:
        documents = follow(collection, match, since, interval, lookback)
        with closing(documents):
            try:
                for shown, document in enumerate(documents, start=1):
                    show(document, as_json)
                    if shown == stop_after:
                        return
            except KeyboardInterrupt:
                return


def show(document: dict[str, Any], as_json: bool) -> None:
    click.echo(render(AuditEntry.from_document(document, None), as_json))


def follow(
    collection: Any,
    match: dict[str, Any],
    since: dt.datetime | None,
    interval: float,
    lookback: dt.timedelta,
) -> Generator[dict[str, Any], None, None]:
    """The documents matching ``match`` as they arrive (after those since ``since``)."""
    stream = change_stream(collection, match)
    if stream is None:
        yield from poll(collection, match, since, interval, lookback)
        return
    try:
        seen = SeenIds()
        if since is not None:
            yield from backlog(collection, match, since, seen)
        yield from inserted(stream, seen)
    finally:
        close = getattr(stream, "close", None)
        if callable(close):
            close()


def change_stream(collection: Any, match: dict[str, Any]) -> Any:
    """A change stream of inserts matching ``match``, or None where there is none."""
    if not callable(getattr(type(collection), "watch", None)):
        note("this client has no change streams")
        return None
    inserts: dict[str, Any] = {"operationType": "insert"}
    inserts.update({f"fullDocument.{name}": value for name, value in match.items()})
    try:
        return collection.watch([{"$match": inserts}])
    except OperationFailure as exc:
        note(f"the server refuses change streams (code {exc.code})")
        return None


def note(reason: str) -> None:
    click.echo(f"{reason}: polling for new entries", err=True)


def inserted(stream: Iterable[Any], seen: SeenIds) -> Iterator[dict[str, Any]]:
    for change in stream:
        document = change.get("fullDocument")
        if change.get("operationType") == "insert" and document and document["_id"] not in seen:
            yield document


def poll(
    collection: Any,
    match: dict[str, Any],
    since: dt.datetime | None,
    interval: float,
    lookback: dt.timedelta,
) -> Iterator[dict[str, Any]]:
    """Every ``interval``, the documents of the last ``lookback`` not seen before; first
    those since ``since``, or (without it) none of those already there."""
    seen = SeenIds()
    if since is None:
        for _id, created_at in new_ids(collection, match, now() - lookback, seen):
            seen.add(_id, created_at)
    else:
        yield from backlog(collection, match, since, seen)
    while True:
        time.sleep(interval)
        start = now() - lookback if since is None else max(now() - lookback, since)
        yield from window(collection, match, seen.forget_before(start), seen)


def backlog(
    collection: Any, match: dict[str, Any], since: dt.datetime, seen: SeenIds
) -> Iterator[dict[str, Any]]:
    """The documents created since ``since``, oldest first; now seen."""
    query = {**match, "created_at": {"$gte": since}}
    for document in collection.find(query, sort=ORDER):
        seen.add(document["_id"], document["created_at"])
        yield document


def window(
    collection: Any, match: dict[str, Any], start: dt.datetime, seen: SeenIds
) -> list[dict[str, Any]]:
    """The documents created since ``start`` not seen yet, oldest first; now seen. Only
    their ids are read first (mostly seen ones: the index answers), then the new ones."""
    new = new_ids(collection, match, start, seen)
    if not new:
        return []
    documents = list(collection.find({"_id": {"$in": [i for i, _ in new]}}, sort=ORDER))
    for _id, created_at in new:
        seen.add(_id, created_at)
    return documents


def new_ids(
    collection: Any, match: dict[str, Any], start: dt.datetime, seen: SeenIds
) -> list[tuple[Any, dt.datetime]]:
    query = {**match, "created_at": {"$gte": start}}
    found = collection.find(query, {"_id": 1, "created_at": 1}, sort=ORDER)
    return [(d["_id"], d["created_at"]) for d in found if d["_id"] not in seen]


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class SeenIds:
    """The ``_id``s already shown, with their ``created_at``.

    Those older than the window are forgotten. At each poll (``forget_before``), past
    ``limit`` ids only the newest ``limit`` are kept, and the window starts no earlier than
    they do, so that no forgotten id comes back (none is shown twice). While a long backlog
    is read (``add``), they may grow to twice ``limit`` before being trimmed back to the
    newest ``limit``: trimming sorts them all, so it is not done at every id. Ids created
    at the same moment as the oldest one kept are kept too (one commit's documents share
    their ``created_at``), so a single commit of more rows than ``limit`` is remembered
    whole."""

    def __init__(self, limit: int = SEEN_LIMIT) -> None:
        self.limit = limit
        self._seen: dict[Any, dt.datetime] = {}
        self._horizon: dt.datetime | None = None

    def __contains__(self, _id: Any) -> bool:
        return _id in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, _id: Any, created_at: dt.datetime) -> None:
        self._seen[_id] = utc(created_at)
        if len(self._seen) > 2 * self.limit:  # a long backlog: trim as it goes
            self._trim()

    def forget_before(self, start: dt.datetime) -> dt.datetime:
        """Forget the ids the window from ``start`` cannot return; return where the window
        starts (later than ``start`` when more than ``limit`` ids were remembered)."""
        if len(self._seen) > self.limit:
            self._trim()
        if self._horizon is not None:
            start = max(start, self._horizon)
        self._seen = {i: when for i, when in self._seen.items() if when >= start}
        return start

    def _trim(self) -> None:
        cutoff = sorted(self._seen.values(), reverse=True)[self.limit - 1]
        self._horizon = cutoff if self._horizon is None else max(self._horizon, cutoff)
        self._seen = {i: when for i, when in self._seen.items() if when >= cutoff}
