"""The retry policy, on both faces: what is retried, how often, how long it waits.

Sleeps are recorded, never slept: each test replaces the module-level ``_sleep`` of
``voicesessions._async.retry`` / ``voicesessions._sync.retry``. The last test is a fault
test on a real PostgreSQL: a retried idempotent write creates no duplicate.
"""

from __future__ import annotations

import inspect
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import Database
from tests.support.world import World
from voicesessions._async import retry as async_retry
from voicesessions._async.backends.postgres import AsyncPostgresBackend
from voicesessions._retry_policy import (
    DEFAULT_INITIAL_BACKOFF_S,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BACKOFF_S,
    RetryPolicy,
)
from voicesessions._sync import retry as sync_retry
from voicesessions._sync.backends.postgres import PostgresBackend
from voicesessions.errors import (
    APIError,
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    TransientError,
)

# Async fixtures live on the session loop (asyncio_default_fixture_loop_scope): run the
# tests there too.
pytestmark = pytest.mark.asyncio(loop_scope="session")

MODULES = {"async": async_retry, "sync": sync_retry}
BACKENDS = {"async": AsyncPostgresBackend, "sync": PostgresBackend}


async def done(value: Any) -> Any:
    """The result of a call on either face."""
    if inspect.isawaitable(value):
        return await value
    return value


@dataclass
class Face:
    """One face of ``call_with_retry``, with its sleeps recorded instead of slept."""

    name: str
    module: ModuleType
    sleeps: list[float] = field(default_factory=list)

    def flaky(self, failures: list[BaseException], value: Any = "ok") -> tuple[Any, list[int]]:
        """A call that raises ``failures`` one by one, then returns ``value``; and the list
        recording each attempt."""
        attempts: list[int] = []

        def attempt() -> Any:
            attempts.append(len(attempts) + 1)
            if len(attempts) <= len(failures):
                raise failures[len(attempts) - 1]
            return value

        if self.name == "sync":
            return attempt, attempts

        async def async_attempt() -> Any:
            return attempt()

        # as the repositories pass it: a lambda returning a coroutine, not a coroutine function
        return (lambda: async_attempt()), attempts

    async def call(self, policy: RetryPolicy, fn: Callable[[], Any], *, idempotent: bool) -> Any:
        return await done(self.module.call_with_retry(policy, fn, idempotent=idempotent))


@pytest.fixture(params=sorted(MODULES))
def face(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Face:
    recorded = Face(request.param, MODULES[request.param])
    if request.param == "sync":

        def record(seconds: float) -> None:
            recorded.sleeps.append(seconds)

        monkeypatch.setattr(sync_retry, "_sleep", record)
    else:

        async def async_record(seconds: float) -> None:
            recorded.sleeps.append(seconds)

        monkeypatch.setattr(async_retry, "_sleep", async_record)
    return recorded


def transient(n: int) -> list[BaseException]:
    return [TransientError(f"connection lost #{i}", code="08006") for i in range(1, n + 1)]


# -- the policy --------------------------------------------------------------------------


async def test_policy_defaults_are_the_named_constants() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.initial_backoff_s, policy.max_backoff_s) == (
        DEFAULT_MAX_ATTEMPTS,
        DEFAULT_INITIAL_BACKOFF_S,
        DEFAULT_MAX_BACKOFF_S,
    )
    assert (DEFAULT_MAX_ATTEMPTS, DEFAULT_INITIAL_BACKOFF_S, DEFAULT_MAX_BACKOFF_S) == (4, 0.1, 5.0)
    assert policy.retries == 3
    assert RetryPolicy.none() == RetryPolicy(max_attempts=1)
    assert RetryPolicy.none().retries == 0
    with pytest.raises(AttributeError):
        policy.max_attempts = 9  # type: ignore[misc]


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"max_attempts": 2.5},
        {"max_attempts": True},
        {"initial_backoff_s": -0.1},
        {"max_backoff_s": float("inf")},
        {"initial_backoff_s": 1.0, "max_backoff_s": 0.5},
    ],
)
async def test_contradictory_policies_are_configuration_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**options)


# -- call_with_retry ---------------------------------------------------------------------


async def test_success_after_transient_failures_returns_the_value(face: Face) -> None:
    fn, attempts = face.flaky(transient(2), value={"id": 1})
    assert await face.call(RetryPolicy(), fn, idempotent=True) == {"id": 1}
    assert attempts == [1, 2, 3]
    assert len(face.sleeps) == 2


async def test_a_coroutine_function_is_retried_too(face: Face) -> None:
    flaky, attempts = face.flaky(transient(1), value=7)
    fn = flaky
    if face.name == "async":

        async def coroutine_function() -> Any:
            return await flaky()

        fn = coroutine_function
    assert await face.call(RetryPolicy(), fn, idempotent=True) == 7
    assert attempts == [1, 2]


async def test_first_success_does_not_sleep(face: Face) -> None:
    fn, attempts = face.flaky([], value=42)
    assert await face.call(RetryPolicy(), fn, idempotent=True) == 42
    assert (attempts, face.sleeps) == ([1], [])


async def test_transient_failures_retried_the_configured_number_of_times(face: Face) -> None:
    errors = transient(5)
    fn, attempts = face.flaky(errors)
    with pytest.raises(TransientError) as caught:
        await face.call(RetryPolicy(max_attempts=3), fn, idempotent=True)
    assert caught.value is errors[2]  # the last error, unchanged
    assert attempts == [1, 2, 3]
    assert len(face.sleeps) == 2


async def test_backoff_grows_exponentially_up_to_the_cap(
    face: Face, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(random, "uniform", lambda low, high: high)  # jitter at its ceiling
    fn, _ = face.flaky(transient(5))
    policy = RetryPolicy(max_attempts=5, initial_backoff_s=0.1, max_backoff_s=0.3)
    with pytest.raises(TransientError):
        await face.call(policy, fn, idempotent=True)
    assert face.sleeps == pytest.approx([0.1, 0.2, 0.3, 0.3])


async def test_backoff_has_full_jitter(face: Face) -> None:
    fn, _ = face.flaky(transient(40))
    policy = RetryPolicy(max_attempts=40, initial_backoff_s=0.01, max_backoff_s=0.08)
    with pytest.raises(TransientError):
        await face.call(policy, fn, idempotent=True)
    ceilings = [min(0.08, 0.01 * 2**n) for n in range(39)]
    assert len(face.sleeps) == 39
    assert all(0 <= s <= c for s, c in zip(face.sleeps, ceilings, strict=True))
    assert len(set(face.sleeps)) > 30  # random, not a fixed schedule
    assert min(face.sleeps[4:]) < 0.04 < max(face.sleeps[4:])  # anywhere in [0, cap]


async def test_non_idempotent_calls_are_never_retried(face: Face) -> None:
    errors = transient(1)
    fn, attempts = face.flaky(errors)
    with pytest.raises(TransientError) as caught:
        await face.call(RetryPolicy(max_attempts=10), fn, idempotent=False)
    assert caught.value is errors[0]
    assert (attempts, face.sleeps) == ([1], [])


@pytest.mark.parametrize(
    "error",
    [
        InvalidInputError("bad", code="23514"),
        ConflictError("duplicate", code="23505"),
        ConflictError("invalid transition", code="VS001"),
        PermissionDeniedError("denied", code="42501"),
        NotFoundError("gone", code="PGRST116"),
        APIError("unknown"),
        ValueError("a bug"),
    ],
)
async def test_only_transient_errors_are_retried(face: Face, error: BaseException) -> None:
    fn, attempts = face.flaky([error])
    with pytest.raises(type(error)) as caught:
        await face.call(RetryPolicy(max_attempts=10), fn, idempotent=True)
    assert caught.value is error
    assert (attempts, face.sleeps) == ([1], [])


async def test_a_permanent_error_after_transient_ones_stops_the_retries(face: Face) -> None:
    denied = PermissionDeniedError("denied", code="42501")
    fn, attempts = face.flaky([*transient(1), denied])
    with pytest.raises(PermissionDeniedError) as caught:
        await face.call(RetryPolicy(max_attempts=10), fn, idempotent=True)
    assert caught.value is denied
    assert attempts == [1, 2]


async def test_the_none_policy_makes_one_attempt(face: Face) -> None:
    fn, attempts = face.flaky(transient(1))
    with pytest.raises(TransientError):
        await face.call(RetryPolicy.none(), fn, idempotent=True)
    assert (attempts, face.sleeps) == ([1], [])


async def test_every_decision_is_logged_at_debug(
    face: Face, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="voicesessions")
    fn, _ = face.flaky(transient(3))
    with pytest.raises(TransientError):
        await face.call(RetryPolicy(max_attempts=3), fn, idempotent=True)
    fn, _ = face.flaky(transient(1))
    with pytest.raises(TransientError):
        await face.call(RetryPolicy(), fn, idempotent=False)
    messages = [r.getMessage() for r in caplog.records if r.name == "voicesessions"]
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "voicesessions")
    assert len(messages) == 4
    assert messages[0].startswith("retrying after TransientError: [08006] connection lost #1")
    assert "attempt 1 of 3" in messages[0]
    assert "attempt 2 of 3" in messages[1]
    assert messages[2].startswith("giving up after 3 attempts: TransientError")
    assert "not idempotent" in messages[3]


# -- a fault on a real database ----------------------------------------------------------


async def test_a_retried_idempotent_insert_creates_no_duplicate(
    face: Face, world_db: tuple[Database, World]
) -> None:
    """The first attempt commits, then the caller sees the connection drop (TransientError);
    the retry's ``on conflict do nothing`` makes the write land exactly once. The same
    fault on a plain insert makes the retry fail with a duplicate."""
    db, world = world_db
    backend = BACKENDS[face.name].from_dsn(db.dsn)
    a1 = world.person("A1").id
    try:
        user = backend.as_user(a1)
        session_id = uuid.uuid4()
        row = {"id": session_id, "profile_id": a1, "title": "retried"}

        def commits_then_drops(insert: Callable[[], Any]) -> tuple[Any, list[Any]]:
            results: list[Any] = []

            def after(result: Any) -> Any:
                results.append(result)
                if len(results) == 1:
                    raise TransientError("server closed the connection unexpectedly")
                return result

            if face.name == "sync":
                return (lambda: after(insert())), results

            async def async_call() -> Any:
                return after(await insert())

            return async_call, results

        fn, results = commits_then_drops(
            lambda: user.insert("sessions", [row], on_conflict=("id",), ignore_duplicates=True)
        )
        assert await face.call(RetryPolicy(), fn, idempotent=True) == []
        assert len(results) == 2
        assert [r["id"] for r in results[0]] == [session_id]  # the first attempt committed
        assert len(face.sleeps) == 1
        with db.connect() as conn:
            count = conn.execute(
                "select count(*) from public.sessions where id = %s", (session_id,)
            ).fetchone()
        assert count == (1,)

        other = {**row, "id": uuid.uuid4()}
        fn, results = commits_then_drops(lambda: user.insert("sessions", [other]))
        with pytest.raises(ConflictError):
            await face.call(RetryPolicy(), fn, idempotent=True)
        assert len(results) == 1
    finally:
        await done(backend.aclose() if face.name == "async" else backend.close())
