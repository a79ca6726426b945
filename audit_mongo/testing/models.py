"""Which models the ``audit_log`` fixture tracks: the ``audit_mongo_models`` ini option's
``package.module:Name`` lines imported, or what an ``audit_models`` override returns, checked
to be mapped classes or declarative bases."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

MODELS_OPTION = "audit_mongo_models"
MISSING_MODELS = (
    "audit_mongo: the audit_log fixture does not know which models to track. Name them in "
    f"your pytest configuration:\n\n    [pytest]\n    {MODELS_OPTION} =\n        "
    "myapp.models:Base\n\n(lines of package.module:Name, a mapped class or a declarative "
    "base), or override the audit_models fixture to return them."
)


def load(spec: str) -> type:
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


def checked(value: Any) -> list[type]:
    """What ``audit_models`` gave (a model, or several), checked: mapped classes and
    declarative bases."""
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
