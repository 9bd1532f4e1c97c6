"""transcript_segments partitioned by hash of session (20261128001400_partitioned_segments).

What the layout must keep and give: a database that already holds segments moves them
unchanged (every column, the ids, the identity continuing after them), the rules still hold
afterwards, a session's rows live in one partition and a query about one session reads only
that partition, and the partitions are out of the API's reach.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest
from psycopg.rows import TupleRow

from tests.conftest import Database
from tests.support.api import Api, Identity
from tests.support.privileges import scratch_database
from tests.support.world import seed_world
from voicesessions.local import migrations

Conn = psycopg.Connection[TupleRow]

PARTITIONING = "20261128001400"
ROWS = "select to_jsonb(t) - 'tableoid' from public.transcript_segments t order by id"


def _segments(conn: Conn, session: uuid.UUID, seqs: range) -> None:
    conn.execute(
        "insert into public.transcript_segments (session_id, seq, speaker, text, start_ms,"
        " end_ms, confidence, words, segment_id)"
        " select %s, g, 'trainee', 'said ' || g, g * 1000, g * 1000 + 900, 0.5,"
        " jsonb_build_array(jsonb_build_object('word', 'said', 'start_ms', g * 1000)),"
        " 'seg-' || g from generate_series(%s::int, %s::int) g",
        (session, seqs.start, seqs.stop - 1),
    )


@pytest.fixture(scope="module")
def upgraded(template_db: Database) -> Any:
    """A database migrated up to just before the partitioning, holding segments of several
    sessions (one of them completed since), then migrated to the end; with the rows as they
    were before."""
    with scratch_database(template_db) as conn:
        before = [m for m in migrations.load_migrations() if m.version < PARTITIONING]
        assert len(before) < len(migrations.load_migrations())
        migrations.migrate(conn, before)
        world = seed_world(conn)
        sessions = [world.active_session[k] for k in ("A1", "A2", "B1")]
        for i, session in enumerate(sessions):
            _segments(conn, session, range(100 * i + 10, 100 * i + 50))
        conn.execute(
            "update public.sessions set status = 'completed' where id = %s", (sessions[2],)
        )
        old_rows = [r[0] for r in conn.execute(ROWS).fetchall()]
        old_max = conn.execute("select max(id) from public.transcript_segments").fetchone()
        migrations.migrate(conn)
        yield conn, world, sessions, old_rows, old_max[0] if old_max else None


def test_existing_rows_move_unchanged(upgraded: Any) -> None:
    conn, _, _, old_rows, _ = upgraded
    assert len(old_rows) >= 120
    assert [r[0] for r in conn.execute(ROWS).fetchall()] == old_rows


def test_the_table_is_partitioned_by_session(upgraded: Any) -> None:
    conn, *_ = upgraded
    row = conn.execute(
        "select pg_get_partkeydef('public.transcript_segments'::regclass),"
        " (select count(*) from pg_inherits where inhparent"
        "  = 'public.transcript_segments'::regclass)"
    ).fetchone()
    assert row == ("HASH (session_id)", 16)


def test_a_session_lives_in_one_partition_and_is_read_from_it_alone(upgraded: Any) -> None:
    conn, _, sessions, _, _ = upgraded
    for session in sessions:
        holders = conn.execute(
            "select count(distinct tableoid) from public.transcript_segments where session_id = %s",
            (session,),
        ).fetchone()
        assert holders == (1,)
    plan = conn.execute(
        "explain (format json) select * from public.transcript_segments where session_id = %s",
        (sessions[0],),
    ).fetchone()
    assert plan is not None
    scanned = {
        node["Relation Name"] for node in _nodes(plan[0][0]["Plan"]) if "Relation Name" in node
    }
    assert len(scanned) == 1, scanned


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in _nodes(child))]


def test_new_rows_continue_the_ids_and_keep_the_rules(upgraded: Any, template_db: Database) -> None:
    conn, world, sessions, _, old_max = upgraded
    active, completed = sessions[0], sessions[2]
    a1 = world.person("A1")
    claims = {"sub": str(a1.id), "role": "authenticated", "aud": "authenticated"}
    with conn.transaction(force_rollback=True):
        conn.execute("select set_config('role', 'authenticated', true)")
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        result = conn.execute(
            "select public.append_transcript_segments(%s, %s::jsonb)",
            (
                active,
                json.dumps(
                    [
                        {
                            "seq": 0,
                            "speaker": "trainee",
                            "text": "again",
                            "start_ms": 0,
                            "end_ms": 1,
                        },
                        {
                            "seq": 5000,
                            "speaker": "trainee",
                            "text": "new",
                            "start_ms": 0,
                            "end_ms": 1,
                        },
                    ]
                ),
            ),
        ).fetchone()
        assert result == ({"inserted": 1, "duplicates": 1},)
        new_id = conn.execute(
            "select id from public.transcript_segments where session_id = %s and seq = 5000",
            (active,),
        ).fetchone()
        assert new_id is not None
        assert old_max is not None
        assert new_id[0] > old_max
    # A session that ended takes no new segment, also behind the partitioning.
    with conn.transaction(force_rollback=True), pytest.raises(psycopg.Error) as refused:
        conn.execute(
            "insert into public.transcript_segments (session_id, seq, speaker, text, start_ms,"
            " end_ms) values (%s, 9999, 'trainee', 'late', 0, 1)",
            (completed,),
        )
    assert refused.value.sqlstate == "VS002"


@pytest.mark.parametrize("who", ["anon", "A1", "service_role"])
def test_the_partitions_are_out_of_the_apis_reach(
    shared_world_db: tuple[Database, Any], who: str
) -> None:
    db, world = shared_world_db
    with Api(db.authenticator_dsn) as api:
        identity = world.identity(who) if who != "anon" else Identity.anon()
        for index in (0, 15):
            with pytest.raises(psycopg.Error) as refused:
                api.run(identity, f"select * from private.transcript_segments_p{index:02d}")
            assert refused.value.sqlstate == "42501"
