"""The keys that sign audit documents: a ring of named secrets, one of which signs.

::

    keys = SigningKeys({"2026-12": os.environ["AUDIT_KEY_2026_12"], "2026-06": old}, "2026-12")

Every document records the name of the key that signed it, so rotating means adding a new
key, making it the signing one, and keeping the old ones for as long as ``verify`` must
check what they signed. With no key at all, documents are hashed (SHA-256) instead of
signed: edits and gaps are still found, but anyone who can write to the collection can
recompute the hashes of a forgery.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

KEYS_VARIABLE = "AUDIT_MONGO_SIGNING_KEYS"  # a JSON object of key name to secret
KEY_ID_VARIABLE = "AUDIT_MONGO_SIGNING_KEY_ID"  # which of them signs
MIN_SECRET_BYTES = 16


class SigningKeys:
    """Named secrets; ``signing_id`` names the one new documents are signed with."""

    def __init__(
        self,
        keys: Mapping[str, bytes | str] | None = None,
        signing_id: str | None = None,
        *,
        signs: bool = True,
    ) -> None:
        """``signs=False``: only to verify, so several keys need not name one that signs."""
        self._secrets = {name: _secret(name, value) for name, value in _mapping(keys).items()}
        if signing_id is None and len(self._secrets) == 1:
            signing_id = next(iter(self._secrets))
        if signing_id is None and self._secrets and signs:
            raise ValueError("several signing keys: say which one signs with signing_key_id")
        if signing_id is not None and signing_id not in self._secrets:
            raise ValueError("signing_key_id names none of the signing keys")
        self.signing_id = signing_id

    @property
    def signed(self) -> bool:
        """Whether there is a secret at all (else documents are only hashed)."""
        return bool(self._secrets)

    def check_signer(self) -> None:
        """Raise unless new signatures can be made: with no key, or with the signing one
        named."""
        if self.signed and self.signing_id is None:
            raise ValueError("several signing keys: say which one signs with signing_key_id")

    def knows(self, name: str | None) -> bool:
        return name is None or name in self._secrets

    def digest(self, name: str | None, data: bytes) -> str:
        """HMAC-SHA256 of ``data`` with the key ``name``; SHA-256 when ``name`` is None."""
        if name is None:
            return hashlib.sha256(data).hexdigest()
        return hmac.new(self._secrets[name], data, hashlib.sha256).hexdigest()

    def matches(self, name: str | None, data: bytes, expected: Any) -> bool:
        if not isinstance(expected, str) or not self.knows(name):
            return False
        return hmac.compare_digest(self.digest(name, data), expected)


def parse_keys(text: str, where: str) -> dict[str, str]:
    """A JSON object of key name → secret (text), as kept in a file or a variable."""
    try:
        keys = json.loads(text)
    except ValueError:
        raise ValueError(f"{where} is not a JSON object of key name to secret") from None
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        raise ValueError(f"{where} is not a JSON object of key name to secret")
    return keys


def _mapping(keys: Mapping[str, bytes | str] | None) -> Mapping[str, bytes | str]:
    if keys is None:
        return {}
    if not isinstance(keys, Mapping):
        raise TypeError("signing_keys is a mapping of key name to secret, e.g. {'2026-12': b'...'}")
    return keys


def _secret(name: Any, value: Any) -> bytes:
    if not isinstance(name, str) or not name:
        raise ValueError("signing key names are non-empty strings")
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes):
        raise TypeError(f"signing key {name!r}: the secret is bytes or str")
    if len(value) < MIN_SECRET_BYTES:
        raise ValueError(f"signing key {name!r}: a secret needs {MIN_SECRET_BYTES}+ bytes")
    return value
