"""audit_mongo's configurations: one ``AuditLog`` per run, in one of its delivery modes
(direct, outbox, background with or without an outbox, strict), attached either directly
or through the Flask extension (``audit_mongo.flask.AuditMongo``)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from audit_mongo import AuditLog, PendingInMemoryWarning
from benchmarks.auditing import Auditing, Records
from benchmarks.models import Models
from benchmarks.sinks import Sink

FLUSH_TIMEOUT = 600.0  # seconds the background writer may take to write what is queued


@dataclass(frozen=True)
class Mode:
    """The ``AuditLog`` options of one delivery mode."""

    outbox: bool = False
    background: bool = False
    strict: bool = False

    def log_options(self, engine: Engine) -> dict[str, Any]:
        options: dict[str, Any] = {"background": self.background, "strict": self.strict}
        if self.outbox:
            options["outbox"] = engine
        return options

    def flask_config(self) -> dict[str, Any]:
        return {
            "AUDIT_MONGO_OUTBOX": self.outbox,
            "AUDIT_MONGO_BACKGROUND": self.background,
            "AUDIT_MONGO_STRICT": self.strict,
        }


class AuditMongoAuditing(Auditing):
    """An ``AuditLog`` on the sink's collection, tracking both models."""

    def __init__(
        self, sink: Sink, *, outbox: bool = False, background: bool = False, strict: bool = False
    ) -> None:
        super().__init__(sink)
        self.mode = Mode(outbox, background, strict)
        self.log: AuditLog | None = None

    @property
    def sink_label(self) -> str:  # type: ignore[override]
        return self.sink.label

    def attach(self, engine: Engine, models: Models) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PendingInMemoryWarning)
            self.log = AuditLog(self.sink.collection, **self.mode.log_options(engine))
        self.log.track(models.client)
        self.log.track(models.item)

    def attach_flask(self, app: Any, db: Any, models: Models) -> None:
        from audit_mongo.flask import AuditMongo

        extension = AuditMongo()
        extension.track(models.client)
        app.config.update(self.mode.flask_config())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PendingInMemoryWarning)
            extension.init_app(app, db=db, collection=self.sink.collection)
        self.log = app.extensions["audit_mongo"].log

    def flush(self) -> None:
        assert self.log is not None
        if not self.log.flush(FLUSH_TIMEOUT):
            raise RuntimeError(f"the background writer was still writing after {FLUSH_TIMEOUT} s")
        if self.mode.outbox:  # what a full queue left in the outbox for the writer's sweep
            self.log.deliver_pending()

    def records(self, engine: Engine, models: Models) -> Records:
        assert self.log is not None
        count, twice, pending = self.sink.count(), self.sink.duplicates(), self.log.pending()
        notes = [f"{twice:,} documents sent more than once"] if twice else []
        notes += [f"{pending:,} still pending"] if pending else []
        return Records(count, "; ".join(notes))

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
