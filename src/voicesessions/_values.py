"""The value policy on the SDK side: what the database accepts, checked before any I/O.

The database enforces the policy (migration ``20261128000100_hardening_values.sql``); this
module mirrors it so that a bad value fails with an :class:`InvalidInputError` naming the
field (and index) before anything is sent, and a multi-part write never stops halfway:

- text: no NUL character and no lone surrogate (PostgreSQL stores neither);
- numbers: finite; a number inside a JSON document is 0 or has a magnitude between
  :data:`MIN_JSON_MAGNITUDE` and :data:`MAX_JSON_MAGNITUDE` (``1e5000`` would print back as
  a 5,001-digit integer; ``1e-50`` underflows ``real``);
- JSON documents: nested at most :data:`MAX_JSON_DEPTH` containers, with a size cap per
  field in bytes of JSON as PostgreSQL prints it (computed here exactly as the database
  computes ``octet_length(doc::text)``), keys are strings, values are JSON values;
- timestamps: timezone-aware, in [:data:`TIMESTAMP_MIN`, :data:`TIMESTAMP_MAX`).

Nothing here recurses: a document nested 100,000 deep is refused, not a RecursionError.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, PlainValidator, StringConstraints, TypeAdapter
from pydantic_core import PydanticCustomError

from voicesessions.errors import InvalidInputError

#: Deepest nesting of containers in a stored JSON document.
MAX_JSON_DEPTH = 32
#: Largest magnitude of a JSON number (2^53 - 1: every integer up to it is exact in a double).
MAX_JSON_MAGNITUDE = 9_007_199_254_740_991
#: Smallest magnitude of a non-zero JSON number.
MIN_JSON_MAGNITUDE = Decimal("1e-20")
#: Floats whose magnitude lies in this range are inside the policy whatever their shortest
#: decimal text (a float's repr is within 1e-16 relative of it): no Decimal needed, which
#: costs more than the rest of validating a transcript segment's confidence.
_SURELY_INSIDE = (1e-19, 9e15)
#: Size caps in bytes of JSON (as PostgreSQL prints the document).
MAX_METADATA_BYTES = 65_536
MAX_PERSONA_BYTES = 65_536
MAX_AUDIO_QUALITY_BYTES = 65_536
MAX_WORDS_BYTES = 65_536
MAX_RESULTS_BYTES = 1_000_000
#: Per call of ``append_transcript_segments``: segments, and bytes of JSON.
MAX_SEGMENTS_PER_CALL = 1000
MAX_SEGMENTS_BYTES = 8_388_608
#: The window every stored timestamp lies in: [TIMESTAMP_MIN, TIMESTAMP_MAX).
TIMESTAMP_MIN = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
TIMESTAMP_MAX = datetime.datetime(2100, 1, 1, tzinfo=datetime.UTC)
#: Largest integer of a PostgreSQL ``integer`` column.
MAX_INT4 = 2_147_483_647

_NUMBER_RANGE = f"numbers are 0 or between 1e-20 and {MAX_JSON_MAGNITUDE} in magnitude, and finite"
_CONTROL_ESCAPES = {"\b", "\f", "\n", "\r", "\t", '"', "\\"}
#: The characters PostgreSQL escapes in a JSON string (control characters, quote, backslash).
_ESCAPED = re.compile(r'[\x00-\x1f"\\]')


def text_problem(value: str) -> str | None:
    """What PostgreSQL would refuse in a string (NUL, a lone surrogate), or None."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000), which PostgreSQL cannot store"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"contains a lone surrogate (U+{ord(value[exc.start]):04X}), which is not UTF-8"
    return None


_STRIPPED: TypeAdapter[str] = TypeAdapter(Annotated[str, StringConstraints(strip_whitespace=True)])


def stripped(value: str) -> str:
    """``value`` with surrounding whitespace removed exactly as the SDK's input models remove
    it (pydantic's ``str_strip_whitespace``: Unicode White_Space, which is not Python's
    ``str.strip``), so that every name the SDK takes is normalized one way."""
    return _STRIPPED.validate_python(value)


def check_text(value: Any, field: str) -> Any:
    """``value`` unchanged if it is not a string PostgreSQL would refuse."""
    if isinstance(value, str):
        problem = text_problem(value)
        if problem is not None:
            raise InvalidInputError(f"{field} {problem}")
    return value


def number_problem(value: Any) -> str | None:
    """What is wrong with a scalar number (int, float, Decimal) outside JSON: not finite."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, not {value!r}"
    if isinstance(value, Decimal) and not value.is_finite():
        return f"must be a finite number, not {value!r}"
    return None


def check_number(value: Any, field: str) -> Any:
    """``value`` unchanged if it is finite (or not a number at all)."""
    problem = number_problem(value)
    if problem is not None:
        raise InvalidInputError(f"{field} {problem}")
    return value


def json_number_problem(value: int | float) -> str | None:
    """What is wrong with a number inside a JSON document, or None (see the module)."""
    if isinstance(value, int):
        if abs(value) <= MAX_JSON_MAGNITUDE:
            return None
        digits = int(value.bit_length() * 0.30103) + 1
        shown = repr(value) if digits <= 40 else f"an integer of about {digits} digits"
        return f"holds the number {shown}, out of range ({_NUMBER_RANGE})"
    if not math.isfinite(value):
        return f"holds {value!r}, which JSON cannot carry ({_NUMBER_RANGE})"
    if value == 0 or _SURELY_INSIDE[0] <= abs(value) <= _SURELY_INSIDE[1]:
        return None  # far from both bounds: the decimal text cannot fall outside them
    magnitude = abs(Decimal(repr(value)))  # the text the database parses
    if magnitude > MAX_JSON_MAGNITUDE or (magnitude != 0 and magnitude < MIN_JSON_MAGNITUDE):
        return f"holds the number {value!r}, out of range ({_NUMBER_RANGE})"
    return None


def check_timestamp(value: datetime.datetime | None, field: str) -> datetime.datetime | None:
    """``value`` unchanged if it is None or an aware datetime inside the stored window."""
    if value is None:
        return None
    if not isinstance(value, datetime.datetime):
        raise InvalidInputError(f"{field} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInputError(f"{field} must be timezone-aware")
    if not TIMESTAMP_MIN <= value < TIMESTAMP_MAX:
        raise InvalidInputError(
            f"{field} must be from {TIMESTAMP_MIN.date()} to before {TIMESTAMP_MAX.date()}"
            f" (UTC), not {value.isoformat()}"
        )
    return value


def json_problem(
    value: Any, *, max_depth: int = MAX_JSON_DEPTH, max_bytes: int | None = None
) -> tuple[str, str] | None:
    """The first problem of a JSON document as (path, message), or None.

    ``path`` is like ``.key[3].other`` (empty for the document itself). Checks, without
    recursion: JSON types only (mappings with string keys, lists and tuples, strings, ints,
    floats, bools, None, and what the SDK sends as strings: Decimal, UUID, dates, enums),
    strings PostgreSQL can store, numbers in range, nesting, and the size in bytes of the
    document as PostgreSQL prints it.
    """
    problem, size = _walk(value, max_depth)
    if problem is not None:
        return problem
    if max_bytes is not None and size > max_bytes:
        return "", f"has {size} bytes of JSON, at most {max_bytes} are allowed"
    return None


def _walk(value: Any, max_depth: int) -> tuple[tuple[str, str] | None, int]:
    """The first problem of a document (or None) and its size as PostgreSQL prints it."""
    size = 0
    # (value, path, depth of the containers around it)
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, enum.Enum):
            item = item.value
        if item is None:
            size += 4
        elif isinstance(item, bool):
            size += 4 if item else 5
        elif isinstance(item, (int, float)):
            problem = json_number_problem(item)
            if problem is not None:
                return (path, problem), size
            size += _number_size(item)
        elif isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                return (path, problem), size
            size += _string_size(item)
        elif isinstance(item, Decimal):
            if not item.is_finite():
                return (path, f"holds {item!r}, which is not a finite number"), size
            size += len(str(item)) + 2  # sent as a string
        elif isinstance(item, (uuid.UUID, datetime.date, datetime.time)):
            size += len(str(item.isoformat() if not isinstance(item, uuid.UUID) else item)) + 2
        elif isinstance(item, Mapping):
            if depth >= max_depth:
                return (path, f"is nested more than {max_depth} levels deep"), size
            size += 2 + max(0, len(item) - 1) * 2
            for key, child in item.items():
                if not isinstance(key, str):
                    return (path, f"has a key that is not a string: {key!r}"), size
                problem = text_problem(key)
                if problem is not None:
                    return (path, f"has a key that {problem}"), size
                size += _string_size(key) + 2
                stack.append((child, f"{path}.{key}", depth + 1))
        elif isinstance(item, (list, tuple)):
            if depth >= max_depth:
                return (path, f"is nested more than {max_depth} levels deep"), size
            size += 2 + max(0, len(item) - 1) * 2
            stack.extend((child, f"{path}[{index}]", depth + 1) for index, child in enumerate(item))
        else:
            return (path, f"holds a {type(item).__name__}, which is not a JSON value"), size
    return None, size


def check_json(
    value: Any, field: str, *, max_depth: int = MAX_JSON_DEPTH, max_bytes: int | None = None
) -> Any:
    """``value`` unchanged if :func:`json_problem` finds nothing wrong with it."""
    found = json_problem(value, max_depth=max_depth, max_bytes=max_bytes)
    if found is not None:
        path, problem = found
        raise InvalidInputError(f"{field}{path} {problem}")
    return value


def json_size(value: Any) -> int:
    """Bytes of ``value`` as JSON printed by PostgreSQL (``octet_length(doc::text)``)."""
    problem, size = _walk(value, 10**9)
    if problem is not None:
        raise InvalidInputError(f"not a storable JSON value: {problem[0]} {problem[1]}")
    return size


def words_problem(words: Any) -> str | None:
    """What the database would refuse in a segment's ``words``, or None: null, or an array
    of flat objects (keys of 1..64 characters, values string, number, boolean or null;
    ``word`` a string, ``start_ms``/``end_ms`` integers 0..2^31-1, ``confidence`` null or
    0..1), at most :data:`MAX_WORDS_BYTES` bytes of JSON."""
    if words is None:
        return None
    if not isinstance(words, (list, tuple)):
        return f"words must be null or an array of word objects, not {type(words).__name__}"
    found = json_problem(words, max_depth=2, max_bytes=MAX_WORDS_BYTES)
    if found is not None:
        return f"words{found[0]} {found[1]}"
    for index, word in enumerate(words):
        if not isinstance(word, Mapping):
            return f"words[{index}] must be an object, not {type(word).__name__}"
        for key in sorted(word):
            value = word[key]
            if not 1 <= len(key) <= 64:
                return f"words[{index}].{key[:80]} is not a key of 1 to 64 characters"
            if key == "word" and not isinstance(value, str):
                return f"words[{index}].word must be a string, not {value!r}"
            if key in ("start_ms", "end_ms") and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT4
            ):
                return (
                    f"words[{index}].{key} must be an integer between 0 and {MAX_INT4},"
                    f" not {value!r}"
                )
            if (
                key == "confidence"
                and value is not None
                and (isinstance(value, bool) or not isinstance(value, (int, float)))
            ):
                return f"words[{index}].confidence must be null or a number, not {value!r}"
            if key == "confidence" and value is not None and not 0 <= value <= 1:
                return f"words[{index}].confidence must be between 0 and 1, not {value!r}"
    return None


def _number_size(value: int | float) -> int:
    """Length of the number as PostgreSQL's numeric prints what the SDK sends (repr)."""
    if isinstance(value, int):
        return len(str(value))
    exact = Decimal(repr(value))
    exponent = exact.as_tuple().exponent
    assert isinstance(exponent, int)  # finite: checked before
    scale = max(0, -exponent)
    with decimal.localcontext() as context:
        context.prec = 1000
        text = format(abs(exact), f".{scale}f")
    return len(text) + (1 if exact < 0 else 0)


def _string_size(value: str) -> int:
    """Length of a JSON string as PostgreSQL prints it: quotes, escapes, UTF-8 bytes."""
    size = len(value.encode("utf-8")) + 2
    if _ESCAPED.search(value) is None:
        return size
    for char in value:
        if char < " " or char in _CONTROL_ESCAPES:
            size += 1 if char in _CONTROL_ESCAPES else 5
    return size


def segment_problems(segments: Sequence[Mapping[str, Any]]) -> str | None:
    """What the database would refuse in one call's batch as a whole (count, bytes).

    The exact size (:func:`json_size`, a walk in Python) is only computed when a bound
    computed in C says the batch might be too large: PostgreSQL prints no token of a JSON
    document in more than 6 times the characters ``json.dumps`` (ASCII) writes for it (a
    character escaped as ``\\uXXXX`` by ``json.dumps`` is at most 4 bytes of UTF-8 or a
    6-byte escape there; a policy-conforming number at most ~4.4 times its ``repr``;
    separators, keys, literals alike), so a batch whose ``json.dumps`` is at most
    ``MAX_SEGMENTS_BYTES / 6`` characters is within the limit."""
    if len(segments) > MAX_SEGMENTS_PER_CALL:
        return (
            f"a call stores at most {MAX_SEGMENTS_PER_CALL} final segments, not"
            f" {len(segments)}: split them into several calls"
        )
    try:
        if 6 * len(json.dumps(segments, allow_nan=False)) <= MAX_SEGMENTS_BYTES:
            return None
    except (TypeError, ValueError):
        pass  # not plain JSON: the exact walk below says what is wrong
    size = json_size(list(segments))
    if size > MAX_SEGMENTS_BYTES:
        return (
            f"the final segments hold {size} bytes of JSON, at most {MAX_SEGMENTS_BYTES}"
            " are allowed per call: split them into several calls"
        )
    return None


# -- pydantic adapters: the same checks as field validators of the models -------------------


def _refuse(message: str) -> PydanticCustomError:
    return PydanticCustomError("value_policy", "{message}", {"message": message})


def _stored_text(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise _refuse(problem)
    return value


def _finite(value: Any) -> Any:
    problem = number_problem(value)
    if problem is not None:
        raise _refuse(problem)
    return value


def _json_number(value: Any) -> Any:
    if value is not None and not isinstance(value, bool) and isinstance(value, (int, float)):
        problem = json_number_problem(value)
        if problem is not None:
            raise _refuse(problem)
    return value


def _timestamp(value: datetime.datetime | None) -> datetime.datetime | None:
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise _refuse("must be timezone-aware")
    if not TIMESTAMP_MIN <= value < TIMESTAMP_MAX:
        raise _refuse(
            f"must be from {TIMESTAMP_MIN.date()} to before {TIMESTAMP_MAX.date()} (UTC),"
            f" not {value.isoformat()}"
        )
    return value


def _words(value: Any) -> Any:
    problem = words_problem(value)
    if problem is not None:
        raise _refuse(problem)
    return None if value is None else [dict(word) for word in value]


def json_object(max_bytes: int | None, max_depth: int = MAX_JSON_DEPTH) -> PlainValidator:
    """A field validator for a JSON object stored as given (keys and strings are not
    stripped or coerced), under :func:`json_problem` with these caps."""

    def check(value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise _refuse(f"must be a JSON object, not {type(value).__name__}")
        found = json_problem(value, max_depth=max_depth, max_bytes=max_bytes)
        if found is not None:
            path, problem = found
            raise _refuse(f"{path.lstrip('.')} {problem}".strip())
        return dict(value)

    return PlainValidator(check)


#: A string PostgreSQL can store (no NUL, no lone surrogate).
StoredText = Annotated[str, AfterValidator(_stored_text)]
#: A finite number (no NaN, no ±Infinity), for numeric columns.
FINITE = AfterValidator(_finite)
#: A number that obeys the JSON number policy (stored in a document).
JSON_NUMBER = AfterValidator(_json_number)
#: An aware datetime inside the stored window.
STORED_TIMESTAMP = AfterValidator(_timestamp)
#: A segment's ``words`` as the database accepts them, stored as given.
WORDS = PlainValidator(_words)
#: A value of a word object (words are flat).
WordValue = str | int | float | bool | None
