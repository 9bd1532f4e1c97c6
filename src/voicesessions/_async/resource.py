"""Shared plumbing of the repositories: a backend, the retry policy, and the one answer for a
session the caller cannot see."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from voicesessions._async.backends.base import AsyncBackend
from voicesessions._query import eq
from voicesessions._retry_policy import RetryPolicy
from voicesessions.errors import NotFoundError, PermissionDeniedError, SessionNotFound

from .retry import call_with_retry

T = TypeVar("T")

#: The codes of "no such row" answers that mean the session itself was not found.
_NOT_FOUND_CODES = frozenset({"P0002", "PGRST116"})


def session_not_found(session_id: uuid.UUID) -> SessionNotFound:
    """The one answer, from every SDK call, for a session that does not exist or that the
    caller may not see (the two are indistinguishable on purpose)."""
    return SessionNotFound(f"session {session_id} not found", code="P0002")


class Resource:
    """A group of SDK methods over one backend (``vs.sessions``, ``vs.tenants``, ...)."""

    def __init__(self, backend: AsyncBackend, retry: RetryPolicy) -> None:
        self._backend = backend
        self._retry = retry

    async def _call(self, fn: Callable[[], Awaitable[T]], *, idempotent: bool) -> T:
        """Run one backend call under the retry policy; only idempotent calls are retried."""
        return await call_with_retry(self._retry, fn, idempotent=idempotent)

    async def _session_call(
        self, session_id: uuid.UUID, fn: Callable[[], Awaitable[T]], *, idempotent: bool = True
    ) -> T:
        """One call about a session: "not found" (P0002) is :func:`session_not_found`, and
        so is a refusal (42501) when the caller cannot even see the session, so that a
        missing session and another company's give the same answer. A refusal about a
        session the caller can see stays PermissionDeniedError."""
        try:
            return await self._call(fn, idempotent=idempotent)
        except SessionNotFound as exc:
            raise session_not_found(session_id) from exc
        except NotFoundError as exc:
            if exc.code not in _NOT_FOUND_CODES:
                raise
            raise session_not_found(session_id) from exc
        except PermissionDeniedError as exc:
            if await self._session_visible(session_id):
                raise
            raise session_not_found(session_id) from exc

    async def _session_visible(self, session_id: uuid.UUID) -> bool:
        rows = await self._call(
            lambda: self._backend.select(
                "sessions", columns=("id",), filters=(eq("id", session_id),), limit=1
            ),
            idempotent=True,
        )
        return bool(rows)
