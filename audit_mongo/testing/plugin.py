"""The pytest plugin: the ``audit_mongo_models`` ini option, the ``audit_disabled`` marker,
the ``audit_models`` and ``audit_log`` fixtures, and which test is running, for the
assertions to find its ``audit_log``.

Nothing here imports audit_mongo's log, SQLAlchemy or mongomock before a test asks for
``audit_log``: a run that never does pays only for this module.
"""

from __future__ import annotations

import warnings
from collections.abc import Generator, Iterator, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import pytest

from .models import MISSING_MODELS, MODELS_OPTION, checked, load

if TYPE_CHECKING:
    from ..log import AuditLog

DISABLED_MARKER = "audit_disabled"
NO_LOG = (
    "{helper}() does not know which log to read: request the audit_log fixture in this test "
    "(see the audit_mongo.testing docstring), or pass log=<your AuditLog>."
)

# The test items running now, innermost last (pytester runs pytest inside a test).
_running: list[pytest.Item] = []
_LOG_KEY = pytest.StashKey["AuditLog"]()


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
    return [load(spec) for spec in specs]


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
    from ..log import AuditLog, PendingInMemoryWarning

    models = checked(audit_models)
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


def running_log(helper: str) -> Any:
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
