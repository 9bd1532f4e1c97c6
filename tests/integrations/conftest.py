"""Fixtures of the voice-stack integration tests: a service-role AsyncVoiceSessions on a fresh
world database, the trainee whose calls are recorded, and what the database holds."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from tests.conftest import Database
from tests.support.world import World
from voicesessions import AsyncVoiceSessions


@dataclass
class Call:
    """The client, the database behind it and the trainee (A1) whose calls are recorded."""

    vs: AsyncVoiceSessions
    db: Database
    trainee: uuid.UUID

    def segments(self, session_id: uuid.UUID) -> list[tuple[int, str, str, int, int]]:
        """The stored segments of the session: (seq, speaker, text, start_ms, end_ms)."""
        with self.db.connect() as conn:
            rows = conn.execute(
                "select seq, speaker, text, start_ms, end_ms from public.transcript_segments"
                " where session_id = %s order by seq",
                (session_id,),
            ).fetchall()
        return [tuple(r) for r in rows]  # type: ignore[misc]

    def session(self, session_id: uuid.UUID) -> dict[str, Any]:
        with self.db.connect() as conn:
            row = conn.execute(
                "select status::text, audio_quality, ended_at is not null from public.sessions"
                " where id = %s",
                (session_id,),
            ).fetchone()
        assert row is not None
        return {"status": row[0], "audio_quality": row[1], "ended": row[2]}

    def conversation_metrics(self, session_id: uuid.UUID) -> dict[str, Any] | None:
        """The conversation_metrics analysis the database recorded when the call completed."""
        with self.db.connect() as conn:
            row = conn.execute(
                "select results from public.analysis_results where session_id = %s"
                " and analysis_type = 'conversation_metrics' and provider = 'voicesessions'",
                (session_id,),
            ).fetchone()
        return None if row is None else row[0]

    def transcript_text(self, session_id: uuid.UUID) -> str | None:
        with self.db.connect() as conn:
            row = conn.execute(
                "select content from public.transcripts where session_id = %s", (session_id,)
            ).fetchone()
        return None if row is None else row[0]

    @contextlib.contextmanager
    def held(self, session_id: uuid.UUID) -> Iterator[None]:
        """A slow database: the session row locked by another transaction, so every append
        to it waits (it locks the row FOR KEY SHARE) until the block ends."""
        with psycopg.connect(self.db.dsn) as conn:
            conn.execute("select 1 from public.sessions where id = %s for update", (session_id,))
            yield
            conn.rollback()


@pytest.fixture
async def call(world_db: tuple[Database, World]) -> AsyncIterator[Call]:
    db, world = world_db
    vs = AsyncVoiceSessions.from_postgres(db.dsn)
    try:
        yield Call(vs, db, world.person("A1").id)
    finally:
        await vs.aclose()
