"""stream() under faults, both faces: connections killed mid-batch, a database restart, and
retries running out. Nothing is lost or stored twice; the caller hears of a failure only when
retries are exhausted, and then gets every unsaved segment back."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.conftest import Database, cluster_parent
from tests.sdk.conftest import sdk
from tests.support.live import entered
from tests.support.segments import segment
from tests.support.world import World, seed_world
from voicesessions import (
    AsyncVoiceSessions,
    RetryPolicy,
    StreamError,
    TransientError,
    VoiceSessions,
)
from voicesessions.local import migrations
from voicesessions.local.server import LocalPostgres, temporary_cluster

#: application_name of the SDK's connections in these tests, so that only they are killed.
APP = "vs-fault-test"


@pytest.fixture(params=["sync", "async"])
def face(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.asynccontextmanager
async def sdk_client(face: str, dsn: str, **options: Any) -> AsyncIterator[Any]:
    dsn = make_conninfo(dsn, application_name=APP)
    if face == "sync":
        with VoiceSessions.from_postgres(dsn, **options) as vs:
            yield vs
    else:
        async with AsyncVoiceSessions.from_postgres(dsn, **options) as vs:
            yield vs


def stored(dsn: str, session_id: uuid.UUID) -> list[int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select seq from public.transcript_segments where session_id = %s"
            " order by start_ms, seq",
            (session_id,),
        ).fetchall()
    return [int(r[0]) for r in rows]


async def new_session(vs: Any, world: World) -> uuid.UUID:
    created = await sdk(vs.sessions.create(world.person("A1").id, "fault test"))
    return uuid.UUID(str(created.id))


class Killer:
    """Terminates the SDK's connections while they run an append: up to :attr:`LIMIT` times,
    at most once per :attr:`PAUSE_S`: polling every millisecond, it would otherwise catch every
    retry too, and no retry policy could win."""

    LIMIT = 8
    PAUSE_S = 0.3

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._stop = threading.Event()
        self.kills = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Killer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            while not self._stop.is_set() and self.kills < self.LIMIT:
                row = conn.execute(
                    "select count(pg_terminate_backend(pid)) from pg_stat_activity"
                    " where application_name = %s and state = 'active'"
                    " and query like '%%append_transcript_segments%%'",
                    (APP,),
                ).fetchone()
                killed = int(row[0]) if row else 0
                self.kills += killed
                time.sleep(self.PAUSE_S if killed else 0.001)


async def test_connections_killed_mid_batch_lose_and_duplicate_nothing(
    face: str, world_db: tuple[Database, World]
) -> None:
    db, world = world_db
    count = 1500
    async with sdk_client(face, db.dsn, max_size=4) as vs:
        sid = await new_session(vs, world)
        with Killer(db.dsn) as killer:
            async with entered(vs.updates.stream(sid, max_batch=25, max_delay_s=0.01)) as s:
                for seq in range(count):
                    await sdk(s.add(segment(seq)))
    assert killer.kills > 0, "the test killed no connection: it proves nothing"
    assert stored(db.dsn, sid) == list(range(count))
    stats = s.stats
    assert stats.inserted == count  # each stored once, whatever was retried
    assert stats.pending == 0


# -- a database restart --------------------------------------------------------------------


@pytest.fixture(scope="module")
def restartable() -> Iterator[tuple[LocalPostgres, str, World]]:
    """A server of its own (the suite's must not restart), migrated, with the world."""
    with temporary_cluster("voicesessions-restart-", cluster_parent()) as server:
        dsn = server.dsn
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrations.migrate(conn)
        with psycopg.connect(dsn) as conn:
            world = seed_world(conn)  # type: ignore[arg-type]
        yield server, dsn, world


async def test_a_stream_survives_a_database_restart(
    face: str, restartable: tuple[LocalPostgres, str, World]
) -> None:
    server, dsn, world = restartable
    port = server.start().port
    async with sdk_client(face, dsn, timeout=2) as vs:
        sid = await new_session(vs, world)
        async with entered(vs.updates.stream(sid, max_batch=10, max_delay_s=0.01)) as s:
            await sdk(s.add_many([segment(seq) for seq in range(100)]))
            await sdk(s.flush())
            server.stop()
            restart = threading.Timer(1.5, lambda: server.start(port=port))
            restart.start()
            # Added while the server is down: sent, retried, stored once it is back.
            await sdk(s.add_many([segment(seq) for seq in range(100, 200)]))
        restart.join()
    assert stored(dsn, sid) == list(range(200))
    assert s.stats.inserted == 200


async def test_when_retries_run_out_the_caller_gets_every_unsaved_segment(
    face: str, restartable: tuple[LocalPostgres, str, World]
) -> None:
    server, dsn, world = restartable
    port = server.start().port
    impatient = RetryPolicy(max_attempts=2, initial_backoff_s=0.01, max_backoff_s=0.01)
    async with sdk_client(face, dsn, timeout=1) as vs:
        sid = await new_session(vs, world)
        server.stop()
        try:
            with pytest.raises(StreamError) as failure:
                async with entered(vs.updates.stream(sid, max_batch=5, retry=impatient)) as s:
                    await sdk(s.add_many([segment(seq) for seq in range(12)]))
        finally:
            server.start(port=port)
    assert [p.seq for p in failure.value.pending] == list(range(12))
    assert isinstance(failure.value.__cause__, TransientError)
    assert "12 segment(s) not stored" in str(failure.value)
    # Sending them again once the database is back stores them, once.
    async with sdk_client(face, dsn) as vs:
        await sdk(vs.updates.append_transcript_chunk(sid, failure.value.pending))
    assert stored(dsn, sid) == list(range(12))
