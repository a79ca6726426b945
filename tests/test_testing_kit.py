"""``audit_mongo.testing``: the pytest plugin (run on small user test suites with pytester)
and the assertions (called directly, with ``log=``)."""

from __future__ import annotations

import ast
import datetime as dt
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from unittest.mock import ANY

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from audit_mongo import AuditEntry, AuditLog
from audit_mongo.testing import assert_audited, assert_not_audited
from tests.models import Account, Article, Base, Client, Engineer, Sample, Tag

pytest_plugins = ["pytester"]

# -- a user's project, as pytester writes it ----------------------------------------------

MODELS = """
import datetime as dt
from decimal import Decimal

from sqlalchemy import Date, Numeric, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Client(Base):
    __tablename__ = "clients"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str | None] = mapped_column(String(100))
    email: Mapped[str | None] = mapped_column(String(100))


class Invoice(Base):
    __tablename__ = "invoices"
    id: Mapped[int] = mapped_column(primary_key=True)
    total: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    due: Mapped[dt.date] = mapped_column(Date)


class NotAModel:
    pass
"""

CONFTEST = """
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from models import Base


@pytest.fixture
def session():
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        yield s
    engine.dispose()
"""

# Every warning is an error: the fixture's log has no outbox, and must not say so.
INI = """
[pytest]
pythonpath = .
filterwarnings =
    error
"""


def project(pytester: pytest.Pytester, models_option: str | None = "models:Base") -> None:
    pytester.makepyfile(models=MODELS, conftest=CONFTEST)
    ini = INI
    if models_option is not None:
        ini += "audit_mongo_models =\n" + textwrap.indent(models_option, "    ") + "\n"
    pytester.makeini(ini)


def test_create_update_and_delete_pass(pytester: pytest.Pytester) -> None:
    project(pytester)
    pytester.makepyfile(
        """
        from audit_mongo import AuditEntry
        from audit_mongo.testing import assert_audited
        from models import Client


        def test_lifecycle(audit_log, session):
            client = Client(name="Acme", email="a@example.com")
            session.add(client)
            session.commit()
            key = client.id
            client.name = "Acme Ltd"
            with audit_log.acting_as(42):
                session.commit()
            session.delete(client)
            session.commit()

            created = assert_audited(client, "create", {"name": "Acme", "email": "a@example.com"})
            assert isinstance(created, AuditEntry) and created.changes["id"].new == key
            assert_audited(client, "create")
            assert_audited(client, "update", {"name": ("Acme", "Acme Ltd")}, user_id=42)
            assert_audited(client, "update", {"name": "Acme Ltd"})
            assert_audited(client, "delete", {"name": "Acme Ltd", "email": "a@example.com"})
            assert_audited(client, "delete", user_id=None)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_failure_shows_what_was_expected_and_the_entries(pytester: pytest.Pytester) -> None:
    project(pytester)
    pytester.makepyfile(
        """
        from audit_mongo.testing import assert_audited
        from models import Client


        def test_rename(audit_log, session):
            client = Client(name="Acme")
            session.add(client)
            session.commit()
            client.name = "Acme Inc"
            with audit_log.acting_as(7):
                session.commit()

            assert_audited(client, "update", {"name": ("Acme", "Acme Ltd")}, user_id=42)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            ">*assert_audited(client, *",
            "E       AssertionError: expected an update of clients 1 with name 'Acme' → 'Acme Ltd'"
            ", by 42",
            "E       clients 1 has 2 entries, newest first:",
            "E         update clients 1 by 7 at *: name 'Acme' → 'Acme Inc'",
            "E             name: expected 'Acme' → 'Acme Ltd', recorded 'Acme' → 'Acme Inc'",
            "E             user: expected 42, recorded 7",
            "E         create clients 1 by nobody known at *: id None → 1; name None → 'Acme'",
        ]
    )
    # The helper's own frames are hidden: the traceback ends at the user's call.
    assert "def assert_audited" not in result.stdout.str()
    assert "audit_mongo/testing" not in result.stdout.str()


def test_no_entries_and_uncommitted_work_are_spelled_out(pytester: pytest.Pytester) -> None:
    project(pytester)
    pytester.makepyfile(
        """
        from audit_mongo.testing import assert_audited
        from models import Client


        def test_flushed_only(audit_log, session):
            client = Client(name="Acme")
            session.add(client)
            session.flush()
            assert_audited(client, "create", {"name": "Acme"})
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E       AssertionError: expected a create of clients 1 with name None → 'Acme'",
            "E       no entries at all for clients 1",
            "E       note: the object's session has changes it has not committed: entries are "
            "written when the transaction commits",
        ]
    )


def test_typed_values_compare_in_the_models_types(pytester: pytest.Pytester) -> None:
    project(pytester)
    pytester.makepyfile(
        """
        import datetime as dt
        from decimal import Decimal

        from audit_mongo.testing import assert_audited
        from models import Invoice


        def make(session):
            invoice = Invoice(total=Decimal("9.99"), due=dt.date(2024, 5, 1))
            session.add(invoice)
            session.commit()
            invoice.total = Decimal("10.50")
            session.commit()
            return invoice


        def test_typed(audit_log, session):
            invoice = make(session)
            created = {"total": Decimal("9.99"), "due": dt.date(2024, 5, 1)}
            assert_audited(invoice, "create", created)
            assert_audited(invoice, "update", {"total": (Decimal("9.99"), Decimal("10.50"))})
            assert_audited(invoice, "update", {"total": Decimal("10.5")})


        def test_stored_form_is_not_the_models_type(audit_log, session):
            invoice = make(session)
            assert_audited(invoice, "create", {"due": "2024-05-01"})
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E       AssertionError: expected a create of invoices 1 with due None → '2024-05-01'",
            "E         update invoices 1 by nobody known at *: "
            "total Decimal('9.99') → Decimal('10.50')",
            "E         create invoices 1 by nobody known at *: id None → 1; total None → "
            "Decimal('9.99'); due None → datetime.date(2024, 5, 1)",
            "E             due: expected None → '2024-05-01', "
            "recorded None → datetime.date(2024, 5, 1)",
        ]
    )


def test_disabled_block_and_function_record_nothing(pytester: pytest.Pytester) -> None:
    project(pytester)
    pytester.makepyfile(
        """
        from audit_mongo.testing import assert_audited, assert_not_audited
        from models import Client


        def test_block(audit_log, session):
            with audit_log.disabled():
                quiet = Client(name="quiet")
                session.add(quiet)
                session.commit()
            loud = Client(name="loud")
            session.add(loud)
            session.commit()

            assert_not_audited(quiet)
            assert_audited(loud, "create", {"name": "loud"})


        def test_function(audit_log, session):
            @audit_log.disabled()
            def load(name):
                session.add(Client(name=name))
                session.commit()

            load("a")
            load("b")
            assert list(audit_log.for_table(Client)) == []
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_the_audit_disabled_marker_covers_the_whole_test(pytester: pytest.Pytester) -> None:
    project(pytester)
    pytester.makepyfile(
        """
        import pytest

        from audit_mongo.testing import assert_audited, assert_not_audited
        from models import Client


        @pytest.fixture
        def seeded(audit_log, session):
            client = Client(name="seed")
            session.add(client)
            session.commit()
            return client


        @pytest.mark.audit_disabled
        def test_marked(seeded, session, audit_log):
            seeded.name = "changed"
            session.commit()
            assert_not_audited(seeded)
            assert list(audit_log.for_table(Client)) == []


        def test_next_test_records_again(seeded, session):
            assert_audited(seeded, "create", {"name": "seed"})


        def test_a_missing_entry_says_the_log_is_disabled(audit_log, session):
            with audit_log.disabled():
                client = Client(name="quiet")
                session.add(client)
                session.commit()
                assert_audited(client, "create")
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E           no entries at all for clients 1",  # indented: called in a block
            "E           note: this log is disabled here (a disabled() block or "
            "@pytest.mark.audit_disabled)",
        ]
    )


def test_each_test_gets_a_fresh_log_closed_when_it_ends(pytester: pytest.Pytester) -> None:
    project(pytester)
    pytester.makepyfile(
        """
        from sqlalchemy import inspect

        from models import Client

        logs = []


        def listeners():
            return len(inspect(Client).dispatch.before_insert)


        def test_first(audit_log, session):
            logs.append(audit_log)
            assert listeners() > 0
            session.add(Client(name="a"))
            session.commit()
            assert len(list(audit_log.for_table(Client))) == 1


        def test_second(audit_log):
            assert logs[0].closed and audit_log is not logs[0]
            assert list(audit_log.for_table(Client)) == []  # a new, empty collection


        def test_after():
            assert listeners() == 0
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=3)


def test_assert_not_audited_lists_what_it_found(pytester: pytest.Pytester) -> None:
    project(pytester)
    pytester.makepyfile(
        """
        from audit_mongo.testing import assert_not_audited
        from models import Client


        def test_update_only(audit_log, session):
            client = Client(name="Acme")
            session.add(client)
            session.commit()
            assert_not_audited(client, "update")
            assert_not_audited(Client(name="never flushed"))


        def test_unexpected(audit_log, session):
            client = Client(name="Acme")
            session.add(client)
            session.commit()
            assert_not_audited(client)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E       AssertionError: expected no entries for clients 1, found 1:",
            "E         create clients 1 by nobody known at *: id None → 1; name None → 'Acme'",
        ]
    )


def test_missing_configuration_is_a_clear_error(pytester: pytest.Pytester) -> None:
    project(pytester, models_option=None)
    pytester.makepyfile(
        """
        def test_uses_the_log(audit_log):
            pass


        def test_does_not(session):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*audit_mongo: the audit_log fixture does not know which models to track. Name "
            "them in your pytest configuration:",
            "*audit_mongo_models =",
            "*myapp.models:Base",
            "*override the audit_models fixture to return them.",
        ]
    )
    assert "def audit_models" not in result.stdout.str()  # no traceback into the plugin


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("models:Nope", "audit_mongo: audit_mongo_models: 'models:Nope': models has no 'Nope'"),
        ("nowhere:Base", "audit_mongo: audit_mongo_models: cannot import 'nowhere:Base': *"),
        ("Base", "audit_mongo: audit_mongo_models: 'Base' is not package.module:Name"),
        ("models:NotAModel", "audit_mongo: <class 'models.NotAModel'> (from audit_models) is "),
    ],
)
def test_a_wrong_model_name_is_a_clear_error(
    pytester: pytest.Pytester, option: str, message: str
) -> None:
    project(pytester, models_option=option)
    pytester.makepyfile("def test_uses_the_log(audit_log):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*{message}*"])


def test_models_by_dotted_name_and_by_class(pytester: pytest.Pytester) -> None:
    project(pytester, models_option="models.Client\nmodels:Invoice")
    pytester.makepyfile(
        """
        import datetime as dt
        from decimal import Decimal

        from audit_mongo.testing import assert_audited
        from models import Client, Invoice


        def test_both_tracked(audit_log, session):
            client = Client(name="Acme")
            invoice = Invoice(total=Decimal("1.00"), due=dt.date(2024, 1, 1))
            session.add_all([client, invoice])
            session.commit()
            assert_audited(client, "create")
            assert_audited(invoice, "create", {"total": Decimal("1.00")})
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_overriding_the_fixtures(pytester: pytest.Pytester) -> None:
    """``audit_models`` chosen in code; ``audit_log`` replaced by the application's own log,
    which the assertions then read without ``log=``; an assertion run by a fixture."""
    project(pytester, models_option=None)
    pytester.makepyfile(
        test_models_in_code="""
        import pytest

        from audit_mongo.testing import assert_audited, assert_not_audited
        from models import Client, Invoice


        @pytest.fixture
        def audit_models():
            return Client  # one class will do


        @pytest.fixture
        def created(session, audit_log):
            client = Client(name="Acme")
            session.add(client)
            session.commit()
            assert_audited(client, "create")  # before the test's funcargs hold audit_log
            return client


        def test_only_clients(created, session):
            assert_audited(created, "create", {"name": "Acme"})
        """,
        test_own_log="""
        import warnings

        import pytest

        from audit_mongo import AuditLog, PendingInMemoryWarning
        from audit_mongo.testing import assert_audited
        from models import Base, Client


        @pytest.fixture
        def audit_log():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PendingInMemoryWarning)
                log = AuditLog.from_uri("mongomock://", collection="app_logs")
            log.track(Base)
            yield log
            log.close()


        def test_reads_the_override(audit_log, session):
            client = Client(name="Acme")
            session.add(client)
            with audit_log.acting_as("ops"):
                session.commit()
            assert_audited(client, "create", user_id="ops")
            assert audit_log.collection.name == "app_logs"
        """,
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_an_excluded_field_is_a_usage_error_at_the_users_line(pytester: pytest.Pytester) -> None:
    """Not an AssertionError listing entries: the field can never be recorded."""
    project(pytester, models_option=None)
    pytester.makepyfile(
        """
        import warnings

        import pytest

        from audit_mongo import AuditLog, PendingInMemoryWarning
        from audit_mongo.testing import assert_audited
        from models import Client


        @pytest.fixture
        def audit_log():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PendingInMemoryWarning)
                log = AuditLog.from_uri("mongomock://")
            log.track(Client, exclude=("email",))
            yield log
            log.close()


        def test_excluded(audit_log, session):
            client = Client(name="Acme", email="a@example.com")
            session.add(client)
            session.commit()
            assert_audited(client, "create", {"email": "a@example.com"})
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            '>*assert_audited(client, "create", {"email": "a@example.com"})',
            "E       ValueError: clients.email is excluded from the audit log: it is never "
            "recorded",
        ]
    )
    assert "catalog.py" not in result.stdout.str()
    assert "audit_mongo/testing" not in result.stdout.str()


def test_loading_the_plugin_imports_only_its_own_modules() -> None:
    """What ``import audit_mongo`` and pytest do not already import: the plugin's modules."""
    script = textwrap.dedent(
        """
        import sys

        import pytest
        import audit_mongo

        before = set(sys.modules)
        import audit_mongo.testing

        print(sorted(set(sys.modules) - before))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    added = ast.literal_eval(done.stdout.strip())
    assert added, "the plugin was already imported"
    assert [m for m in added if not m.startswith("audit_mongo.testing")] == []


def test_without_a_log_the_assertion_says_how_to_get_one(pytester: pytest.Pytester) -> None:
    project(pytester)
    pytester.makepyfile(
        """
        from audit_mongo.testing import assert_audited
        from models import Client


        def test_no_fixture(session):
            client = Client(name="Acme")
            session.add(client)
            session.commit()
            assert_audited(client, "create")
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E       RuntimeError: assert_audited() does not know which log to read: request the "
            "audit_log fixture in this test (see the audit_mongo.testing docstring), or pass "
            "log=<your AuditLog>."
        ]
    )


def test_a_run_that_never_uses_the_plugin_is_unaffected(pytester: pytest.Pytester) -> None:
    """A separate process, with every warning an error and strict markers: the plugin is
    loaded, registers its marker and option, imports no mongomock and leaves tests alone."""
    pytester.makepyfile(
        """
        import sys

        import pytest


        def test_plain(pytestconfig):
            assert pytestconfig.pluginmanager.has_plugin("audit_mongo.testing")
            assert "mongomock" not in sys.modules
            assert pytestconfig.getini("audit_mongo_models") == []


        @pytest.mark.audit_disabled
        def test_marker_without_the_fixture():
            pass


        @pytest.fixture
        def audit_log():
            return "a fixture of the project's own"


        def test_own_fixture_of_the_same_name(audit_log):
            assert audit_log == "a fixture of the project's own"
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-W", "error", "--strict-markers", "--strict-config"
    )
    result.assert_outcomes(passed=3)
    assert "warning" not in result.stdout.str().lower()


def test_naming_the_plugin_explicitly_is_harmless(pytester: pytest.Pytester) -> None:
    """Projects that disable plugin autoloading name it; those that do not may name it too."""
    project(pytester)
    pytester.makeconftest(CONFTEST + '\npytest_plugins = ["audit_mongo.testing"]\n')
    pytester.makepyfile(
        """
        from audit_mongo.testing import assert_audited
        from models import Client


        def test_create(audit_log, session):
            client = Client(name="Acme")
            session.add(client)
            session.commit()
            assert_audited(client, "create")
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    pytester.runpytest("-p", "no:cacheprovider", "-p", "audit_mongo.testing").assert_outcomes(
        passed=1
    )


# -- the assertions, called directly with log= ------------------------------------------


@pytest.fixture
def db(tmp_path: Any) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def log(collection: Any) -> Iterator[AuditLog]:
    audit = AuditLog(collection)
    audit.track(Base)
    yield audit
    audit.close()


def renamed_client(db: Engine, log: AuditLog) -> Client:
    with Session(db) as session:
        client = Client(name="Acme", email="a@example.com")
        session.add(client)
        session.commit()
        client.name = "Acme Ltd"
        with log.acting_as(42):
            session.commit()
        return client


def test_assert_audited_with_log(db: Engine, log: AuditLog) -> None:
    client = renamed_client(db, log)

    entry = assert_audited(client, "update", {"name": ("Acme", "Acme Ltd")}, user_id=42, log=log)

    assert isinstance(entry, AuditEntry)
    assert entry.action == "update" and entry.user_id == 42
    assert assert_audited(client, "create", log=log).action == "create"
    assert_audited(client, "create", {"phone": None, "name": "Acme"}, log=log)  # nulls unlisted
    assert_audited(client, "update", {"name": ANY}, user_id=ANY, log=log)
    assert_not_audited(client, "delete", log=log)


def test_failure_message_with_log(db: Engine, log: AuditLog) -> None:
    client = renamed_client(db, log)

    with pytest.raises(AssertionError) as failure:
        assert_audited(client, "update", {"name": "Acme Inc", "email": "b@example.com"}, log=log)

    when = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+00:00"
    expected = [
        "expected an update of clients 1 with name → 'Acme Inc'; email → 'b@example.com'",
        "clients 1 has 2 entries, newest first:",
        f"  update clients 1 by 42 at {when}: name 'Acme' → 'Acme Ltd'",
        "      name: expected → 'Acme Inc', recorded 'Acme' → 'Acme Ltd'",
        "      email: expected → 'b@example.com', not in this entry",
        f"  create clients 1 by nobody known at {when}: id None → 1; name None → 'Acme'; "
        "email None → 'a@example.com'",
    ]
    lines = str(failure.value).splitlines()
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern if "at " in pattern else re.escape(pattern), line), line


def test_a_delete_compares_a_plain_value_with_the_old_one(db: Engine, log: AuditLog) -> None:
    with Session(db) as session:
        sample = Sample(price=Decimal("9.99"), day=dt.date(2024, 5, 1))
        session.add(sample)
        session.commit()
        session.delete(sample)
        session.commit()

    assert_audited(
        sample, "delete", {"price": Decimal("9.99"), "day": dt.date(2024, 5, 1)}, log=log
    )
    assert_audited(sample, "delete", {"price": (Decimal("9.99"), None)}, log=log)
    with pytest.raises(AssertionError, match=r"price: expected Decimal\('1'\) → None"):
        assert_audited(sample, "delete", {"price": Decimal("1")}, log=log)


def test_many_to_many_collections_compare_related_keys(db: Engine, log: AuditLog) -> None:
    with Session(db) as session:
        red, green, blue = Tag(label="red"), Tag(label="green"), Tag(label="blue")
        article = Article(title="t", tags=[red, green])
        session.add_all([article, blue])
        session.commit()
        article.tags = [green, blue]
        session.commit()
        ids = red.id, green.id, blue.id

    assert_audited(article, "create", {"tags": [ids[1], ids[0]]}, log=log)  # any order
    assert_audited(article, "update", {"tags": ([ids[0]], [ids[2]])}, log=log)
    assert_audited(article, "update", {"tags": [ids[2]]}, log=log)
    with pytest.raises(AssertionError, match=r"tags: expected \+\[99\], recorded \+\[3\] -\[1\]"):
        assert_audited(article, "update", {"tags": [99]}, log=log)


def test_usage_errors(db: Engine, log: AuditLog) -> None:
    client = renamed_client(db, log)

    with pytest.raises(ValueError, match="action must be one of create, update, delete"):
        assert_audited(client, "updated", log=log)
    with pytest.raises(ValueError, match=r"clients has no attribute 'nmae' \(it has: "):
        assert_audited(client, "update", {"nmae": "x"}, log=log)
    with pytest.raises(TypeError, match="is not an instance of a mapped class"):
        assert_audited(object(), "create", log=log)
    with pytest.raises(TypeError, match="log must be an AuditLog or an AuditReader"):
        assert_audited(client, "create", log="user_logs")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match=r"assert_not_audited\(\) does not know which log"):
        assert_not_audited(client)  # this test has no audit_log fixture


def test_an_excluded_attribute_is_refused_as_excluded(db: Engine, collection: Any) -> None:
    audit = AuditLog(collection, exclude=("notes",))
    audit.track(Account, exclude=("password",))
    try:
        with Session(db) as session:
            account = Account(login="ann", password="secret", notes="n")
            session.add(account)
            session.commit()
            account.login, account.password = "bob", "x"
            session.commit()

        assert_audited(account, "update", {"login": ("ann", "bob")}, log=audit)
        with pytest.raises(ValueError) as failure:
            assert_audited(account, "update", {"password": "x"}, log=audit)
        assert str(failure.value) == (
            "accounts.password is excluded from the audit log: it is never recorded"
        )
        with pytest.raises(ValueError, match=r"^accounts\.notes is excluded from the audit log"):
            assert_audited(account, "create", {"login": "ann", "notes": "n"}, log=audit)
        with pytest.raises(ValueError, match=r"^accounts\.password is excluded"):
            assert_audited(Account(login="new"), "create", {"password": None}, log=audit)
    finally:
        audit.close()


def test_an_attribute_the_log_never_records_for_the_class_is_refused(
    db: Engine, log: AuditLog
) -> None:
    with Session(db) as session:
        author = Client(name="Ann")
        article = Article(title="t", author=author)
        engineer = Engineer(name="Eve", skill="sql")
        session.add_all([article, engineer])
        session.commit()
        author_id = author.id

    assert_audited(article, "create", {"author_id": author_id, "title": "t"}, log=log)
    with pytest.raises(ValueError) as failure:  # a many-to-one: its foreign key is recorded
        assert_audited(article, "create", {"author": author}, log=log)
    assert str(failure.value) == (
        "Article.author is never recorded (of Article, the audit log records author_id, id, "
        "tags, title)"
    )
    assert_audited(engineer, "create", {"skill": "sql"}, log=log)
    with pytest.raises(ValueError) as failure:  # a column of Manager, in the same table
        assert_audited(engineer, "create", {"budget": None}, log=log)
    assert str(failure.value) == (
        "Engineer has no attribute 'budget' (of Engineer, the audit log records id, kind, "
        "name, skill)"
    )


def test_an_object_never_flushed(db: Engine, log: AuditLog) -> None:
    client = Client(name="draft")
    with pytest.raises(AssertionError) as failure:
        assert_audited(client, "create", {"name": "draft"}, log=log)
    assert str(failure.value) == (
        "expected a create of clients (a new Client, no primary key yet) with name None → "
        "'draft'\nit was never flushed, let alone committed: nothing can be recorded for it"
    )
    assert_not_audited(client, log=log)

    with Session(db) as session:
        session.add(client)
        with pytest.raises(AssertionError) as failure:
            assert_audited(client, "create", log=log)
    assert str(failure.value).splitlines()[1:] == [
        "it was never flushed, let alone committed: nothing can be recorded for it",
        "note: the object's session has changes it has not committed: entries are written when "
        "the transaction commits",
    ]


def test_a_long_history_is_cut_in_the_message(db: Engine, log: AuditLog) -> None:
    with Session(db) as session:
        client = Client(name="n0")
        session.add(client)
        session.commit()
        for n in range(1, 25):
            client.name = f"n{n}"
            session.commit()

    with pytest.raises(AssertionError) as failure:
        assert_audited(client, "delete", log=log)
    lines = str(failure.value).splitlines()
    assert lines[1] == "clients 1 has 25 entries, newest first:"
    assert lines[2].startswith("  update clients 1 by nobody known at ")
    assert lines[2].endswith("name 'n23' → 'n24'")
    assert lines[-1] == "  ... and 5 older"
    assert len(lines) == 2 + 20 + 1


def test_a_background_writer_is_waited_for(db: Engine, collection: Any) -> None:
    audit = AuditLog(collection, background=True, max_delay=0.2)
    audit.track(Client)
    try:
        with Session(db) as session:
            client = Client(name="Acme")
            session.add(client)
            session.commit()
        assert_audited(client, "create", {"name": "Acme"}, log=audit)
    finally:
        audit.close()


# -- the fixture in this suite itself ------------------------------------------------------


@pytest.fixture
def audit_models() -> list[type]:
    return [Client]


def test_the_fixture_here(audit_log: AuditLog, db: Engine) -> None:
    with Session(db) as session:
        client = Client(name="Acme")
        session.add(client)
        session.commit()
        assert_audited(client, "create", {"name": "Acme"})
        with audit_log.disabled():
            client.name = "quiet"
            session.commit()
        assert_not_audited(client, "update")
