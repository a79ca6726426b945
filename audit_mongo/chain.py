"""Tamper evidence, the writing half: every document is linked into a chain and signed.

Each thread of each process that writes to Mongo has a chain of its own, named by a random
id, so writers never wait for one another. A document gets its chain's next position as it
is first sent to Mongo (after its transaction committed, or in strict mode just before),
and keeps that link on every redelivery::

    "chain": {
      "id": "5f0c...",        # the writer's chain
      "seq": 41,              # its position, from 0, without gaps
      "prev": "9ab1...",      # the previous document's hash (absent at position 0)
      "prev_id": ObjectId(),  # and its _id
      "prev_at": ISODate(),   # and its created_at (what verify(since=...) goes by)
      "key": "2026-12",       # the signing key's name (absent: hashed, not signed)
      "hash": "77e0..."       # HMAC-SHA256 (or SHA-256) of the document's BSON without "hash"
    }

A position whose document will never be stored under its link (Mongo already held it under
an earlier one, or strict mode dropped it with its refused transaction) is given back when
it is the chain's last; otherwise a signed **filler** takes it: ``{"action": "link", "chain":
{..., "stands_for": <the document's hash>}}``, which the query side never returns and
``verify`` walks through. Fillers need only the insert privilege, like everything else.
"""

from __future__ import annotations

import os
import struct
import threading
import uuid
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import bson

from .document import new_object_id
from .encoding import MAX_DOCUMENT_BYTES, Document, log_repaired, repair
from .signing import SigningKeys

CHAIN_FIELD = "chain"
FILLER_ACTION = "link"
# Room left for the "hash" field (and the link's element header), added after the rest of
# a document is encoded.
HASH_ROOM = len(bson.encode({"hash": "0" * 64})) + 64


@dataclass
class Chain:
    """The head of one writer's chain: the next position and the last link."""

    id: str
    pid: int
    seq: int = 0
    prev_hash: str | None = None
    prev_id: Any = None
    prev_at: Any = None  # the previous document's created_at

    @classmethod
    def start(cls) -> Chain:
        return cls(uuid.uuid4().hex, os.getpid())

    def is_last(self, body: Mapping[str, Any]) -> bool:
        return body.get("id") == self.id and body.get("seq") == self.seq - 1

    def rewind_to(self, body: Mapping[str, Any]) -> None:
        """Give the position of the document linked by ``body`` back (and all after it)."""
        self.seq = body["seq"]
        self.prev_hash = body.get("prev")
        self.prev_id = body.get("prev_id")
        self.prev_at = body.get("prev_at")


class Chains:
    """One chain per thread of this process; a forked child starts chains of its own."""

    def __init__(self, keys: SigningKeys) -> None:
        self.keys = keys
        self._local = threading.local()

    def current(self) -> Chain:
        chain: Chain | None = getattr(self._local, "chain", None)
        if chain is None or chain.pid != os.getpid():
            chain = self._local.chain = Chain.start()
        return chain

    def seal(
        self, documents: Sequence[Document], encoded: Sequence[bytes | None] | None = None
    ) -> dict[int, bytes]:
        """Link and sign, in place, each of ``documents`` not linked before; their BSON as
        sent, by position in ``documents``. ``encoded``: their BSON before, where known."""
        chain = self.current()
        sent, repaired = {}, 0
        for position, document in enumerate(documents):
            if CHAIN_FIELD not in document:
                known = encoded[position] if encoded is not None else None
                sent[position], was_repaired = seal(document, chain, self.keys, known)
                repaired += was_repaired
        if repaired:
            log_repaired(repaired)
        return sent

    def settle(
        self,
        documents: Sequence[Document],
        failed: set[int],
        elsewhere: set[int],
        ambiguous: AbstractSet[int] = frozenset(),
    ) -> list[Document]:
        """After a write, positions in ``documents``: ``failed``, Mongo certainly did not
        store; ``elsewhere``, it held under an earlier link; ``ambiguous``, it held after an
        attempt of this write was cut off (under this link, or an earlier one). Positions
        last in this thread's chain are given back (a failed document is linked anew when
        sent again), but never an ambiguous one; returns fillers for the positions of the
        documents held elsewhere or ambiguously. Failed documents keep their other links:
        they fill their positions when delivered."""
        if not (failed or elsewhere or ambiguous):
            return []  # every document stored under its link: the usual case
        missed = [documents[p] for p in sorted(failed | elsewhere)]
        kept = self._give_back(missed, unlink=[documents[p] for p in failed])
        held = {id(documents[p]) for p in elsewhere}
        fill = [d for d in kept if id(d) in held] + [documents[p] for p in sorted(ambiguous)]
        return [filler(d, self.keys) for d in fill]

    def release(
        self, documents: Sequence[Document], *, maybe_stored: bool, dropped: bool
    ) -> list[Document]:
        """``documents`` will never be sent again under their links: fillers for their
        positions, unless they are surely not in Mongo and last in the chain (given back).
        ``dropped``: their transaction never committed (strict mode), so they need not be
        found anywhere; otherwise they are delivered later under another link."""
        linked = [d for d in documents if isinstance(d.get(CHAIN_FIELD), Mapping)]
        kept = linked if maybe_stored else self._give_back(linked, unlink=linked)
        return [filler(d, self.keys, dropped=dropped) for d in kept]

    def _give_back(self, documents: list[Document], unlink: list[Document]) -> list[Document]:
        """Rewind the chain over those of ``documents`` that are its last links, newest
        first, removing the links of those in ``unlink``; the documents not given back."""
        chain = self.current()
        newest_first = sorted(documents, key=lambda d: d[CHAIN_FIELD]["seq"], reverse=True)
        unlinked = {id(d) for d in unlink}
        while newest_first and chain.is_last(newest_first[0][CHAIN_FIELD]):
            document = newest_first.pop(0)
            chain.rewind_to(document[CHAIN_FIELD])
            if id(document) in unlinked:
                del document[CHAIN_FIELD]
        return newest_first


def seal(
    document: Document, chain: Chain, keys: SigningKeys, encoded: bytes | None = None
) -> tuple[bytes, bool]:
    """Link ``document`` at ``chain``'s head and sign it; its BSON, hash included, and
    whether its values had to be repaired first (a document is signed as Mongo will store
    it). The document is encoded once (or not at all when its BSON is ``encoded``): the
    link is appended to its bytes, and the hash to the link's, exactly as ``bson.encode``
    would lay out the signed document."""
    body: dict[str, Any] = {"id": chain.id, "seq": chain.seq}
    if chain.prev_hash is not None:
        body["prev"] = chain.prev_hash
        body["prev_id"] = chain.prev_id
        if chain.prev_at is not None:
            body["prev_at"] = chain.prev_at
    if keys.signing_id is not None:
        body["key"] = keys.signing_id
    link = bson.encode(body)
    room = len(link) + HASH_ROOM
    if encoded is not None and len(encoded) <= MAX_DOCUMENT_BYTES - room:
        fields, repaired = encoded, False
    else:
        fields, repaired = _encoded(document, room)
    digest = keys.digest(keys.signing_id, _appended(fields, _CHAIN_NAME, link))
    body["hash"] = digest
    document[CHAIN_FIELD] = body
    chain.seq += 1
    chain.prev_hash = digest
    chain.prev_id = document["_id"]
    chain.prev_at = document.get("created_at")
    return _appended(fields, _CHAIN_NAME, _appended(link, _HASH_NAME, _string(digest))), repaired


_CHAIN_NAME = b"\x03" + CHAIN_FIELD.encode() + b"\x00"  # an embedded document's element
_HASH_NAME = b"\x02hash\x00"  # a string's


def _appended(data: bytes, name: bytes, value: bytes) -> bytes:
    """A document's BSON ``data`` with one more field at its end (``name``: type byte and
    C string; ``value``: the encoded value)."""
    size = len(data) + len(name) + len(value)
    return b"".join((_INT32.pack(size), data[4:-1], name, value, b"\x00"))


def _string(text: str) -> bytes:
    encoded = text.encode()
    return _INT32.pack(len(encoded) + 1) + encoded + b"\x00"


_INT32 = struct.Struct("<i")


def _encoded(document: Document, room: int) -> tuple[bytes, bool]:
    """The document's BSON, leaving ``room`` for its link; repaired in place when it cannot
    be encoded or is too large (keeping the dict, which pending stores hold)."""
    limit = MAX_DOCUMENT_BYTES - room
    try:
        data = bson.encode(document)
        if len(data) <= limit:
            return data, False
    except Exception:  # values BSON cannot carry: repaired below, as delivery would
        pass
    repaired = repair(document, limit=limit)
    if repaired is not document:
        document.clear()
        document.update(repaired)
    return bson.encode(document), True


def filler(document: Document, keys: SigningKeys, *, dropped: bool = False) -> Document:
    """A signed document standing, at its position, for ``document``: found elsewhere in
    the log (under another link, or at the same position), or ``dropped`` with a
    transaction that never committed. It has the document's ``created_at``, so that a
    retention and ``verify(since=...)`` treat the two alike."""
    body = document[CHAIN_FIELD]
    link: dict[str, Any] = {k: v for k, v in body.items() if k not in ("hash", "key")}
    link["stands_for"] = body["hash"]
    link["stands_for_id"] = document["_id"]
    if dropped:
        link["dropped"] = True
    if keys.signing_id is not None:
        link["key"] = keys.signing_id
    stand_in: Document = {"_id": new_object_id(), "action": FILLER_ACTION}
    if "created_at" in document:
        stand_in["created_at"] = document["created_at"]
    stand_in[CHAIN_FIELD] = link
    link["hash"] = keys.digest(keys.signing_id, signed_bytes(stand_in))
    return stand_in


def signed_bytes(document: Mapping[str, Any]) -> bytes:
    """The BSON a document's ``chain.hash`` covers: all of it but the hash (and erasure)."""
    body = {k: v for k, v in document[CHAIN_FIELD].items() if k not in ("hash", "erasure")}
    return bson.encode({**document, CHAIN_FIELD: body})


def erasure_bytes(document: Mapping[str, Any]) -> bytes:
    """The BSON an erasure's hash covers: the erased document, its chain link as written,
    and the erasure but its hash."""
    body = dict(document[CHAIN_FIELD])
    body["erasure"] = {k: v for k, v in body["erasure"].items() if k != "hash"}
    return bson.encode({**document, CHAIN_FIELD: body})
