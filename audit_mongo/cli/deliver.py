"""``audit-mongo deliver``: send the documents waiting in the outbox to Mongo, each once.

::

    audit-mongo deliver --outbox-url postgresql://app@db/app --mongo-uri mongodb://m1/app
    audit-mongo deliver --watch --interval 5     # keep delivering until stopped
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeAlias

import click
from sqlalchemy import create_engine
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ..connect import AuditSetupError
from ..log import AuditLog
from ..log_safety import log_failure
from ..outbox import DEFAULT_TABLE
from .options import (
    EXIT_OK,
    EXIT_PENDING,
    LogSettings,
    Unavailable,
    log_options,
    mongo_errors,
    open_log,
    usage_error,
)
from .params import Seconds
from .verify import key_settings, keys_file_option

logger = logging.getLogger("audit_mongo")

ENV_OUTBOX_URL = "AUDIT_MONGO_OUTBOX_URL"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Handler: TypeAlias = Callable[[int, FrameType | None], Any] | int | None


@click.command(short_help="Send the documents waiting in the outbox to Mongo.")
@click.option(
    "--outbox-url",
    envvar=ENV_OUTBOX_URL,
    show_envvar=True,
    help="SQLAlchemy URL of the application's database.",
)
@click.option("--outbox-table", default=DEFAULT_TABLE, show_default=True)
@click.option(
    "--timeout", type=Seconds(), default=5.0, show_default=True, help="Seconds per Mongo write."
)
@click.option("--watch", is_flag=True, help="Keep delivering until SIGINT or SIGTERM.")
@click.option(
    "--interval", type=Seconds(), default=5.0, show_default=True, help="Seconds between rounds."
)
@keys_file_option
@log_options
def deliver(
    log: LogSettings,
    outbox_url: str | None,
    outbox_table: str,
    timeout: float,
    watch: bool,
    interval: float,
    keys_file: Path | None,
) -> None:
    """Send the documents waiting in the outbox to Mongo, each exactly once, signed with
    the application's keys (the documents are linked into a chain as they are sent).

    Safe to run in several processes at once. Exits 1 when some remain pending.
    """
    if not outbox_url:
        raise usage_error(f"--outbox-url (or {ENV_OUTBOX_URL}) is required")
    log.require_uri()
    keys = key_settings(keys_file)
    cleanup = ExitStack()
    with cleanup:  # closes what was opened, should opening the rest fail
        audit = open_audit(log, Target(outbox_url, outbox_table, timeout, keys), cleanup)
        status = rounds(audit, watch, interval, cleanup)
    click.get_current_context().exit(status)


@dataclass(frozen=True)
class Target:
    """Where ``deliver`` takes documents from, and how it writes them."""

    outbox_url: str
    outbox_table: str
    timeout: float
    keys: tuple[dict[str, str] | None, str | None]  # signing keys and the signing one


def open_audit(log: LogSettings, target: Target, cleanup: ExitStack) -> AuditLog:
    """The log delivering from the outbox; ``cleanup`` closes it, its client and engine."""
    try:
        engine = create_engine(target.outbox_url)
    except (ArgumentError, ImportError) as exc:
        raise click.BadParameter(str(exc), param_hint="'--outbox-url'") from None
    cleanup.callback(engine.dispose)
    client, collection = open_log(log)
    cleanup.callback(client.close)
    keys, key_id = target.keys
    with setup_errors(log), signing_errors():
        audit = AuditLog(
            collection,
            outbox=engine,
            outbox_table=target.outbox_table,
            timeout=target.timeout,
            signing_keys=keys,
            signing_key_id=key_id,
        )
    cleanup.callback(audit.close)
    return audit


@contextmanager
def signing_errors() -> Iterator[None]:
    """Several keys and none named to sign: a usage error."""
    try:
        yield
    except ValueError as exc:
        raise usage_error(str(exc)) from None


@contextmanager
def setup_errors(log: LogSettings) -> Iterator[None]:
    """Starting the log: Mongo's refusals and the outbox database's failures, exit status 3."""
    try:
        with mongo_errors(log):
            yield
    except AuditSetupError as exc:
        raise Unavailable(str(exc)) from None
    except SQLAlchemyError as exc:
        raise _outbox_failure(exc) from None


def _outbox_failure(exc: SQLAlchemyError) -> Unavailable:
    """A failure of the outbox database: exit status 3 with its message."""
    first_line = (str(exc).strip().splitlines() or [""])[0][:300]
    return Unavailable(f"the outbox database failed: {type(exc).__name__}: {first_line}")


def rounds(audit: AuditLog, watch: bool, interval: float, cleanup: ExitStack) -> int:
    """Deliver once, or (``watch``) every ``interval`` until SIGINT/SIGTERM; the exit status.
    ``cleanup`` closes the log before the signal handlers are put back."""
    stop = threading.Event()
    previous = _stop_on_signals(stop) if watch else {}
    try:
        if not watch:
            return _once(audit)
        _watch(audit, stop, interval)
        return EXIT_OK
    finally:
        try:
            cleanup.close()
        finally:
            _restore_signals(previous)


def _once(audit: AuditLog) -> int:
    try:
        delivered, pending = audit.deliver_pending(), audit.pending()
    except SQLAlchemyError as exc:
        raise _outbox_failure(exc) from None
    click.echo(f"delivered {delivered}, pending {pending}")
    return EXIT_PENDING if pending else EXIT_OK


def _watch(audit: AuditLog, stop: threading.Event, interval: float) -> None:
    while True:
        try:
            delivered, pending = audit.deliver_pending(), audit.pending()
        except Exception as exc:  # the database blinked: a watcher keeps watching
            log_failure(logging.ERROR, exc, "audit_mongo: delivery round failed; trying again")
        else:
            if delivered or pending:
                click.echo(f"delivered {delivered}, pending {pending}")
        if stop.wait(interval):
            return


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
