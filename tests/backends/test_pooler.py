"""The Postgres backend behind a transaction-mode pooler (PgBouncer started by the tests,
tests/support/pgbouncer.py: a server pool of 2 connections per database and user), as
Supabase's pooler on port 6543 is.

Many clients share few server connections there, and a client's consecutive transactions
land on different ones: nothing may outlive a transaction (no server-side prepared
statement, no session-level setting), and ``LISTEN`` cannot work (a notification reaches a
server connection, not the client that listened on it).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from tests.conftest import Database, pgbouncer_passwords
from tests.support.live import entered, next_event
from tests.support.pgbouncer import PgBouncer, running_pgbouncer
from tests.support.segments import segment
from tests.support.world import World
from voicesessions import (
    AsyncVoiceSessions,
    ConfigurationError,
    QueryTimeoutError,
    SessionStatus,
    VoiceSessions,
    VoiceSessionsError,
)
from voicesessions._async.backends import postgres as async_postgres
from voicesessions._async.backends.postgres import ENV_LISTEN_DSN, AsyncPostgresBackend
from voicesessions._sync.backends import postgres as sync_postgres
from voicesessions._sync.backends.postgres import PostgresBackend

if TYPE_CHECKING:
    from voicesessions.local.server import LocalServerInfo

pytestmark = pytest.mark.asyncio(loop_scope="session")

TEST_OBJECTS = """
create function public.vs_test_sleep(seconds double precision) returns integer
  language sql as $$ select pg_sleep(seconds); select pg_backend_pid() $$;
create function public.vs_test_timeout() returns text
  language sql stable as $$ select current_setting('statement_timeout') $$;
grant execute on all functions in schema public to anon, authenticated, service_role;
"""

#: Clients of each kind in the concurrency test; with two faces, far more than the pool.
ASYNC_CLIENTS = 6
THREAD_CLIENTS = 6
ROUNDS = 7  # > psycopg's prepare_threshold (5): a statement run that often gets prepared


@pytest.fixture
def pooled(world_db: tuple[Database, World], pgbouncer: PgBouncer) -> tuple[Database, World, str]:
    """A world database, its test functions, and its DSN through the pooler."""
    db, world = world_db
    with db.connect() as conn:
        conn.execute(TEST_OBJECTS)
    return db, world, pgbouncer.dsn(db.dsn)


def server_state(dsn: str, connections: int) -> list[tuple[Any, ...]]:
    """What ``connections`` clients holding a server connection each at once (so every
    server connection of the pool is seen) find on it: the role, the claims, the statement
    timeout and the prepared statements left there."""
    conns = [psycopg.connect(dsn) for _ in range(connections)]
    try:
        states = []
        for conn in conns:  # each opens a transaction and keeps its server connection
            row = conn.execute(
                "select pg_backend_pid(), current_user::text,"
                " coalesce(current_setting('request.jwt.claims', true), ''),"
                " current_setting('statement_timeout'),"
                " (select count(*) from pg_prepared_statements)"
            ).fetchone()
            assert row is not None
            states.append(tuple(row))
        return states
    finally:
        for conn in conns:
            conn.close()


def one_client_round(vs: Any, world: World, n: int) -> list[Any]:
    """Mixed calls of one client (sync face): an auth user, a session written, read, listed,
    searched, its status changed, metrics read."""
    a1 = world.person("A1")
    me = vs.as_user(a1.id)
    done = []
    for i in range(ROUNDS):
        done.append(vs.tenants.create_user(f"pool-{n}-{i}-{uuid.uuid4().hex[:6]}@example.com"))
        session = me.sessions.create(a1.id, f"pooled {n}/{i}")
        me.updates.append_transcript_chunk(session.id, [segment(1), segment(2)])
        assert me.sessions.get(session.id).id == session.id
        assert len(me.sessions.get_transcript(session.id).segments) == 2
        me.sessions.list(limit=5)
        me.sessions.search_transcripts("hello")
        done.append(me.sessions.update_status(session.id, SessionStatus.COMPLETED).status)
    return done


async def one_async_client_round(vs: Any, world: World, n: int) -> list[Any]:
    """:func:`one_client_round` on the async face."""
    a1 = world.person("A1")
    me = vs.as_user(a1.id)
    done = []
    for i in range(ROUNDS):
        email = f"apool-{n}-{i}-{uuid.uuid4().hex[:6]}@example.com"
        done.append(await vs.tenants.create_user(email))
        session = await me.sessions.create(a1.id, f"apooled {n}/{i}")
        await me.updates.append_transcript_chunk(session.id, [segment(1), segment(2)])
        assert (await me.sessions.get(session.id)).id == session.id
        assert len((await me.sessions.get_transcript(session.id)).segments) == 2
        await me.sessions.list(limit=5)
        await me.sessions.search_transcripts("hello")
        done.append((await me.sessions.update_status(session.id, SessionStatus.COMPLETED)).status)
    return done


async def test_many_clients_of_both_faces_share_a_small_transaction_pool(
    pooled: tuple[Database, World, str], pgbouncer: PgBouncer
) -> None:
    """Threads and asyncio tasks, far more clients than server connections, doing mixed
    calls, each statement shape more often than psycopg's prepare threshold: every call
    succeeds, and what they wrote is all there."""
    db, world, dsn = pooled
    assert 2 * pgbouncer.pool_size < ASYNC_CLIENTS + THREAD_CLIENTS
    sync_clients = [VoiceSessions.from_postgres(dsn, max_size=2) for _ in range(THREAD_CLIENTS)]
    async_clients = [
        AsyncVoiceSessions.from_postgres(dsn, max_size=2) for _ in range(ASYNC_CLIENTS)
    ]
    try:
        with ThreadPoolExecutor(THREAD_CLIENTS) as threads:
            loop = asyncio.get_running_loop()
            in_threads = [
                loop.run_in_executor(threads, one_client_round, vs, world, n)
                for n, vs in enumerate(sync_clients)
            ]
            in_tasks = [one_async_client_round(vs, world, n) for n, vs in enumerate(async_clients)]
            results = await asyncio.gather(*in_threads, *in_tasks)
    finally:
        for vs in sync_clients:
            vs.close()
        for avs in async_clients:
            await avs.aclose()
    clients = ASYNC_CLIENTS + THREAD_CLIENTS
    assert all(len(r) == 2 * ROUNDS for r in results)
    with db.connect() as conn:
        row = conn.execute(
            "select count(*), count(*) filter (where status = 'completed'),"
            " (select count(*) from public.transcript_segments t"
            "  join public.sessions s2 on s2.id = t.session_id where s2.title like '%%pooled %%')"
            " from public.sessions where title like '%%pooled %%'"
        ).fetchone()
    assert row == (clients * ROUNDS, clients * ROUNDS, 2 * clients * ROUNDS)
    # Nothing of any of those calls stayed on the pooler's server connections.
    for _pid, role, claims, _timeout, prepared in server_state(dsn, pgbouncer.pool_size):
        assert (role, claims, prepared) == ("postgres", "", 0)


@pytest.mark.parametrize("face", ["async", "sync"])
async def test_statement_timeout_is_per_call_and_leaks_to_no_other_client(
    pooled: tuple[Database, World, str], pgbouncer: PgBouncer, face: str
) -> None:
    """A backend's statement_timeout holds on whichever server connection a call gets, and
    is never left on one for the next client (it is set per transaction)."""
    _, _, dsn = pooled
    backend_class: Any = AsyncPostgresBackend if face == "async" else PostgresBackend

    async def done(value: Any) -> Any:
        return await value if asyncio.iscoroutine(value) else value

    strict = backend_class.from_dsn(dsn, statement_timeout=0.3, max_size=1)
    patient = backend_class.from_dsn(dsn, statement_timeout=None, max_size=1)
    try:
        for _ in range(2 * pgbouncer.pool_size):  # over every server connection
            with pytest.raises(QueryTimeoutError):
                await done(strict.rpc("vs_test_sleep", {"seconds": 3}))
            assert await done(patient.rpc("vs_test_sleep", {"seconds": 0.5})) > 0
            assert await done(patient.rpc("vs_test_timeout")) == "0"
    finally:
        for backend in (strict, patient):
            await done(backend.aclose() if hasattr(backend, "aclose") else backend.close())
    for _pid, _role, _claims, timeout, prepared in server_state(dsn, pgbouncer.pool_size):
        assert (timeout, prepared) == ("0", 0)


# -- live events: LISTEN needs a direct (or session-mode) connection --------------------


@pytest.fixture(params=["sync", "async"])
async def pooled_face(
    request: pytest.FixtureRequest, pooled: tuple[Database, World, str]
) -> AsyncIterator[tuple[Any, Database, World, str]]:
    db, world, dsn = pooled
    made: list[Any] = []

    def make(dsn: str, **options: Any) -> Any:
        cls: Any = VoiceSessions if request.param == "sync" else AsyncVoiceSessions
        vs = cls.from_postgres(dsn, **options)
        made.append(vs)
        return vs

    yield make, db, world, dsn
    for vs in made:
        if request.param == "sync":
            vs.close()
        else:
            await vs.aclose()


async def test_live_events_through_the_pooler_without_a_listen_dsn_fail_clearly(
    pooled_face: tuple[Any, Database, World, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    make, _db, world, dsn = pooled_face
    monkeypatch.delenv(ENV_LISTEN_DSN, raising=False)
    for module in (async_postgres, sync_postgres):  # a shorter wait than in production
        monkeypatch.setattr(module, "LISTEN_PROBE_TIMEOUT_S", 1.0)
    vs = make(dsn)
    sid = world.active_session["A1"]
    with pytest.raises(ConfigurationError) as caught:
        async with entered(vs.as_user(world.person("A1").id).updates.events(sid)):
            pass
    message = str(caught.value)
    assert "transaction-mode pooler" in message
    assert "test notification" in message
    assert f"listen_dsn=... or ${ENV_LISTEN_DSN}" in message


@pytest.mark.parametrize("how", ["argument", "environment"])
async def test_live_events_through_the_pooler_with_a_listen_dsn_work(
    pooled_face: tuple[Any, Database, World, str], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    make, db, world, dsn = pooled_face
    if how == "argument":
        monkeypatch.delenv(ENV_LISTEN_DSN, raising=False)
        vs = make(dsn, listen_dsn=db.dsn)
    else:
        monkeypatch.setenv(ENV_LISTEN_DSN, db.dsn)
        vs = make(dsn)
    owner = vs.as_user(world.person("A1").id)
    sid = world.active_session["A1"]
    async with entered(owner.updates.events(sid)) as events:
        written = owner.updates.append_transcript_chunk(sid, [segment(70)])
        if asyncio.iscoroutine(written):
            await written
        event = await next_event(events)
    assert event.event == "transcript"
    assert [s.seq for s in event.final_segments] == [70]


async def test_a_session_mode_pooler_keeps_live_events_without_a_listen_dsn(
    pg_server: LocalServerInfo, world_db: tuple[Database, World], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notification check refuses only what cannot deliver: through PgBouncer in
    session mode (Supabase's pooler on port 5432), events work on the one DSN."""
    db, world = world_db
    monkeypatch.delenv(ENV_LISTEN_DSN, raising=False)
    with running_pgbouncer(  # a server connection per client connection, for good
        pg_server.dsn, pgbouncer_passwords(pg_server), pool_mode="session", pool_size=5
    ) as session_pooler:
        async with AsyncVoiceSessions.from_postgres(session_pooler.dsn(db.dsn), max_size=2) as vs:
            owner = vs.as_user(world.person("A1").id)
            sid = world.active_session["A1"]
            async with owner.updates.events(sid) as events:
                await owner.updates.append_transcript_chunk(sid, [segment(71)])
                event = await next_event(events)
    assert [s.seq for s in event.final_segments] == [71]


SUPAVISOR = "postgres.abcdefghijklmnop:pw@aws-0-eu-central-1.pooler.supabase.com"
DEDICATED = "postgres:pw@db.abcdefghijklmnop.supabase.co"


@pytest.mark.parametrize(
    ("dsn", "listen_dsn", "refused"),
    [
        # Supabase's transaction mode (port 6543), Supavisor's or the dedicated pooler's.
        (f"postgresql://{SUPAVISOR}:6543/postgres", None, True),
        (f"postgresql://{DEDICATED}:6543/postgres", None, True),
        ("host=aws-1-us-east-1.pooler.supabase.com port=6543 user=p.x dbname=postgres", None, True),
        # A listen DSN that is itself the transaction pooler.
        (
            f"postgresql://{DEDICATED}:5432/postgres",
            f"postgresql://{SUPAVISOR}:6543/postgres",
            True,
        ),
        # Session mode or direct (5432), or a listen DSN given: not refused by address.
        (f"postgresql://{SUPAVISOR}:5432/postgres", None, False),
        (f"postgresql://{DEDICATED}:5432/postgres", None, False),
        (
            f"postgresql://{SUPAVISOR}:6543/postgres",
            f"postgresql://{DEDICATED}:5432/postgres",
            False,
        ),
        # Port 6543 elsewhere: the notification check decides (here: nothing listens).
        ("postgresql://postgres:pw@127.0.0.1:6543/postgres", None, False),
    ],
)
async def test_supabase_transaction_pooler_addresses_refuse_live_events_before_any_io(
    dsn: str, listen_dsn: str | None, refused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Supabase's transaction-mode pooler (port 6543) is known by its address: refused at
    once, without connecting; anything else is tried (these hosts do not answer here)."""
    monkeypatch.delenv(ENV_LISTEN_DSN, raising=False)
    backend = AsyncPostgresBackend.from_dsn(dsn, listen_dsn=listen_dsn, timeout=2)
    try:
        with pytest.raises(VoiceSessionsError) as caught:
            async with backend.session_events(uuid.uuid4()):
                pass
    finally:
        await backend.aclose()
    message = str(caught.value)
    if refused:
        assert isinstance(caught.value, ConfigurationError)
        assert f"listen_dsn=... or ${ENV_LISTEN_DSN}" in message
        assert "is Supabase's transaction pooler" in message
        assert "pw@" not in message  # the address, never the password
    else:
        assert "LISTEN" not in message  # a connection was tried, and failed as such


async def test_a_listen_dsn_must_be_a_dsn() -> None:
    with pytest.raises(ConfigurationError):
        AsyncPostgresBackend.from_dsn("postgresql://x@127.0.0.1/db", listen_dsn="  ")
    with pytest.raises(ConfigurationError):
        AsyncPostgresBackend.from_dsn("postgresql://x@127.0.0.1/db", listen_dsn="nonsense=")
