"""Test your own auditing: a pytest plugin, and assertions on what the log recorded.

Installed with audit_mongo, the plugin is loaded by pytest through the ``pytest11`` entry
point; it does nothing until a test asks for its ``audit_log`` fixture. Name your models in
the pytest configuration (lines of ``package.module:Name``, a mapped class or a declarative
base)::

    # pytest.ini (or [tool.pytest.ini_options] in pyproject.toml)
    [pytest]
    audit_mongo_models =
        myapp.models:Base

or override the ``audit_models`` fixture to return them. Then::

    from audit_mongo.testing import assert_audited, assert_not_audited

    def test_rename_is_audited(audit_log, session):
        client = Client(name="Acme")
        session.add(client)
        session.commit()
        client.name = "Acme Ltd"
        with audit_log.acting_as(42):
            session.commit()

        assert_audited(client, "create", {"name": "Acme"})
        assert_audited(client, "update", {"name": ("Acme", "Acme Ltd")}, user_id=42)

    @pytest.mark.audit_disabled  # the audit_log fixture records nothing in this test
    def test_fixtures_load_silently(audit_log, session):
        ...

``audit_log`` is a fresh ``AuditLog`` per test on an in-memory Mongo (mongomock, from
``pip install 'audit_mongo[memory]'``), tracking the models, closed (its listeners removed)
when the test ends. ``with audit_log.disabled():`` records nothing for a block.
"""

from __future__ import annotations

import importlib
import warnings
from collections import Counter
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # the package is imported when a fixture or an assertion runs
    from sqlalchemy.orm.state import InstanceState

    from .entry import AuditEntry, Change
    from .log import AuditLog
    from .reader import AuditReader

__all__ = ["assert_audited", "assert_not_audited"]

MODELS_OPTION = "audit_mongo_models"
DISABLED_MARKER = "audit_disabled"
ACTIONS = ("create", "update", "delete")
FLUSH_TIMEOUT = 10.0  # seconds an assertion waits for a background writer
SHOWN_ENTRIES = 20  # entries a failure message lists, newest first

MISSING_MODELS = (
    "audit_mongo: the audit_log fixture does not know which models to track. Name them in "
    f"your pytest configuration:\n\n    [pytest]\n    {MODELS_OPTION} =\n        "
    "myapp.models:Base\n\n(lines of package.module:Name, a mapped class or a declarative "
    "base), or override the audit_models fixture to return them."
)
NO_LOG = (
    "{helper}() does not know which log to read: request the audit_log fixture in this test "
    "(see the audit_mongo.testing docstring), or pass log=<your AuditLog>."
)


class _NotGiven:
    def __repr__(self) -> str:
        return "<not given>"


NOT_GIVEN: Any = _NotGiven()

# The test items running now, innermost last (pytester runs pytest inside a test).
_running: list[pytest.Item] = []
_LOG_KEY = pytest.StashKey["AuditReader"]()


# -- the plugin ---------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        MODELS_OPTION,
        type="linelist",
        default=[],
        help="audit_mongo: models the audit_log fixture tracks, one package.module:Name a "
        "line (a mapped class or a declarative base)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{DISABLED_MARKER}: the audit_log fixture (audit_mongo) records nothing during this "
        "test, its fixtures' setup and teardown included",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, Any, None]:
    """Note the running test, for the assertions to find its ``audit_log`` fixture."""
    _running.append(item)
    try:
        yield
    finally:
        _running.remove(item)


@pytest.fixture
def audit_models(pytestconfig: pytest.Config) -> Sequence[type]:
    """The mapped classes or declarative bases ``audit_log`` tracks: by default those the
    ``audit_mongo_models`` ini option names. Override it to choose them in code::

        @pytest.fixture
        def audit_models():
            return [Client, Invoice]
    """
    specs: list[str] = pytestconfig.getini(MODELS_OPTION)
    if not specs:
        pytest.fail(MISSING_MODELS, pytrace=False)
    return [_load(spec) for spec in specs]


@pytest.fixture
def audit_log(request: pytest.FixtureRequest, audit_models: Any) -> Iterator[AuditLog]:
    """A fresh ``AuditLog`` on an in-memory Mongo collection, tracking ``audit_models``.

    Its listeners are removed when the test ends. Under ``@pytest.mark.audit_disabled`` it
    records nothing for the whole test (in the test's thread and the asyncio tasks it
    starts). ``assert_audited()`` and ``assert_not_audited()`` read it unless given
    ``log=``::

        def test_delete_is_audited(audit_log, session, client):
            session.delete(client)
            session.commit()
            assert_audited(client, "delete", {"name": "Acme"})
            entries = list(audit_log.history(client))  # the whole query API is there too
            assert [e.action for e in entries] == ["delete", "create"]
    """
    from .log import AuditLog, PendingInMemoryWarning

    models = _models(audit_models)
    with warnings.catch_warnings():  # no outbox, on purpose: nothing is ever pending
        warnings.simplefilter("ignore", PendingInMemoryWarning)
        try:
            log = AuditLog.from_uri("mongomock://", database="audit_mongo_test")
        except ImportError as exc:
            pytest.fail(f"audit_mongo: the audit_log fixture needs mongomock: {exc}", pytrace=False)
    item = request.node
    try:
        for model in models:
            log.track(model)
        item.stash[_LOG_KEY] = log
        with ExitStack() as stack:
            if item.get_closest_marker(DISABLED_MARKER) is not None:
                stack.enter_context(log.disabled())
            yield log
    finally:
        if _LOG_KEY in item.stash:
            del item.stash[_LOG_KEY]
        log.close()


# -- assertions ---------------------------------------------------------------------------


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

    Each field of ``changes`` is an attribute name; its value is compared with what the
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
    log, notes = _prepare(log, "assert_audited")
    state = _state(obj)
    expected = dict(changes or {})
    _check_fields(state, expected)
    collections = _collections(state)
    wanted = _expectation(action, expected, user_id, collections)
    row = _row_name(state)
    if state.identity is None:
        raise AssertionError(
            f"expected {_article(action)} {action} of {row}{wanted}\nit was never flushed, "
            "let alone committed: nothing can be recorded for it" + _notes(notes, state, log)
        )
    entries = list(log.history(obj))
    for entry in entries:
        if entry.action == action and not _differences(entry, expected, user_id, collections):
            return entry
    lines = [f"expected {_article(action)} {action} of {row}{wanted}"]
    if not entries:
        lines.append(f"no entries at all for {row}")
    else:
        lines.append(f"{row} has {_count(entries)}, newest first:")
        for entry in entries[:SHOWN_ENTRIES]:
            lines.append(f"  {entry.describe()}")
            if entry.action == action:
                differences = _differences(entry, expected, user_id, collections)
                lines.extend(f"      {line}" for line in differences)
        if len(entries) > SHOWN_ENTRIES:
            lines.append(f"  ... and {len(entries) - SHOWN_ENTRIES} older")
    raise AssertionError("\n".join(lines) + _notes(notes, state, log))


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
    log, notes = _prepare(log, "assert_not_audited")
    state = _state(obj)
    if state.identity is None:
        return
    found = [e for e in log.history(obj) if action is None or e.action == action]
    if found:
        kind = f"{action} " if action is not None else ""
        lines = [f"expected no {kind}entries for {_row_name(state)}, found {len(found)}:"]
        lines.extend(f"  {entry.describe()}" for entry in found[:SHOWN_ENTRIES])
        if len(found) > SHOWN_ENTRIES:
            lines.append(f"  ... and {len(found) - SHOWN_ENTRIES} older")
        raise AssertionError("\n".join(lines) + _notes(notes, state, log))


# -- which log, which row -----------------------------------------------------------------


def _prepare(log: AuditReader | None, helper: str) -> tuple[AuditReader, list[str]]:
    """The log to read, written up to now (a background writer waited for), and notes."""
    __tracebackhide__ = True
    from .log import AuditLog
    from .reader import AuditReader

    log = log if log is not None else _fixture_log(helper)
    if not isinstance(log, AuditReader):
        raise TypeError(f"{helper}(): log must be an AuditLog or an AuditReader, not {log!r}")
    notes: list[str] = []
    if isinstance(log, AuditLog) and not log.flush(FLUSH_TIMEOUT):
        notes.append(f"the background writer had not written its queue after {FLUSH_TIMEOUT} s")
    return log, notes


def _fixture_log(helper: str) -> Any:
    """The running test's ``audit_log`` fixture value: the test's own (an override
    included), else the plugin's fixture being set up for it (from another fixture)."""
    __tracebackhide__ = True
    if _running:
        item = _running[-1]
        funcargs: dict[str, Any] = getattr(item, "funcargs", None) or {}
        found = funcargs.get("audit_log")
        if found is None:
            found = item.stash.get(_LOG_KEY, None)
        if found is not None:
            return found
    raise RuntimeError(NO_LOG.format(helper=helper))


def _state(obj: Any) -> InstanceState[Any]:
    from sqlalchemy import inspect
    from sqlalchemy.orm.state import InstanceState

    state = inspect(obj, raiseerr=False)
    if not isinstance(state, InstanceState):
        raise TypeError(f"{obj!r} is not an instance of a mapped class")
    return state


def _row_name(state: InstanceState[Any]) -> str:
    """``clients 5``: the row as the entries' ``describe()`` names it."""
    from .table_info import identity_table

    table = identity_table(state.mapper)
    identity = state.identity
    if identity is None:
        return f"{table} (a new {state.class_.__name__}, no primary key yet)"
    key = identity[0] if len(identity) == 1 else tuple(identity)
    return f"{table} {key!r}"


def _notes(notes: list[str], state: InstanceState[Any], log: AuditReader) -> str:
    """What may explain a missing entry: uncommitted work, pending documents, disabled()."""
    from .log import AuditLog

    notes = list(notes)
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


# -- comparing ----------------------------------------------------------------------------


def _check_action(action: str) -> None:
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")


def _check_fields(state: InstanceState[Any], expected: Mapping[str, Any]) -> None:
    known = set(state.mapper.attrs.keys())
    unknown = sorted(name for name in expected if name not in known)
    if unknown:
        raise ValueError(
            f"{state.class_.__name__} has no attribute {', '.join(map(repr, unknown))} "
            f"(its attributes: {', '.join(sorted(known))})"
        )


def _collections(state: InstanceState[Any]) -> frozenset[str]:
    """The many-to-many relationships: recorded as the keys of related rows."""
    return frozenset(r.key for r in state.mapper.relationships if r.secondary is not None)


def _differences(
    entry: AuditEntry, expected: Mapping[str, Any], user_id: Any, collections: frozenset[str]
) -> list[str]:
    """Why ``entry`` (of the expected action) does not match: one line per field."""
    from .entry import describe_change

    lines = []
    for name, value in expected.items():
        change = entry.changes.get(name)
        if _matches(entry.action, change, value):
            continue
        want = _describe_expected(entry.action, value, name in collections)
        got = "not in this entry" if change is None else f"recorded {describe_change(change)}"
        lines.append(f"{name}: expected {want}, {got}")
    if user_id is not NOT_GIVEN and not _equal(user_id, entry.user_id):
        lines.append(f"user: expected {_who(user_id)}, recorded {_who(entry.user_id)}")
    return lines


def _matches(action: str, change: Change | None, value: Any) -> bool:
    pair = isinstance(value, tuple) and len(value) == 2
    if change is None:  # a create lists no nulls; otherwise the field did not change
        return action == "create" and (value == (None, None) if pair else value is None)
    if change.collection:
        if pair:
            return _members(value[0], change.deleted) and _members(value[1], change.added)
        return _members(value, change.added)
    if pair:
        return _equal(value[0], change.old) and _equal(value[1], change.new)
    return _equal(value, change.old if action == "delete" else change.new)


def _equal(expected: Any, actual: Any) -> bool:
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
            return _equal(expected, actual)
    return _equal(expected, actual)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# -- describing ---------------------------------------------------------------------------


def _expectation(
    action: str, expected: Mapping[str, Any], user_id: Any, collections: frozenset[str]
) -> str:
    parts = [
        f"{name} {_describe_expected(action, value, name in collections)}"
        for name, value in expected.items()
    ]
    text = f" with {'; '.join(parts)}" if parts else ""
    if user_id is not NOT_GIVEN:
        text += f", by {_who(user_id)}"
    return text


def _describe_expected(action: str, value: Any, collection: bool) -> str:
    from .entry import short

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


def _article(action: str) -> str:
    return "an" if action == "update" else "a"


def _count(entries: Sequence[AuditEntry]) -> str:
    return "1 entry" if len(entries) == 1 else f"{len(entries)} entries"


# -- models -------------------------------------------------------------------------------


def _load(spec: str) -> type:
    """``package.module:Name`` (or ``package.module.Name``) imported."""
    module_name, _, attribute = spec.strip().partition(":")
    if not attribute:
        module_name, _, attribute = module_name.rpartition(".")
    if not module_name or not attribute:
        pytest.fail(
            f"audit_mongo: {MODELS_OPTION}: {spec!r} is not package.module:Name", pytrace=False
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise  # the module exists; something it imports does not
        pytest.fail(f"audit_mongo: {MODELS_OPTION}: cannot import {spec!r}: {exc}", pytrace=False)
    for part in attribute.split("."):
        if not hasattr(target, part):
            pytest.fail(
                f"audit_mongo: {MODELS_OPTION}: {spec!r}: {target.__name__} has no {part!r}",
                pytrace=False,
            )
        target = getattr(target, part)
    return target  # type: ignore[no-any-return]


def _models(value: Any) -> list[type]:
    """What ``audit_models`` gave, checked: mapped classes and declarative bases."""
    from sqlalchemy import inspect
    from sqlalchemy.orm import Mapper, registry

    models = [value] if isinstance(value, type) else list(value or ())
    if not models:
        pytest.fail(MISSING_MODELS, pytrace=False)
    for model in models:
        mapped = isinstance(model, type) and isinstance(inspect(model, raiseerr=False), Mapper)
        base = isinstance(model, type) and isinstance(getattr(model, "registry", None), registry)
        if not (mapped or base):
            pytest.fail(
                f"audit_mongo: {model!r} (from audit_models) is neither a mapped class nor a "
                "declarative base",
                pytrace=False,
            )
    return models
