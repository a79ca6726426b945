"""sqlaudit (Python 3.13+): ``@track_table`` on each model and session hooks that, after
each flush, add a ``SQLAuditLogs`` row per changed row and a ``SQLAuditFieldChanges`` row
per changed field, in the application's database (they are flushed with the work).

Deletes record nothing (no attribute history) and neither do bulk statements (no flush).
Its hooks listen on every ``Session``, and it reads its own tables with a query per row
and per field as it records.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from benchmarks.auditing import Auditing, Records, count_rows
from benchmarks.models import ModelHooks, Models


class SQLAuditAuditing(Auditing):
    """Every column of both models tracked (``tracked_fields=None``)."""

    sink_label = "SQL"

    def model_hooks(self) -> ModelHooks:
        from sqlaudit.decorators import track_table

        return ModelHooks(decorate=track_table(tracked_fields=None))

    def attach(self, engine: Engine, models: Models) -> None:
        from sqlaudit.config import SQLAuditConfig, set_config
        from sqlaudit.hooks import register_hooks

        def sessions() -> Iterator[Session]:
            with Session(engine) as session:
                yield session

        set_config(SQLAuditConfig(session_factory=sessions, create_all_models=True))
        register_hooks()

    def records(self, engine: Engine, models: Models) -> Records:
        from sqlaudit._internals.models import (  # its tables; not exported
            SQLAuditLog,
            SQLAuditLogFieldChange,
        )

        logs = count_rows(engine, SQLAuditLog.__table__)  # type: ignore[arg-type]
        fields = count_rows(engine, SQLAuditLogFieldChange.__table__)  # type: ignore[arg-type]
        return Records(logs, f"SQLAuditLogs rows; {fields:,} field-change rows besides")
