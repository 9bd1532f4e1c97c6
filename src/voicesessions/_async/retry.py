"""Apply a :class:`~voicesessions._retry_policy.RetryPolicy` to one backend call.

:func:`call_with_retry` retries a call only when it failed with
:class:`~voicesessions.errors.TransientError` *and* the caller declared it idempotent (a
write that may have committed before the connection dropped must be safe to repeat).
Backoff is exponential with full jitter (tenacity's ``wait_random_exponential``); the last
error is re-raised unchanged. Every decision is logged at DEBUG on the ``voicesessions``
logger.

Sleeping goes through the module-level :func:`_sleep`, looked up at call time, so tests
replace it (``monkeypatch.setattr(retry_module, "_sleep", fake)``) to record backoffs
without waiting. It is the only seam; callers never pass a sleep function.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import tenacity
from tenacity import (
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from voicesessions._retry_policy import RetryPolicy
from voicesessions.errors import TransientError

T = TypeVar("T")

logger = logging.getLogger("voicesessions")


async def _sleep(seconds: float) -> None:
    """Wait between attempts (replaced by tests to record backoffs instead of waiting)."""
    await asyncio.sleep(seconds)


async def call_with_retry(
    policy: RetryPolicy, fn: Callable[[], Awaitable[T]], *, idempotent: bool
) -> T:
    """Call ``fn()`` and return its result, retrying transient failures per ``policy``.

    Only :class:`~voicesessions.errors.TransientError` is retried, and never when
    ``idempotent`` is False. When attempts run out, the last error is raised as it was.
    """
    # The first attempt runs here, outside tenacity: most calls succeed at once, and
    # tenacity's machinery (built per call) would cost them more than the call's own work.
    try:
        return await fn()
    except TransientError as exc:
        if not idempotent or policy.max_attempts == 1:
            reason = "the call is not idempotent" if not idempotent else "one attempt allowed"
            logger.debug("not retrying after %s: %s", _describe(exc), reason)
            raise
        first_failure = exc

    def log_retry(state: RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        logger.debug(
            "retrying after %s (attempt %d of %d failed), next attempt in %.3f s",
            _describe(error),
            state.attempt_number,
            policy.max_attempts,
            delay,
        )

    def give_up(state: RetryCallState) -> NoReturn:
        error = state.outcome.exception() if state.outcome is not None else None
        assert error is not None  # called only after a failed attempt
        logger.debug("giving up after %d attempts: %s", state.attempt_number, _describe(error))
        raise error  # the last error, unchanged

    retrying = tenacity.AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts),
        wait=wait_random_exponential(multiplier=policy.initial_backoff_s, max=policy.max_backoff_s),
        retry=retry_if_exception_type(TransientError),
        sleep=_sleep,
        before_sleep=log_retry,
        retry_error_callback=give_up,
    )

    replayed: list[TransientError] = [first_failure]

    async def attempt() -> T:
        # tenacity's first attempt is the one made above: its failure is replayed, so that
        # attempt numbers, backoffs and logs count it. tenacity awaits only coroutine
        # functions; ``fn`` may be a lambda returning a coroutine, so await it here.
        if replayed:
            raise replayed.pop()
        return await fn()

    result: T = await retrying(attempt)
    return result


def _describe(error: BaseException | None) -> str:
    return "no error" if error is None else f"{type(error).__name__}: {error}"
