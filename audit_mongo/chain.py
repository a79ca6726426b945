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
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bson

from .document import new_object_id
from .encoding import MAX_DOCUMENT_BYTES, Document, log_repaired, repair
from .signing import SigningKeys

CHAIN_FIELD = "chain"
FILLER_ACTION = "link"
# Room left for the "hash" field, added after the rest of a document is encoded.
HASH_ROOM = len(bson.encode({"hash": "0" * 64})) + 64


@dataclass
class Chain:
    """The head of one writer's chain: the next position and the last link."""

    id: str
    pid: int
    seq: int = 0
    prev_hash: str | None = None
    prev_id: Any = None

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

    def seal(self, documents: Sequence[Document]) -> list[int]:
        """Link and sign, in place, each of ``documents`` not linked before; their
        positions in ``documents``."""
        chain = self.current()
        fresh = [p for p, document in enumerate(documents) if CHAIN_FIELD not in document]
        repaired = sum(seal(documents[p], chain, self.keys) for p in fresh)
        if repaired:
            log_repaired(repaired)
        return fresh

    def settle(
        self, documents: Sequence[Document], failed: set[int], duplicates: set[int]
    ) -> list[Document]:
        """After a write: ``failed`` are positions Mongo certainly did not store,
        ``duplicates`` those it held under an earlier link. Positions last in this thread's
        chain are given back (a failed document is linked anew when sent again); returns
        fillers for the duplicates' other positions. Failed documents keep their other links:
        they fill their positions when delivered."""
        missed = [documents[p] for p in sorted(failed | duplicates)]
        kept = self._give_back(missed, unlink=[documents[p] for p in failed])
        stored_elsewhere = {id(documents[p]) for p in duplicates}
        return [filler(d[CHAIN_FIELD], self.keys) for d in kept if id(d) in stored_elsewhere]

    def release(self, documents: Sequence[Document], maybe_stored: bool) -> list[Document]:
        """``documents`` are dropped (their transaction never committed): fillers for their
        positions, unless they are surely not in Mongo and last in the chain (given back)."""
        linked = [d for d in documents if isinstance(d.get(CHAIN_FIELD), Mapping)]
        kept = linked if maybe_stored else self._give_back(linked, unlink=linked)
        return [filler(d[CHAIN_FIELD], self.keys) for d in kept]

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


def seal(document: Document, chain: Chain, keys: SigningKeys) -> bool:
    """Link ``document`` at ``chain``'s head and sign it; True when its values had to be
    repaired first (a document is signed as Mongo will store it)."""
    body: dict[str, Any] = {"id": chain.id, "seq": chain.seq}
    if chain.prev_hash is not None:
        body["prev"] = chain.prev_hash
        body["prev_id"] = chain.prev_id
    if keys.signing_id is not None:
        body["key"] = keys.signing_id
    document[CHAIN_FIELD] = body
    data, repaired = _encoded(document)
    body["hash"] = keys.digest(keys.signing_id, data)
    chain.seq += 1
    chain.prev_hash = body["hash"]
    chain.prev_id = document["_id"]
    return repaired


def _encoded(document: Document) -> tuple[bytes, bool]:
    """The document's BSON, leaving room for its hash; repaired in place when it cannot be
    encoded or is too large (keeping the dict, which pending stores hold)."""
    try:
        data = bson.encode(document)
        if len(data) <= MAX_DOCUMENT_BYTES - HASH_ROOM:
            return data, False
    except Exception:  # values BSON cannot carry: repaired below, as delivery would
        pass
    repaired = repair(document, limit=MAX_DOCUMENT_BYTES - HASH_ROOM)
    if repaired is not document:
        document.clear()
        document.update(repaired)
    return bson.encode(document), True


def filler(body: Mapping[str, Any], keys: SigningKeys) -> Document:
    """A signed document standing, at its position, for the one ``body`` linked."""
    link: dict[str, Any] = {k: v for k, v in body.items() if k not in ("hash", "key")}
    link["stands_for"] = body["hash"]
    if keys.signing_id is not None:
        link["key"] = keys.signing_id
    document: Document = {"_id": new_object_id(), "action": FILLER_ACTION, CHAIN_FIELD: link}
    link["hash"] = keys.digest(keys.signing_id, signed_bytes(document))
    return document


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
