"""Erasure: a person's values taken out of the log without breaking its evidence.

::

    audit.erase("users", 7)                            # every value recorded for users row 7
    audit.erase("users", 7, fields=["email", "phone"])  # just these attributes
    audit.erase_actor(7)                               # the context of what user 7 did

Each erased value becomes ``{"erased": true}``. The document keeps its chain link as it was
written (so the next document still follows it) and gains ``chain.erasure``: when, which
attributes, the key, and a signature of the erased document. ``verify`` then checks the
erased document against that signature: the erasure passes, any other change, before or
after it, is still found. A document that does not verify is not erased (an erasure must
not launder an edit); one without any link (written before tamper evidence) is erased
without a signature, since there is no evidence to keep. Erasing needs ``find`` and
``update`` on the collection: an admin's privileges, never the application's.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from .chain import CHAIN_FIELD, erasure_bytes
from .document import commit_time
from .signing import SigningKeys

logger = logging.getLogger("audit_mongo")

ERASED: dict[str, Any] = {"erased": True}
ALL = None  # every field, or every context key


@dataclass(frozen=True)
class Redaction:
    """What to erase in each document: attributes in ``changes`` and keys of ``context``,
    each ``ALL`` or a collection of names (empty: none)."""

    fields: Collection[str] | None = ALL
    context: Collection[str] | None = ()


@dataclass
class Erasure:
    """What ``erase`` did: documents rewritten, and those left alone because they did not
    verify (their ``_id``s)."""

    erased: int = 0
    refused: list[Any] = field(default_factory=list)


def erase(
    collection: Any, keys: SigningKeys, query: Mapping[str, Any], redaction: Redaction
) -> Erasure:
    """Replace the values ``redaction`` names in the documents ``query`` matches by the
    erased marker."""
    from .verify import content_verifies  # verify builds on erasure_bytes

    result = Erasure()
    at = commit_time()
    for document in collection.find(query):
        if CHAIN_FIELD in document and not content_verifies(document, keys):
            result.refused.append(document["_id"])
            continue
        erased = erased_document(document, redaction, keys, at)
        if erased is not None:
            result.erased += _replace(collection, document, erased)
    if result.refused:
        logger.error(
            "audit_mongo: %d audit documents were not erased: they do not verify",
            len(result.refused),
        )
    return result


def erased_document(
    document: dict[str, Any], redaction: Redaction, keys: SigningKeys, at: dt.datetime
) -> dict[str, Any] | None:
    """``document`` with the values ``redaction`` names erased and the erasure signed; None
    when there is nothing (more) to erase."""
    changes, fields = _erased_changes(document.get("changes"), redaction.fields)
    context, context_keys = _erased_values(document.get("context"), redaction.context)
    if not fields and not context_keys:
        return None
    erased = {**document, "changes": changes}
    if context_keys:
        erased["context"] = context
    body = document.get(CHAIN_FIELD)
    if isinstance(body, Mapping) and "hash" in body:
        erased[CHAIN_FIELD] = _sign(
            body, {"fields": fields, "context": context_keys}, keys, at, erased
        )
    return erased


def _erased_changes(changes: Any, names: Collection[str] | None) -> tuple[Any, list[str]]:
    """``changes`` with the chosen fields' values erased, and the fields that held some."""
    if not isinstance(changes, Mapping):
        return changes, []
    chosen = [n for n in changes if (names is ALL or n in names) and not _erased(changes[n])]
    return {n: _erase(c) if n in chosen else c for n, c in changes.items()}, chosen


def _erased_values(values: Any, names: Collection[str] | None) -> tuple[Any, list[str]]:
    """``context`` with the chosen keys' values erased, and the keys that held some."""
    if not isinstance(values, Mapping) or names == ():
        return values, []
    chosen = [k for k, v in values.items() if (names is ALL or k in names) and v != ERASED]
    return {k: ERASED if k in chosen else v for k, v in values.items()}, chosen


def _sign(
    body: Mapping[str, Any],
    names: Mapping[str, list[str]],
    keys: SigningKeys,
    at: dt.datetime,
    erased: dict[str, Any],
) -> dict[str, Any]:
    earlier = body.get("erasure")
    earlier = earlier if isinstance(earlier, Mapping) else {}
    erasure: dict[str, Any] = {"at": at}
    for part, chosen in names.items():
        every = sorted({*earlier.get(part, []), *chosen})
        if every:
            erasure[part] = every
    if keys.signing_id is not None:
        erasure["key"] = keys.signing_id
    signed = {**{k: v for k, v in body.items() if k != "erasure"}, "erasure": erasure}
    erasure["hash"] = keys.digest(keys.signing_id, erasure_bytes({**erased, CHAIN_FIELD: signed}))
    return signed


def _erase(change: Any) -> Any:
    if not isinstance(change, Mapping):
        return change
    return {side: [ERASED] * len(v) if isinstance(v, list) else v for side, v in change.items()}


def _erased(change: Any) -> bool:
    if not isinstance(change, Mapping):
        return True
    return all(value == ERASED for v in change.values() if isinstance(v, list) for value in v)


def _replace(collection: Any, document: dict[str, Any], erased: dict[str, Any]) -> int:
    """Rewrite ``document`` unless someone else changed it meanwhile (then 0)."""
    match: dict[str, Any] = {"_id": document["_id"]}
    body = document.get(CHAIN_FIELD)
    if isinstance(body, Mapping) and "hash" in body:
        match[f"{CHAIN_FIELD}.hash"] = body["hash"]
    return int(collection.replace_one(match, erased).modified_count)
