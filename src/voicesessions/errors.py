"""Exceptions raised by voicesessions, and the one mapping from every backend's errors to them.

Every error the package raises derives from :class:`VoiceSessionsError`::

    VoiceSessionsError
    ├── APIError                  the database or the Supabase API refused or failed a call
    │   ├── NotFoundError         the row does not exist or is not visible to the caller
    │   │   └── SessionNotFound
    │   ├── PermissionDeniedError 42501, HTTP 401/403, invalid JWT
    │   ├── ConflictError         23505, 23503, VS001 invalid status transition, VS002,
    │   │                         VS003 analysis recorded differently, VS004 still active
    │   ├── InvalidInputError     22*, 23502, 23514, 54*, rejected input (also before any I/O)
    │   ├── QueryTimeoutError     57014: the statement ran past the statement timeout
    │   ├── UnexpectedResponseError  an answer the SDK cannot read (not the documented shape)
    │   └── TransientError        lost connections, 5xx, 08*, 53*, 40001, 40P01
    ├── StreamError               a transcript stream gave up; its unsaved segments attached
    ├── ConfigurationError        missing or contradictory settings (from_env, as_user, ...)
    ├── LocalServerError          the embedded local PostgreSQL could not be set up or run
    └── MigrationError            a migration or the compatibility bootstrap failed

Every :class:`APIError` keeps ``code`` (the SQLSTATE, the PostgREST ``PGRST...`` code or an
HTTP status), ``message``, ``details``, ``hint`` and, where known, ``http_status``.
:func:`from_sqlstate` and :func:`from_postgrest` are the single place where codes become
exception types; the backends call them and never raise their libraries' errors.

Messages never repeat a caller's value in full: :func:`brief` shortens what a message quotes
to :data:`MAX_QUOTED_CHARS` characters, and an :class:`APIError` keeps at most
:data:`MAX_MESSAGE_CHARS` of its message, details and hint (a database error quoting a 1 MB
argument does not become a 1 MB exception).
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from typing import Any

#: Longest quotation of a caller's value in an error message, in characters.
MAX_QUOTED_CHARS = 200
#: Longest message, details or hint an APIError keeps, in characters.
MAX_MESSAGE_CHARS = 2000

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxdict = _REPR.maxlist = _REPR.maxtuple = _REPR.maxset = 8
_REPR.maxstring = 80
_REPR.maxother = MAX_QUOTED_CHARS


def brief(value: Any, limit: int = MAX_QUOTED_CHARS) -> str:
    """``repr(value)`` for an error message, never longer than ``limit`` characters (deep or
    long containers are elided with ``...``; a repr that raises is replaced by the type)."""
    try:
        text = _REPR.repr(value) if isinstance(value, (dict, list, tuple, set)) else repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return _cap(text, limit)


def _cap(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    cut = max(limit - 40, limit // 2)
    return f"{text[:cut]}... [{len(text) - cut} more characters]"


def _cap_any(value: Any) -> Any:
    """Details as given when short; a long string (or anything with a long repr) capped."""
    if value is None or isinstance(value, (int, float, bool)):
        return value
    if isinstance(value, str):
        return _cap(value, MAX_MESSAGE_CHARS)
    try:
        short = len(repr(value)) <= MAX_MESSAGE_CHARS
    except Exception:  # a repr that fails (or recurses too deeply)
        short = False
    return value if short else brief(value, MAX_MESSAGE_CHARS)


class VoiceSessionsError(Exception):
    """Base class of every error raised by voicesessions."""


class ConfigurationError(VoiceSessionsError):
    """Settings are missing or contradict each other (raised before any I/O)."""


class LocalServerError(VoiceSessionsError):
    """The embedded local PostgreSQL could not be found, initialised, started or stopped."""


class MigrationError(VoiceSessionsError):
    """A migration (or the Supabase-compatibility bootstrap) failed; nothing of it was kept.

    ``version`` names the migration that failed, ``sqlstate`` is PostgreSQL's error code.
    """

    def __init__(self, message: str, *, version: str | None = None, sqlstate: str | None = None):
        super().__init__(message)
        self.version = version
        self.sqlstate = sqlstate


class APIError(VoiceSessionsError):
    """The database or an API refused or failed a call.

    ``code`` is the SQLSTATE (``"42501"``, ``"VS001"``), the PostgREST code
    (``"PGRST116"``) or an HTTP status (``"503"``) when that is all there was.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        hint: str | None = None,
        http_status: int | None = None,
    ) -> None:
        message = _cap(str(message), MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = _cap_any(details)
        self.hint = None if hint is None else _cap(str(hint), MAX_MESSAGE_CHARS)
        self.http_status = http_status

    def __str__(self) -> str:
        text = self.message
        if self.code:
            text = f"[{self.code}] {text}"
        if self.hint:
            text = f"{text} (hint: {self.hint})"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, code={self.code!r},"
            f" details={self.details!r}, hint={self.hint!r}, http_status={self.http_status!r})"
        )


class NotFoundError(APIError):
    """The row does not exist, or RLS hides it from the caller (the two look the same)."""


class SessionNotFound(NotFoundError):
    """The session does not exist or the caller may not see it."""


class PermissionDeniedError(APIError):
    """The caller is not allowed to do this (SQLSTATE 42501, HTTP 401/403)."""


class WebhookSignatureError(PermissionDeniedError):
    """A webhook's signature is missing, malformed, stale or wrong (HTTP 401): nothing from
    its body was read into the database. Raised by ``vs.imports`` when given the secret."""


class ConflictError(APIError):
    """The call conflicts with the database's state: a duplicate (23505), a missing referenced
    row (23503), an invalid status transition (VS001) or a session that has ended (VS002)."""


class InvalidInputError(APIError):
    """The input was rejected: by validation before any I/O, or by the database (22*, 23502,
    23514, 54* program limits such as a document nested too deeply)."""


class QueryTimeoutError(APIError):
    """A statement ran past the statement timeout, or was cancelled (SQLSTATE 57014). Not
    retried: the same call would most likely take as long again."""


class UnexpectedResponseError(APIError):
    """The database or the API answered with something the SDK cannot read: not the shape
    the migrations define (a schema that does not match this SDK version, or stored data
    outside the contract). ``details`` says what did not fit."""


class TransientError(APIError):
    """A failure worth retrying: a lost or refused connection, a network timeout, overload,
    serialization failure or deadlock (08*, 53*, 57P*, 40001, 40P01, HTTP 5xx). A statement
    timeout is :class:`QueryTimeoutError`; a wrong password or database name is not
    transient either (PermissionDeniedError, ConfigurationError)."""


class StreamError(VoiceSessionsError):
    """A transcript stream could not store its segments: retries ran out (the cause is
    chained as ``__cause__``) or the stream was used after it failed or closed. ``pending``
    holds every segment that was added but not stored, in order, so nothing is lost: send
    them again (appends are idempotent) once the database is back."""

    def __init__(self, message: str, *, pending: list[Any] | None = None) -> None:
        super().__init__(message)
        self.pending = list(pending or [])


# -- mapping --------------------------------------------------------------------------------

#: Our own SQLSTATEs (raised by the migrations) and what they mean.
VOICESESSIONS_SQLSTATES: Mapping[str, type[APIError]] = {
    "VS001": ConflictError,  # invalid session status transition
    "VS002": ConflictError,  # live data written to a session that is not active
    "VS003": ConflictError,  # a different analysis already recorded under the same key
    "VS004": ConflictError,  # an analysis of a session that is still active
}

_EXACT_SQLSTATES: Mapping[str, type[APIError]] = {
    **VOICESESSIONS_SQLSTATES,
    "42501": PermissionDeniedError,
    "23505": ConflictError,
    "23503": ConflictError,
    "23502": InvalidInputError,
    "23514": InvalidInputError,
    "23P01": ConflictError,
    "40001": TransientError,
    "40P01": TransientError,
    "55P03": TransientError,  # lock_not_available
    "57014": QueryTimeoutError,  # query_canceled (statement timeout): permanent
    "57P01": TransientError,  # admin_shutdown
    "57P02": TransientError,  # crash_shutdown
    "57P03": TransientError,  # cannot_connect_now
    "25006": PermissionDeniedError,  # read_only_sql_transaction
    "42P01": NotFoundError,  # undefined_table (PostgREST: 404)
    "42883": NotFoundError,  # undefined_function (PostgREST: 404)
    "P0002": NotFoundError,  # no_data_found
}

_SQLSTATE_CLASSES: Mapping[str, type[APIError]] = {
    "08": TransientError,  # connection exceptions
    "53": TransientError,  # insufficient resources
    "22": InvalidInputError,  # data exceptions
    "54": InvalidInputError,  # program limit exceeded (stack depth, too many columns...)
    "28": PermissionDeniedError,  # invalid authorization
}

_POSTGREST_CODES: Mapping[str, type[APIError]] = {
    "PGRST116": NotFoundError,  # .single() on zero (or several) rows
    "PGRST301": PermissionDeniedError,  # JWT invalid
    "PGRST302": PermissionDeniedError,  # anonymous access disabled
    "PGRST303": PermissionDeniedError,  # JWT claims invalid
    "PGRST202": NotFoundError,  # function not found
    "PGRST205": NotFoundError,  # table not found
    "PGRST000": TransientError,  # database connection failed
    "PGRST001": TransientError,  # database connection error
    "PGRST002": TransientError,  # schema cache being built
    "PGRST003": TransientError,  # pool acquisition timeout
}


#: Supabase Auth (GoTrue) error codes whose meaning is more specific than their HTTP status
#: (``email_exists`` comes with 422, which alone would read as invalid input).
_AUTH_CODES: Mapping[str, type[APIError]] = {
    "email_exists": ConflictError,
    "phone_exists": ConflictError,
    "user_already_exists": ConflictError,
    "identity_already_exists": ConflictError,
    "bad_jwt": PermissionDeniedError,
    "invalid_jwt": PermissionDeniedError,
    "no_authorization": PermissionDeniedError,
    "not_admin": PermissionDeniedError,
    "user_not_found": NotFoundError,
}


def error_class_for_code(code: str | None, http_status: int | None = None) -> type[APIError]:
    """The exception type for a SQLSTATE, a PostgREST or Supabase Auth code, or an HTTP status."""
    if code:
        if code in _EXACT_SQLSTATES:
            return _EXACT_SQLSTATES[code]
        if code in _POSTGREST_CODES:
            return _POSTGREST_CODES[code]
        if code in _AUTH_CODES:
            return _AUTH_CODES[code]
        if code.isdigit() and len(code) == 3:
            http_status = http_status or int(code)
        elif len(code) == 5 and code[:2] in _SQLSTATE_CLASSES:
            return _SQLSTATE_CLASSES[code[:2]]
    if http_status is not None:
        return _class_for_http_status(http_status)
    return APIError


def _class_for_http_status(status: int) -> type[APIError]:
    if status in (401, 403):
        return PermissionDeniedError
    if status in (404, 406):
        return NotFoundError
    if status == 409:
        return ConflictError
    if status in (408, 429) or status >= 500:
        return TransientError
    if 400 <= status < 500:
        return InvalidInputError
    return APIError


def from_sqlstate(
    sqlstate: str | None,
    message: str,
    *,
    details: Any = None,
    hint: str | None = None,
    http_status: int | None = None,
) -> APIError:
    """Build the exception for a database error code."""
    cls = error_class_for_code(sqlstate, http_status)
    return cls(message, code=sqlstate, details=details, hint=hint, http_status=http_status)


def from_postgrest(error: Mapping[str, Any], *, http_status: int | None = None) -> APIError:
    """Build the exception for a PostgREST error body ``{code, message, details, hint}``."""
    code = error.get("code")
    message = error.get("message") or "the request failed"
    return from_sqlstate(
        None if code is None else str(code),
        str(message),
        details=error.get("details"),
        hint=error.get("hint"),
        http_status=http_status,
    )
