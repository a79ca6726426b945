"""The ``audit-mongo`` command line (also ``python -m audit_mongo``).

::

    audit-mongo history clients 5                 # a row's history, newest first
    audit-mongo user 42 --since 7d                # what user 42 did this week
    audit-mongo user --nobody --since 1d          # changes no user was known for
    audit-mongo recent --table clients --action delete
    audit-mongo export --format csv --since 2026-01-01 > audit.csv
    audit-mongo tail --table clients              # follow new entries
    audit-mongo show-indexes / ensure-indexes
    audit-mongo deliver --outbox-url postgresql://app@db/app
    audit-mongo verify --heads heads.json          # changed, removed or forged entries

Every command takes ``--uri`` (``AUDIT_MONGO_URI``), ``--collection``
(``AUDIT_MONGO_COLLECTION``, default ``user_logs``), ``--database`` and
``--server-timeout``. Exit statuses: 0 done, 1 documents left pending (``deliver``),
2 usage error, 3 Mongo (or the outbox database) unreachable, refused or unusable, 4
problems found (``verify``).

1 means "pending" here, not Python's "an error": a ``SystemExit`` whose code is not an
integer (``sys.exit("message")``, from a command or anything it calls) is an error whose
cause is unknown, so its message goes to stderr and the status is 2, as for a usage error,
never 1 (a script would read that as "documents pending, try again later").

Calling ``main(argv)`` runs the command line and returns the exit status.
"""

from __future__ import annotations

from typing import Any

import click

from .. import __version__
from . import deliver, indexes, queries, tail, verify  # modules: not shadowed by commands
from .options import EXIT_OK, EXIT_PENDING, EXIT_UNAVAILABLE, EXIT_USAGE

__all__ = ["EXIT_OK", "EXIT_PENDING", "EXIT_UNAVAILABLE", "EXIT_USAGE", "main"]


class CommandLine(click.Group):
    """The ``audit-mongo`` group. Called (the console script, ``python -m audit_mongo``,
    ``main(["deliver", ...])``), it returns the exit status instead of exiting."""

    def __call__(self, *args: Any, **kwargs: Any) -> int:
        kwargs.setdefault("prog_name", "audit-mongo")
        try:
            self.main(*args, **kwargs)  # standalone mode: always ends in SystemExit
        except SystemExit as exit_:
            if exit_.code is not None and not isinstance(exit_.code, int):
                click.echo(str(exit_.code), err=True)  # what Python would print, exiting
            return exit_status(exit_.code)
        return EXIT_OK


def exit_status(code: object) -> int:
    """A ``SystemExit`` code as the exit status: None is 0, an integer itself, anything
    else (a message) 2, never 1, which means documents left pending."""
    if code is None:
        return EXIT_OK
    return int(code) if isinstance(code, int) else EXIT_USAGE


@click.group(
    name="audit-mongo",
    cls=CommandLine,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Exit status: 0 done; 1 documents left pending (deliver); 2 usage error; "
    "3 Mongo (or the outbox database) unreachable, refused or unusable; 4 problems found "
    "(verify).",
)
@click.version_option(__version__, prog_name="audit-mongo")
def main() -> None:
    """Read the audit log kept in MongoDB, follow it, manage its indexes and deliver what
    waits in the outbox."""


for command in (
    queries.history,
    queries.user,
    queries.recent,
    queries.export,
    tail.tail,
    indexes.show_indexes,
    indexes.ensure_indexes_command,
    deliver.deliver,
    verify.verify_command,
):
    main.add_command(command)
