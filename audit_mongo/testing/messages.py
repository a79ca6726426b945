"""What a failed assertion says: what was expected, the row's entries (each as
``AuditEntry.describe()`` shows it) with what differs under each of the expected action, and
notes on what may explain a missing entry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .matching import NOT_GIVEN, field_matches, user_matches

if TYPE_CHECKING:
    from sqlalchemy.orm.state import InstanceState

    from ..entry import AuditEntry
    from ..reader import AuditReader

SHOWN_ENTRIES = 20  # entries a failure message lists, newest first


def expectation(
    action: str,
    row: str,
    expected: Mapping[str, Any],
    user_id: Any,
    collections: frozenset[str],
) -> str:
    """``expected an update of clients 1 with name 'Acme' → 'Acme Ltd', by 42``."""
    parts = [
        f"{name} {_describe_expected(action, value, name in collections)}"
        for name, value in expected.items()
    ]
    text = f"expected {'an' if action == 'update' else 'a'} {action} of {row}"
    if parts:
        text += f" with {'; '.join(parts)}"
    if user_id is not NOT_GIVEN:
        text += f", by {_who(user_id)}"
    return text


def entries_listed(
    row: str,
    entries: Sequence[AuditEntry],
    action: str,
    expected: Mapping[str, Any],
    user_id: Any,
    collections: frozenset[str],
) -> list[str]:
    """The row's entries, newest first, the fields that differ under each of ``action``."""
    if not entries:
        return [f"no entries at all for {row}"]
    count = "1 entry" if len(entries) == 1 else f"{len(entries)} entries"
    lines = [f"{row} has {count}, newest first:"]
    for entry in entries[:SHOWN_ENTRIES]:
        lines.append(f"  {entry.describe()}")
        if entry.action == action:
            lines.extend(
                f"      {line}" for line in differences(entry, expected, user_id, collections)
            )
    return lines + _older(entries)


def found_listed(found: Sequence[AuditEntry]) -> list[str]:
    """Entries a test expected none of, newest first."""
    return [f"  {entry.describe()}" for entry in found[:SHOWN_ENTRIES]] + _older(found)


def differences(
    entry: AuditEntry, expected: Mapping[str, Any], user_id: Any, collections: frozenset[str]
) -> list[str]:
    """Why ``entry`` (of the expected action) does not match: one line per field."""
    from ..entry import describe_change

    lines = []
    for name, value in expected.items():
        change = entry.changes.get(name)
        if field_matches(entry.action, change, value):
            continue
        want = _describe_expected(entry.action, value, name in collections)
        got = "not in this entry" if change is None else f"recorded {describe_change(change)}"
        lines.append(f"{name}: expected {want}, {got}")
    if not user_matches(user_id, entry.user_id):
        lines.append(f"user: expected {_who(user_id)}, recorded {_who(entry.user_id)}")
    return lines


def row_name(state: InstanceState[Any]) -> str:
    """``clients 5``: the row as the entries' ``describe()`` names it."""
    from ..table_info import identity_table

    table = identity_table(state.mapper)
    identity = state.identity
    if identity is None:
        return f"{table} (a new {state.class_.__name__}, no primary key yet)"
    key = identity[0] if len(identity) == 1 else tuple(identity)
    return f"{table} {key!r}"


def notes(state: InstanceState[Any], log: AuditReader, known: Sequence[str] = ()) -> str:
    """``known`` notes, and what else may explain a missing entry: uncommitted work,
    pending documents, disabled()."""
    from ..log import AuditLog

    notes = list(known)
    session = state.session
    if session is not None:
        uncommitted = bool(session.new or session.dirty or session.deleted)
        if isinstance(log, AuditLog) and not uncommitted:
            uncommitted = bool(log.uncommitted_changes(session))
        if uncommitted:
            notes.append(
                "the object's session has changes it has not committed: entries are written "
                "when the transaction commits"
            )
    if isinstance(log, AuditLog):
        if not log.closed and not log.recording:
            notes.append(
                "this log is disabled here (a disabled() block or @pytest.mark.audit_disabled)"
            )
        if log.closed:
            notes.append("this log is closed: it records nothing")
        else:
            try:
                pending = log.pending()
            except Exception:  # a note, not the assertion: never hide the real failure
                pending = 0
            if pending:
                notes.append(f"{pending} audit documents await delivery to Mongo (log.pending())")
    return "".join(f"\nnote: {note}" for note in notes)


def _older(entries: Sequence[AuditEntry]) -> list[str]:
    left = len(entries) - SHOWN_ENTRIES
    return [f"  ... and {left} older"] if left > 0 else []


def _describe_expected(action: str, value: Any, collection: bool) -> str:
    from ..entry import short

    pair = isinstance(value, tuple) and len(value) == 2
    if collection:
        return f"+{value[1]!r} -{value[0]!r}" if pair else f"+{value!r}"
    if pair:
        return f"{short(value[0])} → {short(value[1])}"
    if action == "create":
        return f"None → {short(value)}"
    if action == "delete":
        return f"{short(value)} → None"
    return f"→ {short(value)}"


def _who(user_id: Any) -> str:
    return "nobody known" if user_id is None else repr(user_id)
