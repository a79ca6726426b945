"""Who is acting: ``acting_as()`` for a block, else the application's ``user_loader``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm.state import InstanceState

from .normalise import column_value_to_bson

logger = logging.getLogger("audit_mongo")

_UNSET: Any = object()


class Actor:
    """Resolves the current user id when a transaction commits.

    A context variable, so each thread and each asyncio task sees only its own
    ``acting_as()`` block.
    """

    def __init__(self) -> None:
        self.user_loader: Callable[[], Any] | None = None
        self._acting: ContextVar[Any] = ContextVar(f"audit_mongo_actor_{id(self)}", default=_UNSET)

    @contextmanager
    def acting_as(self, user_id: Any) -> Iterator[None]:
        token = self._acting.set(user_id)
        try:
            yield
        finally:
            self._acting.reset(token)

    def current(self) -> Any:
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
