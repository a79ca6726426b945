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

A masked attribute's value is its stored form (``"[masked]"`` or an ``"hmac-sha256:..."``
digest): expect that string, or ``masked``, which equals any masked value::

    from audit_mongo.testing import masked

    assert_audited(user, "update", {"password_hash": masked})

``audit_log`` is a fresh ``AuditLog`` per test on an in-memory Mongo (mongomock, from
``pip install 'audit_mongo[memory]'``), tracking the models, closed (its listeners removed)
when the test ends. ``with audit_log.disabled():`` records nothing for a block.
"""

from .assertions import assert_audited, assert_not_audited
from .matching import masked

# The pytest plugin is this package (the pytest11 entry point names it): its hooks and
# fixtures must be attributes of it.
from .plugin import audit_log as audit_log
from .plugin import audit_models as audit_models
from .plugin import pytest_addoption as pytest_addoption
from .plugin import pytest_configure as pytest_configure
from .plugin import pytest_runtest_protocol as pytest_runtest_protocol

__all__ = ["assert_audited", "assert_not_audited", "masked"]
