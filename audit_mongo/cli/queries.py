"""The commands that read the log: ``history``, ``user``, ``recent`` and ``export``.

Each is made of parts that ``flask audit`` (``audit_mongo.flask.commands``) shares: its
options (``history_options``...: arguments and options, and the checks of the options that
go together) and its body (``history_query``...: a reader and the parsed options). The
``audit-mongo`` command gives the body an ``AuditReader`` on the collection of ``--uri``;
``flask audit`` gives it the application's ``AuditLog``, which knows the models.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import click

from ..entry import AuditEntry
from ..inputs import ACTIONS
from ..reader import PAGE_LIMIT, AuditReader
from .options import (
    Command,
    LogSettings,
    check_range,
    checked,
    log_options,
    opened,
    stacked,
    usage_error,
    usage_errors,
)
from .output import CSV_COLUMNS, csv_line, csv_rows, entry_json, render
from .params import Key, Moment, OptionalArgument, TableName

EXPORT_PAGE = 1000  # entries read per query while exporting
PROGRESS_EVERY = 10_000  # entries between two progress lines of an export (on stderr)
USER_LIMIT = 100  # entries `user` shows unless --limit says otherwise
RECENT_LIMIT = 20  # entries `recent` shows unless --limit says otherwise


def filter_options(command: Command) -> Command:
    """--since, --until and --action (repeatable)."""
    for option in reversed(_FILTER_OPTIONS):
        command = option(command)
    return command


_FILTER_OPTIONS = (
    click.option("--since", type=Moment(), help="Only entries at or after: 2h, 7d, 2026-01-01."),
    click.option("--until", type=Moment(), help="Only entries before: 30m, 2026-01-01T12:00."),
    click.option(
        "--action",
        "actions",
        type=click.Choice(ACTIONS),
        multiple=True,
        help="Only these actions (repeatable).",
    ),
)

json_option = click.option(
    "--json", "as_json", is_flag=True, help="JSON Lines: one entry per line (extended JSON)."
)
table_option = click.option("--table", type=TableName(), help="Only this table's entries.")


def limit_option(default: int | None, most: int | None = None) -> Callable[[Command], Command]:
    shown = "all" if default is None else str(default)
    return click.option(
        "--limit",
        type=click.IntRange(min=1, max=most),
        default=default,
        help=f"At most this many entries [default: {shown}].",
    )


# -- the options of each command, checked before anything is opened ---------------------


def _check_range(options: Mapping[str, Any]) -> None:
    check_range(options["since"], options["until"])


def _check_user(options: Mapping[str, Any]) -> None:
    if options["nobody"] and options["user_id"] is not None:
        raise usage_error("give USER_ID or --nobody, not both")
    if not options["nobody"] and options["user_id"] is None:
        raise usage_error(
            "Missing argument 'USER_ID' (or --nobody: the entries no user was known for)"
        )
    _check_range(options)


def _check_export(options: Mapping[str, Any]) -> None:
    _check_range(options)
    if options["object_id"] is not None and options["table"] is None:
        raise usage_error("--id needs --table")
    if options["nobody"] and options["user_id"] is not None:
        raise usage_error("give --user or --nobody, not both")


history_options = stacked(
    click.argument("table", type=TableName()),
    click.argument("object_id", metavar="ID", type=Key("object id")),
    filter_options,
    limit_option(None),
    json_option,
    checked(_check_range),
)
"""TABLE, ID, --since, --until, --action, --limit (default: all), --json."""

user_options = stacked(
    click.argument("user_id", type=Key("user id"), cls=OptionalArgument),
    click.option(
        "--nobody", is_flag=True, help="The entries no user was known for, not USER_ID's."
    ),
    table_option,
    filter_options,
    limit_option(USER_LIMIT),
    json_option,
    checked(_check_user),
)
"""USER_ID or --nobody, --table, --since, --until, --action, --limit (100), --json."""

recent_options = stacked(
    table_option,
    filter_options,
    limit_option(RECENT_LIMIT, PAGE_LIMIT),
    json_option,
    checked(_check_range),
)
"""--table, --since, --until, --action, --limit (20, at most PAGE_LIMIT), --json."""

export_options = stacked(
    click.option(
        "--format",
        "form",
        type=click.Choice(("jsonl", "csv")),
        default="jsonl",
        show_default=True,
        help="jsonl: one entry per line; csv: one row per changed field.",
    ),
    click.option("--json", "as_json", is_flag=True, help="The same as --format jsonl."),
    table_option,
    click.option("--id", "object_id", type=Key("object id"), help="Only this row (needs --table)."),
    click.option("--user", "user_id", type=Key("user id"), help="Only this user's entries."),
    click.option("--nobody", is_flag=True, help="Only the entries no user was known for."),
    filter_options,
    checked(_check_export),
)
"""--format, --json, --table, --id, --user or --nobody, --since, --until, --action."""


# -- the bodies: a reader and the parsed options -----------------------------------------


def history_query(
    reader: AuditReader,
    *,
    table: str,
    object_id: Any,
    since: dt.datetime | None,
    until: dt.datetime | None,
    actions: tuple[str, ...],
    limit: int | None,
    as_json: bool,
) -> None:
    """A row's entries, newest first, to stdout."""
    with usage_errors():
        entries = reader.for_object(
            table, object_id, actions=actions or None, since=since, until=until, limit=limit
        )
        show(entries, as_json)


def user_query(
    reader: AuditReader,
    *,
    user_id: Any,
    nobody: bool,
    table: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    actions: tuple[str, ...],
    limit: int,
    as_json: bool,
) -> None:
    """One user's entries (with ``nobody``: those no user was known for), newest first."""
    with usage_errors():
        entries = reader.by_user(
            None if nobody else user_id,
            table=table,
            actions=actions or None,
            since=since,
            until=until,
            limit=limit,
        )
        show(entries, as_json)


def recent_query(
    reader: AuditReader,
    *,
    table: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    actions: tuple[str, ...],
    limit: int,
    as_json: bool,
) -> None:
    """The latest entries, newest first."""
    with usage_errors():
        page = reader.find(
            table=table, actions=actions or None, since=since, until=until, limit=limit
        )
        show(page.entries, as_json)


def export_query(
    reader: AuditReader,
    *,
    form: str,
    as_json: bool,
    table: str | None,
    object_id: Any,
    user_id: Any,
    nobody: bool,
    since: dt.datetime | None,
    until: dt.datetime | None,
    actions: tuple[str, ...],
) -> None:
    """Every matching entry, oldest first, as JSON Lines or CSV."""
    filters = {"table": table, "object_id": object_id, "since": since, "until": until}
    filters["actions"] = actions or None
    if nobody:
        filters["user_id"] = None  # current_user_id null: the reader's by_user(None)
    elif user_id is not None:
        filters["user_id"] = user_id
    with usage_errors():
        write_export(pages(reader, filters), "jsonl" if as_json else form)


# -- the audit-mongo commands: a reader on the collection of --uri -----------------------


@contextmanager
def reading(log: LogSettings) -> Iterator[AuditReader]:
    """An ``AuditReader`` on the collection ``log`` names (no models: ids of unknown type),
    its client closed afterwards; Mongo failures become clear errors (exit status 3)."""
    with opened(log) as collection:
        yield AuditReader(collection)


@click.command(short_help="A row's history, newest first.")
@history_options
@log_options
def history(log: LogSettings, **options: Any) -> None:
    """A row's history, newest first, across changes of its primary key.

    ID is the key as text: numeric text matches an integer or a string key. A composite
    key is a JSON array, its types exact. A negative key goes after --.

    \b
        audit-mongo history clients 5
        audit-mongo history memberships '["admins", 7]'
        audit-mongo history ledger -- -5
    """
    with reading(log) as reader:
        history_query(reader, **options)


@click.command(short_help="What one user (or nobody known) did, newest first.")
@user_options
@log_options
def user(log: LogSettings, **options: Any) -> None:
    """What one user did, newest first; with --nobody instead of USER_ID, the changes no
    user was known for (current_user_id null).

    USER_ID is the id as text: numeric text matches an integer or a string id (42 and
    "42"); a JSON array for a composite one.
    """
    with reading(log) as reader:
        user_query(reader, **options)


@click.command(short_help="The latest entries, newest first.")
@recent_options
@log_options
def recent(log: LogSettings, **options: Any) -> None:
    """The latest entries, newest first."""
    with reading(log) as reader:
        recent_query(reader, **options)


@click.command(short_help="Export entries as JSON Lines or CSV.")
@export_options
@log_options
def export(log: LogSettings, **options: Any) -> None:
    """Every matching entry, oldest first, to stdout (progress on stderr). --user picks
    one user's entries (numeric text matches an integer or a string id), --nobody those no
    user was known for.

    CSV cells starting with = + - @ tab or CR get a leading apostrophe, so that no
    spreadsheet runs stored text as a formula.
    """
    with reading(log) as reader:
        export_query(reader, **options)


# -- running queries and showing what they find ----------------------------------------


def show(entries: Iterable[AuditEntry], as_json: bool) -> None:
    """Entries to stdout, as a table or JSON Lines; "no entries" on stderr if none."""
    shown = 0
    for entry in entries:
        click.echo(render(entry, as_json))
        shown += 1
    if not shown and not as_json:
        click.echo("no entries", err=True)


def pages(reader: AuditReader, filters: dict[str, Any]) -> Iterator[AuditEntry]:
    """Every entry ``find()`` matches, oldest first, a page at a time."""
    after: str | None = None
    while True:
        page = reader.find(**filters, limit=EXPORT_PAGE, after=after, order="oldest")
        yield from page.entries
        if page.next_cursor is None:
            return
        after = page.next_cursor


def write_export(entries: Iterable[AuditEntry], form: str) -> None:
    """Entries to stdout; a progress line every PROGRESS_EVERY entries and the count at the
    end on stderr."""
    if form == "csv":
        click.echo(csv_line(CSV_COLUMNS), nl=False)
    count = 0
    for entry in entries:
        if form == "csv":
            click.echo("".join(csv_line(row) for row in csv_rows(entry)), nl=False)
        else:
            click.echo(entry_json(entry))
        count += 1
        if count % PROGRESS_EVERY == 0:
            click.echo(f"exported {entries_text(count)}…", err=True)
    click.echo(f"exported {entries_text(count)}", err=True)


def entries_text(count: int) -> str:
    """``1 entry``, ``0 entries``, ``10,000 entries``."""
    return f"{count:,} {'entry' if count == 1 else 'entries'}"
