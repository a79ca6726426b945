"""The ``audit-mongo`` command line (also ``python -m audit_mongo``).

::

    audit-mongo deliver --outbox-url postgresql://app@db/app --mongo-uri mongodb://m1/app
    audit-mongo deliver --watch --interval 5     # keep delivering until stopped

Settings fall back to the environment: ``AUDIT_MONGO_URI``, ``AUDIT_MONGO_COLLECTION``,
``AUDIT_MONGO_OUTBOX_URL``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from sqlalchemy import create_engine

from .log import AuditLog
from .outbox import DEFAULT_TABLE

EXIT_DELIVERED = 0
EXIT_PENDING = 1  # documents are left pending: Mongo refused or is unreachable


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
    deliver.add_argument(
        "--collection", default=environ("AUDIT_MONGO_COLLECTION", "user_logs")
    )
    deliver.add_argument("--database", default=None, help="default: the URI's, else 'audit'")
    deliver.add_argument(
        "--outbox-url",
        default=environ("AUDIT_MONGO_OUTBOX_URL"),
        help="SQLAlchemy URL of the application's database",
    )
    deliver.add_argument("--outbox-table", default=DEFAULT_TABLE)
    deliver.add_argument("--timeout", type=float, default=5.0, help="seconds per Mongo write")
    deliver.add_argument("--watch", action="store_true", help="keep delivering until stopped")
    deliver.add_argument("--interval", type=float, default=5.0, help="seconds between rounds")
    deliver.set_defaults(run=_deliver)
    return parser


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
    if arguments.watch:
        _stop_on_signals(stop)
    try:
        while True:
            delivered = audit.deliver_pending()
            pending = audit.pending()
            if delivered or pending or not arguments.watch:
                print(f"delivered {delivered}, pending {pending}", flush=True)
            if not arguments.watch:
                return EXIT_PENDING if pending else EXIT_DELIVERED
            if stop.wait(arguments.interval):
                return EXIT_DELIVERED
    finally:
        audit.close()
        engine.dispose()


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
