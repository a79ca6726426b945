"""SQLAlchemy-Continuum and its fork SQLAlchemy-History: a version table per versioned
model (``clients_version``) and a ``transaction`` table, written by the session's flush in
the application's own database. They share their API, so one class serves both.

``make_versioned`` must run before the models are defined; ``user_cls=None`` since the
workloads have no user model (the default, ``"User"``, needs one). The ``validity``
strategy (the default) also updates the previous version's ``end_transaction_id``; the
``subquery`` strategy does not. Bulk statements (``update(Item)``) are not versioned.
"""

from __future__ import annotations

import importlib
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import configure_mappers

from benchmarks.auditing import Auditing, Records, count_rows
from benchmarks.models import ModelHooks, Models
from benchmarks.sinks import Sink

PACKAGES = {"continuum": "sqlalchemy_continuum", "history": "sqlalchemy_history"}


class Versioned:
    """Gives each model its own ``__versioned__ = {}`` before it is mapped."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        cls.__versioned__ = {}  # type: ignore[attr-defined]
        super().__init_subclass__(**kwargs)


class ContinuumAuditing(Auditing):
    """Versioning by ``sqlalchemy_continuum`` or ``sqlalchemy_history``."""

    sink_label = "SQL"

    def __init__(self, sink: Sink, package: str, strategy: str = "validity") -> None:
        super().__init__(sink)
        self.package: Any = importlib.import_module(PACKAGES[package])
        self.strategy = strategy

    def model_hooks(self) -> ModelHooks:
        self.package.make_versioned(user_cls=None, options={"strategy": self.strategy})
        return ModelHooks(mixins=(Versioned,))

    def models_defined(self, models: Models) -> None:
        configure_mappers()  # builds the version classes and tables

    def records(self, engine: Engine, models: Models) -> Records:
        versions = sum(
            count_rows(engine, self.package.version_class(model).__table__)
            for model in (models.client, models.item)
        )
        manager = self.package.versioning_manager
        transactions = count_rows(engine, manager.transaction_cls.__table__)
        return Records(versions, f"version rows; {transactions:,} transaction rows besides")

    def close(self) -> None:
        self.package.remove_versioning()
