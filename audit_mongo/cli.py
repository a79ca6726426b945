"""The ``audit-mongo`` command line (also ``python -m audit_mongo``).

::

    audit-mongo deliver --outbox-url postgresql://app@db/app --mongo-uri mongodb://m1/app
    audit-mongo deliver --watch --interval 5     # keep delivering until stopped

Settings fall back to the environment: ``AUDIT_MONGO_URI``, ``AUDIT_MONGO_COLLECTION``,
``AUDIT_MONGO_OUTBOX_URL``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, TypeAlias

from sqlalchemy import create_engine

from .log import AuditLog
from .outbox import DEFAULT_TABLE

logger = logging.getLogger("audit_mongo")

EXIT_DELIVERED = 0
EXIT_PENDING = 1  # documents are left pending: Mongo refused or is unreachable
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Handler: TypeAlias = Callable[[int, FrameType | None], Any] | int | None


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    if not arguments.outbox_url:
        parser.error("--outbox-url (or AUDIT_MONGO_OUTBOX_URL) is required")
    if not arguments.mongo_uri:
        parser.error("--mongo-uri (or AUDIT_MONGO_URI) is required")
    result: int = arguments.run(arguments)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audit-mongo", description="audit_mongo tools")
    commands = parser.add_subparsers(required=True, metavar="command")
    deliver = commands.add_parser(
        "deliver",
        help="send pending audit documents from the outbox to Mongo",
        description="Send the documents waiting in the outbox to Mongo, each exactly once. "
        "Safe to run in several processes at once. Exits 1 when some remain pending.",
    )
    environ = os.environ.get
    deliver.add_argument("--mongo-uri", default=environ("AUDIT_MONGO_URI"))
    deliver.add_argument("--collection", default=environ("AUDIT_MONGO_COLLECTION", "user_logs"))
    deliver.add_argument("--database", default=None, help="default: the URI's, else 'audit'")
    deliver.add_argument(
        "--outbox-url",
        default=environ("AUDIT_MONGO_OUTBOX_URL"),
        help="SQLAlchemy URL of the application's database",
    )
    deliver.add_argument("--outbox-table", default=DEFAULT_TABLE)
    deliver.add_argument("--timeout", type=_positive, default=5.0, help="seconds per Mongo write")
    deliver.add_argument("--watch", action="store_true", help="keep delivering until stopped")
    deliver.add_argument("--interval", type=_positive, default=5.0, help="seconds between rounds")
    deliver.set_defaults(run=_deliver)
    return parser


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _deliver(arguments: argparse.Namespace) -> int:
    engine = create_engine(arguments.outbox_url)
    audit = AuditLog.from_uri(
        arguments.mongo_uri,
        arguments.collection,
        database=arguments.database,
        outbox=engine,
        outbox_table=arguments.outbox_table,
        timeout=arguments.timeout,
    )
    stop = threading.Event()
    previous = _stop_on_signals(stop) if arguments.watch else {}
    try:
        while True:
            try:
                delivered, pending = audit.deliver_pending(), audit.pending()
            except Exception:  # the database blinked: a watcher keeps watching
                if not arguments.watch:
                    raise
                logger.exception("audit_mongo: delivery round failed; trying again")
                if stop.wait(arguments.interval):
                    return EXIT_DELIVERED
                continue
            if delivered or pending or not arguments.watch:
                print(f"delivered {delivered}, pending {pending}", flush=True)
            if not arguments.watch:
                return EXIT_PENDING if pending else EXIT_DELIVERED
            if stop.wait(arguments.interval):
                return EXIT_DELIVERED
    finally:
        try:
            audit.close()
            engine.dispose()
        finally:
            _restore_signals(previous)


def _stop_on_signals(stop: threading.Event) -> dict[int, Handler]:
    """Make SIGINT and SIGTERM set ``stop``; return the handlers they had."""

    def handler(signum: int, frame: FrameType | None) -> None:
        # Not stop.set() here: the handler runs in the main thread, which may be inside
        # stop.wait() holding the event's lock.
        threading.Thread(target=stop.set).start()

    return {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}


def _restore_signals(previous: dict[int, Handler]) -> None:
    """Put back the handlers ``_stop_on_signals`` replaced, so that a caller of ``main()``
    (an application, a test run) keeps its own Ctrl-C handling."""
    for signum, handler in previous.items():
        # None: the handler was not installed from Python; the default is the closest.
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
