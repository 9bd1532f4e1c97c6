"""A connection that can never succeed fails at once with its real cause, on a real server.

A wrong password, an unknown user, a missing database or an unknown host is not retried
(not by the SDK's policy, not by the pool in the background until the pool's timeout) and is
not reported as "couldn't get a connection": through the backends (both faces), the SDK
with its default retry policy, the read replica's DSN, the listening DSN, ``voicesessions
gdpr`` and ``voicesessions demo``. A server that refuses connections (nobody listening)
stays transient, and so does one that never answers, tried once per call.

Nothing here is timed. That a call did not wait is shown by what it could not have done
while waiting: the pool never opened (so no pool worker retries in the background and no
call waited for a pooled connection), and a counting TCP proxy in front of the server
(tests/support/tcp.py) saw exactly one connection attempt.
"""

from __future__ import annotations

import inspect
import socket
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.conftest import Database
from tests.support.tcp import CountingProxy
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

#: Far longer than any call here: one that waited for the pool would hang the test.
POOL_TIMEOUT_S = 600.0

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


async def failure(call: Callable[[], Any]) -> BaseException:
    try:
        await done(call())
    except BaseException as exc:
        return exc
    pytest.fail("the call succeeded")


def target(db: Database) -> tuple[str, int]:
    params = conninfo_to_dict(db.dsn)
    return str(params["host"]), int(str(params["port"]))


def via(proxy: CountingProxy, db: Database, **changes: Any) -> str:
    """``db``'s DSN through ``proxy`` (no TLS: one attempt is one TCP connection)."""
    return make_conninfo(db.dsn, host="127.0.0.1", port=proxy.port, sslmode="disable", **changes)


def never_opened(backend: Any) -> bool:
    """Whether the backend's pools were never opened: nothing retries in the background."""
    pools = [backend._shared.pool]
    if backend._replica is not None:
        pools.append(backend._replica.shared.pool)
    return all(pool.closed for pool in pools) and not backend._shared.opened


#: The permanent failures a proxy can carry (a DNS failure makes no connection).
THROUGH_A_PROXY = [case for case in PERMANENT if case[0] != "unknown-host"]


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
            exc = await failure(call)
            assert isinstance(exc, error), f"{label}: {type(exc).__name__}: {exc}"
            assert not isinstance(exc, TransientError)
            assert text in str(exc), str(exc)
            assert "couldn't get a connection" not in str(exc)
            assert never_opened(backend)
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
        exc = await failure(lambda: vs.sessions.list())
        assert isinstance(exc, error), f"{label}: {type(exc).__name__}: {exc}"
        assert text in str(exc)
        assert never_opened(vs._backend)
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
    result = CliRunner().invoke(cli, ["gdpr", "requests", "--dsn", dsn])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ")
    assert result.output.count("\n") == 1
    assert text in result.output
    assert "couldn't get a connection" not in result.output


@pytest.mark.parametrize(("label", "changes", "error", "text"), PERMANENT)
def test_demo_reports_the_cause(
    fresh_db: Database,
    label: str,
    changes: dict[str, Any],
    error: type[VoiceSessionsError],
    text: str,
) -> None:
    dsn = make_conninfo(fresh_db.dsn, **changes)
    result = CliRunner().invoke(cli, ["demo"], env={"VOICESESSIONS_DSN": dsn})
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1].startswith("Error: ")
    assert text in result.output
    assert "couldn't get a connection" not in result.output


@pytest.mark.parametrize("face", ["async", "sync"])
async def test_nobody_listening_stays_transient(fresh_db: Database, face: str) -> None:
    dsn = make_conninfo(fresh_db.dsn, port=closed_port())
    cls = AsyncPostgresBackend if face == "async" else PostgresBackend
    backend: Any = cls.from_dsn(dsn, timeout=POOL_TIMEOUT_S)
    try:
        exc = await failure(lambda: backend.select("sessions"))
        assert isinstance(exc, TransientError), f"{type(exc).__name__}: {exc}"
        assert "refused" in str(exc).lower()
        assert never_opened(backend)
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
                exc = await failure(lambda: backend.select("companies"))
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


@pytest.mark.parametrize("face", ["async", "sync"])
@pytest.mark.parametrize(("label", "changes", "error", "text"), THROUGH_A_PROXY)
async def test_one_connection_attempt_under_the_default_retry_policy(
    fresh_db: Database,
    face: str,
    label: str,
    changes: dict[str, Any],
    error: type[VoiceSessionsError],
    text: str,
) -> None:
    with CountingProxy(target(fresh_db)) as proxy:
        cls: Any = AsyncVoiceSessions if face == "async" else VoiceSessions
        vs = cls.from_postgres(via(proxy, fresh_db, **changes), timeout=POOL_TIMEOUT_S)
        try:
            for _ in range(2):  # a second call tries again (once): nothing is remembered
                exc = await failure(lambda: vs.sessions.list())
                assert isinstance(exc, error), f"{label}: {type(exc).__name__}: {exc}"
                assert text in str(exc)
            assert proxy.accepted == 2
            assert never_opened(vs._backend)
        finally:
            await done(vs.aclose() if face == "async" else vs.close())


@pytest.mark.parametrize("face", ["async", "sync"])
@pytest.mark.parametrize(("label", "changes", "error", "text"), THROUGH_A_PROXY)
async def test_a_read_replica_dsn_that_cannot_succeed_fails_with_the_cause(
    fresh_db: Database,
    face: str,
    label: str,
    changes: dict[str, Any],
    error: type[VoiceSessionsError],
    text: str,
) -> None:
    """Not an unreachable replica (those reads would go to the primary): a misconfigured
    one, said as such, tried once."""
    with CountingProxy(target(fresh_db)) as proxy:
        cls: Any = AsyncVoiceSessions if face == "async" else VoiceSessions
        vs = cls.from_postgres(
            fresh_db.dsn, read_dsn=via(proxy, fresh_db, **changes), timeout=POOL_TIMEOUT_S
        )
        try:
            exc = await failure(lambda: vs.sessions.list())
            assert isinstance(exc, error), f"{label}: {type(exc).__name__}: {exc}"
            assert text in str(exc)
            assert proxy.accepted == 1
            assert vs._backend._replica.shared.pool.closed
        finally:
            await done(vs.aclose() if face == "async" else vs.close())


@pytest.mark.parametrize("face", ["async", "sync"])
@pytest.mark.parametrize(("label", "changes", "error", "text"), THROUGH_A_PROXY)
async def test_a_listen_dsn_that_cannot_succeed_fails_with_the_cause(
    fresh_db: Database,
    face: str,
    label: str,
    changes: dict[str, Any],
    error: type[VoiceSessionsError],
    text: str,
) -> None:
    with CountingProxy(target(fresh_db)) as proxy:
        cls = AsyncPostgresBackend if face == "async" else PostgresBackend
        backend: Any = cls.from_dsn(
            fresh_db.dsn, listen_dsn=via(proxy, fresh_db, **changes), timeout=POOL_TIMEOUT_S
        )
        try:
            if face == "async":
                with pytest.raises(error) as caught:
                    async with backend.session_events(uuid.uuid4()):
                        pass
            else:
                with pytest.raises(error) as caught, backend.session_events(uuid.uuid4()):
                    pass
            assert text in str(caught.value)
            assert proxy.accepted == 1
        finally:
            await done(backend.aclose() if face == "async" else backend.close())


@pytest.mark.parametrize("face", ["async", "sync"])
async def test_a_server_that_never_answers_is_waited_for_once_per_call(face: str) -> None:
    """A host that swallows packets costs one connect timeout, not one per retry: the
    default policy's retries fail at once with the timeout's error."""
    with CountingProxy(None) as silent:
        dsn = f"postgresql://u:p@127.0.0.1:{silent.port}/db?connect_timeout=2&sslmode=disable"
        cls: Any = AsyncVoiceSessions if face == "async" else VoiceSessions
        vs = cls.from_postgres(dsn, timeout=POOL_TIMEOUT_S)
        try:
            exc = await failure(lambda: vs.sessions.list())
            assert isinstance(exc, TransientError), f"{type(exc).__name__}: {exc}"
            assert "timeout" in str(exc).lower()
            assert silent.accepted == 1
            assert never_opened(vs._backend)
        finally:
            await done(vs.aclose() if face == "async" else vs.close())
