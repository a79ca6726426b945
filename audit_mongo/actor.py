"""Who is acting and in what context: ``acting_as()`` for a block, else the application's
``user_loader``; ``context(**values)`` for metadata (a request id, a reason) that every
document committed in the block carries under ``context``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, NamedTuple

from sqlalchemy import inspect
from sqlalchemy.orm.state import InstanceState

from .normalise import column_value_to_bson, escape_key

logger = logging.getLogger("audit_mongo")

_UNSET: Any = object()
NO_CONTEXT: Mapping[str, Any] = MappingProxyType({})


class Acting(NamedTuple):
    """Who acted and the context they acted in, as stored: BSON-safe values."""

    user_id: Any
    context: Mapping[str, Any]


class Actor:
    """Resolves the current user id and context when a transaction commits.

    Context variables, so each thread and each asyncio task sees only its own
    ``acting_as()`` and ``context()`` blocks.
    """

    def __init__(self) -> None:
        self.user_loader: Callable[[], Any] | None = None
        self._acting: ContextVar[Any] = ContextVar(f"audit_mongo_actor_{id(self)}", default=_UNSET)
        self._context: ContextVar[Mapping[str, Any]] = ContextVar(
            f"audit_mongo_context_{id(self)}", default=NO_CONTEXT
        )

    @contextmanager
    def acting_as(self, user_id: Any) -> Iterator[None]:
        token = self._acting.set(user_id)
        try:
            yield
        finally:
            self._acting.reset(token)

    @contextmanager
    def context(self, values: Mapping[str, Any]) -> Iterator[None]:
        """Add ``values`` (normalised like column values) to the context for the block;
        inner blocks win on a shared key."""
        stored = {
            escape_key(k): column_value_to_bson(v, None, None, f"context {k!r}")
            for k, v in values.items()
        }
        token = self._context.set({**self._context.get(), **stored})
        try:
            yield
        finally:
            self._context.reset(token)

    def current(self) -> Acting:
        """Who acts now (None when nobody is known) and the context. Never raises."""
        return Acting(self.user_id(), self._context.get())

    def user_id(self) -> Any:
        """The BSON-safe id of whoever acts now; None when nobody is known. Never raises."""
        user = self._acting.get()
        if user is _UNSET:
            user = self._load()
        if user is None:
            return None
        with contextlib.suppress(Exception):  # an odd proxy: stored as it is, as a fallback
            user = _identity_of(user)
        return column_value_to_bson(user, None, None, "user id")

    def _load(self) -> Any:
        loader = self.user_loader
        if loader is None:
            return None
        try:
            return loader()
        except Exception as exc:
            logger.warning(
                "audit_mongo: user_loader raised %s; recording current_user_id as null",
                type(exc).__name__,
            )
            return None


def _identity_of(user: Any) -> Any:
    """A mapped object (say the User row itself) acts through its primary key."""
    state = inspect(user, raiseerr=False)
    if isinstance(state, InstanceState) and state.identity is not None:
        identity = state.identity
        return identity[0] if len(identity) == 1 else list(identity)
    return user
