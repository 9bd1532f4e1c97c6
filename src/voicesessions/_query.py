"""The small query vocabulary the backends understand: equality-style filters and ordering.

Repositories describe *what* to read or write with these values; each backend turns them
into its own form (PostgREST query parameters, or SQL built with psycopg.sql). Nothing here
does I/O, so the async core and its generated sync face share it.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from voicesessions.errors import InvalidInputError, brief

Op = Literal["eq", "neq", "gt", "gte", "lt", "lte", "in", "is"]

#: The operators and their SQL spelling; PostgREST spells them like the keys.
SQL_OPERATORS: dict[str, str] = {
    "eq": "=",
    "neq": "<>",
    "gt": ">",
    "gte": ">=",
    "lt": "<",
    "lte": "<=",
    "in": "= any",
    "is": "is",
}


@dataclass(frozen=True)
class Filter:
    """``column <op> value``. ``in`` takes a sequence; ``is`` takes None, True or False."""

    column: str
    op: Op
    value: Any

    def __post_init__(self) -> None:
        if self.op not in SQL_OPERATORS:
            raise ValueError(f"unknown filter operator {self.op!r}")
        if self.op == "in" and (
            isinstance(self.value, (str, bytes)) or not isinstance(self.value, Sequence)
        ):
            raise ValueError("the 'in' operator takes a sequence of values")
        if self.op == "is" and self.value not in (None, True, False):
            raise ValueError("the 'is' operator takes None, True or False")


@dataclass(frozen=True)
class Order:
    """Sort by ``column``; ``descending`` reverses. Nulls sort as PostgreSQL sorts them."""

    column: str
    descending: bool = False


def eq(column: str, value: Any) -> Filter:
    return Filter(column, "eq", value)


def conflict_target(
    on_conflict: Sequence[str] | None, ignore_duplicates: bool
) -> tuple[str, ...] | None:
    """The validated ``on conflict (...) do nothing`` columns of an insert, or None.

    ``on_conflict`` and ``ignore_duplicates=True`` go together: the interface offers
    "skip rows that already exist", never an implicit upsert. Raises ValueError otherwise.
    """
    if on_conflict is None and not ignore_duplicates:
        return None
    if on_conflict is None or not ignore_duplicates:
        raise ValueError("on_conflict and ignore_duplicates=True must be given together")
    if isinstance(on_conflict, str) or not on_conflict:
        raise ValueError("on_conflict must be a non-empty sequence of column names")
    return tuple(on_conflict)


def json_scalar(value: Any) -> Any:
    """A Python value as PostgREST reads it from JSON (ISO 8601 dates and times, enum values,
    uuids and exact decimals as strings); other values unchanged. NaN and ±Infinity (float
    or Decimal) are refused (InvalidInputError): JSON has no such numbers, and a Decimal
    would otherwise travel as the string "NaN"."""
    if isinstance(value, enum.Enum):
        return json_scalar(value.value)
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, decimal.Decimal) and not value.is_finite():
        raise InvalidInputError(f"{value!r} is not a finite number: nothing is stored as NaN")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError(f"{value!r} is not a finite number: JSON cannot carry it")
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    return value


@dataclass(frozen=True, slots=True)
class Json:
    """A value the SDK built itself from validated models that is plain JSON already (string
    keys, lists, ``str``/``int``/finite ``float``/``bool``/``None``): :func:`jsonable` passes
    it through without walking it again, so a hot path (a batch of transcript segments)
    pays for one serialization. Never wrap a caller's value: those must be walked."""

    value: Any


def jsonable(value: Any) -> Any:
    """``value`` as the JSON a PostgREST request carries: mappings and sequences (lists,
    tuples) recursively, scalars by :func:`json_scalar`, a :class:`Json` as its value
    unwalked. Both backends send arguments in this form (the Postgres backend then reads
    them as PostgREST does).

    Anything that is not JSON (bytes, sets, arbitrary objects, non-string keys of a type
    JSON has no key for) and documents nested deeper than Python can walk are
    InvalidInputError naming where they are, before any I/O.
    """
    try:
        return _jsonable(value)
    except _NotJson as exc:
        where = "".join(reversed(exc.path)) or "the value"
        raise InvalidInputError(
            f"{where.lstrip('.')}: {type(exc.value).__name__} {brief(exc.value, 60)} is not JSON"
        ) from None
    except RecursionError:
        raise InvalidInputError("a JSON document is nested too deeply to be sent") from None


class _NotJson(Exception):
    def __init__(self, value: Any) -> None:
        super().__init__()
        self.value = value
        self.path: list[str] = []


_JSON_SCALARS = (str, int, float, bool, type(None))
_JSON_KEYS = (str, int, float, bool, type(None), uuid.UUID, enum.Enum)


#: Types passed through as they are (exact types: a subclass, e.g. a str enum, is converted;
#: float is not here, as NaN and infinities are refused).
_PLAIN = frozenset({str, int, bool, type(None)})


def _jsonable(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if type(value) is Json:
        return value.value
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            if not isinstance(key, _JSON_KEYS):
                raise _NotJson(key)
            try:
                result[key if type(key) is str else str(json_scalar(key))] = _jsonable(item)
            except _NotJson as exc:
                exc.path.append(f".{key}")
                raise
        return result
    if isinstance(value, (list, tuple)):
        items = []
        for index, item in enumerate(value):
            try:
                items.append(_jsonable(item))
            except _NotJson as exc:
                exc.path.append(f"[{index}]")
                raise
        return items
    scalar = json_scalar(value)
    if not isinstance(scalar, _JSON_SCALARS):
        raise _NotJson(value)
    return scalar
