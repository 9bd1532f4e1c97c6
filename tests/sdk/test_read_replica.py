"""Read replicas over a real streaming replica (tests/support/replica.py), on both faces.

Which server answered is proven by pausing replay on the standby: a write made meanwhile is
on the primary and not on the standby, so a read that misses it was served by the standby,
and a read that sees it by the primary. Dashboards, ``sessions.list`` and search go to the
replica; writes and ``get`` (read-your-writes) to the primary; an unreachable replica sends
the lag-tolerant reads to the primary, with a warning, until it is back.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import _database, migrate_database
from tests.sdk.conftest import sdk
from tests.support.replica import ReplicaPair, streaming_replica
from tests.support.world import World, seed_world
from voicesessions import AsyncVoiceSessions, PermissionDeniedError, VoiceSessions
from voicesessions._async.backends.postgres import AsyncPostgresBackend
from voicesessions.local.server import LocalServerInfo


def _word() -> str:
    """A word no transcript holds yet (letters only: one token for the search parser)."""
    return "zeppelin" + "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:12])


@pytest.fixture(scope="module")
def replica() -> Iterator[tuple[ReplicaPair, World]]:
    """A primary holding the two-company world, and its streaming standby (per module)."""
    world: list[World] = []

    def prepare(info: LocalServerInfo, name: str) -> None:
        db = _database(info, name)
        migrate_database(db)
        with db.connect(autocommit=False) as conn:
            world.append(seed_world(conn))

    with streaming_replica("vs_replica", prepare) as pair:
        yield pair, world[0]


Factory = Callable[..., Any]


@pytest.fixture(params=["sync", "async"])
async def connect(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    """``connect(dsn, **options)``: a client on this face, closed at the end of the test."""
    made: list[Any] = []

    def factory(dsn: str, **options: Any) -> Any:
        cls = VoiceSessions if request.param == "sync" else AsyncVoiceSessions
        vs = cls.from_postgres(dsn, **options)
        made.append(vs)
        return vs

    yield factory
    for vs in made:
        await sdk(vs.close() if request.param == "sync" else vs.aclose())


def _owner(pair: ReplicaPair) -> psycopg.Connection[Any]:
    return psycopg.connect(pair.primary_dsn(), autocommit=True)


async def _listed(vs: Any, world: World, key: str = "A1") -> set[uuid.UUID]:
    page = await sdk(vs.sessions.list(profile_id=world.person(key).id, limit=100))
    return {s.id for s in page.items}


async def test_lag_tolerant_reads_come_from_the_replica_the_rest_from_the_primary(
    replica: tuple[ReplicaPair, World], connect: Factory
) -> None:
    pair, world = replica
    word = _word()
    vs = connect(pair.primary_dsn(), read_dsn=pair.standby_dsn())
    company = world.companies["A"]
    a1 = world.person("A1").id
    completed = world.completed_session["A1"]
    before = await sdk(vs.analytics.company_metrics(company))
    progress = await sdk(vs.analytics.user_progress(a1))
    listed = await _listed(vs, world)
    assert await sdk(vs.sessions.search_transcripts(word)) == []
    assert pair.standby_connections() >= 1  # the replica pool is in use

    with pair.replay_paused():
        # Writes go to the primary (the standby would refuse them: 25006).
        created = await sdk(vs.sessions.create(a1, "Written during the pause"))
        with _owner(pair) as conn:
            conn.execute(
                "update transcripts set content = %s where session_id = %s",
                (f"a {word} over the lake", completed),
            )
        # Read-your-writes: get and get_transcript read the primary, and see the writes.
        assert (await sdk(vs.sessions.get(created.id))).title == "Written during the pause"
        assert word in (await sdk(vs.sessions.get_transcript(completed))).content
        # Lag-tolerant reads come from the paused standby: they do not see them yet.
        assert await _listed(vs, world) == listed
        assert (await sdk(vs.analytics.company_metrics(company))).sessions == before.sessions
        assert (await sdk(vs.analytics.user_progress(a1))).sessions == progress.sessions
        team = await sdk(vs.analytics.team_overview(company))
        assert {m.profile_id: m.sessions for m in team}[a1] == progress.sessions
        assert await sdk(vs.sessions.search_transcripts(word)) == []
        # A user's client shares the pools: the same split applies to it.
        rep = vs.as_user(a1)
        assert (await sdk(rep.sessions.get(created.id))).id == created.id
        assert created.id not in await _listed(rep, world)

    # Replayed: the replica now answers with the writes.
    assert await _listed(vs, world) == listed | {created.id}
    assert (await sdk(vs.analytics.company_metrics(company))).sessions == before.sessions + 1
    assert [h.session_id for h in await sdk(vs.sessions.search_transcripts(word))] == [completed]


async def test_without_a_read_dsn_every_read_is_on_the_primary(
    replica: tuple[ReplicaPair, World], connect: Factory
) -> None:
    pair, world = replica
    vs = connect(pair.primary_dsn())
    company = world.companies["A"]
    before = await sdk(vs.analytics.company_metrics(company))
    with pair.replay_paused():
        created = await sdk(vs.sessions.create(world.person("A2").id, "Primary only"))
        assert created.id in await _listed(vs, world, "A2")
        assert (await sdk(vs.analytics.company_metrics(company))).sessions == before.sessions + 1


async def test_an_unreachable_replica_sends_reads_to_the_primary_until_it_is_back(
    replica: tuple[ReplicaPair, World], connect: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    pair, world = replica
    b1 = world.person("B1").id
    # eager tries the replica again at every read; patient only after an hour.
    eager = connect(pair.primary_dsn(), read_dsn=pair.standby_dsn(), replica_retry_after=0)
    patient = connect(pair.primary_dsn(), read_dsn=pair.standby_dsn(), replica_retry_after=3600)
    for vs in (eager, patient):
        await _listed(vs, world, "B1")  # both replica pools open
    caplog.set_level(logging.INFO, logger="voicesessions")

    pair.standby.stop()
    try:
        down = await sdk(eager.sessions.create(b1, "While the replica is down"))
        for vs in (eager, patient):
            # Served by the primary: no error, and the newest write is there.
            assert down.id in await _listed(vs, world, "B1")
            assert (await sdk(vs.analytics.user_progress(b1))).sessions >= 1
        warnings = [r for r in caplog.records if r.name == "voicesessions"]
        assert warnings
        assert all("unreachable" in r.getMessage() for r in warnings)
    finally:
        pair.standby.start()
        pair.wait_streaming()

    with pair.replay_paused():
        later = await sdk(eager.sessions.create(b1, "After the replica came back"))
        # eager is back on the replica (paused: it misses the write); patient is not yet.
        assert later.id not in await _listed(eager, world, "B1")
        assert later.id in await _listed(patient, world, "B1")
    assert any("reachable again" in r.getMessage() for r in caplog.records)


async def test_a_replica_refusing_the_login_is_an_error_not_a_fallback(
    replica: tuple[ReplicaPair, World], connect: Factory
) -> None:
    pair, world = replica
    wrong = psycopg.conninfo.make_conninfo(pair.standby_dsn(), password="not-the-password")
    vs = connect(pair.primary_dsn(), read_dsn=wrong)
    with pytest.raises(PermissionDeniedError):
        await _listed(vs, world)
    # Writes and read-your-writes reads do not touch the replica.
    created = await sdk(vs.sessions.create(world.person("A1").id, "Replica misconfigured"))
    assert (await sdk(vs.sessions.get(created.id))).id == created.id


async def test_a_function_that_writes_stays_on_the_primary_even_if_marked(
    replica: tuple[ReplicaPair, World],
) -> None:
    """replica_ok is a permission, not an order: a VOLATILE function (it may write) is
    called on the primary; here ``gdpr_export_user``, which records the export."""
    pair, world = replica
    async with AsyncPostgresBackend.from_dsn(
        pair.primary_dsn(), read_dsn=pair.standby_dsn()
    ) as backend:
        subject = world.person("A2").id
        export = await backend.rpc("gdpr_export_user", {"subject_id": subject}, replica_ok=True)
        assert isinstance(export, dict)
        rows = await backend.select(
            "sessions", columns=("id",), filters=(), limit=1, replica_ok=True
        )
        assert len(rows) == 1
