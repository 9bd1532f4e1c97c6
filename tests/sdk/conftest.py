"""Behaviour suite fixtures: the SDK over PostgresBackend on a real PostgreSQL, both faces.

Every scenario runs twice, over the sync ``VoiceSessions`` and the async
``AsyncVoiceSessions``. Scenarios are written once: they ``await sdk(...)`` on whatever a
method returns, which is the value itself for the sync face.

A module marked ``pytestmark = pytest.mark.through_pooler`` runs its scenarios once more
through PgBouncer in transaction mode with a pool of 2 server connections (the
``pgbouncer`` fixture of tests/conftest.py), as Supabase's pooler on port 6543 serves them:
test id ``[async-pgbouncer]``. The client is made exactly as a direct one
(``from_postgres(dsn)``, nothing pooler-specific); ``Sdk.db`` stays the direct database,
for the tests' own checks. The async face only: the sync face is generated from the same
code and sends the same statements (to keep CI short; tests/backends/test_pooler.py runs
both faces at once through the pooler, threads and tasks).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Database
from tests.support.world import World
from voicesessions import AsyncVoiceSessions, VoiceSessions
from voicesessions._retry_policy import RetryPolicy


async def sdk(value: Any) -> Any:
    """The result of an SDK call on either face."""
    if inspect.isawaitable(value):
        return await value
    return value


@dataclass
class Sdk:
    """A service-role client on one face, and the world it sees."""

    vs: Any  # VoiceSessions | AsyncVoiceSessions
    world: World
    db: Database
    face: str

    def user(self, key: str) -> Any:
        """The client acting as a person of the world (A1, MA, B1...)."""
        return self.vs.as_user(self.world.person(key).id)


#: The faces every scenario runs on, and the same through the pooler (``through_pooler``).
FACES = ("sync", "async")
POOLED_FACES = ("async-pgbouncer",)
#: The fixtures that give a scenario its client, parametrized by face here.
FACE_FIXTURES = ("client", "gdpr")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    pooled = metafunc.definition.get_closest_marker("through_pooler") is not None
    for name in FACE_FIXTURES:
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, FACES + POOLED_FACES if pooled else FACES, indirect=True)


def face_and_dsn(request: pytest.FixtureRequest, db: Database) -> tuple[str, str]:
    """The face (``sync`` or ``async``) of the fixture's parameter, and the DSN its client
    connects to: the database's own, or the same through the pooler."""
    face, _, via = str(request.param).partition("-")
    if via == "pgbouncer":
        return face, request.getfixturevalue("pgbouncer").dsn(db.dsn)
    return face, db.dsn


@pytest.fixture
async def client(
    request: pytest.FixtureRequest, world_db: tuple[Database, World]
) -> AsyncIterator[Sdk]:
    db, world = world_db
    face, dsn = face_and_dsn(request, db)
    retry = RetryPolicy()  # the default policy users get
    if face == "sync":
        vs: Any = VoiceSessions.from_postgres(dsn, retry=retry)
    else:
        vs = AsyncVoiceSessions.from_postgres(dsn, retry=retry)
    try:
        yield Sdk(vs, world, db, face)
    finally:
        if face == "sync":
            vs.close()
        else:
            await vs.aclose()


#: The private bucket of recordings, as the local store of the Postgres backend lays it out.
AUDIO_BUCKET = "session-audio"


@pytest.fixture(params=["sync", "async"])
async def store(
    request: pytest.FixtureRequest, world_db: tuple[Database, World], tmp_path: Path
) -> AsyncIterator[tuple[Sdk, Path]]:
    """A service-role client on each face whose Storage is a local folder (the Postgres
    backend's ``storage_root``), and that folder."""
    db, world = world_db
    root = tmp_path / "store"
    retry = RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.02)
    cls: Any = VoiceSessions if request.param == "sync" else AsyncVoiceSessions
    vs = cls.from_postgres(db.dsn, retry=retry, storage_root=root)
    try:
        yield Sdk(vs, world, db, request.param), root
    finally:
        await sdk(vs.close() if request.param == "sync" else vs.aclose())


def files(root: Path) -> list[str]:
    """The objects of the audio bucket in a local store, as paths inside the bucket."""
    base = root / AUDIO_BUCKET
    if not base.exists():
        return []
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())
