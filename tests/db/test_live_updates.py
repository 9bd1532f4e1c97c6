"""Live updates in the database: batched segment appends, audio metrics, transcript assembly
on completion and event fan-out (supabase/migrations/20261126000900_live_updates.sql).

Every call runs as PostgREST runs it (tests/support/api.py): as anon, a user of the
two-company world or service_role, one transaction per call, committed unless a test says
otherwise. Concurrency tests use one connection per writer; interleaving tests hold a request
transaction open on one connection while another one runs, and check (pg_stat_activity) that
the second one really waits for a lock before letting the first finish.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tests.conftest import Database
from tests.support.api import Api, Identity, Result
from tests.support.db import fingerprint
from tests.support.live import NOTIFY_HEADER_BYTES, events_key, opened
from tests.support.supabase import supabase_world
from tests.support.world import World
from voicesessions._request import request_context

WorldDb = tuple[Database, World]

CHANNEL = "vs_session_events"
APPEND = "select public.append_transcript_segments(%s, %s) as r"
METRICS = "select public.update_audio_metrics(%s, %s) as r"
BROADCAST = "select public.broadcast_session_event(%s, %s, %s)"
NOTIFY_LIMIT = 8000  # bytes; a NOTIFY payload must be shorter


# -- helpers ------------------------------------------------------------------------------


def seg(
    seq: int,
    text: str | None = None,
    *,
    speaker: str | None = None,
    start_ms: int | None = None,
    duration_ms: int = 800,
    **extra: Any,
) -> dict[str, Any]:
    """A final segment as a voice pipeline sends it."""
    start = start_ms if start_ms is not None else 10_000 + seq * 1000
    return {
        "seq": seq,
        "speaker": speaker or ("trainee" if seq % 2 == 0 else "buyer"),
        "text": text if text is not None else f"words of segment {seq}",
        "start_ms": start,
        "end_ms": start + duration_ms,
        **extra,
    }


def call(
    db: Database,
    world: World,
    who: str,
    query: str,
    params: Sequence[Any] | None = None,
    *,
    commit: bool = True,
) -> Result:
    with db.api() as api:
        return api.run(world.identity(who), query, params, commit=commit)


def append(
    db: Database, world: World, who: str, session_id: uuid.UUID, segments: Any
) -> dict[str, int]:
    result = call(db, world, who, APPEND, (session_id, Jsonb(segments)))
    value: dict[str, int] = result.rows[0]["r"]
    return value


def refused(
    db: Database, world: World, who: str, query: str, params: Sequence[Any], sqlstate: str
) -> psycopg.Error:
    """``who`` runs ``query`` as a committed request: refused with ``sqlstate``, nothing
    changed in any public table."""
    before = fingerprint(db)
    with pytest.raises(psycopg.Error) as excinfo:
        call(db, world, who, query, params)
    assert excinfo.value.sqlstate == sqlstate, (
        f"{who}: expected {sqlstate}, got {excinfo.value.sqlstate}: {excinfo.value}"
    )
    assert fingerprint(db) == before, "a refused call left changes behind"
    return excinfo.value


def owner_conn(db: Database) -> psycopg.Connection[Any]:
    return psycopg.connect(db.dsn, autocommit=True, row_factory=dict_row)


def rows(db: Database, query: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    with owner_conn(db) as conn:
        return conn.execute(query, params).fetchall()


def stored_segments(db: Database, session_id: uuid.UUID) -> list[dict[str, Any]]:
    """The session's segments in audio order."""
    return rows(
        db,
        "select seq, speaker, text, start_ms, end_ms, confidence, words, segment_id,"
        " profile_id, company_id from public.transcript_segments where session_id = %s"
        " order by start_ms, seq",
        (session_id,),
    )


def new_session(
    db: Database, world: World, who: str = "A1", metadata: Mapping[str, Any] | None = None
) -> uuid.UUID:
    """A fresh active session of ``who`` (no segments)."""
    with owner_conn(db) as conn:
        row = conn.execute(
            "insert into public.sessions (profile_id, title, metadata)"
            " values (%s, 'live call', %s) returning id",
            (world.person(who).id, Jsonb(dict(metadata or {}))),
        ).fetchone()
    assert row is not None
    session_id: uuid.UUID = row["id"]
    return session_id


def complete(db: Database, world: World, who: str, session_id: uuid.UUID) -> None:
    call(db, world, who, "update sessions set status = 'completed' where id = %s", (session_id,))


@contextmanager
def request(db: Database, identity: Identity) -> Iterator[psycopg.Connection[Any]]:
    """An open PostgREST-like request transaction (authenticator, role and claims set
    locally); the caller commits, else it is rolled back."""
    conn = psycopg.connect(db.authenticator_dsn, row_factory=dict_row)
    try:
        conn.execute(*request_context(identity.role, identity.claims))
        yield conn
    finally:
        conn.rollback()
        conn.close()


def wait_until_blocked(db: Database, pid: int, timeout: float = 10.0) -> None:
    """Until backend ``pid`` waits for a lock (so the two requests really overlap)."""
    deadline = time.monotonic() + timeout
    with owner_conn(db) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "select wait_event_type from pg_stat_activity where pid = %s", (pid,)
            ).fetchone()
            if row is not None and row["wait_event_type"] == "Lock":
                return
            time.sleep(0.02)
    raise AssertionError(f"backend {pid} never waited for a lock")


class Background:
    """Runs ``work(conn)`` in a request transaction on its own connection and thread."""

    def __init__(
        self, db: Database, identity: Identity, work: Callable[[psycopg.Connection[Any]], Any]
    ) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.pid: int | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(db, identity, work), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the background request did not start"

    def _run(
        self, db: Database, identity: Identity, work: Callable[[psycopg.Connection[Any]], Any]
    ) -> None:
        try:
            with request(db, identity) as conn:
                self.pid = conn.info.backend_pid
                self._ready.set()
                self.result = work(conn)
                conn.commit()
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()

    def join(self) -> Any:
        self._thread.join(30)
        assert not self._thread.is_alive(), "the background request never finished"
        if self.error is not None:
            raise self.error
        return self.result


# -- append_transcript_segments ------------------------------------------------------------


def test_a_batch_is_stored_with_the_sessions_owner(world_db: WorldDb) -> None:
    db, world = world_db
    sid = world.active_session["A1"]
    batch = [
        seg(10, confidence=0.5, words=[{"w": "words", "start_ms": 20_000}], segment_id="lk-10"),
        seg(11),
        seg(12, confidence=None, words=None, segment_id=None),
    ]
    assert append(db, world, "A1", sid, batch) == {"inserted": 3, "duplicates": 0}
    stored = {s["seq"]: s for s in stored_segments(db, sid)}
    assert set(stored) == {0, 1, 2, 10, 11, 12}
    ten = stored[10]
    assert (ten["speaker"], ten["text"], ten["start_ms"], ten["end_ms"]) == (
        "trainee",
        "words of segment 10",
        20_000,
        20_800,
    )
    assert ten["confidence"] == pytest.approx(0.5)
    assert ten["words"] == [{"w": "words", "start_ms": 20_000}]
    assert ten["segment_id"] == "lk-10"
    assert stored[12]["confidence"] is None
    assert stored[12]["words"] is None
    assert {(s["profile_id"], s["company_id"]) for s in stored.values()} == {
        (world.person("A1").id, world.companies["A"])
    }


def test_service_role_appends_too(world_db: WorldDb) -> None:
    db, world = world_db
    sid = world.active_session["B1"]
    assert append(db, world, "service_role", sid, [seg(7)]) == {"inserted": 1, "duplicates": 0}
    assert [s["profile_id"] for s in stored_segments(db, sid) if s["seq"] == 7] == [
        world.person("B1").id
    ]


def test_replaying_a_batch_is_a_no_op(world_db: WorldDb) -> None:
    db, world = world_db
    sid = world.active_session["A1"]
    batch = [seg(n) for n in range(10, 15)]
    assert append(db, world, "A1", sid, batch) == {"inserted": 5, "duplicates": 0}
    before = fingerprint(db)
    assert append(db, world, "A1", sid, batch) == {"inserted": 0, "duplicates": 5}
    assert fingerprint(db) == before


def test_the_first_delivery_of_a_seq_wins(world_db: WorldDb) -> None:
    db, world = world_db
    sid = world.active_session["A1"]
    batch = [seg(20, "first"), seg(21), seg(20, "second"), seg(0, "not the stored one")]
    assert append(db, world, "A1", sid, batch) == {"inserted": 2, "duplicates": 2}
    texts = {s["seq"]: s["text"] for s in stored_segments(db, sid)}
    assert texts[20] == "first"
    assert texts[0] == "segment 0"  # the world's segment, untouched
    assert append(db, world, "A1", sid, [seg(20, "third")]) == {"inserted": 0, "duplicates": 1}
    assert {s["seq"]: s["text"] for s in stored_segments(db, sid)}[20] == "first"


def test_shuffled_batches_with_duplicates_store_each_segment_once_in_audio_order(
    world_db: WorldDb,
) -> None:
    db, world = world_db
    sid = new_session(db, world)
    rng = random.Random(4)
    # Audio order differs from seq order: producers number segments as they finalize them.
    starts = rng.sample(range(0, 600_000, 1000), 60)
    segments = [seg(n, start_ms=starts[n]) for n in range(60)]
    deliveries = segments * 3
    rng.shuffle(deliveries)
    totals = {"inserted": 0, "duplicates": 0}
    for i in range(0, len(deliveries), 17):
        result = append(db, world, "A1", sid, deliveries[i : i + 17])
        for key in totals:
            totals[key] += result[key]
    assert totals == {"inserted": 60, "duplicates": 120}
    stored = stored_segments(db, sid)
    assert [s["seq"] for s in stored] == [s["seq"] for s in sorted(segments, key=_audio_order)]
    assert [s["text"] for s in stored] == [s["text"] for s in sorted(segments, key=_audio_order)]


def _audio_order(segment: Mapping[str, Any]) -> tuple[int, int]:
    return segment["start_ms"], segment["seq"]


def test_an_empty_batch_stores_nothing(world_db: WorldDb) -> None:
    db, world = world_db
    assert append(db, world, "A1", world.active_session["A1"], []) == {
        "inserted": 0,
        "duplicates": 0,
    }


BAD_ELEMENTS = [
    pytest.param("not an object", "must be a JSON object", id="string"),
    pytest.param([1, 2], "must be a JSON object", id="array"),
    pytest.param(None, "must be a JSON object", id="null"),
    pytest.param({"seq": 1, "speaker": "x", "text": "t"}, "missing start_ms, end_ms", id="missing"),
    pytest.param({**seg(30), "start": 5}, "unknown keys: start", id="unknown-key"),
    pytest.param({**seg(30), "is_final": True}, "unknown keys: is_final", id="is-final"),
    pytest.param({**seg(30), "seq": -1}, "seq must be an integer", id="negative-seq"),
    pytest.param({**seg(30), "seq": 1.5}, "seq must be an integer", id="fractional-seq"),
    pytest.param({**seg(30), "seq": "30"}, "seq must be an integer", id="string-seq"),
    pytest.param({**seg(30), "seq": 2**31}, "seq must be an integer", id="huge-seq"),
    pytest.param({**seg(30), "seq": None}, "seq must be an integer", id="null-seq"),
    pytest.param({**seg(30), "speaker": ""}, "speaker must be a string", id="empty-speaker"),
    pytest.param({**seg(30), "speaker": "s" * 65}, "speaker must be a string", id="long-speaker"),
    pytest.param({**seg(30), "speaker": 3}, "speaker must be a string", id="number-speaker"),
    pytest.param({**seg(30), "text": None}, "text must be a string", id="null-text"),
    pytest.param({**seg(30), "text": "x" * 20_001}, "at most 20000", id="long-text"),
    pytest.param({**seg(30), "start_ms": -5}, "start_ms must be an integer", id="negative-start"),
    pytest.param({**seg(30), "start_ms": "5"}, "start_ms must be an integer", id="string-start"),
    pytest.param({**seg(30), "end_ms": 2.5}, "end_ms must be an integer", id="fractional-end"),
    pytest.param(seg(30, start_ms=5000, duration_ms=-1), "is before start_ms", id="backwards"),
    pytest.param({**seg(30), "confidence": 1.5}, "confidence must be", id="confidence-high"),
    pytest.param({**seg(30), "confidence": "high"}, "confidence must be", id="confidence-text"),
    pytest.param({**seg(30), "words": {"w": 1}}, "words must be null or an array", id="words"),
    pytest.param({**seg(30), "segment_id": ""}, "segment_id must be", id="empty-segment-id"),
    pytest.param({**seg(30), "segment_id": 7}, "segment_id must be", id="number-segment-id"),
]


@pytest.mark.parametrize(("element", "message"), BAD_ELEMENTS)
def test_a_bad_element_fails_the_whole_batch(
    shared_world_db: WorldDb, element: Any, message: str
) -> None:
    db, world = shared_world_db
    batch = [seg(40), seg(41), element, seg(42)]
    exc = refused(
        db, world, "A1", APPEND, (world.active_session["A1"], Jsonb(batch)), sqlstate="22023"
    )
    assert str(exc).startswith("segments[2]: "), str(exc)
    assert message in str(exc)


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        pytest.param({"seq": 1}, "segments must be a JSON array", id="object"),
        pytest.param("text", "segments must be a JSON array", id="string"),
        pytest.param(None, "segments must be a JSON array", id="sql-null"),
        pytest.param([seg(n) for n in range(1001)], "at most 1000 segments", id="too-many"),
    ],
)
def test_segments_must_be_an_array_of_at_most_1000(
    shared_world_db: WorldDb, segments: Any, message: str
) -> None:
    db, world = shared_world_db
    param = None if segments is None else Jsonb(segments)
    exc = refused(db, world, "A1", APPEND, (world.active_session["A1"], param), sqlstate="22023")
    assert message in str(exc)


def test_session_id_is_required(shared_world_db: WorldDb) -> None:
    db, world = shared_world_db
    refused(db, world, "A1", APPEND, (None, Jsonb([seg(1)])), sqlstate="22023")


def test_a_full_batch_of_1000_is_accepted(world_db: WorldDb) -> None:
    db, world = world_db
    sid = new_session(db, world)
    batch = [seg(n) for n in range(1000)]
    assert append(db, world, "A1", sid, batch) == {"inserted": 1000, "duplicates": 0}


@pytest.mark.parametrize("who", ["B1", "A2", "MA", "AA"])
def test_only_the_owner_appends(shared_world_db: WorldDb, who: str) -> None:
    """Another company's trainee, a colleague, and a manager or admin who can read the
    session: all refused with 42501, as a direct insert would be, and nothing written."""
    db, world = shared_world_db
    sid = world.active_session["A1"]
    refused(db, world, who, APPEND, (sid, Jsonb([seg(50)])), sqlstate="42501")
    # Not even a pure replay of segments they may read is answered.
    refused(db, world, who, APPEND, (sid, Jsonb([seg(0, "segment 0")])), sqlstate="42501")


def test_a_session_that_does_not_exist(shared_world_db: WorldDb) -> None:
    """An end user cannot tell a missing session from another company's one (42501 both);
    service_role, which may write every session, is told it does not exist (P0002)."""
    db, world = shared_world_db
    missing = uuid.uuid4()
    b1 = refused(db, world, "B1", APPEND, (missing, Jsonb([seg(1)])), sqlstate="42501")
    other = refused(
        db, world, "B1", APPEND, (world.active_session["A1"], Jsonb([seg(1)])), sqlstate="42501"
    )
    assert str(b1).replace(str(missing), "X") == str(other).replace(
        str(world.active_session["A1"]), "X"
    )
    refused(db, world, "service_role", APPEND, (missing, Jsonb([seg(1)])), sqlstate="P0002")


def test_anon_cannot_call_it(shared_world_db: WorldDb) -> None:
    db, world = shared_world_db
    refused(
        db, world, "anon", APPEND, (world.active_session["A1"], Jsonb([seg(1)])), sqlstate="42501"
    )


def test_after_completion_a_replay_is_a_no_op_and_a_new_seq_is_refused(world_db: WorldDb) -> None:
    db, world = world_db
    sid = new_session(db, world)
    batch = [seg(n) for n in range(5)]
    assert append(db, world, "A1", sid, batch) == {"inserted": 5, "duplicates": 0}
    complete(db, world, "A1", sid)
    before = fingerprint(db)
    # The pipeline's retry of its last batch arrives after the call ended: not an error.
    assert append(db, world, "A1", sid, list(reversed(batch))) == {
        "inserted": 0,
        "duplicates": 5,
    }
    assert append(db, world, "service_role", sid, batch[:2]) == {"inserted": 0, "duplicates": 2}
    assert fingerprint(db) == before
    # A genuinely new segment is refused, alone or mixed with replays, and nothing is written.
    refused(db, world, "A1", APPEND, (sid, Jsonb([seg(5)])), sqlstate="VS002")
    refused(db, world, "A1", APPEND, (sid, Jsonb([*batch, seg(6)])), sqlstate="VS002")
    refused(db, world, "service_role", APPEND, (sid, Jsonb([seg(7)])), sqlstate="VS002")


def test_appending_does_not_read_the_sessions_stored_segments(world_db: WorldDb) -> None:
    """Cost must not grow with the session's length: with 20,000 segments stored, a batch of
    50 new and 50 replayed segments makes no sequential scan and reads a few index entries
    per segment, not the session's segments."""
    db, world = world_db
    sid = new_session(db, world)
    with owner_conn(db) as conn:
        conn.execute(
            "insert into public.transcript_segments (session_id, seq, speaker, text, start_ms,"
            " end_ms) select %s, g, 'trainee', 'stored words', g * 1000, g * 1000 + 900"
            " from generate_series(0, 19999) g",
            (sid,),
        )
        conn.execute("analyze public.transcript_segments")
    batch = [seg(n) for n in range(19_950, 20_050)]  # 50 stored, 50 new
    with request(db, world.identity("A1")) as conn:
        result = conn.execute(APPEND, (sid, Jsonb(batch))).fetchone()
        assert result is not None
        assert result["r"] == {"inserted": 50, "duplicates": 50}
        stats = conn.execute(
            "select pg_stat_get_xact_numscans('public.transcript_segments'::regclass) as seq_scans,"
            " (select sum(pg_stat_get_xact_tuples_returned(i.indexrelid)) from pg_index i"
            "  where i.indrelid = 'public.transcript_segments'::regclass) as index_entries"
        ).fetchone()
    assert stats is not None
    assert stats["seq_scans"] == 0
    assert stats["index_entries"] <= 200, stats  # ~1 per probe; the session holds 20,000


# -- concurrency ----------------------------------------------------------------------------


def _deliver(
    api: Api,
    rng: random.Random,
    jobs: list[tuple[Identity, uuid.UUID, list[dict[str, Any]]]],
) -> tuple[int, int]:
    """Send every job's segments twice, shuffled, in batches of 1..40, sessions interleaved."""
    calls = []
    for identity, sid, segments in jobs:
        deliveries = segments * 2
        rng.shuffle(deliveries)
        i = 0
        while i < len(deliveries):
            size = rng.randint(1, 40)
            calls.append((identity, sid, deliveries[i : i + size]))
            i += size
    rng.shuffle(calls)
    inserted = duplicates = 0
    for identity, sid, batch in calls:
        result = api.run(identity, APPEND, (sid, Jsonb(batch)), commit=True).rows[0]["r"]
        inserted += result["inserted"]
        duplicates += result["duplicates"]
    return inserted, duplicates


def _writers(
    db: Database, jobs: list[tuple[Identity, uuid.UUID, list[dict[str, Any]]]], writers: int
) -> tuple[int, int]:
    barrier = threading.Barrier(writers)

    def writer(n: int) -> tuple[int, int]:
        with db.api() as api:
            barrier.wait(30)
            return _deliver(api, random.Random(n), list(jobs))

    with ThreadPoolExecutor(writers) as pool:
        results = list(pool.map(writer, range(writers)))
    return sum(r[0] for r in results), sum(r[1] for r in results)


def _final_segments(count: int, rng: random.Random) -> list[dict[str, Any]]:
    starts = rng.sample(range(0, count * 5000, 1000), count)
    return [seg(n, f"final words {n}", start_ms=starts[n], confidence=0.9) for n in range(count)]


def test_16_writers_on_one_session_store_every_segment_once(world_db: WorldDb) -> None:
    db, world = world_db
    sid = new_session(db, world)
    segments = _final_segments(200, random.Random(1))
    inserted, duplicates = _writers(db, [(world.identity("A1"), sid, segments)], writers=16)
    assert (inserted, duplicates) == (200, 16 * 2 * 200 - 200)
    stored = stored_segments(db, sid)
    expected = sorted(segments, key=_audio_order)
    assert [(s["seq"], s["text"]) for s in stored] == [(s["seq"], s["text"]) for s in expected]


def test_16_writers_on_16_sessions_store_every_segment_once(world_db: WorldDb) -> None:
    db, world = world_db
    owners = ["A1", "A2", "B1"]
    rng = random.Random(2)
    jobs = []
    for n in range(16):
        who = owners[n % len(owners)]
        jobs.append((world.identity(who), new_session(db, world, who), _final_segments(40, rng)))
    inserted, duplicates = _writers(db, jobs, writers=16)
    assert (inserted, duplicates) == (16 * 40, 16 * 16 * 2 * 40 - 16 * 40)
    for _, sid, segments in jobs:
        stored = stored_segments(db, sid)
        expected = sorted(segments, key=_audio_order)
        assert [(s["seq"], s["text"]) for s in stored] == [(s["seq"], s["text"]) for s in expected]


def test_completion_waits_for_an_append_in_flight_and_includes_it(world_db: WorldDb) -> None:
    db, world = world_db
    sid = new_session(db, world)
    assert append(db, world, "A1", sid, [seg(0, "hello")])["inserted"] == 1
    with request(db, world.identity("A1")) as appending:
        appending.execute(APPEND, (sid, Jsonb([seg(1, "still talking")])))
        completing = Background(
            db,
            world.identity("A1"),
            lambda conn: (
                conn.execute(
                    "update sessions set status = 'completed' where id = %s", (sid,)
                ).rowcount
            ),
        )
        assert completing.pid is not None
        wait_until_blocked(db, completing.pid)
        appending.commit()
    assert completing.join() == 1
    transcript = rows(db, "select content from public.transcripts where session_id = %s", (sid,))
    assert transcript == [{"content": "trainee: hello\nbuyer: still talking"}]


def test_an_append_during_completion_waits_then_is_refused(world_db: WorldDb) -> None:
    db, world = world_db
    sid = new_session(db, world)
    assert append(db, world, "A1", sid, [seg(0, "hello")])["inserted"] == 1
    with request(db, world.identity("A1")) as completing:
        completing.execute("update sessions set status = 'completed' where id = %s", (sid,))
        # A replay needs no lock: answered at once, while the completion is still open.
        replay = append(db, world, "A1", sid, [seg(0, "hello")])
        assert replay == {"inserted": 0, "duplicates": 1}
        late = Background(
            db,
            world.identity("A1"),
            lambda conn: conn.execute(APPEND, (sid, Jsonb([seg(1, "too late")]))).fetchone(),
        )
        assert late.pid is not None
        wait_until_blocked(db, late.pid)
        completing.commit()
    with pytest.raises(psycopg.Error) as excinfo:
        late.join()
    assert excinfo.value.sqlstate == "VS002"
    assert [s["seq"] for s in stored_segments(db, sid)] == [0]
    transcript = rows(db, "select content from public.transcripts where session_id = %s", (sid,))
    assert transcript == [{"content": "trainee: hello"}]


def test_the_session_is_held_open_before_its_status_is_checked(world_db: WorldDb) -> None:
    """Row triggers fire in name order: the shared lock must be taken before
    inherit_session_owner reads the session's status, or a completion could slip between."""
    db, _ = world_db
    names = [
        r["tgname"]
        for r in rows(
            db,
            "select tgname from pg_trigger where tgrelid = 'public.transcript_segments'::regclass"
            " and not tgisinternal and tgtype & 2 = 2 and tgtype & 4 = 4 order by tgname",
        )
    ]  # BEFORE (2) INSERT (4) row triggers
    assert names == [
        "transcript_segments_hold_session_open",
        "transcript_segments_inherit_session_owner",
    ]


# -- update_audio_metrics ------------------------------------------------------------------


def metrics(db: Database, world: World, who: str, sid: uuid.UUID, values: Any) -> Any:
    return call(db, world, who, METRICS, (sid, Jsonb(values))).rows[0]["r"]


def audio_quality(db: Database, sid: uuid.UUID) -> Any:
    return rows(db, "select audio_quality from public.sessions where id = %s", (sid,))[0][
        "audio_quality"
    ]


def test_metrics_are_merged_and_returned(world_db: WorldDb) -> None:
    db, world = world_db
    sid = world.active_session["A1"]
    assert metrics(db, world, "A1", sid, {"rms_dbfs": -21.5}) == {"rms_dbfs": -21.5}
    merged = metrics(db, world, "A1", sid, {"snr_db": 31, "levels": {"peak": -1}})
    assert merged == {"rms_dbfs": -21.5, "snr_db": 31, "levels": {"peak": -1}}
    # Shallow: a key is replaced as a whole; null is stored as null.
    merged = metrics(db, world, "service_role", sid, {"levels": {"rms": -20}, "snr_db": None})
    assert merged == {"rms_dbfs": -21.5, "snr_db": None, "levels": {"rms": -20}}
    assert audio_quality(db, sid) == merged
    # An empty object changes nothing and returns the current metrics.
    assert metrics(db, world, "A1", sid, {}) == merged


def test_metrics_of_a_completed_session_can_still_be_updated(world_db: WorldDb) -> None:
    db, world = world_db
    sid = world.completed_session["B1"]
    assert metrics(db, world, "B1", sid, {"duration_s": 61.2}) == {"duration_s": 61.2}


def test_concurrent_metric_updates_of_different_keys_both_survive(world_db: WorldDb) -> None:
    db, world = world_db
    sid = world.active_session["A1"]
    with request(db, world.identity("A1")) as first:
        held = first.execute(METRICS, (sid, Jsonb({"rms_dbfs": -20.0}))).fetchone()
        assert held is not None
        assert held["r"] == {"rms_dbfs": -20.0}
        second = Background(
            db,
            world.identity("service_role"),
            lambda conn: conn.execute(METRICS, (sid, Jsonb({"snr_db": 30.0}))).fetchone(),
        )
        assert second.pid is not None
        wait_until_blocked(db, second.pid)  # it waits for the first one's row lock
        first.commit()
    assert second.join()["r"] == {"rms_dbfs": -20.0, "snr_db": 30.0}
    assert audio_quality(db, sid) == {"rms_dbfs": -20.0, "snr_db": 30.0}


def test_many_concurrent_metric_updates_keep_every_key(world_db: WorldDb) -> None:
    db, world = world_db
    sid = world.active_session["A2"]
    barrier = threading.Barrier(8)

    def writer(n: int) -> None:
        with db.api() as api:
            barrier.wait(30)
            for i in range(10):
                api.run(world.identity("A2"), METRICS, (sid, Jsonb({f"k{n}_{i}": i})), commit=True)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(writer, range(8)))
    assert audio_quality(db, sid) == {f"k{n}_{i}": i for n in range(8) for i in range(10)}


@pytest.mark.parametrize(
    "value", [[1, 2], "loud", 3, None], ids=["array", "string", "number", "null"]
)
def test_metrics_must_be_an_object(shared_world_db: WorldDb, value: Any) -> None:
    db, world = shared_world_db
    param = None if value is None else Jsonb(value)
    exc = refused(db, world, "A1", METRICS, (world.active_session["A1"], param), "22023")
    assert "metrics must be a JSON object" in str(exc)


@pytest.mark.parametrize("who", ["B1", "A2"])
def test_metrics_of_an_invisible_session_are_not_found(shared_world_db: WorldDb, who: str) -> None:
    db, world = shared_world_db
    exc = refused(
        db, world, who, METRICS, (world.active_session["A1"], Jsonb({"x": 1})), sqlstate="P0002"
    )
    assert "not found" in str(exc)
    refused(db, world, "A1", METRICS, (uuid.uuid4(), Jsonb({"x": 1})), sqlstate="P0002")
    refused(db, world, "service_role", METRICS, (uuid.uuid4(), Jsonb({"x": 1})), "P0002")


@pytest.mark.parametrize("who", ["MA", "AA"])
def test_a_reader_who_cannot_write_gets_permission_denied(
    shared_world_db: WorldDb, who: str
) -> None:
    """A manager or admin sees the session but may not change it: 42501, not P0002 (the
    session is there for them; "not found" would be untrue)."""
    db, world = shared_world_db
    exc = refused(
        db, world, who, METRICS, (world.active_session["A1"], Jsonb({"x": 1})), sqlstate="42501"
    )
    assert "only the owner" in str(exc)


def test_anon_cannot_update_metrics(shared_world_db: WorldDb) -> None:
    db, world = shared_world_db
    refused(db, world, "anon", METRICS, (world.active_session["A1"], Jsonb({"x": 1})), "42501")


# -- transcript assembly on completion -------------------------------------------------------


def transcript_of(db: Database, sid: uuid.UUID) -> list[dict[str, Any]]:
    return rows(
        db,
        "select session_id, profile_id, company_id, content, structured_content, language,"
        " word_count, confidence, is_anonymized from public.transcripts where session_id = %s",
        (sid,),
    )


def test_completing_assembles_the_transcript(world_db: WorldDb) -> None:
    db, world = world_db
    sid = new_session(db, world, metadata={"language": "de"})
    append(
        db,
        world,
        "A1",
        sid,
        [
            seg(
                2, "Wir verkaufen Versicherungen", speaker="trainee", start_ms=5000, confidence=0.8
            ),
            seg(0, "Guten  Tag,\tich  bin\nAlex", speaker="buyer", start_ms=0, confidence=0.9),
            seg(1, "", speaker="trainee", start_ms=3000),  # no confidence, no words
            seg(3, "an kleine Unternehmen", speaker="trainee", start_ms=5000, confidence=0.95),
        ],
    )
    assert transcript_of(db, sid) == []  # nothing while the call is live
    complete(db, world, "A1", sid)  # the trainee: no privilege on transcripts of their own
    [t] = transcript_of(db, sid)
    assert t["content"] == (
        "buyer: Guten  Tag,\tich  bin\nAlex\n"
        "trainee: \n"
        "trainee: Wir verkaufen Versicherungen\n"
        "trainee: an kleine Unternehmen"
    )
    assert [s["seq"] for s in t["structured_content"]] == [0, 1, 2, 3]  # (start_ms, seq)
    assert t["structured_content"][0] == {
        "seq": 0,
        "speaker": "buyer",
        "text": "Guten  Tag,\tich  bin\nAlex",
        "start_ms": 0,
        "end_ms": 800,
        "confidence": 0.9,
    }
    assert t["structured_content"][1]["confidence"] is None
    assert t["word_count"] == 5 + 0 + 3 + 3
    assert float(t["confidence"]) == pytest.approx((0.8 + 0.9 + 0.95) / 3, abs=1e-4)
    assert t["language"] == "de"
    assert (t["profile_id"], t["company_id"]) == (world.person("A1").id, world.companies["A"])
    assert t["is_anonymized"] is False
    # The search vector uses the language: German stemming finds "Versicherung".
    found = rows(
        db,
        "select search_vector @@ to_tsquery('german', 'Versicherung') as hit"
        " from public.transcripts where session_id = %s",
        (sid,),
    )
    assert found == [{"hit": True}]
    hits = call(
        db, world, "MA", "select session_id from search_transcripts('Versicherung')", ()
    ).rows
    assert [h["session_id"] for h in hits] == [sid]


@pytest.mark.parametrize(
    ("metadata", "language"),
    [
        ({}, "en"),
        ({"language": "pt-BR"}, "pt-BR"),
        ({"language": "english please"}, "en"),
        ({"language": 7}, "en"),
        ({"language": ""}, "en"),
    ],
)
def test_transcript_language_comes_from_the_session_metadata(
    world_db: WorldDb, metadata: dict[str, Any], language: str
) -> None:
    db, world = world_db
    sid = new_session(db, world, metadata=metadata)
    append(db, world, "A1", sid, [seg(0, "hello")])
    complete(db, world, "A1", sid)
    assert [t["language"] for t in transcript_of(db, sid)] == [language]


def test_without_confidences_the_transcript_confidence_is_null(world_db: WorldDb) -> None:
    db, world = world_db
    sid = new_session(db, world)
    append(db, world, "A1", sid, [seg(0, "one two"), seg(1, "three")])
    complete(db, world, "A1", sid)
    [t] = transcript_of(db, sid)
    assert (t["word_count"], t["confidence"]) == (3, None)


def test_assembly_is_part_of_the_completing_transaction(world_db: WorldDb) -> None:
    db, world = world_db
    sid = new_session(db, world)
    append(db, world, "A1", sid, [seg(0, "hello there")])
    with request(db, world.identity("A1")) as conn:
        conn.execute("update sessions set status = 'completed' where id = %s", (sid,))
        seen = conn.execute(
            "select content, word_count from transcripts where session_id = %s", (sid,)
        ).fetchall()
        assert seen == [{"content": "trainee: hello there", "word_count": 2}]
        conn.rollback()
    assert transcript_of(db, sid) == []
    assert rows(db, "select status::text from public.sessions where id = %s", (sid,)) == [
        {"status": "active"}
    ]


def test_a_session_completed_without_segments_gets_no_transcript(world_db: WorldDb) -> None:
    db, world = world_db
    sid = new_session(db, world)
    complete(db, world, "A1", sid)
    assert transcript_of(db, sid) == []


def test_only_active_to_completed_assembles(world_db: WorldDb) -> None:
    """Later transitions leave the transcript alone (e.g. one written by a batch job)."""
    db, world = world_db
    sid = world.completed_session["A1"]
    before = transcript_of(db, sid)
    assert before[0]["content"] == "hello there, how can I help"
    call(db, world, "A1", "update sessions set status = 'archived' where id = %s", (sid,))
    assert transcript_of(db, sid) == before


def test_an_existing_transcript_is_rebuilt_unless_anonymized(world_db: WorldDb) -> None:
    db, world = world_db
    rebuilt = new_session(db, world)
    kept = new_session(db, world)
    for sid in (rebuilt, kept):
        append(db, world, "A1", sid, [seg(0, "the real words")])
    with owner_conn(db) as conn:
        conn.execute(
            "insert into public.transcripts (session_id, content, word_count) values"
            " (%s, 'an early draft', 3), (%s, '[redacted]', 1)",
            (rebuilt, kept),
        )
        conn.execute(
            "update public.transcripts set is_anonymized = true, anonymized_at = now()"
            " where session_id = %s",
            (kept,),
        )
    complete(db, world, "A1", rebuilt)
    complete(db, world, "A1", kept)
    assert [(t["content"], t["word_count"]) for t in transcript_of(db, rebuilt)] == [
        ("trainee: the real words", 3)
    ]
    assert [(t["content"], t["is_anonymized"]) for t in transcript_of(db, kept)] == [
        ("[redacted]", True)
    ]


# -- broadcast_session_event --------------------------------------------------------------


@pytest.fixture
def listener(world_db: WorldDb) -> Iterator[psycopg.Connection[Any]]:
    """A separate connection LISTENing on the events channel (as a server process would)."""
    db, _ = world_db
    conn = psycopg.connect(db.dsn, autocommit=True)
    conn.execute(f"listen {CHANNEL}")
    try:
        yield conn
    finally:
        conn.close()


def received(conn: psycopg.Connection[Any], count: int = 0) -> list[str]:
    """The next ``count`` notifications (waiting up to 5 s for them), and a short wait that
    must bring no more."""
    got = [n.payload for n in conn.notifies(timeout=5, stop_after=count)] if count else []
    assert len(got) == count, got
    extra = [n.payload for n in conn.notifies(timeout=0.3)]
    assert extra == [], "more notifications than expected"
    return got


def broadcast(
    db: Database, world: World, who: str, sid: uuid.UUID, event: str, payload: Any
) -> None:
    call(db, world, who, BROADCAST, (sid, event, Jsonb(payload)))


@pytest.mark.parametrize("who", ["A1", "MA", "AA", "service_role"])
def test_readers_of_the_session_can_broadcast(
    world_db: WorldDb, listener: psycopg.Connection[Any], who: str
) -> None:
    db, world = world_db
    sid = world.active_session["A1"]
    payload = {"final": [seg(3)], "interim": [], "note": "ünïcode ✓"}
    broadcast(db, world, who, sid, "transcript", payload)
    [raw] = received(listener, 1)
    message = opened(events_key(db.dsn), raw)
    assert set(message) == {"id", "at_ms", "session_id", "event", "payload"}
    assert uuid.UUID(message["id"])
    assert (message["session_id"], message["event"], message["payload"]) == (
        str(sid),
        "transcript",
        payload,
    )


def test_every_event_gets_its_own_notification(
    world_db: WorldDb, listener: psycopg.Connection[Any]
) -> None:
    """Two equal events in one transaction are two notifications (NOTIFY would merge equal
    payloads): each carries its own id."""
    db, world = world_db
    sid = world.active_session["A1"]
    call(
        db,
        world,
        "A1",
        f"{BROADCAST}, ({BROADCAST})",
        (sid, "status", Jsonb({"status": "active"}), sid, "status", Jsonb({"status": "active"})),
    )
    key = events_key(db.dsn)
    messages = [opened(key, raw) for raw in received(listener, 2)]
    assert len(messages) == 2
    assert len({m["id"] for m in messages}) == 2


def test_nothing_is_sent_when_the_transaction_rolls_back(
    world_db: WorldDb, listener: psycopg.Connection[Any]
) -> None:
    db, world = world_db
    call(
        db,
        world,
        "A1",
        BROADCAST,
        (world.active_session["A1"], "status", Jsonb({"x": 1})),
        commit=False,
    )
    assert received(listener) == []


def _envelope_size(db: Database, sid: uuid.UUID, event: str, payload: Any) -> int:
    return int(
        rows(
            db,
            "select octet_length(jsonb_build_object('id', gen_random_uuid(), 'at_ms',"
            " (extract(epoch from clock_timestamp()) * 1000)::bigint, 'session_id',"
            " %s::uuid, 'event', %s::text, 'payload', %s::jsonb)::text) as n",
            (sid, event, Jsonb(payload)),
        )[0]["n"]
    )


def test_the_largest_notification_that_fits_is_sent_whole_and_the_next_by_reference(
    world_db: WorldDb, listener: psycopg.Connection[Any]
) -> None:
    db, world = world_db
    sid = world.active_session["A1"]
    limit = NOTIFY_LIMIT - NOTIFY_HEADER_BYTES  # the body after the signed prefix
    base = _envelope_size(db, sid, "transcript", {"text": ""})
    fits = {"text": "x" * (limit - 1 - base)}
    assert _envelope_size(db, sid, "transcript", fits) == limit - 1
    broadcast(db, world, "A1", sid, "transcript", fits)
    too_big = {"text": "x" * (limit - base)}
    broadcast(db, world, "A1", sid, "transcript", too_big)
    whole, by_reference = received(listener, 2)
    assert len(whole.encode()) == NOTIFY_LIMIT - 1
    key = events_key(db.dsn)
    assert opened(key, whole)["payload"] == fits
    reference = opened(key, by_reference)
    assert set(reference) == {"id", "at_ms", "session_id", "event", "ref", "bytes"}
    assert (reference["session_id"], reference["event"], reference["ref"]) == (
        str(sid),
        "transcript",
        True,
    )
    assert reference["bytes"] == len(json.dumps(too_big, separators=(", ", ": ")).encode())


def test_a_big_payload_arrives_as_a_reference_never_truncated(
    world_db: WorldDb, listener: psycopg.Connection[Any]
) -> None:
    db, world = world_db
    sid = world.active_session["A1"]
    payload = {"final": [seg(n, "ü" * 400) for n in range(100)]}  # ~80 KB
    broadcast(db, world, "service_role", sid, "transcript", payload)
    [raw] = received(listener, 1)
    message = opened(events_key(db.dsn), raw)
    assert message["ref"] is True
    assert "payload" not in message
    assert message["bytes"] > 80_000


@pytest.mark.parametrize("who", ["B1", "A2"])
def test_a_non_reader_cannot_broadcast_and_nothing_is_sent(
    world_db: WorldDb, listener: psycopg.Connection[Any], who: str
) -> None:
    db, world = world_db
    exc = refused(
        db,
        world,
        who,
        BROADCAST,
        (world.active_session["A1"], "status", Jsonb({"forged": True})),
        sqlstate="P0002",
    )
    assert "not found" in str(exc)
    refused(db, world, "A1", BROADCAST, (uuid.uuid4(), "status", Jsonb({})), "P0002")
    refused(db, world, "anon", BROADCAST, (world.active_session["A1"], "x", Jsonb({})), "42501")
    assert received(listener) == []


@pytest.mark.parametrize(
    ("event", "payload", "message"),
    [
        ("", {}, "event must be a name"),
        (None, {}, "event must be a name"),
        ("two words", {}, "event must be a name"),
        ("e" * 101, {}, "event must be a name"),
        ("status", [1], "payload must be a JSON object"),
        ("status", None, "payload must be a JSON object"),
    ],
)
def test_broadcast_arguments_are_checked(
    shared_world_db: WorldDb, event: str | None, payload: Any, message: str
) -> None:
    db, world = shared_world_db
    param = None if payload is None else Jsonb(payload)
    exc = refused(db, world, "A1", BROADCAST, (world.active_session["A1"], event, param), "22023")
    assert message in str(exc)


def test_plain_postgres_has_no_realtime_and_no_realtime_policy(world_db: WorldDb) -> None:
    db, _ = world_db
    assert rows(
        db,
        "select to_regclass('realtime.messages') as messages,"
        " to_regprocedure('realtime.send(jsonb, text, text, boolean)') as send",
    ) == [{"messages": None, "send": None}]


# -- on Supabase: Realtime Broadcast and its authorization -----------------------------------

# The parts of Supabase Realtime's schema the migration relies on: tests/support/supabase.py.


@pytest.fixture
def realtime_world(template_db: Database) -> Iterator[WorldDb]:
    """A new database with Supabase Realtime's objects created *before* the migrations run
    (as on Supabase), migrated, holding the two-company world."""
    yield from supabase_world(template_db)


def test_on_supabase_broadcast_goes_to_realtime_on_a_private_session_topic(
    realtime_world: WorldDb,
) -> None:
    db, world = realtime_world
    sid = world.active_session["A1"]
    assert (
        rows(
            db,
            "select has_function_privilege('authenticated', 'realtime.send(jsonb,"
            " text, text, boolean)', 'execute') as can",
        )[0]["can"]
        is False
    )
    broadcast(db, world, "A1", sid, "transcript", {"final": [seg(4)]})
    broadcast(db, world, "MA", sid, "status", {"status": "active"})
    sent = rows(
        db,
        "select topic, extension, event, payload, private from realtime.messages"
        " order by inserted_at, event desc",
    )
    assert sent == [
        {
            "topic": f"session:{sid}",
            "extension": "broadcast",
            "event": "transcript",
            "payload": {"final": [seg(4)]},
            "private": True,
        },
        {
            "topic": f"session:{sid}",
            "extension": "broadcast",
            "event": "status",
            "payload": {"status": "active"},
            "private": True,
        },
    ]
    refused(db, world, "B1", BROADCAST, (sid, "status", Jsonb({"forged": 1})), "P0002")
    assert len(rows(db, "select 1 from realtime.messages")) == 2


def _can_receive(db: Database, world: World, who: str, topic: str) -> int:
    """What Realtime's join check sees for ``who`` on a private channel ``topic``: the
    broadcast messages of that topic visible under RLS with realtime.topic() set."""
    with request(db, world.identity(who)) as conn:
        conn.execute("select set_config('realtime.topic', %s, true)", (topic,))
        row = conn.execute(
            "select count(*) as n from realtime.messages m where m.topic = %s", (topic,)
        ).fetchone()
    assert row is not None
    return int(row["n"])


def test_on_supabase_only_readers_of_the_session_receive_its_broadcasts(
    realtime_world: WorldDb,
) -> None:
    db, world = realtime_world
    a1 = world.active_session["A1"]
    b1 = world.active_session["B1"]
    broadcast(db, world, "A1", a1, "status", {"status": "active"})
    broadcast(db, world, "B1", b1, "status", {"status": "active"})
    policies = rows(
        db,
        "select policyname, cmd, roles::text[] as roles from pg_policies"
        " where schemaname = 'realtime' and tablename = 'messages'",
    )
    assert policies == [
        {
            "policyname": "Session readers can receive session broadcasts",
            "cmd": "SELECT",
            "roles": ["authenticated"],
        }
    ]
    topic = f"session:{a1}"
    seen = {who: _can_receive(db, world, who, topic) for who in ("A1", "MA", "AA", "A2", "B1")}
    assert seen == {"A1": 1, "MA": 1, "AA": 1, "A2": 0, "B1": 0}
    assert _can_receive(db, world, "B1", f"session:{b1}") == 1
    # Topics that are not a session's never authorize anything, and never fail.
    for odd in ("session:not-a-uuid", f"other:{a1}", "session:", ""):
        assert _can_receive(db, world, "A1", odd) == 0
    assert _can_receive(db, world, "anon", topic) == 0
