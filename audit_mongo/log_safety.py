"""Saying what failed without the values of audited rows.

An exception's message can carry the values of the rows being audited: bson's ``cannot
encode object: <repr>``, a ``TypeDecorator``'s own message, SQLAlchemy's ``[parameters:
...]`` (an outbox row's parameters are its BSON documents), pymongo's ``dup key: {...}``
and ``full error: {...}``. So at INFO and above the library says what failed, how many
documents or rows, and ``error_summary``: the exception's type and a code where there is
one. The exception itself, message and traceback, is logged at DEBUG only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pymongo.errors import BulkWriteError, ConnectionFailure, OperationFailure
from sqlalchemy.exc import StatementError

logger = logging.getLogger("audit_mongo")

MESSAGE_LIMIT = 500  # characters of a connection error's message
CODE_LIMIT = 40  # characters of an error code
DRIVER_CODES = ("sqlstate", "pgcode", "sqlite_errorname")  # psycopg 3, psycopg2, sqlite3


def log_failure(
    level: int, exc: BaseException, message: str, *args: object, summary: str | None = None
) -> None:
    """Log ``message % args`` at ``level``, followed by ``summary`` (by default
    ``error_summary(exc)``) in parentheses; then ``exc`` in full at DEBUG."""
    logger.log(level, f"{message} (%s)", *args, summary or error_summary(exc), stacklevel=2)
    logger.debug(
        "audit_mongo: the %s above, in full (it may show audited values)",
        type(exc).__name__,
        exc_info=exc,
        stacklevel=2,
    )


def error_summary(exc: BaseException) -> str:
    """``exc``'s type, and what can be said of it without values: ``OperationFailure:
    code 11000 DuplicateKey``."""
    name = type(exc).__name__
    try:
        detail = error_detail(exc)
    except Exception:  # logging a failure must not fail: the type is enough
        return name
    return f"{name}: {detail}" if detail else name


def error_detail(exc: BaseException) -> str | None:
    """What ``exc`` says besides its type that can carry no value, None when nothing: a
    server's codes, a connection error's message (hosts and network errors), a database
    driver's error class and code."""
    if isinstance(exc, BulkWriteError):  # its message and details embed documents
        codes = {error.get("code") for error in exc.details.get("writeErrors") or []}
        return f"write error codes {sorted(c for c in codes if isinstance(c, int))}"
    if isinstance(exc, OperationFailure):  # its message can quote values (dup key: {...})
        details = exc.details if isinstance(exc.details, Mapping) else {}
        named = _codes(exc.code, details.get("codeName"))
        return f"code {' '.join(named)}" if named else None
    if isinstance(exc, ConnectionFailure):  # hosts; a server reply only after "full error"
        return str(exc).split(", full error:")[0][:MESSAGE_LIMIT] or None
    if isinstance(exc, StatementError):  # its message shows the statement's parameters
        return _driver_error(exc.orig)
    return None


def _driver_error(orig: BaseException | None) -> str | None:
    """``sqlite3.IntegrityError SQLITE_CONSTRAINT_UNIQUE``, ``ValueError`` (from a bind
    processor): the wrapped error's class and the driver's error code, if it has one."""
    if orig is None:
        return None
    kind = type(orig)
    name = kind.__qualname__
    if kind.__module__ != "builtins":
        name = f"{kind.__module__}.{name}"
    codes = (getattr(orig, attribute, None) for attribute in DRIVER_CODES)
    return " ".join([name, *_codes(*codes)][:2])


def _codes(*candidates: object) -> list[str]:
    """The candidates that are codes (``11000``, ``DuplicateKey``, ``23505``), as text: a
    short run of letters, digits and underscores, never a message that could quote a value."""
    texts = (str(c) for c in candidates if isinstance(c, (int, str)))
    return [t for t in texts if len(t) <= CODE_LIMIT and t.replace("_", "").isalnum()]
