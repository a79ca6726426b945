"""What every ``audit-mongo`` command shares: exit statuses, the options naming the log,
opening Mongo, and turning failures into clear messages (no tracebacks)."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import click
from pymongo.errors import (
    ConfigurationError,
    ConnectionFailure,
    InvalidName,
    InvalidURI,
    OperationFailure,
    PyMongoError,
)

from ..connect import open_collection
from .params import Seconds

EXIT_OK = 0
EXIT_PENDING = 1  # deliver: documents are left pending
EXIT_USAGE = 2  # click's usage errors: a bad or missing argument
EXIT_UNAVAILABLE = 3  # Mongo (or deliver's outbox database) unreachable, refused or unusable

ENV_URI = "AUDIT_MONGO_URI"
ENV_COLLECTION = "AUDIT_MONGO_COLLECTION"
DEFAULT_COLLECTION = "user_logs"
DEFAULT_SERVER_TIMEOUT = 5.0
MESSAGE_LIMIT = 300  # characters of a server's error message shown

Command = Callable[..., Any]


class Unavailable(click.ClickException):
    """A store the command needs cannot be used: exit status 3, a message, no traceback."""

    exit_code = EXIT_UNAVAILABLE


def usage_error(message: str) -> click.UsageError:
    """A usage error (exit status 2) that shows the running command's usage line."""
    return click.UsageError(message, click.get_current_context(silent=True))


# -- the log: --uri, --collection, --database, --server-timeout ----------------------


@dataclass(frozen=True)
class LogSettings:
    """Which audit collection a command reads or writes, and how long to look for it."""

    uri: str | None
    collection: str
    database: str | None
    server_timeout: float

    def require_uri(self) -> str:
        if not self.uri:
            raise usage_error(f"--uri/--mongo-uri (or {ENV_URI}) is required")
        return self.uri

    def client_options(self) -> dict[str, Any]:
        millis = max(1, round(self.server_timeout * 1000))
        return {"serverSelectionTimeoutMS": millis, "connectTimeoutMS": millis}


def log_options(command: Command) -> Command:
    """Add the options naming the log; the command receives them as ``log: LogSettings``."""

    @functools.wraps(command)
    def run(
        *args: Any,
        uri: str | None,
        collection: str,
        database: str | None,
        server_timeout: float,
        **kwargs: Any,
    ) -> Any:
        settings = LogSettings(uri, collection, database, server_timeout)
        return command(*args, log=settings, **kwargs)

    for option in reversed(_LOG_OPTIONS):
        run = option(run)
    return run


_LOG_OPTIONS = (
    click.option(
        "--uri",
        "--mongo-uri",
        "uri",
        envvar=ENV_URI,
        show_envvar=True,
        metavar="URI",
        help="The Mongo server: mongodb://, mongodb+srv:// or mongomock:// (in memory).",
    ),
    click.option(
        "--collection",
        envvar=ENV_COLLECTION,
        show_envvar=True,
        default=DEFAULT_COLLECTION,
        show_default=True,
        help="The audit collection.",
    ),
    click.option("--database", default=None, help="Default: the URI's, else 'audit'."),
    click.option(
        "--server-timeout",
        type=Seconds(),
        default=DEFAULT_SERVER_TIMEOUT,
        show_default=True,
        help="Seconds to look for a Mongo server before giving up (exit status 3).",
    ),
)


def open_log(settings: LogSettings) -> tuple[Any, Any]:
    """``(client, collection)``: the client is created here, through ``pymongo.MongoClient``
    (or mongomock for ``mongomock://``), without contacting the server yet."""
    uri = settings.require_uri()
    with mongo_errors(settings), uri_errors():
        return open_collection(
            uri, settings.collection, settings.database, settings.client_options()
        )


@contextmanager
def opened(settings: LogSettings) -> Iterator[Any]:
    """The audit collection, its client closed afterwards; Mongo failures inside the block
    become clear errors (exit status 3)."""
    client, collection = open_log(settings)
    try:
        with mongo_errors(settings):
            yield collection
    finally:
        client.close()


@contextmanager
def uri_errors() -> Iterator[None]:
    """pymongo refuses a malformed URI with ``InvalidURI``, or ``ValueError`` (a bad port)."""
    try:
        yield
    except (InvalidURI, ValueError) as exc:
        raise click.BadParameter(_text(exc), param_hint="'--uri'") from None


@contextmanager
def mongo_errors(settings: LogSettings) -> Iterator[None]:
    """Turn what Mongo (or opening it) raises into a usage error or ``Unavailable``."""
    with mongo_failures(
        unreachable=f", gave up after {settings.server_timeout:g} s (--server-timeout); "
        f"check --uri or {ENV_URI}",
        names="--collection or --database",
    ):
        yield


@contextmanager
def mongo_failures(*, unreachable: str, names: str) -> Iterator[None]:
    """Turn what Mongo (or opening it) raises into a usage error or ``Unavailable``, for a
    log named elsewhere than by the options (``flask audit``: the application's config).
    ``unreachable`` follows "Mongo is unreachable (reason)" (what to check); ``names`` is
    what names the collection and database."""
    try:
        yield
    except InvalidName as exc:
        raise usage_error(f"invalid {names}: {_text(exc)}") from None
    except ConnectionFailure as exc:
        raise Unavailable(f"Mongo is unreachable ({_reason(exc)}){unreachable}") from None
    except OperationFailure as exc:
        raise Unavailable(f"Mongo refused the request (code {exc.code}): {_text(exc)}") from None
    except ConfigurationError as exc:
        raise Unavailable(f"cannot use the Mongo URI: {_text(exc)}") from None
    except PyMongoError as exc:
        raise Unavailable(f"Mongo failed: {type(exc).__name__}: {_text(exc)}") from None
    except ImportError as exc:  # mongomock:// without mongomock installed
        raise Unavailable(str(exc)) from None


def _text(exc: BaseException) -> str:
    """An error's message on one line, control characters escaped, at most MESSAGE_LIMIT."""
    text = " ".join(str(exc).split())
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def _reason(exc: ConnectionFailure) -> str:
    """The first part of a server selection error, without the topology description."""
    return _text(exc).split(", Timeout:")[0].split(", Topology Description:")[0]


def check_range(since: dt.datetime | None, until: dt.datetime | None) -> None:
    if since is not None and until is not None and since >= until:
        raise usage_error("--since must be before --until")


@contextmanager
def usage_errors() -> Iterator[None]:
    """The reader refuses bad input with ``ValueError`` (``TypeError`` for a value of the
    wrong type): a usage error here. A reader that knows the models also refuses an unknown
    table or field, and an id that is not of the key's type."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        raise usage_error(str(exc)) from None


# -- building commands from shared parts -------------------------------------------------


def stacked(*decorators: Callable[[Command], Command]) -> Callable[[Command], Command]:
    """The decorators as one, applied as if written one above the other in this order (the
    options then appear in this order in ``--help``)."""

    def apply(command: Command) -> Command:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


def checked(check: Callable[[Mapping[str, Any]], None]) -> Callable[[Command], Command]:
    """Run ``check`` on the parsed options (by name) before the command itself: options that
    do not go together are a usage error before anything is opened."""

    def decorate(command: Command) -> Command:
        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            check(kwargs)
            return command(*args, **kwargs)

        return run

    return decorate
