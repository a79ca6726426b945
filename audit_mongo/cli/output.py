"""How entries are shown: a table for a person, JSON Lines and CSV for programs.

Stored values are user input: the table shows every value ``repr``-escaped (control
characters and terminal escapes never reach the terminal raw) and folded; JSON escapes
everything outside printable ASCII; CSV neutralises spreadsheet formulas.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from bson import Decimal128, json_util
from bson.json_util import JSONOptions

from ..entry import AuditEntry, Change, short
from ..normalise import escape_key

FOLD = 60  # characters of a value shown in the table
NAME_FOLD = 40  # characters of a name (table, field, action) shown in the table
EMPTY_SIDE = "∅"  # no value on that side: a create's old value, a delete's new one
TRANSACTION_SHOWN = 8  # characters of the transaction id shown in the table

# Relaxed extended JSON, read back by ``json_util.loads(line, json_options=JSON_OPTIONS)``.
JSON_OPTIONS: JSONOptions = json_util.RELAXED_JSON_OPTIONS.with_options(
    tz_aware=True, tzinfo=dt.timezone.utc
)

CSV_COLUMNS = (
    "id",
    "created_at",
    "table_name",
    "object_id",
    "action",
    "user_id",
    "transaction_id",
    "field",
    "old",
    "new",
)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def render(entry: AuditEntry, as_json: bool) -> str:
    """An entry as one JSON line, or as a block of table lines ending in a blank line."""
    return entry_json(entry) if as_json else "\n".join([*entry_lines(entry), ""])


# -- the table ------------------------------------------------------------------------


def entry_lines(entry: AuditEntry) -> list[str]:
    """A header line (time UTC, action, table, id, user, short transaction id), then one
    line per field: ``old → new``."""
    changes = list(entry.changes.items())
    width = max((len(safe_name(name)) for name, _ in changes), default=0)
    fields = [f"  {safe_name(name):<{width}}  {change_text(c)}" for name, c in changes]
    return [header(entry), *fields]


def header(entry: AuditEntry) -> str:
    when = entry.created_at.astimezone(dt.timezone.utc)
    table = safe_name(entry.table_name)
    if entry.entity is not None:
        table += f" ({safe_name(entry.entity)})"
    key = short(entry.object_id, FOLD)
    if entry.previous_object_id is not None:
        key += f" (was {short(entry.previous_object_id, FOLD)})"
    transaction = safe_name(str(entry.transaction_id or "-")[:TRANSACTION_SHOWN])
    return (
        f"{when:%Y-%m-%d %H:%M:%S}.{when.microsecond // 1000:03d} UTC  "
        f"{safe_name(entry.action)}  {table}  id {key}  "
        f"user {short(entry.user_id, FOLD)}  tx {transaction}"
    )


def change_text(change: Change) -> str:
    if change.collection:
        return f"+{short(change.added, FOLD)} -{short(change.deleted, FOLD)}"
    old = short(change.old, FOLD) if change.deleted else EMPTY_SIDE
    new = short(change.new, FOLD) if change.added else EMPTY_SIDE
    return f"{old} → {new}"


def safe_name(text: Any) -> str:
    """A name as is when it is printable text, else its ``repr``; folded."""
    shown = text if isinstance(text, str) and text.isprintable() else repr(text)
    return shown if len(shown) <= NAME_FOLD else shown[: NAME_FOLD - 1] + "…"


# -- JSON Lines -------------------------------------------------------------------------


def entry_json(entry: AuditEntry) -> str:
    """One line of relaxed extended JSON: the entry under the stored document's field names."""
    return json_util.dumps(entry_document(entry), json_options=JSON_OPTIONS)


def entry_document(entry: AuditEntry) -> dict[str, Any]:
    """The entry as the document it was read from (``schema_version`` aside).

    The reader gives ``context`` with its keys as the application wrote them (``$where``,
    ``a.b``): here they are escaped again as stored (a leading ``$`` as U+FF04, ``.`` as
    U+FF0E, NUL as U+2400), so that the line is the stored document, fit for ``mongoimport``.
    ``changes`` are as stored already: without a model the reader leaves a JSON value's keys
    escaped, as every value (``stored`` undoes what ``plain`` did)."""
    document: dict[str, Any] = {
        "_id": entry.id,
        "created_at": entry.created_at,
        "table_name": entry.table_name,
        "object_id": stored(entry.object_id),
        "action": entry.action,
        "current_user_id": stored(entry.user_id),
        "transaction_id": entry.transaction_id,
        "changes": {
            name: {"added": stored(c.added), "deleted": stored(c.deleted)}
            for name, c in entry.changes.items()
        },
    }
    if entry.entity is not None:
        document["entity"] = entry.entity
    if entry.previous_object_id is not None:
        document["previous_object_id"] = stored(entry.previous_object_id)
    if entry.context:
        document["context"] = stored(stored_keys(entry.context))
    return document


def stored_keys(value: Any) -> Any:
    """Keys made plain again by ``reify.unescape_keys`` escaped as stored
    (``normalise.escape_key``), in sub-documents and arrays too."""
    if isinstance(value, Mapping):
        return {escape_key(key): stored_keys(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [stored_keys(item) for item in value]
    return value


def stored(value: Any) -> Any:
    """A value the reader made plain, in its stored (BSON) form again: ``Decimal`` →
    ``Decimal128``, tuples (composite keys) → arrays."""
    if isinstance(value, Decimal):
        return Decimal128(value)
    if isinstance(value, Mapping):
        return {key: stored(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [stored(item) for item in value]
    return value


# -- CSV ----------------------------------------------------------------------------------


def csv_line(cells: list[str] | tuple[str, ...]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(cells)  # RFC 4180: CRLF, and CR or LF in a cell quote it
    return buffer.getvalue()


def csv_rows(entry: AuditEntry) -> Iterator[list[str]]:
    """One row per changed field (one with empty field, old and new if none changed)."""
    common = [
        cell(entry.id),
        entry.created_at.isoformat(timespec="milliseconds"),
        cell(entry.table_name),
        cell(entry.object_id),
        cell(entry.action),
        cell(entry.user_id),
        cell(entry.transaction_id),
    ]
    if not entry.changes:
        yield [*common, "", "", ""]
    for name, change in entry.changes.items():
        yield [*common, cell(name), *sides(change)]


def sides(change: Change) -> tuple[str, str]:
    """The old and new cells: a collection's removed and added keys as JSON arrays."""
    if change.collection:
        return cell(change.deleted), cell(change.added)
    return cell(change.old), cell(change.new)


def cell(value: Any) -> str:
    """A value as CSV text: strings as they are (formulas neutralised), numbers as numbers,
    null as empty, anything else as relaxed extended JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        return str(value)
    if isinstance(value, str):
        return neutralise(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple, Mapping, bytes)):
        return neutralise(json_util.dumps(stored(value), json_options=JSON_OPTIONS))
    return neutralise(str(value))


def neutralise(text: str) -> str:
    """A text a spreadsheet would run as a formula gets a leading apostrophe."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text
