"""Masked attributes: recorded as changed, their values hidden.

A masked value is replaced where capture normalises it, before it joins a row change, so the
real value never reaches the transaction's buffer, its spill file, the outbox or Mongo. It
is stored as a keyed digest when the log has a ``mask_key``::

    "hmac-sha256:" + hex(HMAC-SHA256(mask_key,
                                     b"<table_name>.<attribute>\\0" + bson.encode({"v": value})))

(equal values of one column give equal digests, columns never share one), else as the
placeholder ``"[masked]"``. A null stays null.

Inside the pipeline a masked value travels as ``Masked``: the stored form plus a fingerprint
(a digest under the mask key, or without one under a key that lives only in this process's
memory), so netting a transaction and comparing a statement's rows before and after still
tell a changed value from an unchanged one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import bson

from .normalise import column_value_to_bson

logger = logging.getLogger("audit_mongo")

PLACEHOLDER = "[masked]"
DIGEST_PREFIX = "hmac-sha256:"
MIN_KEY_BYTES = 16  # as for signing keys: a short key would make digests guessable
# Attribute names containing one of these (in any case) are masked unless told otherwise.
DEFAULT_MASK_WORDS = ("password", "secret", "token", "api_key", "apikey")
_STORED_DIGEST = re.compile(r"hmac-sha256:[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Masked:
    """A masked value on its way to a document: ``stored`` is what the document holds."""

    stored: str
    # Equal for equal real values of one column: what netting and statements compare.
    fingerprint: bytes = field(repr=False)


class Masker:
    """Hides values: a keyed digest with a mask key, the placeholder without one."""

    def __init__(self, mask_key: bytes | str | None) -> None:
        self._key = mask_key_bytes(mask_key)
        self._fingerprint_key = self._key or os.urandom(32)

    def mask(self, table_name: str, attribute: str, value: Any) -> Masked | None:
        """The masked form of ``value`` (already normalised); None stays None."""
        if value is None:
            return None
        message = digest_message(table_name, attribute, value)
        digest = hmac.new(self._fingerprint_key, message, hashlib.sha256).digest()
        stored = DIGEST_PREFIX + digest.hex() if self._key is not None else PLACEHOLDER
        return Masked(stored, digest)


@dataclass(frozen=True, slots=True)
class TableMask:
    """What capture masks of one table's rows, and the masker that hides them."""

    table_name: str
    names: frozenset[str]
    masker: Masker

    def apply(self, attribute: str, value: Any) -> Any:
        """``value`` (normalised) as recorded: masked when ``attribute`` is."""
        if attribute not in self.names:
            return value
        return self.masker.mask(self.table_name, attribute, value)


def recorded_masks(
    table_name: str, candidates: frozenset[str], recorded: Iterable[str], kept: Iterable[str]
) -> frozenset[str]:
    """The ``candidates`` a table's capture masks: those it records, but never the ``kept``
    attributes (the primary key, which names the row; the discriminator, which names its
    class), said once per attribute."""
    masked = candidates.intersection(recorded)
    for attribute in sorted(masked.intersection(kept)):
        _warn_once(table_name, attribute)
    return masked.difference(kept)


_warned: set[tuple[str, str]] = set()


def _warn_once(table_name: str, attribute: str) -> None:
    if (table_name, attribute) not in _warned:
        _warned.add((table_name, attribute))
        logger.warning(
            "audit_mongo: %s.%s is masked, but it identifies the row (a primary key or the "
            "class discriminator): it is recorded unmasked",
            table_name,
            attribute,
        )


def digest_message(table_name: str, attribute: str, value: Any) -> bytes:
    """What the digest of a normalised value covers: its column, then its BSON bytes."""
    column = f"{table_name}.{attribute}".encode("utf-8", "surrogatepass")
    return column + b"\x00" + bson.encode({"v": value})


def masked_digest(mask_key: bytes | str, table_name: str, attribute: str, value: Any) -> str | None:
    """The stored form of a Python ``value`` of ``table_name.attribute`` under ``mask_key``
    (None for None): compare it with a document's value to ask "was it set to this?". A
    value whose column has a ``TypeDecorator`` must be given as the decorator stores it."""
    if mask_key is None:
        raise TypeError("masked_digest() needs the mask_key the log was given")
    normalised = column_value_to_bson(value, None, None, f"{table_name}.{attribute}")
    found = Masker(mask_key).mask(table_name, attribute, normalised)
    return found.stored if found is not None else None


def stored(value: Any) -> Any:
    """A value as the document stores it (a masked value's stored form)."""
    return value.stored if isinstance(value, Masked) else value


def is_stored_mask(value: Any) -> bool:
    """Whether a stored value is a masked one: the placeholder or a digest."""
    if not isinstance(value, str):
        return False
    return value == PLACEHOLDER or _STORED_DIGEST.fullmatch(value) is not None


def default_masked(names: Iterable[str]) -> frozenset[str]:
    """The names the default mask covers: those containing a secret word, in any case."""
    return frozenset(n for n in names if any(w in n.lower() for w in DEFAULT_MASK_WORDS))


def mask_key_bytes(mask_key: bytes | str | None) -> bytes | None:
    """The mask key as bytes (a string as UTF-8); its value never appears in an error."""
    if mask_key is None:
        return None
    if isinstance(mask_key, str):
        mask_key = mask_key.encode("utf-8")
    elif not isinstance(mask_key, bytes):
        raise TypeError(
            f"mask_key is an application secret, bytes or str, not {type(mask_key).__name__}"
        )
    if len(mask_key) < MIN_KEY_BYTES:
        raise ValueError(f"mask_key needs {MIN_KEY_BYTES}+ bytes: a long random secret")
    return mask_key
