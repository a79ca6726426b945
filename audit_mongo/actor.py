"""Who is acting and in what context: ``acting_as()`` for a block, else the application's
``user_loader``; ``context(**values)`` for metadata (a request id, a reason) that every
document committed in the block carries under ``context``."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, NamedTuple

from bson import json_util
from sqlalchemy import inspect
from sqlalchemy.orm.state import InstanceState

from .log_safety import log_failure
from .normalise import column_value_to_bson, escape_key

logger = logging.getLogger("audit_mongo")

_UNSET: Any = object()
JSON_OPTIONS = json_util.RELAXED_JSON_OPTIONS  # a Decimal128 is {"$numberDecimal": ...}
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
        self.context_loader: Callable[[], Mapping[str, Any] | None] | None = None
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
        token = self._context.set({**self._context.get(), **_stored(values)})
        try:
            yield
        finally:
            self._context.reset(token)

    def current(self) -> Acting:
        """Who acts now (None when nobody is known) and the context. Never raises."""
        return Acting(self.user_id(), self.current_context())

    def snapshot(self) -> dict[str, Any]:
        """Who acts now and the context, as plain JSON (a job queue's message can carry it);
        ``restored()`` puts it back in force."""
        acting = self.current()
        document = {"user_id": acting.user_id, "context": dict(acting.context)}
        return dict(json.loads(json_util.dumps(document, json_options=JSON_OPTIONS)))

    @contextmanager
    def restored(self, snapshot: Mapping[str, Any], via: str) -> Iterator[None]:
        """The actor and context of ``snapshot`` for the block, with ``via`` in the context."""
        user_id, context = _from_snapshot(snapshot)
        with self.acting_as(user_id), self.context({**context, "via": via}):
            yield

    def current_context(self) -> Mapping[str, Any]:
        """The ``context_loader``'s values (a web request's, say) under the ``context()``
        blocks in force, which win on a shared key. Never raises."""
        blocks = self._context.get()
        loaded = self._load_context()
        return {**loaded, **blocks} if loaded else blocks

    def _load_context(self) -> Mapping[str, Any]:
        loader = self.context_loader
        if loader is None:
            return NO_CONTEXT
        try:
            return _stored(loader() or {})
        except Exception as exc:
            message = "audit_mongo: context_loader failed; the context is recorded without it"
            log_failure(logging.WARNING, exc, message)
            return NO_CONTEXT

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
            message = "audit_mongo: user_loader failed; recording current_user_id as null"
            log_failure(logging.WARNING, exc, message)
            return None


def _identity_of(user: Any) -> Any:
    """A mapped object (say the User row itself) acts through its primary key."""
    state = inspect(user, raiseerr=False)
    if isinstance(state, InstanceState) and state.identity is not None:
        identity = state.identity
        return identity[0] if len(identity) == 1 else list(identity)
    return user


def _stored(values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        escape_key(k): column_value_to_bson(v, None, None, f"context {k!r}")
        for k, v in values.items()
    }


def _from_snapshot(snapshot: Mapping[str, Any]) -> tuple[Any, Mapping[str, Any]]:
    """The user id and context of a ``snapshot()``, or ``ValueError``."""
    if not isinstance(snapshot, Mapping) or set(snapshot) != {"user_id", "context"}:
        raise ValueError(
            f"not a snapshot from current_context(): expected the keys user_id and context, "
            f"got {_shape(snapshot)}"
        )
    document = _decoded(snapshot)
    if not isinstance(document["context"], Mapping):
        raise ValueError(f"a snapshot's context is a mapping, got {_shape(document['context'])}")
    return document["user_id"], document["context"]


def _decoded(snapshot: Mapping[str, Any]) -> Any:
    """A snapshot's values in their own types, or ``ValueError`` naming only the error's
    type: json's and bson's messages quote the values (context values, a user id)."""
    try:
        return json_util.loads(json.dumps(dict(snapshot)), json_options=JSON_OPTIONS)
    except Exception as exc:  # bson raises InvalidId, decimal.InvalidOperation, ...
        refused = type(exc).__name__
    # Raised out of the except block, so that the refused value is not its context either.
    raise ValueError(f"not a snapshot from current_context(): its values are not JSON ({refused})")


def _shape(value: Any) -> str:
    """What a refused snapshot holds, without its values: a mapping's keys, else a type."""
    if isinstance(value, Mapping):
        return f"the keys {', '.join(sorted(map(str, value))) or '(none)'}"
    return f"a {type(value).__name__}"
