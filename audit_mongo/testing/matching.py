"""Whether an entry has what a test expects of it: each named field compared, in the model's
Python types, with the expected value on the left of ``==`` (so ``unittest.mock.ANY`` and
``pytest.approx`` work)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..entry import AuditEntry, Change


class _NotGiven:
    def __repr__(self) -> str:
        return "<not given>"


NOT_GIVEN: Any = _NotGiven()  # user_id not checked


class _Masked:
    """Equal to any masked value as stored: ``"[masked]"`` or an ``"hmac-sha256:..."``
    digest, not a null nor a plain value."""

    def __eq__(self, other: object) -> bool:
        from ..masking import is_stored_mask  # the package is imported when a test compares

        return is_stored_mask(other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "<masked>"


masked: Any = _Masked()  # the expected value of a masked attribute, whatever its form


def entry_matches(entry: AuditEntry, expected: Mapping[str, Any], user_id: Any) -> bool:
    """Whether ``entry`` (of the expected action) has every expected field, and the user."""
    fields = all(
        field_matches(entry.action, entry.changes.get(name), value)
        for name, value in expected.items()
    )
    return fields and user_matches(user_id, entry.user_id)


def field_matches(action: str, change: Change | None, value: Any) -> bool:
    """A plain value is compared with what the action recorded (the new value, the old one
    for a delete), a 2-tuple with both sides; a collection's keys in any order."""
    pair = isinstance(value, tuple) and len(value) == 2
    if change is None:  # a create lists no nulls; otherwise the field did not change
        return action == "create" and (value == (None, None) if pair else value is None)
    if change.collection:
        if pair:
            return _members(value[0], change.deleted) and _members(value[1], change.added)
        return _members(value, change.added)
    if pair:
        return equal(value[0], change.old) and equal(value[1], change.new)
    return equal(value, change.old if action == "delete" else change.new)


def user_matches(expected: Any, actual: Any) -> bool:
    return expected is NOT_GIVEN or equal(expected, actual)


def equal(expected: Any, actual: Any) -> bool:
    try:
        return bool(expected == actual)  # the expected side first: ANY, approx
    except Exception:
        return False


def _members(expected: Any, actual: list[Any]) -> bool:
    """The same related keys, in any order."""
    if isinstance(expected, Iterable) and not isinstance(expected, (str, bytes)):
        expected = list(expected)
        try:
            return Counter(map(_hashable, expected)) == Counter(map(_hashable, actual))
        except TypeError:
            return equal(expected, actual)
    return equal(expected, actual)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
