"""Live reading and batched writing over PostgresBackend, both faces: events() and
subscribe() hear what anyone writes, refuse other companies, reconnect and say so; stream()
batches, flushes, pushes back and fails loudly with nothing lost."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from typing import Any

import psycopg
import pytest

from tests.sdk.conftest import Sdk, sdk
from tests.support.live import entered, eventually, next_event
from tests.support.segments import segment
from voicesessions import (
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    SessionEvent,
    SessionNotFound,
    StreamError,
)

# The transaction-scoped advisory lock every segment insert takes shared (see the
# live-updates migration); holding it exclusively makes appends of a session wait.
LOCK_CLASS = 1448299521


def stored_seqs(client: Sdk, session_id: Any) -> list[int]:
    with client.db.connect() as conn:
        rows = conn.execute(
            "select seq from public.transcript_segments where session_id = %s"
            " order by start_ms, seq",
            (session_id,),
        ).fetchall()
    return [int(r[0]) for r in rows]  # type: ignore[index]


WRITER = """
import sys
from voicesessions import VoiceSessions
dsn, user, sid = sys.argv[1:4]
with VoiceSessions.from_postgres(dsn) as vs:
    me = vs.as_user(user)
    me.updates.append_transcript_chunk(sid, [
        {"seq": 50, "speaker": "trainee", "text": "what is your budget", "start_ms": 60000,
         "end_ms": 61000, "segment_id": "s50"},
        {"seq": 51, "speaker": "buyer", "text": "we were thinking", "start_ms": 61500,
         "end_ms": 62000, "segment_id": "s51", "is_final": False},
    ])
    me.updates.update_audio_metrics(sid, {"rms_dbfs": -19.0})
    me.updates.update_session_status(sid, "completed")
"""


async def test_events_written_by_another_process_arrive_in_order(client: Sdk) -> None:
    sid = client.world.active_session["A1"]
    owner_id = client.world.person("A1").id
    async with entered(client.user("A1").updates.events(sid)) as events:
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", WRITER, client.db.dsn, str(owner_id), str(sid)],
            check=True,
            env={**os.environ},
            timeout=120,
        )
        transcript = await next_event(events)
        metrics = await next_event(events)
        status = await next_event(events)
    assert transcript.event == "transcript"
    assert transcript.session_id == sid
    assert [s.seq for s in transcript.final_segments] == [50]
    assert [s.seq for s in transcript.interim_segments] == [51]
    assert metrics.event == "audio_metrics"
    assert metrics.payload == {"rms_dbfs": -19.0}
    assert status.event == "status"
    assert status.payload is not None
    assert status.payload["status"] == "completed"
    assert len({transcript.id, metrics.id, status.id}) == 3
    # The interim segment was heard, never stored.
    assert 51 not in stored_seqs(client, sid)
    assert 50 in stored_seqs(client, sid)


async def test_a_trainee_of_another_company_is_refused(client: Sdk) -> None:
    sid = client.world.active_session["A1"]
    with pytest.raises(SessionNotFound):
        async with entered(client.user("B1").updates.events(sid)):
            pass
    with pytest.raises(SessionNotFound):
        await sdk(client.user("AB").updates.subscribe(sid, lambda event: None))
    # The manager of the same company may watch.
    async with entered(client.user("MA").updates.events(sid)) as events:
        await sdk(client.vs.updates.update_audio_metrics(sid, {"peak_dbfs": -3.0}))
        assert (await next_event(events)).payload == {"peak_dbfs": -3.0}


async def test_events_of_other_sessions_are_not_delivered(client: Sdk) -> None:
    mine = client.world.active_session["A1"]
    other = client.world.active_session["A2"]
    async with entered(client.user("A1").updates.events(mine)) as events:
        await sdk(client.vs.updates.update_audio_metrics(other, {"rms_dbfs": -30.0}))
        assert await sdk(events.get(timeout=1.5)) is None
        await sdk(client.vs.updates.update_audio_metrics(mine, {"rms_dbfs": -20.0}))
        assert (await next_event(events)).payload == {"rms_dbfs": -20.0}


async def test_subscribe_calls_back_until_closed(client: Sdk) -> None:
    sid = client.world.active_session["B1"]
    received: list[SessionEvent] = []
    subscription = await sdk(client.user("B1").updates.subscribe(sid, received.append))
    assert subscription.active
    await sdk(client.vs.updates.append_transcript_chunk(sid, [segment(60), segment(61)]))
    await eventually(lambda: len(received) == 1)
    await sdk(subscription.aclose() if client.face == "async" else subscription.close())
    assert not subscription.active
    await sdk(client.vs.updates.update_audio_metrics(sid, {"rms_dbfs": -25.0}))
    await asyncio.sleep(0.5)
    assert [s.seq for s in received[0].final_segments] == [60, 61]
    assert len(received) == 1


async def test_a_failing_callback_does_not_end_the_subscription(client: Sdk) -> None:
    sid = client.world.active_session["B1"]
    seen: list[str] = []

    def callback(event: SessionEvent) -> None:
        seen.append(event.event)
        if len(seen) == 1:
            raise RuntimeError("bug in the caller's code")

    subscription = await sdk(client.user("B1").updates.subscribe(sid, callback))
    try:
        await sdk(client.vs.updates.update_audio_metrics(sid, {"a": 1}))
        await sdk(client.vs.updates.update_audio_metrics(sid, {"b": 2}))
        await eventually(lambda: len(seen) == 2)
    finally:
        await sdk(subscription.aclose() if client.face == "async" else subscription.close())


def kill_listeners(client: Sdk) -> int:
    with client.db.connect() as conn:
        row = conn.execute(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity"
            " where datname = current_database() and query ilike 'listen%%'"
        ).fetchone()
    return int(row[0])  # type: ignore[index]


async def test_a_dropped_connection_is_reconnected_and_announced(client: Sdk) -> None:
    sid = client.world.active_session["A1"]
    async with entered(client.user("A1").updates.events(sid)) as events:
        assert kill_listeners(client) == 1
        reconnected = await next_event(events)
        assert reconnected.event == "reconnected"
        assert reconnected.payload is not None
        assert reconnected.payload["attempts"] >= 1
        await sdk(client.vs.updates.update_audio_metrics(sid, {"rms_dbfs": -22.0}))
        after = await next_event(events)
    assert after.event == "audio_metrics"
    assert after.payload == {"rms_dbfs": -22.0}


async def test_an_event_too_large_for_notify_comes_by_reference(client: Sdk) -> None:
    sid = client.world.active_session["A2"]
    long_text = "word " * 2000  # ~10 kB: over NOTIFY's 8,000-byte limit
    async with entered(client.user("A2").updates.events(sid)) as events:
        await sdk(client.vs.updates.append_transcript_chunk(sid, [segment(70, text=long_text)]))
        event = await next_event(events)
    assert event.event == "transcript"
    assert event.by_reference
    assert event.payload is None
    assert event.bytes is not None
    assert event.bytes > 8000
    assert 70 in stored_seqs(client, sid)  # the tables hold what changed


# -- stream ------------------------------------------------------------------------------


async def test_stream_batches_by_count_and_flushes_on_exit(client: Sdk) -> None:
    sid = client.world.active_session["A1"]
    stream = client.user("A1").updates.stream(sid, max_batch=10, max_delay_s=30)
    async with entered(stream) as s:
        for seq in range(100, 125):
            await sdk(s.add(segment(seq)))
        await sdk(s.add(segment(100)))  # a replay
        await sdk(s.add(segment(125, final=False)))
    stats = s.stats
    assert (stats.added, stats.inserted, stats.duplicates, stats.interim) == (27, 25, 1, 1)
    assert stats.pending == 0
    assert stats.batches == 3  # 10 + 10 by count, 7 on exit
    assert stored_seqs(client, sid)[-25:] == list(range(100, 125))


async def test_stream_sends_a_partial_batch_after_max_delay(client: Sdk) -> None:
    sid = client.world.active_session["A2"]
    async with entered(client.user("A2").updates.stream(sid, max_batch=500, max_delay_s=0.1)) as s:
        await sdk(s.add_many([segment(200), segment(201)]))
        await eventually(lambda: s.stats.batches == 1, within=10)  # without flush or exit
        assert stored_seqs(client, sid)[-2:] == [200, 201]


async def test_stream_flush_waits_until_stored(client: Sdk) -> None:
    sid = client.world.active_session["A2"]
    async with entered(client.user("A2").updates.stream(sid, max_delay_s=60)) as s:
        await sdk(s.add(segment(300)))
        await sdk(s.flush())
        assert 300 in stored_seqs(client, sid)


async def test_stream_pushes_back_while_the_database_is_slow(client: Sdk) -> None:
    sid = client.world.active_session["A1"]
    blocker = client.db.connect(autocommit=False)
    blocker.execute("select pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, str(sid)))
    loop = asyncio.get_running_loop()
    stream = client.user("A1").updates.stream(sid, max_batch=2, max_delay_s=0.01, max_buffer=4)
    try:
        async with entered(stream) as s:
            await sdk(s.add_many([segment(400 + i) for i in range(4)]))  # fills the buffer
            if client.face == "async":
                fifth: Any = asyncio.ensure_future(s.add(segment(404)))
            else:
                fifth = loop.run_in_executor(None, s.add, segment(404))
            await asyncio.sleep(0.5)
            assert not fifth.done(), "add() should wait while the buffer is full"
            assert s.stats.pending == 4
            blocker.rollback()  # the database catches up
            await asyncio.wait_for(fifth, 15)
    finally:
        blocker.close()
    assert stored_seqs(client, sid)[-5:] == [400, 401, 402, 403, 404]


async def test_a_refused_batch_fails_the_stream_with_its_segments(client: Sdk) -> None:
    sid = client.world.active_session["B1"]
    await sdk(client.vs.updates.update_session_status(sid, "completed"))
    with pytest.raises(StreamError) as failure:
        async with entered(client.user("B1").updates.stream(sid)) as s:
            await sdk(s.add_many([segment(500), segment(501)]))
    assert [p.seq for p in failure.value.pending] == [500, 501]
    assert isinstance(failure.value.__cause__, ConflictError)  # VS002: the session ended


async def test_a_failed_stream_refuses_more_segments(client: Sdk) -> None:
    sid = client.world.active_session["B1"]
    await sdk(client.vs.updates.update_session_status(sid, "completed"))
    stream = client.user("B1").updates.stream(sid)
    failures: list[StreamError] = []
    try:
        async with entered(stream) as s:
            await sdk(s.add(segment(510)))
            for attempt in (s.flush, lambda: s.add(segment(511))):
                with pytest.raises(StreamError) as later:
                    await sdk(attempt())
                failures.append(later.value)
    except StreamError as on_exit:
        failures.append(on_exit)
    assert [[p.seq for p in f.pending] for f in failures] == [[510]] * 3


async def test_stream_checks_its_input_and_settings(client: Sdk) -> None:
    sid = client.world.active_session["A1"]
    updates = client.user("A1").updates
    for bad in ({"max_batch": 0}, {"max_delay_s": 0}, {"max_batch": 10, "max_buffer": 5}):
        with pytest.raises(ConfigurationError):
            updates.stream(sid, **bad)
    with pytest.raises(InvalidInputError):
        updates.stream(sid, max_batch=1001)
    async with entered(updates.stream(sid)) as s:
        with pytest.raises(InvalidInputError):
            await sdk(s.add({**segment(600), "end_ms": 0}))
        assert s.stats.added == 0
    with pytest.raises(StreamError, match="inside"):
        await sdk(updates.stream(sid).add(segment(601)))


# -- many writers -------------------------------------------------------------------------


async def write_all(client: Sdk, session_ids: list[Any], writers_per_session: int) -> None:
    """Every writer streams every final segment of its session twice, shuffled."""
    import random

    plans = []
    for sid in session_ids:
        for w in range(writers_per_session):
            segments = [segment(seq) for seq in range(40)] * 2
            random.Random(f"{sid}-{w}").shuffle(segments)
            plans.append((sid, segments))

    if client.face == "async":

        async def one(sid: Any, segments: list[dict[str, Any]]) -> None:
            async with client.vs.updates.stream(sid, max_batch=7, max_delay_s=0.05) as s:
                for item in segments:
                    await s.add(item)

        await asyncio.gather(*(one(sid, segs) for sid, segs in plans))
    else:

        def run(sid: Any, segments: list[dict[str, Any]]) -> None:
            with client.vs.updates.stream(sid, max_batch=7, max_delay_s=0.05) as s:
                for item in segments:
                    s.add(item)

        threads = [threading.Thread(target=run, args=plan) for plan in plans]
        for thread in threads:
            thread.start()
        await asyncio.to_thread(lambda: [t.join() for t in threads])


async def new_sessions(client: Sdk, count: int) -> list[Any]:
    owner = client.world.person("A1").id
    return [(await sdk(client.vs.sessions.create(owner, f"call {i}"))).id for i in range(count)]


async def test_sixteen_writers_on_one_session_store_each_segment_once(client: Sdk) -> None:
    (sid,) = await new_sessions(client, 1)
    await write_all(client, [sid], writers_per_session=16)
    assert stored_seqs(client, sid) == list(range(40))


async def test_sixteen_writers_on_sixteen_sessions(client: Sdk) -> None:
    sessions = await new_sessions(client, 16)
    await write_all(client, sessions, writers_per_session=1)
    for sid in sessions:
        assert stored_seqs(client, sid) == list(range(40))


def test_listener_connection_is_its_own(world_db: Any) -> None:
    """The feed does not hold a pooled connection: a pool of one still serves calls."""
    from voicesessions import VoiceSessions

    db, world = world_db
    sid = world.active_session["A1"]
    with VoiceSessions.from_postgres(db.dsn, min_size=1, max_size=1) as vs:
        with vs.updates.events(sid) as events:
            vs.updates.update_audio_metrics(sid, {"x": 1})
            event = events.get(timeout=10)
        assert event is not None
        assert event.payload == {"x": 1}
    with psycopg.connect(db.dsn) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
