"""Open the audit collection named by a URI (``mongodb://``, ``mongodb+srv://`` or
``mongomock://``), and check at start-up that the server will take inserts into it."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import pymongo
from pymongo.collection import Collection
from pymongo.errors import ConnectionFailure, ExecutionTimeout, OperationFailure

from .log_safety import log_failure

logger = logging.getLogger("audit_mongo")

DEFAULT_DATABASE = "audit"
MEMORY_SCHEME = "mongomock"


def open_collection(
    uri: str, collection: str, database: str | None, client_options: dict[str, Any]
) -> tuple[Any, Any]:
    """Return ``(client, collection)``. The database is ``database``, else the URI's path,
    else ``"audit"``. Clients read dates back as timezone-aware UTC datetimes."""
    options = {"tz_aware": True, **client_options}
    if urlsplit(uri).scheme == MEMORY_SCHEME:
        client = _memory_client(options)
        name = database or urlsplit(uri).path.strip("/") or DEFAULT_DATABASE
    else:
        client = pymongo.MongoClient(uri, appname="audit_mongo", **options)
        name = database or client.get_default_database(DEFAULT_DATABASE).name
    return client, client[name][collection]


def _memory_client(options: dict[str, Any]) -> Any:
    try:
        import mongomock
    except ImportError as exc:
        raise ImportError(
            "mongomock:// needs the in-memory Mongo: pip install 'audit_mongo[memory]'"
        ) from exc
    return mongomock.MongoClient(**options)


class AuditSetupError(Exception):
    """The Mongo server refuses the audit collection: authentication or authorization."""


# Unauthorized, AuthenticationFailed, Atlas's "bad auth"
CREDENTIAL_CODES = frozenset((13, 18, 8000))
NAMESPACE_CODES = frozenset((73,))  # InvalidNamespace


def check_collection(collection: Any, timeout: float) -> None:
    """At start-up, make sure the server will take inserts into ``collection``.

    An unreachable server, or one too slow to answer within ``timeout``, only warns: the
    work waits in the outbox (or memory) until it is back. A reachable one that refuses the
    credentials, or whose user may not insert into the collection, raises
    ``AuditSetupError`` rather than growing a silent backlog. Only pymongo collections are
    checked (mongomock and stand-ins have nothing to refuse).
    """
    if not isinstance(collection, Collection):
        return
    try:
        with pymongo.timeout(timeout):
            privileges = _insert_privileges(collection)
    except ConnectionFailure as exc:
        log_failure(
            logging.WARNING,
            exc,
            "audit_mongo: Mongo is not reachable; audit documents wait as pending work until it is",
        )
        return
    except ExecutionTimeout as exc:  # reachable but slow (code 50): nothing was refused
        log_failure(
            logging.WARNING,
            exc,
            "audit_mongo: Mongo did not answer the start-up check within %s s; audit "
            "documents wait as pending work while it is too slow",
            timeout,
        )
        return
    except OperationFailure as exc:
        what = (
            "credentials"
            if exc.code in CREDENTIAL_CODES
            else "namespace"
            if exc.code in NAMESPACE_CODES
            else "collection"
        )
        raise AuditSetupError(
            f"Mongo refused the audit log's {what} for {collection.full_name} "
            f"(code {exc.code}): {str(exc)[:300]}"
        ) from exc
    if privileges is not None and not _may_insert(privileges, collection):
        raise AuditSetupError(
            f"the Mongo user may not insert into {collection.full_name}: grant it the insert "
            "action on that collection (see the README's insert-only role)"
        )


def _insert_privileges(collection: Collection[Any]) -> list[dict[str, Any]] | None:
    """The authenticated user's privileges; None when the server does not enforce access
    control. ``listCollections`` with ``authorizedCollections`` is allowed to any
    authenticated user and refused (code 13) to an unauthenticated one where auth is on."""
    database = collection.database
    database.command(
        {
            "listCollections": 1,
            "nameOnly": True,
            "authorizedCollections": True,
            "filter": {"name": collection.name},
        }
    )
    status = database.command({"connectionStatus": 1, "showPrivileges": True})
    auth = status.get("authInfo", {})
    if not auth.get("authenticatedUsers"):
        return None
    return list(auth.get("authenticatedUserPrivileges", []))


def _may_insert(privileges: list[dict[str, Any]], collection: Collection[Any]) -> bool:
    database, name = collection.database.name, collection.name
    for privilege in privileges:
        resource = privilege.get("resource", {})
        matches = resource.get("anyResource") or (
            resource.get("db") in ("", database) and resource.get("collection") in ("", name)
        )
        if matches and "insert" in privilege.get("actions", []):
            return True
    return False
