"""``flask audit ...``: the ``audit-mongo`` query commands on the application's own log.

::

    flask audit history clients 5          # 5 becomes the key's type; a bad table is refused
    flask audit user 42 --since 7d
    flask audit user --nobody --since 1d
    flask audit recent --table clients --action delete --json
    flask audit export --format csv --since 30d > audit.csv
    flask audit show-indexes
    flask audit ensure-indexes             # with the application's AUDIT_MONGO_RETENTION
    flask audit verify --heads heads.json  # with the application's AUDIT_MONGO_SIGNING_KEYS

The options and the output are those of ``audit-mongo`` (``audit_mongo.cli``: the same
option decorators and the same command bodies), without ``--uri``, ``--collection``,
``--database`` and ``--server-timeout``: the log is ``current_log()``, in the application
context ``flask`` sets up. That log knows the models, so a key given as text is converted to
the key's type and an unknown table or field, or an id that is not of the key's type, is a
usage error (exit status 2). Mongo unreachable or refusing is exit status 3.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from flask.cli import AppGroup

from ..cli import indexes, queries, verify
from ..cli.options import mongo_failures
from ..log import AuditLog
from .extension import current_log

audit_commands = AppGroup("audit", help="Read the application's audit log and manage its indexes.")

CONFIG_HINT = (
    "; check the application's AUDIT_MONGO_URI and AUDIT_MONGO_CLIENT_OPTIONS "
    "(serverSelectionTimeoutMS)"
)


@contextmanager
def app_log() -> Iterator[AuditLog]:
    """The current application's ``AuditLog``; Mongo failures inside the block become clear
    errors (exit status 3), as for ``audit-mongo``."""
    try:
        log = current_log()
    except RuntimeError as exc:  # an application without AuditMongo.init_app()
        raise click.ClickException(str(exc)) from None
    with mongo_failures(
        unreachable=CONFIG_HINT, names="AUDIT_MONGO_COLLECTION or AUDIT_MONGO_DATABASE"
    ):
        yield log


@audit_commands.command(short_help="A row's history, newest first.")
@queries.history_options
def history(**options: Any) -> None:
    """A row's history, newest first, across changes of its primary key.

    ID is the key as text, converted to the type of TABLE's key (an unknown TABLE, or an ID
    that is not of the key's type, is refused). A composite key is a JSON array. A negative
    key goes after --.

    \b
        flask audit history clients 5
        flask audit history memberships '["admins", 7]'
        flask audit history ledger -- -5
    """
    with app_log() as log:
        queries.history_query(log, **options)


@audit_commands.command(short_help="What one user (or nobody known) did, newest first.")
@queries.user_options
def user(**options: Any) -> None:
    """What one user did, newest first; with --nobody instead of USER_ID, the changes no
    user was known for (current_user_id null).

    USER_ID is the id as text: numeric text matches an integer or a string id (42 and
    "42"); a JSON array for a composite one.
    """
    with app_log() as log:
        queries.user_query(log, **options)


@audit_commands.command(short_help="The latest entries, newest first.")
@queries.recent_options
def recent(**options: Any) -> None:
    """The latest entries, newest first."""
    with app_log() as log:
        queries.recent_query(log, **options)


@audit_commands.command(short_help="Export entries as JSON Lines or CSV.")
@queries.export_options
def export(**options: Any) -> None:
    """Every matching entry, oldest first, to stdout (progress on stderr). --id is converted
    to the type of --table's key; --user picks one user's entries (numeric text matches an
    integer or a string id), --nobody those no user was known for.

    CSV cells starting with = + - @ tab or CR get a leading apostrophe, so that no
    spreadsheet runs stored text as a formula.
    """
    with app_log() as log:
        queries.export_query(log, **options)


@audit_commands.command("show-indexes", short_help="The log's indexes: present, missing, others.")
@indexes.show_indexes_options
def show_indexes(as_json: bool) -> None:
    """The log's indexes, present or missing, then any others on the collection."""
    with app_log() as log:
        indexes.show_indexes_of(log.collection, as_json=as_json)


@audit_commands.command("ensure-indexes", short_help="Create the indexes the log's queries use.")
@indexes.retention_option(
    "Also a TTL index deleting entries older than this (365d); changes an existing one. "
    "[default: the application's AUDIT_MONGO_RETENTION]"
)
def ensure_indexes(retention: dt.timedelta | None) -> None:
    """Create the indexes the log's queries use (idempotent), as AUDIT_MONGO_ENSURE_INDEXES
    does at start. Needs the createIndex privilege (and collMod to change a retention)."""
    with app_log() as log:
        indexes.ensure_indexes_of(
            log.collection, retention=retention if retention is not None else log.retention
        )


@audit_commands.command("verify", short_help="Check that no entry was changed, removed or forged.")
@verify.heads_and_since_options
def verify_command(heads_file: Path | None, since: dt.datetime | None) -> None:
    """Recompute every entry's hash and walk each writer's chain with the application's
    signing keys: one line per problem, exit status 4 when there is any."""
    heads = verify.read_heads(heads_file)
    with app_log() as log:
        result = log.verify(since=since, heads=heads)
    click.get_current_context().exit(verify.report(result, heads_file))
