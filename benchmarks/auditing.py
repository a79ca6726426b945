"""What a configuration does inside a child process, as one interface: the base class is
"no auditing", and each way of auditing overrides the steps it needs.

The child calls, in order: ``model_hooks()`` (before the models are defined),
``models_defined()``, then, once the tables exist and the workload's untimed setup is done,
``attach()`` (or ``attach_flask()``); the timed part ends with ``flush()``; ``records()``
and ``close()`` come after the clock has stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Table, func, select

from benchmarks.models import ModelHooks, Models
from benchmarks.sinks import Sink


@dataclass(frozen=True)
class Records:
    """How many audit records a run wrote (documents, or rows of the peer's tables), and
    anything else worth saying about them."""

    count: int
    note: str = ""


class Auditing:
    """No auditing: every step does nothing."""

    sink_label = "—"

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def model_hooks(self) -> ModelHooks:
        """Called before the models are defined."""
        return ModelHooks()

    def models_defined(self, models: Models) -> None:
        """Called once the models are defined, before their tables are created."""

    def attach(self, engine: Engine, models: Models) -> None:
        """Start auditing changes made through ``engine`` to ``models``."""

    def attach_flask(self, app: Any, db: Any, models: Models) -> None:
        """Start auditing a Flask-SQLAlchemy application (by default as ``attach``)."""
        with app.app_context():
            self.attach(db.engine, models)

    def flush(self) -> None:
        """The end of the timed part: wait until every record is written."""

    def records(self, engine: Engine, models: Models) -> Records:
        return Records(0)

    def close(self) -> None:
        """Undo ``attach``."""


def count_rows(engine: Engine, table: Table) -> int:
    """``SELECT count(*)`` of one table."""
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())
