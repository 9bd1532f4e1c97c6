"""One call per live chunk: ``append_transcript_segments(session_id, segments, interim)``
stores the finals and broadcasts the chunk in the same transaction
(supabase/migrations/20261128000800_perf_ingest.sql), and the cheaper per-row trigger keeps
every rule of a segment insert for every writer.

Calls run as PostgREST runs them (tests/support/api.py); notifications are read on a
separate LISTENing connection and checked against the database's signature.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.db.test_live_updates import (
    CHANNEL,
    WorldDb,
    call,
    new_session,
    received,
    refused,
    rows,
    seg,
    stored_segments,
)
from tests.support.live import events_key, opened

CHUNK = "select public.append_transcript_segments(%s, %s, %s) as r"

#: What the SDK's SegmentInput has beyond the stored fields (absent ones are null).
FULL = {"confidence": None, "words": None, "segment_id": None, "is_final": True}


@pytest.fixture
def listener(world_db: WorldDb) -> Iterator[psycopg.Connection[Any]]:
    db, _ = world_db
    conn = psycopg.connect(db.dsn, autocommit=True)
    conn.execute(f"listen {CHANNEL}")
    try:
        yield conn
    finally:
        conn.close()


def chunk(db: Any, world: Any, who: str, sid: uuid.UUID, finals: Any, interim: Any) -> Any:
    return call(db, world, who, CHUNK, (sid, Jsonb(finals), Jsonb(interim))).rows[0]["r"]


def interim_seg(seq: int) -> dict[str, Any]:
    return {**seg(seq), **FULL, "is_final": False}


def test_a_chunk_is_stored_and_broadcast_once(
    world_db: WorldDb, listener: psycopg.Connection[Any]
) -> None:
    db, world = world_db
    sid = new_session(db, world, "A1")
    finals = [seg(1), seg(0, confidence=0.5, segment_id="p-0")]
    result = chunk(db, world, "A1", sid, finals, [interim_seg(2)])
    assert result == {"inserted": 2, "duplicates": 0}
    assert [s["seq"] for s in stored_segments(db, sid)] == [0, 1]
    [raw] = received(listener, 1)
    message = opened(events_key(db.dsn), raw)
    assert (message["session_id"], message["event"]) == (str(sid), "transcript")
    # The finals as given, in the order given, with every SegmentInput field.
    assert message["payload"] == {
        "final": [{**FULL, **s} for s in finals],
        "interim": [interim_seg(2)],
    }


def test_a_replayed_chunk_stores_nothing_and_is_broadcast_again(
    world_db: WorldDb, listener: psycopg.Connection[Any]
) -> None:
    db, world = world_db
    sid = new_session(db, world, "A1")
    assert chunk(db, world, "A1", sid, [seg(5)], []) == {"inserted": 1, "duplicates": 0}
    assert chunk(db, world, "A1", sid, [seg(5)], []) == {"inserted": 0, "duplicates": 1}
    assert len(received(listener, 2)) == 2


def test_a_refused_chunk_is_neither_stored_nor_broadcast(
    world_db: WorldDb, listener: psycopg.Connection[Any]
) -> None:
    db, world = world_db
    sid = new_session(db, world, "A1")
    bad = [seg(1), {**seg(2), "seq": -1}]
    error = refused(db, world, "A1", CHUNK, (sid, Jsonb(bad), Jsonb([interim_seg(3)])), "22023")
    assert "segments[1]" in str(error)
    # Not the owner: refused as the two-argument function refuses it.
    refused(db, world, "MA", CHUNK, (sid, Jsonb([seg(1)]), Jsonb([])), "42501")
    refused(db, world, "B1", CHUNK, (sid, Jsonb([seg(1)]), Jsonb([])), "42501")
    for interim in ({"a": 1}, [1], ["text"], [[]]):
        refused(db, world, "A1", CHUNK, (sid, Jsonb([seg(1)]), Jsonb(interim)), "22023")
    received(listener, 0)
    assert stored_segments(db, sid) == []


def test_interims_alone_are_broadcast_by_any_reader(
    world_db: WorldDb, listener: psycopg.Connection[Any]
) -> None:
    db, world = world_db
    sid = new_session(db, world, "A1")
    for who in ("A1", "MA", "service_role"):
        assert chunk(db, world, who, sid, [], [interim_seg(9)]) == {
            "inserted": 0,
            "duplicates": 0,
        }
    assert len(received(listener, 3)) == 3
    # Another company's trainee cannot even see the session.
    refused(db, world, "B1", CHUNK, (sid, Jsonb([]), Jsonb([interim_seg(9)])), "P0002")
    received(listener, 0)


def test_a_large_chunk_goes_out_as_several_events_in_order(
    world_db: WorldDb, listener: psycopg.Connection[Any]
) -> None:
    db, world = world_db
    sid = new_session(db, world, "A1")
    finals = [seg(n, "wörd " * 3000) for n in range(40)]  # ~15 KB each
    interims = [{**interim_seg(100 + n), "text": "x" * 9000} for n in range(30)]
    result = chunk(db, world, "A1", sid, finals, interims)
    assert result == {"inserted": 40, "duplicates": 0}
    raws = [n.payload for n in listener.notifies(timeout=5, stop_after=4)]
    raws += [n.payload for n in listener.notifies(timeout=0.5)]
    messages = [opened(events_key(db.dsn), raw) for raw in raws]
    assert len(messages) > 1
    assert all(m["event"] == "transcript" and m.get("ref") is True for m in messages)
    assert all(m["bytes"] <= 200_000 for m in messages)
    # Together they carry every segment (each final alone is over 18,000 bytes).
    assert sum(m["bytes"] for m in messages) > 40 * 18_000 + 30 * 9_000


def test_the_two_argument_function_stores_without_broadcasting(
    world_db: WorldDb, listener: psycopg.Connection[Any]
) -> None:
    db, world = world_db
    sid = new_session(db, world, "A1")
    result = call(
        db,
        world,
        "A1",
        "select public.append_transcript_segments(%s, %s) as r",
        (sid, Jsonb([seg(1)])),
    )
    assert result.rows[0]["r"] == {"inserted": 1, "duplicates": 0}
    received(listener, 0)


# -- the row trigger, for every writer ------------------------------------------------------


@pytest.mark.parametrize("columns", ["owner omitted", "owner given", "owner wrong"])
def test_a_direct_insert_gets_the_session_owner(world_db: WorldDb, columns: str) -> None:
    """service_role inserting directly (and a COPY, which fires the same row triggers)."""
    db, world = world_db
    sid = new_session(db, world, "A1")
    a1 = world.person("A1")
    extra = {
        "owner omitted": {},
        "owner given": {"profile_id": a1.id, "company_id": world.companies["A"]},
        "owner wrong": {"profile_id": world.person("B1").id},
    }[columns]
    names = ["session_id", "seq", "speaker", "text", "start_ms", "end_ms", *extra]
    insert = (
        f"insert into public.transcript_segments ({', '.join(names)})"
        f" values ({', '.join(['%s'] * len(names))})"
    )
    params = (sid, 1, "trainee", "hi", 0, 10, *extra.values())
    if columns == "owner wrong":
        refused(db, world, "service_role", insert, params, "42501")
        return
    call(db, world, "service_role", insert, params)
    [row] = stored_segments(db, sid)
    assert (row["profile_id"], row["company_id"]) == (a1.id, world.companies["A"])


def copy_rows(dsn: str, rows_: list[tuple[Any, ...]]) -> None:
    """One COPY (as the owner, committed) of (session_id, seq, speaker, text, start, end)."""
    copy = (
        "copy public.transcript_segments (session_id, seq, speaker, text, start_ms, end_ms)"
        " from stdin"
    )
    with psycopg.connect(dsn) as conn, conn.cursor().copy(copy) as cp:
        for row in rows_:
            cp.write_row(row)


def test_copy_checks_every_row(world_db: WorldDb) -> None:
    db, world = world_db
    sid = new_session(db, world, "A1")
    completed = world.completed_session["A1"]
    for target, sqlstate in ((uuid.uuid4(), "23503"), (completed, "VS002")):
        batch = [(sid, 1, "trainee", "ok", 0, 10), (target, 2, "trainee", "bad", 0, 10)]
        with pytest.raises(psycopg.Error) as excinfo:
            copy_rows(db.dsn, batch)
        assert excinfo.value.sqlstate == sqlstate
    assert stored_segments(db, sid) == []
    copy_rows(db.dsn, [(sid, n, "trainee", "ok", 0, 10) for n in range(3)])
    assert {(r["profile_id"], r["company_id"]) for r in stored_segments(db, sid)} == {
        (world.person("A1").id, world.companies["A"])
    }


def test_an_update_cannot_move_a_segment(world_db: WorldDb) -> None:
    db, world = world_db
    sid = new_session(db, world, "A1")
    chunk(db, world, "A1", sid, [seg(1)], [])
    other = new_session(db, world, "A1")
    for change in (
        ("session_id", other),
        ("profile_id", world.person("A2").id),
        ("company_id", world.companies["B"]),
    ):
        refused(
            db,
            world,
            "service_role",
            f"update public.transcript_segments set {change[0]} = %s where session_id = %s",
            (change[1], sid),
            "42501",
        )
    assert rows(
        db, "select count(*) as n from public.transcript_segments where session_id = %s", (sid,)
    ) == [{"n": 1}]
