"""Shared plumbing of the repositories: a backend and the retry policy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from voicesessions._async.backends.base import AsyncBackend
from voicesessions._retry_policy import RetryPolicy

from .retry import call_with_retry

T = TypeVar("T")


class Resource:
    """A group of SDK methods over one backend (``vs.sessions``, ``vs.tenants``, ...)."""

    def __init__(self, backend: AsyncBackend, retry: RetryPolicy) -> None:
        self._backend = backend
        self._retry = retry

    async def _call(self, fn: Callable[[], Awaitable[T]], *, idempotent: bool) -> T:
        """Run one backend call under the retry policy; only idempotent calls are retried."""
        return await call_with_retry(self._retry, fn, idempotent=idempotent)
