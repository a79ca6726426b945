"""Whole documents as BSON: repaired when they cannot be encoded or are too large, encoded
for the outbox, decoded back for redelivery.

A repaired document keeps its ``_id``, so a redelivery of it is still recognised by Mongo.

The 16 MiB rule. MongoDB refuses a document over 16 MiB; ``repair`` shrinks a copy in
stages, each going only as far as needed, and each taking the largest candidates first:

1. values in ``changes`` (an item of an ``added`` or ``deleted`` list);
2. ``added`` and ``deleted`` lists of several values (a many-to-many collection's keys);
3. whole fields of ``changes``;
4. ``changes`` itself;
5. the values of ``context``, and the document's other fields (never ``_id``);
6. ``context`` itself.

Each becomes a marker that says what it stood for (a list becomes a list of one marker)::

    {"omitted": "too large",           # "too many values" for a list, "too many fields"
     "type": "string",                 # for changes or context; "string", "binData",
                                       # "array" or "object", as MongoDB's $type names them
     "length": 17825792,               # characters, bytes, items or fields
     "bson_bytes": 17825799,           # len(bson.encode({"v": value}))
     "sha256": "5d1f...",              # see digest()
     "head": "the first 100 chara..."} # the first 100 characters or bytes, or the first
                                       # items (at most 10, within 1 KiB); values and
                                       # lists only

A candidate is replaced only when its marker is smaller.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bson
from bson.codec_options import CodecOptions

from .normalise import escape_key, fallback, to_bson

logger = logging.getLogger("audit_mongo")

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
# A repaired document is shrunk this far below the limit, so that fields added after the
# repair (a chain link and its hash) still fit.
REPAIR_HEADROOM = 4096
HEAD_CHARACTERS = 100
HEAD_BYTES = 100
HEAD_ITEMS = 10
HEAD_ITEMS_BYTES = 1024
# A value this small is not worth a marker: none is smaller than about 150 bytes.
SHRINKABLE_BYTES = 256
Document = dict[str, Any]
# Dates come back aware, as the documents were built; every other type round-trips as is.
DECODE_OPTIONS: CodecOptions[Document] = CodecOptions(tz_aware=True)
# What a marker's "type" says, in the names of MongoDB's $type; only values this long are
# ever left out.
_BSON_TYPES: tuple[tuple[type, str], ...] = (
    (str, "string"),
    (bytes, "binData"),
    (dict, "object"),
    (list, "array"),
)


def encode_all(documents: Sequence[Document]) -> tuple[list[Document], list[bytes]]:
    """``documents`` (those that needed it repaired) and the BSON of each."""
    kept: list[Document] = []
    encoded: list[bytes] = []
    repaired = 0
    for document in documents:
        try:
            data = bson.encode(document)
        except Exception:
            data = b""
        if not data or len(data) > MAX_DOCUMENT_BYTES:
            document = repair(document)
            data = bson.encode(document)
            repaired += 1
        kept.append(document)
        encoded.append(data)
    if repaired:
        log_repaired(repaired)
    return kept, encoded


def decode_all(data: bytes) -> list[Document]:
    return bson.decode_all(data, DECODE_OPTIONS)


def log_repaired(count: int) -> None:
    logger.warning(
        "audit_mongo: %d audit documents could not be encoded or exceeded 16 MiB; their "
        "offending values were replaced by markers",
        count,
    )


def repair(document: Document, *, limit: int | None = None) -> Document:
    """``document`` itself if it encodes within ``limit`` bytes (16 MiB), else a copy that
    encodes within ``limit - REPAIR_HEADROOM``; ``document`` is left as it was.

    In the copy, each value BSON cannot carry is normalised, or becomes the
    ``unrepresentable`` fallback; then the 16 MiB rule (above) shrinks what is too large.
    The copy keeps ``_id`` and every field (only values change), in their order. The same
    document always gives the same copy.
    """
    limit = MAX_DOCUMENT_BYTES if limit is None else limit
    try:
        if len(bson.encode(document)) <= limit:
            return document
    except Exception:
        pass
    original = _encodable_copy(document)
    copy = _Copy(original)
    target = limit - REPAIR_HEADROOM
    for slots, replace in _STAGES:
        excess = len(bson.encode(copy.document)) - target
        if excess <= 0:
            break
        _shrink(copy, list(slots(copy.document, original)), excess, replace)
    return copy.document


def marker(reason: str, value: Any, *, head: bool = True) -> dict[str, Any]:
    """What stands for ``value`` (BSON-encodable) once it is left out: see the module doc."""
    encoded = bson.encode({"v": value})
    found: dict[str, Any] = {"omitted": reason, "type": _bson_type(value)}
    if isinstance(value, (str, bytes, Mapping, list)):
        found["length"] = len(value)
    found["bson_bytes"] = len(encoded)
    found["sha256"] = _sha256(value, encoded)
    first = _head(value) if head else None
    if first is not None:
        found["head"] = first
    return found


def digest(value: Any) -> str:
    """The ``sha256`` a marker gives for ``value``, to check a value you hold against it.

    ``value`` is normalised first, as a column value is (``to_bson``). A string's digest is
    the SHA-256 of its UTF-8 bytes, binary's of its bytes (what PostgreSQL's ``sha256()``
    or ``sha256sum`` give for them); any other value's that of ``bson.encode({"v": value})``.
    """
    return _sha256(to_bson(value))


def _sha256(value: Any, encoded: bytes | None = None) -> str:
    """``encoded``: ``value``'s BSON as ``{"v": value}``, when the caller has it already."""
    if isinstance(value, str):
        data = value.encode("utf-8")
    elif isinstance(value, bytes):
        data = value
    else:
        data = encoded if encoded is not None else bson.encode({"v": value})
    return hashlib.sha256(data).hexdigest()


def _bson_type(value: Any) -> str:
    return next((name for kind, name in _BSON_TYPES if isinstance(value, kind)), "other")


def _head(value: Any) -> Any:
    if isinstance(value, str):
        return value[:HEAD_CHARACTERS]
    if isinstance(value, bytes):
        return bytes(value[:HEAD_BYTES])
    if isinstance(value, list):
        return _leading(value)
    if isinstance(value, Mapping):
        first = list(itertools.islice(value.items(), HEAD_ITEMS))
        return dict(first[: len(_leading([item for _, item in first]))])
    return None


def _leading(items: list[Any]) -> list[Any]:
    """The first items (at most ``HEAD_ITEMS``) that encode within ``HEAD_ITEMS_BYTES``."""
    kept: list[Any] = []
    room = HEAD_ITEMS_BYTES
    for item in items[:HEAD_ITEMS]:
        room -= _size(item)
        if room < 0:
            break
        kept.append(item)
    return kept


def _size(value: Any) -> int:
    return len(bson.encode({"v": value}))


# Stage 0: values BSON cannot carry.


def _encodable_copy(document: Document) -> Document:
    """``document`` with each value BSON cannot carry replaced; what encodes is shared."""
    where = f"{document.get('table_name')}"
    copy: Document = {}
    for field, value in document.items():
        if field == "_id" or _encodes(value):
            copy[field] = value
        elif field == "changes" and isinstance(value, Mapping):
            copy[field] = {
                _field_name(name): _encodable_change(change, f"{where}.changes.{name}")
                for name, change in value.items()
            }
        else:
            copy[field] = _encodable(value, f"{where}.{field}")
    return copy


def _encodes(value: Any) -> bool:
    try:
        bson.encode({"v": value})
    except Exception:
        return False
    return True


def _field_name(name: Any) -> str:
    """A field name as BSON takes it: a string without NUL or lone surrogates."""
    return name if isinstance(name, str) and _encodes({name: None}) else escape_key(name)


def _encodable_change(change: Any, where: str) -> Any:
    if not isinstance(change, Mapping) or _encodes(change):
        return _encodable(change, where)
    return {_field_name(side): _encodable_values(values, where) for side, values in change.items()}


def _encodable_values(values: Any, where: str) -> Any:
    if isinstance(values, list) and not _encodes(values):
        return [_encodable(value, where) for value in values]
    return _encodable(values, where)


def _encodable(value: Any, where: str) -> Any:
    """``value`` if BSON carries it, else its normalised form, else the fallback."""
    if _encodes(value):
        return value
    try:
        stored = to_bson(value)
    except Exception:
        return fallback(value, where)
    return stored if _encodes(stored) else fallback(value, where)


# Stages 1 to 6: what is too large.


@dataclass
class _Slot:
    """A place in the document being repaired that a marker may take."""

    path: tuple[Any, ...]  # keys and indexes from the document down to the place
    original: Any  # what the value was before any stage: what its marker describes
    size: int  # bytes of {"v": <the value there now>}


Slots = Callable[[Document, Document], Iterator[_Slot]]


class _Copy:
    """The repaired copy, built as the stages change it: a container of the original is
    copied the first time something inside it is replaced, so the original stays as it was
    and the stages' markers describe its values."""

    def __init__(self, original: Document) -> None:
        self.document = dict(original)
        self._owned = {id(self.document)}

    def put(self, path: tuple[Any, ...], value: Any) -> None:
        holder = self.document
        for key in path[:-1]:
            child = holder[key]
            if id(child) not in self._owned:
                child = dict(child) if isinstance(child, dict) else list(child)
                holder[key] = child
                self._owned.add(id(child))
            holder = child
        holder[path[-1]] = value


def _shrink(copy: _Copy, slots: list[_Slot], excess: int, replace: Callable[[Any], Any]) -> None:
    """Replace the largest of ``slots`` first (earlier first among equals) by
    ``replace(original)``, each only if that is smaller, until ``excess`` bytes are saved."""
    for slot in sorted(slots, key=lambda s: s.size, reverse=True):
        if excess <= 0 or slot.size <= SHRINKABLE_BYTES:
            return
        new = replace(slot.original)
        saved = slot.size - _size(new)
        if saved > 0:
            copy.put(slot.path, new)
            excess -= saved


def _changes(document: Document) -> dict[str, Any]:
    changes = document.get("changes")
    return changes if isinstance(changes, dict) else {}


def _sides(document: Document) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """The path and value of each side (``added``, ``deleted``) of each field of changes."""
    for name, change in _changes(document).items():
        if isinstance(change, dict):
            for side, values in change.items():
                yield ("changes", name, side), values


def _value_slots(repaired: Document, original: Document) -> Iterator[_Slot]:
    for path, values in _sides(repaired):
        if isinstance(values, list):
            for index, value in enumerate(values):
                if _worth_measuring(value):
                    yield _Slot((*path, index), value, _size(value))


def _worth_measuring(value: Any) -> bool:
    """Whether ``value`` is long enough that its marker may be smaller: a string or binary
    longer than a head, an array or document of more items than a head or holding one of
    those. Spares measuring each of the millions of keys a collection change may list."""
    if isinstance(value, str):
        return len(value) > HEAD_CHARACTERS
    if isinstance(value, bytes):
        return len(value) > HEAD_BYTES
    if isinstance(value, (list, dict)):
        items = value.values() if isinstance(value, dict) else value
        return len(value) > HEAD_ITEMS or any(
            isinstance(item, (list, dict)) or _worth_measuring(item) for item in items
        )
    return False


def _list_slots(repaired: Document, original: Document) -> Iterator[_Slot]:
    for path, values in _sides(repaired):
        if isinstance(values, list) and len(values) > 1:
            yield _Slot(path, _at(original, path), _size(values))


def _field_slots(repaired: Document, original: Document) -> Iterator[_Slot]:
    for name, change in _changes(repaired).items():
        yield _Slot(("changes", name), _changes(original)[name], _size(change))


def _whole_changes_slot(repaired: Document, original: Document) -> Iterator[_Slot]:
    if "changes" in repaired:
        yield _Slot(("changes",), original["changes"], _size(repaired["changes"]))


def _other_value_slots(repaired: Document, original: Document) -> Iterator[_Slot]:
    context = repaired.get("context")
    if isinstance(context, dict):
        for key, value in context.items():
            yield _Slot(("context", key), original["context"][key], _size(value))
    for field, value in repaired.items():
        if field not in ("_id", "changes", "context"):
            yield _Slot((field,), original[field], _size(value))


def _whole_context_slot(repaired: Document, original: Document) -> Iterator[_Slot]:
    if "context" in repaired:
        yield _Slot(("context",), original["context"], _size(repaired["context"]))


def _at(document: Document, path: tuple[Any, ...]) -> Any:
    value: Any = document
    for key in path:
        value = value[key]
    return value


def _too_large(value: Any) -> Any:
    return marker("too large", value)


def _too_large_field(change: Any) -> Any:
    return marker("too large", change, head=False)  # a head would make a field no smaller


def _too_many_values(values: Any) -> Any:
    return [marker("too many values", values)]


def _too_many_fields(fields: Any) -> Any:
    # No head: readers take each field of changes for an attribute's change.
    return marker("too many fields", fields, head=False)


_STAGES: tuple[tuple[Slots, Callable[[Any], Any]], ...] = (
    (_value_slots, _too_large),
    (_list_slots, _too_many_values),
    (_field_slots, _too_large_field),
    (_whole_changes_slot, _too_many_fields),
    (_other_value_slots, _too_large),
    (_whole_context_slot, _too_many_fields),
)
