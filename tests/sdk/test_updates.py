"""SessionUpdateManager behaviour over PostgresBackend: finals stored once, interims only
broadcast, metrics merged atomically, status changes through the lifecycle, events NOTIFYed."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import Database
from tests.sdk.conftest import Sdk, sdk
from tests.support.live import events_key, opened
from tests.support.segments import segment
from voicesessions import (
    AppendResult,
    InvalidInputError,
    PermissionDeniedError,
    SessionNotFound,
    SessionStatus,
    SessionUpdate,
)
from voicesessions._values import MAX_SEGMENTS_PER_CALL

# Also through PgBouncer in transaction mode (see tests/sdk/conftest.py).
pytestmark = pytest.mark.through_pooler

CHANNEL = "vs_session_events"


@pytest.fixture
def listener(world_db: tuple[Database, Any]) -> Iterator[psycopg.Connection[Any]]:
    db, _ = world_db
    conn = psycopg.connect(db.dsn, autocommit=True)
    conn.execute(f"listen {CHANNEL}")
    try:
        yield conn
    finally:
        conn.close()


def events(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    key = events_key(conn)
    received = [opened(key, n.payload) for n in conn.notifies(timeout=0.5, stop_after=50)]
    return received


async def test_finals_are_stored_once_and_interims_never(client: Sdk) -> None:
    sid = client.world.active_session["A1"]
    owner = client.user("A1")
    chunk = [segment(10), segment(11, final=False), segment(12)]
    result = await sdk(owner.updates.append_transcript_chunk(sid, chunk))
    assert result == AppendResult(inserted=2, duplicates=0, interim=1)
    # A replay, shuffled, with the interim now final: only the new final is stored.
    replay = [segment(12), segment(11), segment(10)]
    random.shuffle(replay)
    again = await sdk(owner.updates.append_transcript_chunk(sid, replay))
    assert again == AppendResult(inserted=1, duplicates=2, interim=0)
    transcript = await sdk(owner.sessions.get_transcript(sid))
    seqs = [s.seq for s in transcript.segments]
    assert seqs == [0, 1, 2, 10, 11, 12]  # the world's three, then ours in audio order


async def test_a_chunk_is_one_call_stored_whole_or_refused_whole(client: Sdk) -> None:
    sid = client.world.active_session["A2"]
    chunk = [segment(100 + i) for i in range(MAX_SEGMENTS_PER_CALL)]
    result = await sdk(client.user("A2").updates.append_transcript_chunk(sid, chunk))
    assert (result.inserted, result.duplicates) == (MAX_SEGMENTS_PER_CALL, 0)
    # One more than a call holds: refused before any I/O, nothing stored (not split).
    larger = [segment(5000 + i) for i in range(MAX_SEGMENTS_PER_CALL + 1)]
    with pytest.raises(InvalidInputError, match="at most 1000 final segments"):
        await sdk(client.user("A2").updates.append_transcript_chunk(sid, larger))
    transcript = await sdk(client.vs.sessions.get_transcript(sid))
    assert len(transcript.segments) == 3 + MAX_SEGMENTS_PER_CALL


async def test_bad_segments_are_rejected_before_any_write(client: Sdk) -> None:
    sid = client.world.active_session["A1"]
    bad = [segment(20), {**segment(21), "end_ms": 1}]  # ends before it starts
    with pytest.raises(InvalidInputError):
        await sdk(client.user("A1").updates.append_transcript_chunk(sid, bad))
    with pytest.raises(InvalidInputError):
        await sdk(client.user("A1").updates.append_transcript_chunk(sid, [{"seq": -1}]))
    transcript = await sdk(client.vs.sessions.get_transcript(sid))
    assert 20 not in [s.seq for s in transcript.segments]


async def test_other_users_cannot_append(client: Sdk) -> None:
    sid = client.world.active_session["A1"]
    with pytest.raises((PermissionDeniedError, SessionNotFound)):
        await sdk(client.user("B1").updates.append_transcript_chunk(sid, [segment(30)]))
    with pytest.raises((PermissionDeniedError, SessionNotFound)):
        await sdk(client.user("MA").updates.append_transcript_chunk(sid, [segment(31)]))
    transcript = await sdk(client.vs.sessions.get_transcript(sid))
    assert {30, 31}.isdisjoint(s.seq for s in transcript.segments)


async def test_audio_metrics_merge(client: Sdk) -> None:
    sid = client.world.active_session["B1"]
    owner = client.user("B1")
    first = await sdk(owner.updates.update_audio_metrics(sid, {"rms_dbfs": -21.5}))
    assert first == {"rms_dbfs": -21.5}
    second = await sdk(owner.updates.update_audio_metrics(sid, {"clipping_ratio": 0.01}))
    assert second == {"rms_dbfs": -21.5, "clipping_ratio": 0.01}
    assert (await sdk(owner.sessions.get(sid))).audio_quality == second
    with pytest.raises(InvalidInputError):
        await sdk(owner.updates.update_audio_metrics(sid, {}))


async def test_status_change_assembles_the_transcript(client: Sdk) -> None:
    sid = client.world.active_session["A1"]
    owner = client.user("A1")
    await sdk(owner.updates.append_transcript_chunk(sid, [segment(10, text="let us talk price")]))
    done = await sdk(owner.updates.update_session_status(sid, "completed"))
    assert done.status is SessionStatus.COMPLETED
    transcript = await sdk(owner.sessions.get_transcript(sid))
    assert transcript.content is not None
    assert "let us talk price" in transcript.content
    hits = await sdk(owner.sessions.search_transcripts("price"))
    assert sid in [h.session_id for h in hits]


async def test_every_update_is_broadcast_on_the_session_topic(
    client: Sdk, listener: psycopg.Connection[Any]
) -> None:
    sid = client.world.active_session["A1"]
    owner = client.user("A1")
    await sdk(owner.updates.append_transcript_chunk(sid, [segment(40), segment(41, final=False)]))
    await sdk(owner.updates.update_audio_metrics(sid, {"snr_db": 31.0}))
    await sdk(
        owner.updates.handle_realtime_update(
            SessionUpdate(session_id=sid, update_type="status_change", data={"status": "completed"})
        )
    )
    got = events(listener)
    assert [e["event"] for e in got] == ["transcript", "audio_metrics", "status"]
    assert {e["session_id"] for e in got} == {str(sid)}
    transcript_event = got[0]["payload"]
    assert [s["seq"] for s in transcript_event["final"]] == [40]
    assert [s["seq"] for s in transcript_event["interim"]] == [41]
    assert got[1]["payload"] == {"snr_db": 31.0}
    assert got[2]["payload"]["status"] == "completed"


async def test_handle_realtime_update_dispatches_by_type(client: Sdk) -> None:
    sid = client.world.active_session["B1"]
    owner = client.user("B1")
    appended = await sdk(
        owner.updates.handle_realtime_update(
            {"session_id": str(sid), "update_type": "transcript_chunk", "data": [segment(50)]}
        )
    )
    assert appended.inserted == 1
    merged = await sdk(
        owner.updates.handle_realtime_update(
            {"session_id": sid, "update_type": "audio_metrics", "data": {"peak_dbfs": -1.0}}
        )
    )
    assert merged == {"peak_dbfs": -1.0}
    with pytest.raises(InvalidInputError):
        await sdk(
            owner.updates.handle_realtime_update(
                {"session_id": sid, "update_type": "telepathy", "data": {}}
            )
        )
    with pytest.raises(SessionNotFound):
        await sdk(
            owner.updates.handle_realtime_update(
                {"session_id": uuid.uuid4(), "update_type": "status_change", "data": "completed"}
            )
        )


async def test_invisible_sessions_are_session_not_found(client: Sdk) -> None:
    sid = client.world.active_session["A1"]
    other = client.user("B1")
    with pytest.raises(SessionNotFound):
        await sdk(other.updates.update_audio_metrics(sid, {"snr_db": 1.0}))
    with pytest.raises(SessionNotFound):
        await sdk(
            other.updates.broadcast_update(
                {"session_id": sid, "update_type": "audio_metrics", "data": {"x": 1}}
            )
        )
    with pytest.raises(SessionNotFound):
        await sdk(client.vs.updates.update_audio_metrics(uuid.uuid4(), {"snr_db": 1.0}))
    # A manager may read the session but not write it.
    with pytest.raises(PermissionDeniedError):
        await sdk(client.user("MA").updates.update_audio_metrics(sid, {"snr_db": 1.0}))
    assert (await sdk(client.vs.sessions.get(sid))).audio_quality == {}
