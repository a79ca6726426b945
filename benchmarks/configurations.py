"""The configurations a workload runs under: no auditing, audit_mongo's delivery modes and
the peers, with what each needs to run here. The parent process reads this registry; only
a child imports a configuration's code (``create``)."""

from __future__ import annotations

import importlib
import importlib.util
import platform
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from benchmarks.sinks import Sink

INSTALL_HINT = "pip install -e '.[bench]'"
BASELINE = "none"
AUDIT_MONGO = "audit_mongo"
PEER = "peer"


@dataclass(frozen=True)
class Configuration:
    """One way of auditing (or not), by slug (``--configurations``) and display name."""

    slug: str
    name: str
    family: str  # BASELINE, AUDIT_MONGO or PEER
    factory: str  # "module:Class", an ``Auditing`` taking (sink, **options)
    options: Mapping[str, Any] = field(default_factory=dict)
    requires: tuple[str, ...] = ()  # modules that must be importable
    min_python: tuple[int, int] | None = None

    def unavailable(self) -> str | None:
        """Why this configuration cannot run in this interpreter, or None."""
        if self.min_python is not None and sys.version_info < self.min_python:
            wanted = ".".join(map(str, self.min_python))
            return f"needs Python >= {wanted} (this is {platform.python_version()})"
        missing = [name for name in self.requires if importlib.util.find_spec(name) is None]
        if missing:
            return f"not installed: {INSTALL_HINT}"
        return None

    def create(self, sink: Sink) -> Any:
        """The configuration's ``Auditing`` (imports its code)."""
        module, _, name = self.factory.partition(":")
        return getattr(importlib.import_module(module), name)(sink, **self.options)


def _audit_mongo(slug: str, name: str, **mode: bool) -> Configuration:
    return Configuration(
        slug,
        f"audit_mongo {name}",
        AUDIT_MONGO,
        "benchmarks.audit_mongo_modes:AuditMongoAuditing",
        mode,
    )


def _versioning(slug: str, name: str, package: str, strategy: str, module: str) -> Configuration:
    return Configuration(
        slug,
        name,
        PEER,
        "benchmarks.peers.continuum:ContinuumAuditing",
        {"package": package, "strategy": strategy},
        requires=(module,),
    )


CONFIGURATIONS: tuple[Configuration, ...] = (
    Configuration(BASELINE, "no auditing", BASELINE, "benchmarks.auditing:Auditing"),
    _audit_mongo("direct", "direct"),
    _audit_mongo("outbox", "outbox", outbox=True),
    _audit_mongo("background", "background", background=True),
    _audit_mongo("background-outbox", "background + outbox", background=True, outbox=True),
    _audit_mongo("strict", "strict", strict=True),
    Configuration("blog-post", "blog post", PEER, "benchmarks.peers.blog_post:BlogPostAuditing"),
    _versioning("continuum", "continuum", "continuum", "validity", "sqlalchemy_continuum"),
    _versioning(
        "continuum-subquery", "continuum subquery", "continuum", "subquery", "sqlalchemy_continuum"
    ),
    _versioning("history", "sqlalchemy-history", "history", "validity", "sqlalchemy_history"),
    _versioning(
        "history-subquery",
        "sqlalchemy-history subquery",
        "history",
        "subquery",
        "sqlalchemy_history",
    ),
    Configuration(
        "sqlaudit",
        "sqlaudit",
        PEER,
        "benchmarks.peers.sqlaudit_peer:SQLAuditAuditing",
        requires=("sqlaudit",),
        min_python=(3, 13),
    ),
)
BY_SLUG = {configuration.slug: configuration for configuration in CONFIGURATIONS}
GROUPS = {"audit_mongo": AUDIT_MONGO, "peers": PEER}


def _key(text: str) -> str:
    return re.sub(r"[\s_+-]+", "-", text.strip().lower())


def select(names: str | None) -> list[Configuration]:
    """The configurations a comma list names (slugs, display names, or the groups
    ``audit_mongo`` and ``peers``), in registry order, always with the baseline (the
    ratios need it); all of them for None."""
    if names is None:
        return list(CONFIGURATIONS)
    wanted = {BASELINE}
    for name in filter(None, (part.strip() for part in names.split(","))):
        key = _key(name)
        if key in {_key(group) for group in GROUPS}:
            family = GROUPS[next(g for g in GROUPS if _key(g) == key)]
            wanted |= {c.slug for c in CONFIGURATIONS if c.family == family}
            continue
        found = [c.slug for c in CONFIGURATIONS if key in (_key(c.slug), _key(c.name))]
        if not found:
            known = ", ".join(c.slug for c in CONFIGURATIONS)
            raise ValueError(f"unknown configuration {name!r}: one of {known}, audit_mongo, peers")
        wanted |= set(found)
    return [c for c in CONFIGURATIONS if c.slug in wanted]
