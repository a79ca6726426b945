"""Open the audit collection named by a URI: ``mongodb://``, ``mongodb+srv://`` or ``mongomock://``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pymongo import MongoClient

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
        client = MongoClient(uri, appname="audit_mongo", **options)
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
