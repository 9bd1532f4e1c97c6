"""A connection that can never succeed fails at once with its real cause, on a real server.

A wrong password, an unknown user, a missing database or an unknown host is not retried
(not by the SDK's policy, not by the pool in the background until the pool's timeout) and is
not reported as "couldn't get a connection": through the backends (both faces), the SDK
with its default retry policy, ``voicesessions gdpr`` and ``voicesessions demo``. A server
that refuses connections (nobody listening) stays transient. The pool timeout is set far
above the bound the tests allow, so waiting for it would fail them.
"""

from __future__ import annotations

import inspect
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.conftest import Database
from voicesessions import (
    AsyncVoiceSessions,
    ConfigurationError,
    PermissionDeniedError,
    TransientError,
    VoiceSessions,
    VoiceSessionsError,
)
from voicesessions._async.backends.postgres import AsyncPostgresBackend
from voicesessions._sync.backends.postgres import PostgresBackend
from voicesessions.cli import cli

#: Far longer than any test may take: a call that waited for the pool would fail the bound.
POOL_TIMEOUT_S = 60.0
BOUND_S = 15.0

#: (label, DSN changes, exception type, text the message must contain)
PERMANENT: list[tuple[str, dict[str, Any], type[VoiceSessionsError], str]] = [
    ("wrong-password", {"password": "not-the-password"}, PermissionDeniedError, "password"),
    (
        "unknown-user",
        {"user": "nobody_here", "password": "x"},
        PermissionDeniedError,
        "nobody_here",
    ),
    ("missing-database", {"dbname": "no_such_database"}, ConfigurationError, "no_such_database"),
    ("unknown-host", {"host": "no-such-host.invalid"}, ConfigurationError, "no-such-host"),
]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def done(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def timed(call: Callable[[], Any]) -> tuple[BaseException, float]:
    started = time.monotonic()
    try:
        await done(call())
    except BaseException as exc:
        return exc, time.monotonic() - started
    pytest.fail("the call succeeded")


@pytest.mark.parametrize("face", ["async", "sync"])
@pytest.mark.parametrize(("label", "changes", "error", "text"), PERMANENT)
async def test_backend_fails_at_once_with_the_cause(
    fresh_db: Database,
    face: str,
    label: str,
    changes: dict[str, Any],
    error: type[VoiceSessionsError],
    text: str,
) -> None:
    dsn = make_conninfo(fresh_db.dsn, **changes)
    cls = AsyncPostgresBackend if face == "async" else PostgresBackend
    backend: Any = cls.from_dsn(dsn, timeout=POOL_TIMEOUT_S)
    try:
        for call in (lambda: backend.select("sessions"), backend.open):
            exc, took = await timed(call)
            assert isinstance(exc, error), f"{label}: {type(exc).__name__}: {exc}"
            assert not isinstance(exc, TransientError)
            assert text in str(exc), str(exc)
            assert "couldn't get a connection" not in str(exc)
            assert took < BOUND_S
    finally:
        await done(backend.aclose() if face == "async" else backend.close())


@pytest.mark.parametrize("face", ["async", "sync"])
@pytest.mark.parametrize(("label", "changes", "error", "text"), PERMANENT)
async def test_the_sdk_does_not_retry_them(
    fresh_db: Database,
    face: str,
    label: str,
    changes: dict[str, Any],
    error: type[VoiceSessionsError],
    text: str,
) -> None:
    dsn = make_conninfo(fresh_db.dsn, **changes)
    cls: Any = AsyncVoiceSessions if face == "async" else VoiceSessions
    vs = cls.from_postgres(dsn, timeout=POOL_TIMEOUT_S)  # the default retry policy
    try:
        exc, took = await timed(lambda: vs.sessions.list())
        assert isinstance(exc, error), f"{label}: {type(exc).__name__}: {exc}"
        assert text in str(exc)
        assert took < BOUND_S
    finally:
        await done(vs.aclose() if face == "async" else vs.close())


@pytest.mark.parametrize(("label", "changes", "error", "text"), PERMANENT)
def test_gdpr_cli_reports_the_cause(
    fresh_db: Database,
    label: str,
    changes: dict[str, Any],
    error: type[VoiceSessionsError],
    text: str,
) -> None:
    dsn = make_conninfo(fresh_db.dsn, connect_timeout=int(POOL_TIMEOUT_S), **changes)
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["gdpr", "requests", "--dsn", dsn])
    assert result.exit_code == 1, result.output
    assert text in result.output
    assert "couldn't get a connection" not in result.output
    assert time.monotonic() - started < BOUND_S


@pytest.mark.parametrize(("label", "changes", "error", "text"), PERMANENT)
def test_demo_reports_the_cause(
    fresh_db: Database,
    label: str,
    changes: dict[str, Any],
    error: type[VoiceSessionsError],
    text: str,
) -> None:
    dsn = make_conninfo(fresh_db.dsn, **changes)
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["demo"], env={"VOICESESSIONS_DSN": dsn})
    assert result.exit_code == 1, result.output
    assert text in result.output
    assert "couldn't get a connection" not in result.output
    assert time.monotonic() - started < BOUND_S


@pytest.mark.parametrize("face", ["async", "sync"])
async def test_nobody_listening_stays_transient(fresh_db: Database, face: str) -> None:
    dsn = make_conninfo(fresh_db.dsn, port=closed_port())
    cls = AsyncPostgresBackend if face == "async" else PostgresBackend
    backend: Any = cls.from_dsn(dsn, timeout=POOL_TIMEOUT_S)
    try:
        exc, _ = await timed(lambda: backend.select("sessions"))
        assert isinstance(exc, TransientError), f"{type(exc).__name__}: {exc}"
    finally:
        await done(backend.aclose() if face == "async" else backend.close())


@pytest.mark.parametrize("face", ["async", "sync"])
async def test_a_password_changed_under_an_open_pool_is_reported(
    fresh_db: Database, face: str
) -> None:
    """The pool was open and working; then the role's password changed and its connections
    were dropped. When no connection comes within the pool's timeout, the error says why."""
    role = f"vs_pw_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(fresh_db.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("create role {} login password 'first'").format(sql.Identifier(role)))
    try:
        dsn = make_conninfo(fresh_db.dsn, user=role, password="first")
        cls = AsyncPostgresBackend if face == "async" else PostgresBackend
        backend: Any = cls.from_dsn(dsn, timeout=1.0, min_size=1, max_size=1)
        try:
            await done(backend.open())
            with psycopg.connect(fresh_db.dsn, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("alter role {} password 'second'").format(sql.Identifier(role))
                )
                conn.execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity where usename = %s",
                    (role,),
                )
            # The dropped connection may still be handed out once (a transient error: 57P01,
            # or "server closed the connection"); after it, the pool can make no connection
            # and the error must say why.
            errors = []
            for _ in range(4):
                exc, _ = await timed(lambda: backend.select("companies"))
                errors.append(exc)
                if not isinstance(exc, TransientError):
                    break
            assert isinstance(errors[-1], PermissionDeniedError), errors
            assert "password authentication failed" in str(errors[-1])
        finally:
            await done(backend.aclose() if face == "async" else backend.close())
    finally:
        with psycopg.connect(fresh_db.dsn, autocommit=True) as conn:
            conn.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where usename = %s",
                (role,),
            )
            conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))
