"""Whole documents as BSON: repaired when they cannot be encoded or are too large, encoded
for the outbox, decoded back for redelivery.

A repaired document keeps its ``_id``, so a redelivery of it is still recognised by Mongo.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import bson
from bson.codec_options import CodecOptions

from .normalise import fallback

logger = logging.getLogger("audit_mongo")

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
Document = dict[str, Any]
# Dates come back aware, as the documents were built; every other type round-trips as is.
DECODE_OPTIONS: CodecOptions[Document] = CodecOptions(tz_aware=True)


def encode_all(documents: Sequence[Document]) -> tuple[list[Document], bytes]:
    """``documents`` (those that needed it repaired) and their BSON, concatenated."""
    kept: list[Document] = []
    encoded: list[bytes] = []
    repaired = 0
    for document in documents:
        try:
            data = bson.encode(document)
        except Exception:
            data = b""
        if not data or len(data) > MAX_DOCUMENT_BYTES:
            document = repair(document)
            data = bson.encode(document)
            repaired += 1
        kept.append(document)
        encoded.append(data)
    if repaired:
        log_repaired(repaired)
    return kept, b"".join(encoded)


def decode_all(data: bytes) -> list[Document]:
    return bson.decode_all(data, DECODE_OPTIONS)


def log_repaired(count: int) -> None:
    logger.warning(
        "audit_mongo: %d audit documents could not be encoded or exceeded 16 MiB; their "
        "offending values were replaced by markers",
        count,
    )


def repair(document: Document) -> Document:
    """``document`` itself if it encodes within the size limit, else a copy that does.

    In the copy, each change value that cannot be encoded becomes the ``unrepresentable``
    fallback; then, while the document is over 16 MiB, the largest values, one by one,
    become ``{"omitted": "too large", "bson_bytes": n}``.
    """
    try:
        if len(bson.encode(document)) <= MAX_DOCUMENT_BYTES:
            return document
    except Exception:
        pass
    where = f"{document.get('table_name')}.changes"
    changes = {
        attribute: {
            side: [_encodable(value, f"{where}.{attribute}") for value in values]
            for side, values in change.items()
        }
        for attribute, change in document.get("changes", {}).items()
    }
    repaired = {**document, "changes": changes}
    excess = len(bson.encode(repaired)) - MAX_DOCUMENT_BYTES
    if excess > 0:
        _omit_largest_values(changes, excess)
    return repaired


def _encodable(value: Any, where: str) -> Any:
    try:
        bson.encode({"v": value})
    except Exception:
        return fallback(value, where)
    return value


def _omit_largest_values(changes: dict[str, dict[str, list[Any]]], excess: int) -> None:
    slots = [
        (len(bson.encode({"v": value})), values, index)
        for change in changes.values()
        for values in change.values()
        for index, value in enumerate(values)
    ]
    for size, values, index in sorted(slots, key=lambda slot: slot[0], reverse=True):
        if excess <= 0:
            return
        values[index] = marker = {"omitted": "too large", "bson_bytes": size}
        excess -= size - len(bson.encode({"v": marker}))
