"""``assert_audited`` and ``assert_not_audited``: what the log recorded of one object's row,
read through the query API (so values are in the model's Python types)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import messages
from .matching import NOT_GIVEN, entry_matches
from .plugin import running_log

if TYPE_CHECKING:  # the package is imported when an assertion runs
    from sqlalchemy.orm.state import InstanceState

    from ..entry import AuditEntry
    from ..reader import AuditReader

__all__ = ["assert_audited", "assert_not_audited"]

ACTIONS = ("create", "update", "delete")
FLUSH_TIMEOUT = 10.0  # seconds an assertion waits for a background writer


def assert_audited(
    obj: Any,
    action: str,
    changes: Mapping[str, Any] | None = None,
    *,
    user_id: Any = NOT_GIVEN,
    log: AuditReader | None = None,
) -> AuditEntry:
    """Assert that ``obj``'s row has an entry of ``action`` (``"create"``, ``"update"``,
    ``"delete"``) with the given ``changes``, and return it (the newest that matches).

    Each field of ``changes`` is an attribute name the log records (an excluded or unknown
    one raises ``ValueError``, as in the query API); its value is compared with what the
    entry recorded, in the model's Python types (``Decimal``, ``date``, enum members...):

    - a plain value: with the value the action recorded: the new one for a create or an
      update, the old one for a delete (a create lists no nulls: ``None`` matches a field it
      does not list);
    - a 2-tuple ``(old, new)``: with both. To compare a tuple value, spell both sides;
    - for a many-to-many collection, the related keys: a plain value is compared with the
      keys added, ``(removed, added)`` with both, in any order.

    Fields not named are not checked. ``user_id`` checks who acted (``None``: nobody known).
    The expected value is compared first, so ``unittest.mock.ANY`` and ``pytest.approx``
    work. ``log`` is the ``AuditLog`` (or ``AuditReader``) to read; by default the running
    test's ``audit_log`` fixture. A background writer is waited for first.

    ::

        assert_audited(client, "create")
        assert_audited(client, "update", {"name": ("Acme", "Acme Ltd")}, user_id=42)
        assert_audited(invoice, "update", {"total": Decimal("9.99"), "due": date(2024, 5, 1)})
        assert_audited(client, "delete", {"email": "a@example.com"}, log=app.audit)

    A failure says what was expected and lists the row's entries (each as
    ``AuditEntry.describe()`` shows it), or says there are none.
    """
    __tracebackhide__ = True
    _check_action(action)
    log, known = _prepare(log, "assert_audited")
    state = _state(obj)
    expected = dict(changes or {})
    _check_fields(log, state, expected)
    collections = frozenset(r.key for r in state.mapper.relationships if r.secondary is not None)
    row = messages.row_name(state)
    wanted = messages.expectation(action, row, expected, user_id, collections)
    if state.identity is None:
        raise AssertionError(
            f"{wanted}\nit was never flushed, let alone committed: nothing can be recorded "
            "for it" + messages.notes(state, log, known)
        )
    entries = list(log.history(obj))
    for entry in entries:
        if entry.action == action and entry_matches(entry, expected, user_id):
            return entry
    listed = messages.entries_listed(row, entries, action, expected, user_id, collections)
    raise AssertionError("\n".join([wanted, *listed]) + messages.notes(state, log, known))


def assert_not_audited(
    obj: Any, action: str | None = None, *, log: AuditReader | None = None
) -> None:
    """Assert that ``obj``'s row has no entry (of ``action``, if given); a failure lists
    those it has. An object never flushed has none.

    ::

        with audit_log.disabled():
            session.add(client)
            session.commit()
        assert_not_audited(client)
        assert_not_audited(client, "delete")
    """
    __tracebackhide__ = True
    if action is not None:
        _check_action(action)
    log, known = _prepare(log, "assert_not_audited")
    state = _state(obj)
    if state.identity is None:
        return
    found = [e for e in log.history(obj) if action is None or e.action == action]
    if found:
        kind = f"{action} " if action is not None else ""
        lines = [f"expected no {kind}entries for {messages.row_name(state)}, found {len(found)}:"]
        lines.extend(messages.found_listed(found))
        raise AssertionError("\n".join(lines) + messages.notes(state, log, known))


def _prepare(log: AuditReader | None, helper: str) -> tuple[AuditReader, list[str]]:
    """The log to read, written up to now (a background writer waited for), and notes."""
    __tracebackhide__ = True
    from ..log import AuditLog
    from ..reader import AuditReader

    log = log if log is not None else running_log(helper)
    if not isinstance(log, AuditReader):
        raise TypeError(f"{helper}(): log must be an AuditLog or an AuditReader, not {log!r}")
    known: list[str] = []
    if isinstance(log, AuditLog) and not log.flush(FLUSH_TIMEOUT):
        known.append(f"the background writer had not written its queue after {FLUSH_TIMEOUT} s")
    return log, known


def _state(obj: Any) -> InstanceState[Any]:
    __tracebackhide__ = True
    from sqlalchemy import inspect
    from sqlalchemy.orm.state import InstanceState

    state = inspect(obj, raiseerr=False)
    if not isinstance(state, InstanceState):
        raise TypeError(f"{obj!r} is not an instance of a mapped class")
    return state


def _check_action(action: str) -> None:
    __tracebackhide__ = True
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")


def _check_fields(log: AuditReader, state: InstanceState[Any], names: Iterable[str]) -> None:
    """Refuse a field the log never records of ``state``'s rows, with the query API's own
    check (``TableModel.check_field``): an excluded or unknown attribute; and, of this
    class, an attribute recorded only for another class of its hierarchy, or never (a
    relationship other than a many-to-many one)."""
    __tracebackhide__ = True
    model = log._catalog.model(state.mapper)
    name_of_class = state.class_.__name__
    recorded = (model.columns_of(name_of_class) | model.collections) - model.excluded
    for name in names:
        if name in recorded:
            continue
        listed = f"of {name_of_class}, the audit log records {', '.join(sorted(recorded))}"
        if name in state.mapper.attrs and name not in model.excluded:
            raise ValueError(f"{name_of_class}.{name} is never recorded ({listed})")
        try:
            model.check_field(name)  # excluded, or no class of the table has it
        except ValueError as exc:
            raise ValueError(str(exc)) from None  # its message, without the catalog's frames
        raise ValueError(f"{name_of_class} has no attribute {name!r} ({listed})")
