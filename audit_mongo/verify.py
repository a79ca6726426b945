"""Tamper evidence, the checking half: recompute every document's hash and walk each chain.

::

    problems = audit.verify()            # [] when the log is intact
    for problem in problems:
        print(problem)                   # e.g. "missing: chain 5f0c... positions 7-9"

What it finds: a document changed after it was written ("modified"), one without a link
("unlinked": written by something else than audit_mongo), one signed with a key it does not
have ("unknown key"), positions missing from a chain ("missing": deleted documents), a
link that does not follow from the document before it ("broken link"), two documents at
one position ("duplicate"), and, given the heads of an earlier run, a chain cut short
since ("truncated"). Without a signing key, a forger who recomputes the hashes is not
detected; the result says so (``signed`` is False).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from .chain import CHAIN_FIELD, erasure_bytes, signed_bytes
from .signing import SigningKeys

logger = logging.getLogger("audit_mongo")

BATCH = 1000
HEADS_FORMAT = "chain heads are a JSON object of chain id to {seq, hash, created_at}"
UNSIGNED_NOTE = (
    "no signing key: edits and gaps are detected, but not a forger who recomputes the "
    "hashes of the documents he writes (configure signing keys)"
)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the log. ``detail`` never holds a stored value."""

    kind: str  # modified, unlinked, unknown key, missing, broken link, duplicate, truncated
    document_id: Any = None
    chain: str | None = None
    seq: int | None = None
    detail: str = ""

    def __str__(self) -> str:
        where = f" chain {self.chain}" if self.chain else ""
        where += f" position {self.seq}" if self.seq is not None else ""
        where += f" document {self.document_id}" if self.document_id is not None else ""
        return f"{self.kind}:{where}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Head:
    """The last link of a chain seen by a run: keep it to find the chain cut short later."""

    seq: int
    hash: str
    created_at: dt.datetime | None = None  # of its newest document: heads past a retention expire


class Verification(list[Problem]):
    """The problems found (empty: intact), and what was checked."""

    def __init__(self, signed: bool) -> None:
        super().__init__()
        self.signed = signed
        self.documents = 0
        self.chains = 0
        self.heads: dict[str, Head] = {}
        self.notes: list[str] = [] if signed else [UNSIGNED_NOTE]


@dataclass
class _Walk:
    """Where the walk of one chain has got to."""

    id: str
    seq: int = -1
    hash: str | None = None  # the link the next position must follow
    document_id: Any = None
    filler: bool = False  # the position is held by a filler (see chain)
    created_at: dt.datetime | None = None
    since: dt.datetime | None = None


def verify(
    collection: Any,
    keys: SigningKeys,
    *,
    since: dt.datetime | None = None,
    heads: Mapping[str, Head] | None = None,
) -> Verification:
    """Check every document of ``collection`` (created at ``since`` or later: then a
    chain's first position in range need not be 0) against ``keys``, and against the
    ``heads`` of an earlier run (those older than ``since`` left out)."""
    result = Verification(keys.signed)
    earlier = _current_heads(heads, since)
    walk: _Walk | None = None
    stand_ins: dict[Any, Problem] = {}  # filler's document id → the problem if it is absent
    for document in _documents(collection, since):
        result.documents += 1
        body = document.get(CHAIN_FIELD)
        if not _well_formed(body):
            result.append(Problem("unlinked", document.get("_id"), detail="no chain link"))
            continue
        _check_content(document, body, keys, result)
        if walk is None or walk.id != body["id"]:
            _finish(walk, earlier, result)
            walk = _start(body, since, result)
        _step(walk, document, body, result)
        if "stands_for" in body and not body.get("dropped"):
            stand_ins[body.get("stands_for_id")] = _problem(
                "missing", document, body, "the document its filler stands for is absent"
            )
    _finish(walk, earlier, result)
    _check_absent_chains(earlier, result)
    result.extend(_absent(collection, stand_ins))
    if not keys.signed:
        logger.warning("audit_mongo: verify: %s", UNSIGNED_NOTE)
    return result


def _current_heads(heads: Mapping[str, Head] | None, since: dt.datetime | None) -> dict[str, Head]:
    """The heads to compare with: those of chains still within ``since``."""
    return {
        chain: head
        for chain, head in (heads or {}).items()
        if since is None or head.created_at is None or _aware(head.created_at) >= _aware(since)
    }


def _start(body: Mapping[str, Any], since: dt.datetime | None, result: Verification) -> _Walk:
    result.chains += 1
    walk = _Walk(body["id"], since=since)
    if since is None:
        if body["seq"] != 0:
            result.append(_missing(walk.id, 0, body["seq"] - 1))
        return walk
    walk.seq = body["seq"] - 1  # older positions are out of range ...
    if body["seq"] > 0 and not _before(body.get("prev_at"), since):
        result.append(_missing(walk.id, body["seq"] - 1, body["seq"] - 1))  # ... unless new
    return walk


def _before(moment: Any, since: dt.datetime) -> bool:
    """Whether a predecessor created at ``moment`` (its ``prev_at``) is out of range."""
    if not isinstance(moment, dt.datetime):
        return True  # nothing to tell by
    return _aware(moment) < _aware(since)


def _absent(collection: Any, stand_ins: Mapping[Any, Problem]) -> list[Problem]:
    """The problems of the fillers whose document the log does not hold (anywhere)."""
    ids = list(stand_ins)
    found: set[Any] = set()
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        found.update(d["_id"] for d in collection.find({"_id": {"$in": chunk}}, {"_id": 1}))
    return [problem for document_id, problem in stand_ins.items() if document_id not in found]


def _documents(collection: Any, since: dt.datetime | None) -> Iterator[dict[str, Any]]:
    """Unlinked documents first, then each chain in order (the ``audit_chain`` index)."""
    query = {} if since is None else {"created_at": {"$gte": since}}
    order = [(f"{CHAIN_FIELD}.id", 1), (f"{CHAIN_FIELD}.seq", 1), ("_id", 1)]
    yield from collection.find(query, sort=order, batch_size=BATCH)


def _well_formed(body: Any) -> TypeGuard[Mapping[str, Any]]:
    return (
        isinstance(body, Mapping)
        and isinstance(body.get("id"), str)
        and type(body.get("seq")) is int
        and body["seq"] >= 0
        and isinstance(body.get("hash"), str)
    )


def _check_content(
    document: dict[str, Any], body: Mapping[str, Any], keys: SigningKeys, result: Verification
) -> None:
    trouble = content_trouble(document, keys)
    if trouble is not None:
        result.append(_problem(trouble[0], document, body, trouble[1]))


def content_verifies(document: dict[str, Any], keys: SigningKeys) -> bool:
    """Whether ``document`` is linked and reads as it was signed (or erased)."""
    return _well_formed(document.get(CHAIN_FIELD)) and content_trouble(document, keys) is None


def content_trouble(document: dict[str, Any], keys: SigningKeys) -> tuple[str, str] | None:
    """What is wrong with a linked document's content, as (kind, detail); None: nothing."""
    body = document[CHAIN_FIELD]
    erasure = body.get("erasure")
    signer = erasure.get("key") if isinstance(erasure, Mapping) else body.get("key")
    if keys.signed and signer is None:
        return "unsigned", "hashed but not signed, in a signed log"
    if not keys.knows(signer):
        return "unknown key", f"key {signer!r}"
    if erasure is None:
        if keys.matches(signer, _bytes(document, signed_bytes), body["hash"]):
            return None
        return "modified", "does not match its hash"
    if isinstance(erasure, Mapping) and keys.matches(
        signer, _bytes(document, erasure_bytes), erasure.get("hash")
    ):
        return None
    return "modified", "changed after its erasure"


def _bytes(document: dict[str, Any], encode: Callable[[dict[str, Any]], bytes]) -> bytes:
    try:
        return encode(document)
    except Exception:  # a document edited into something BSON cannot carry
        return b""


def _step(
    walk: _Walk, document: dict[str, Any], body: Mapping[str, Any], result: Verification
) -> None:
    seq, link = body["seq"], body.get("stands_for", body["hash"])
    filler = "stands_for" in body
    if seq == walk.seq and walk.hash is not None:
        if link != walk.hash or filler == walk.filler:  # a filler, and the one it stands for
            result.append(_problem("duplicate", document, body, "another document holds it"))
        return
    if seq > walk.seq + 1 and walk.seq >= 0:
        if walk.since is None or not _before(body.get("prev_at"), walk.since):
            result.append(_missing(walk.id, walk.seq + 1, seq - 1))
        # else: those positions hold documents older than ``since`` (late deliveries)
    elif seq == walk.seq + 1 and walk.hash is not None and body.get("prev") != walk.hash:
        result.append(_problem("broken link", document, body, "does not follow its predecessor"))
    elif seq == 0 and ("prev" in body or "prev_id" in body):
        result.append(_problem("broken link", document, body, "a first link names a predecessor"))
    walk.seq, walk.hash, walk.document_id, walk.filler = seq, link, document.get("_id"), filler
    walk.created_at = document.get("created_at", walk.created_at)


def _finish(walk: _Walk | None, heads: Mapping[str, Head], result: Verification) -> None:
    if walk is None or walk.hash is None:
        return
    result.heads[walk.id] = Head(walk.seq, walk.hash, walk.created_at)
    earlier = heads.get(walk.id)
    if earlier is None:
        return
    if earlier.seq > walk.seq:
        result.append(_missing(walk.id, walk.seq + 1, earlier.seq, "truncated"))
    elif earlier.seq == walk.seq and earlier.hash != walk.hash:
        result.append(Problem("modified", walk.document_id, walk.id, walk.seq, "not the head seen"))


def _check_absent_chains(heads: Mapping[str, Head], result: Verification) -> None:
    for chain, head in heads.items():
        if chain not in result.heads:
            result.append(_missing(chain, 0, head.seq, "truncated"))
            result.heads[chain] = head  # still the last head known


def _missing(chain: str, first: int, last: int, kind: str = "missing") -> Problem:
    span = str(first) if first == last else f"{first}-{last}"
    return Problem(kind, None, chain, first, f"positions {span} absent")


def _problem(kind: str, document: dict[str, Any], body: Mapping[str, Any], detail: str) -> Problem:
    return Problem(kind, document.get("_id"), body.get("id"), body.get("seq"), detail)


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.timezone.utc)


def heads_to_json(heads: Mapping[str, Head]) -> dict[str, Any]:
    return {
        chain: {
            "seq": head.seq,
            "hash": head.hash,
            "created_at": None if head.created_at is None else _aware(head.created_at).isoformat(),
        }
        for chain, head in heads.items()
    }


def heads_from_json(data: Any) -> dict[str, Head]:
    """Heads saved by ``heads_to_json``; ``ValueError`` for anything else."""
    if not isinstance(data, Mapping):
        raise ValueError(HEADS_FORMAT)
    return {str(chain): _head(head) for chain, head in data.items()}


def _head(data: Any) -> Head:
    if not isinstance(data, Mapping) or type(data.get("seq")) is not int:
        raise ValueError(HEADS_FORMAT)
    if not isinstance(data.get("hash"), str):
        raise ValueError(HEADS_FORMAT)
    created_at = data.get("created_at")
    if created_at is not None and not isinstance(created_at, str):
        raise ValueError(HEADS_FORMAT)
    moment = None if created_at is None else dt.datetime.fromisoformat(created_at)
    return Head(data["seq"], data["hash"], moment)
