"""``show-indexes`` and ``ensure-indexes``: the indexes the log's queries need. Their options
and bodies (``show_indexes_of``, ``ensure_indexes_of``: a collection and the options) are
shared with ``flask audit``."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import click

from ..indexes import INDEXES, RETENTION_INDEX, ensure_indexes
from .options import Command, LogSettings, log_options, opened
from .output import safe_name
from .params import Duration

PRESENT, MISSING, DIFFERENT, OTHER = "present", "missing", "different", "other"


@dataclass(frozen=True)
class IndexState:
    """One index: ours (present, missing, or under our name with other keys) or another."""

    name: str
    status: str
    keys: list[tuple[str, Any]]
    expire_after_seconds: int | None = None


show_indexes_options = click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per index and line."
)
"""--json."""

RETENTION_HELP = (
    "Also a TTL index deleting entries older than this (365d); changes an existing one."
)


def retention_option(help_text: str = RETENTION_HELP) -> Callable[[Command], Command]:
    """--retention: a duration (``365d``), None when not given."""
    return click.option("--retention", type=Duration(), help=help_text)


def show_indexes_of(collection: Any, *, as_json: bool) -> None:
    """The collection's indexes, ours first (present, missing or different), to stdout."""
    states = index_states(collection.index_information())
    for state in states:
        click.echo(json.dumps(asdict(state)) if as_json else index_line(state))


def ensure_indexes_of(collection: Any, *, retention: dt.timedelta | None) -> None:
    """Create the indexes (and with a retention, the TTL index); says which on stdout."""
    names = ensure_indexes(collection, retention=retention)
    for name in names:
        click.echo(f"ensured {name}")


@click.command("show-indexes", short_help="The log's indexes: present, missing, others.")
@show_indexes_options
@log_options
def show_indexes(log: LogSettings, as_json: bool) -> None:
    """The log's indexes, present or missing, then any others on the collection."""
    with opened(log) as collection:
        show_indexes_of(collection, as_json=as_json)


@click.command("ensure-indexes", short_help="Create the indexes the log's queries use.")
@retention_option()
@log_options
def ensure_indexes_command(log: LogSettings, retention: dt.timedelta | None) -> None:
    """Create the indexes the log's queries use (idempotent). Needs the createIndex
    privilege (and collMod to change a retention): an administrative step."""
    with opened(log) as collection:
        ensure_indexes_of(collection, retention=retention)


def index_states(found: Mapping[str, Mapping[str, Any]]) -> list[IndexState]:
    """Ours in ``INDEXES`` order, then the retention index and the others, by name."""
    states = []
    for model in INDEXES:
        name, keys = model.document["name"], _keys(model.document["key"])
        info = found.get(name)
        status = MISSING if info is None else PRESENT if _keys(info["key"]) == keys else DIFFERENT
        states.append(IndexState(name, status, keys if info is None else _keys(info["key"])))
    ours = {state.name for state in states}
    for name in sorted(set(found) - ours):
        status = PRESENT if name == RETENTION_INDEX else OTHER
        expiry = found[name].get("expireAfterSeconds")
        states.append(IndexState(name, status, _keys(found[name]["key"]), _seconds(expiry)))
    return states


def index_line(state: IndexState) -> str:
    keys = ", ".join(_key_text(field, direction) for field, direction in state.keys)
    line = f"{state.status:<9}  {safe_name(state.name):<20}  {keys}"
    if state.expire_after_seconds is not None:
        line += f"  (TTL: expires after {state.expire_after_seconds} s)"
    return line


def _keys(keys: Any) -> list[tuple[str, Any]]:
    pairs = keys.items() if isinstance(keys, Mapping) else keys
    return [(str(field), _direction(direction)) for field, direction in pairs]


def _direction(direction: Any) -> Any:
    if isinstance(direction, float) and direction.is_integer():
        return int(direction)
    return direction


def _seconds(value: Any) -> int | None:
    return None if value is None else int(value)


def _key_text(field: str, direction: Any) -> str:
    shown = safe_name(field)
    return shown if direction == 1 else f"{shown} {safe_name(str(direction))}"
