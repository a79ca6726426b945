"""Rebuild a row's column values as of a moment from its entries (PaperTrail's "reify").

The value of an attribute at time T is the value the last change at or before T gave it;
when no entry up to T set it (the log started after the row existed), it is the value the
first change after T took it from. A create lists every non-null column, so from a create
on, every column is known.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from .catalog import TableModel
from .entry import AuditEntry


def state_at(
    newest_first: Sequence[AuditEntry], when: dt.datetime, model: TableModel | None
) -> dict[str, Any] | None:
    """A row's column values at ``when``, from its entries (newest first); None if the row
    did not exist then (before its create, after its delete, or no entry says it did)."""
    before = [e for e in newest_first if e.created_at <= when]
    after = [e for e in reversed(newest_first) if e.created_at > when]
    if before:
        if before[0].action == "delete":
            return None
        state, complete = _replay(list(reversed(before)), model)
    else:
        if not after or after[0].action == "create":
            return None
        state, complete = {}, False
    if not complete:
        _fill_from_later(state, after, model)
    return state


def _replay(
    oldest_first: list[AuditEntry], model: TableModel | None
) -> tuple[dict[str, Any], bool]:
    """Values set by the entries up to the moment, and whether a create made them whole."""
    state: dict[str, Any] = {}
    complete = False
    for entry in oldest_first:
        if entry.action == "delete":  # re-created later: only that create counts
            state, complete = {}, False
            continue
        if entry.action == "create":
            state, complete = {}, True
        state.update(_columns(entry, "new"))
        if entry.action == "create" and model is not None:
            for name in model.columns_of(entry.entity):
                state.setdefault(name, None)  # a create lists non-null columns only
    return state, complete


def _fill_from_later(
    state: dict[str, Any], later: list[AuditEntry], model: TableModel | None
) -> None:
    """Attributes no earlier entry set: the value the next change of each replaced."""
    wanted = model.columns_of(later[0].entity) if model is not None and later else None
    for entry in later:
        if entry.action == "create":  # the row was gone before this: nothing more to learn
            return
        for name, old in _columns(entry, "old").items():
            state.setdefault(name, old)
        if wanted is not None and wanted <= state.keys():
            return


def _columns(entry: AuditEntry, side: str) -> dict[str, Any]:
    return {
        name: getattr(change, side)
        for name, change in entry.changes.items()
        if not change.collection
    }
