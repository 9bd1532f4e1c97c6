"""Behaviour suite fixtures: the SDK over PostgresBackend on a real PostgreSQL, both faces.

Every scenario runs twice, over the sync ``VoiceSessions`` and the async
``AsyncVoiceSessions``. Scenarios are written once: they ``await sdk(...)`` on whatever a
method returns, which is the value itself for the sync face.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from dataclasses import dataclass
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


@pytest.fixture(params=["sync", "async"])
async def client(
    request: pytest.FixtureRequest, world_db: tuple[Database, World]
) -> AsyncIterator[Sdk]:
    db, world = world_db
    retry = RetryPolicy()  # the default policy users get
    if request.param == "sync":
        vs: Any = VoiceSessions.from_postgres(db.dsn, retry=retry)
    else:
        vs = AsyncVoiceSessions.from_postgres(db.dsn, retry=retry)
    try:
        yield Sdk(vs, world, db, request.param)
    finally:
        if request.param == "sync":
            vs.close()
        else:
            await vs.aclose()
