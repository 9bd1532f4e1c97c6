"""Input validation before any I/O, with pydantic's errors turned into ours."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from voicesessions.errors import InvalidInputError

M = TypeVar("M", bound=BaseModel)

_UUID = TypeAdapter(uuid.UUID)


def validate(model: type[M], **values: Any) -> M:
    """``model(**values)``, raising :class:`InvalidInputError` (with pydantic's error list in
    ``details``) instead of ``ValidationError``."""
    try:
        return model(**values)
    except ValidationError as exc:
        raise InvalidInputError(_summary(exc), details=exc.errors(include_url=False)) from exc


def validate_item(model: type[M], value: Any, where: str) -> M:
    """One element of a list argument (a mapping or already a ``model``), with ``where``
    (e.g. ``segments[3]``) naming it in the error."""
    if isinstance(value, model):
        return value
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{where} must be an object, not {type(value).__name__}")
    try:
        return model.model_validate(dict(value))
    except ValidationError as exc:
        raise InvalidInputError(
            _summary(exc, where), details=exc.errors(include_url=False)
        ) from exc


def as_uuid(value: Any, name: str) -> uuid.UUID:
    """A UUID from a UUID or its string form; InvalidInputError otherwise."""
    try:
        return _UUID.validate_python(value)
    except ValidationError as exc:
        raise InvalidInputError(f"{name} must be a UUID, not {value!r}") from exc


def parse_model(model: type[M], row: Any) -> M:
    """A row model from a database row; a row that does not fit is a bug, reported as such."""
    return model.model_validate(row)


def encode_cursor(started_at: datetime, row_id: uuid.UUID) -> str:
    """An opaque keyset cursor for (started_at, id)."""
    raw = json.dumps([started_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (started_at, id) inside a cursor from :func:`encode_cursor`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        started, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return datetime.fromisoformat(started), uuid.UUID(row_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidInputError(f"invalid cursor {cursor!r}") from exc


def _summary(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        parts.append(f"{where.lstrip('.') or 'input'}: {error['msg']}")
    return "invalid input: " + "; ".join(parts)
