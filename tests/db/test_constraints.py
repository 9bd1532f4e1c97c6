"""Constraints, triggers and lifecycle rules of the schema.

Every refused write must fail with the SQLSTATE the migrations document *and* leave nothing
behind: each negative case snapshots every public table (row count and a hash of the rows)
plus ``auth.users`` before the attempt and compares afterwards. Writes that go through the
API run exactly as PostgREST runs them (tests/support/api.py) with ``commit=True``, so a write
that was wrongly accepted would persist and show up in the snapshot. Rules that apply to
everyone are also tried as the migration owner (a superuser here).

Each test gets its own clone of the two-company world (``world_db``).
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import TupleRow, dict_row

from tests.conftest import Database
from tests.support.api import Result
from tests.support.db import fingerprint, owner, scalar, unchanged
from tests.support.world import World

WorldDb = tuple[Database, World]
Params = Sequence[Any] | Mapping[str, Any]

STATUSES = ("active", "completed", "analyzed", "archived")
LEGAL_TRANSITIONS = frozenset(
    {
        ("active", "completed"),
        ("completed", "analyzed"),
        ("completed", "archived"),
        ("analyzed", "archived"),
    }
)
ILLEGAL_TRANSITIONS = sorted(
    (old, new)
    for old in STATUSES
    for new in STATUSES
    if old != new and (old, new) not in LEGAL_TRANSITIONS
)
# How the owner walks a new session to a given status along legal transitions.
PATH_TO = {
    "active": (),
    "completed": ("completed",),
    "analyzed": ("completed", "analyzed"),
    "archived": ("completed", "archived"),
}


# -- helpers ------------------------------------------------------------------------------


def api_run(
    db: Database, world: World, who: str, query: str, params: Params | None = None
) -> Result:
    """Run one committed request as ``who``."""
    with db.api() as api:
        return api.run(world.identity(who), query, params, commit=True)


def assert_refused(
    db: Database, world: World, who: str, query: str, params: Params | None, sqlstate: str
) -> psycopg.Error:
    """``who`` runs ``query`` as a committed API request: refused with ``sqlstate``, no trace."""
    with unchanged(db):
        with pytest.raises(psycopg.Error) as excinfo:
            api_run(db, world, who, query, params)
        assert excinfo.value.sqlstate == sqlstate, (
            f"{who}: expected {sqlstate}, got {excinfo.value.sqlstate}: {excinfo.value}"
        )
    return excinfo.value


def assert_owner_refused(
    db: Database, query: str, params: Params | None, sqlstate: str
) -> psycopg.Error:
    """The migration owner runs ``query`` (autocommit): refused with ``sqlstate``, no trace."""
    with unchanged(db):
        with owner(db) as conn, pytest.raises(psycopg.Error) as excinfo:
            conn.execute(query, params)
        assert excinfo.value.sqlstate == sqlstate, (
            f"owner: expected {sqlstate}, got {excinfo.value.sqlstate}: {excinfo.value}"
        )
    return excinfo.value


def new_session(
    db: Database,
    world: World,
    who: str = "A1",
    status: str = "active",
    started_ago: str = "10 minutes",
) -> uuid.UUID:
    """A session of ``who`` created by the owner and walked to ``status`` legally."""
    with owner(db) as conn:
        row = conn.execute(
            "insert into public.sessions (profile_id, title, started_at)"
            " values (%s, 'setup', now() - %s::interval) returning id",
            (world.person(who).id, started_ago),
        ).fetchone()
        assert row is not None
        session_id = row[0]
        for step in PATH_TO[status]:
            if step == "analyzed":
                add_analysis(conn, session_id)
            conn.execute("update public.sessions set status = %s where id = %s", (step, session_id))
    assert isinstance(session_id, uuid.UUID)
    assert (
        scalar(db, "select status::text from public.sessions where id = %s", (session_id,))
        == status
    )
    return session_id


def add_analysis(conn: psycopg.Connection[Any], session_id: uuid.UUID) -> None:
    """An analysis of the session, as a backend records it: `analyzed` needs one."""
    conn.execute(
        "insert into public.analysis_results (session_id, provider, analysis_type, results)"
        " values (%s, 'test', 'overall', '{}')",
        (session_id,),
    )


def session_row(db: Database, session_id: uuid.UUID) -> dict[str, Any]:
    with psycopg.connect(db.dsn, autocommit=True, row_factory=dict_row) as conn:
        row = conn.execute("select * from public.sessions where id = %s", (session_id,)).fetchone()
    assert row is not None
    return dict(row)


# -- session lifecycle --------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new"), sorted(LEGAL_TRANSITIONS))
def test_legal_transition_succeeds(world_db: WorldDb, old: str, new: str) -> None:
    db, world = world_db
    session_id = new_session(db, world, status=old)
    if new == "analyzed":
        with owner(db) as conn:
            add_analysis(conn, session_id)
    result = api_run(
        db,
        world,
        "A1",
        "update sessions set status = %s where id = %s returning status::text",
        (new, session_id),
    )
    assert result.rowcount == 1
    assert result.rows == [{"status": new}]
    row = session_row(db, session_id)
    assert row["status"] == new
    assert row["ended_at"] is not None


@pytest.mark.parametrize(("old", "new"), ILLEGAL_TRANSITIONS)
def test_illegal_transition_is_refused_for_everyone(world_db: WorldDb, old: str, new: str) -> None:
    db, world = world_db
    session_id = new_session(db, world, status=old)
    query = "update sessions set status = %s where id = %s"
    for who in ("A1", "service_role"):
        exc = assert_refused(db, world, who, query, (new, session_id), "VS001")
        assert f"{old} -> {new}" in str(exc)
    assert_owner_refused(
        db, "update public.sessions set status = %s where id = %s", (new, session_id), "VS001"
    )
    assert session_row(db, session_id)["status"] == old


def test_every_pair_of_statuses_is_classified() -> None:
    assert len(ILLEGAL_TRANSITIONS) + len(LEGAL_TRANSITIONS) == len(STATUSES) * (len(STATUSES) - 1)


@pytest.mark.parametrize("status", STATUSES)
def test_same_status_update_is_allowed(world_db: WorldDb, status: str) -> None:
    db, world = world_db
    session_id = new_session(db, world, status=status)
    before = session_row(db, session_id)
    result = api_run(
        db, world, "A1", "update sessions set status = %s where id = %s", (status, session_id)
    )
    assert result.rowcount == 1
    after = session_row(db, session_id)
    assert after["status"] == status
    assert after["ended_at"] == before["ended_at"]
    assert after["updated_at"] > before["updated_at"]


@pytest.mark.parametrize("who", ["A1", "service_role"])
@pytest.mark.parametrize("status", ["analyzed", "archived"])
def test_new_session_cannot_start_past_completed(world_db: WorldDb, who: str, status: str) -> None:
    db, world = world_db
    assert_refused(
        db,
        world,
        who,
        "insert into sessions (profile_id, title, status) values (%s, 'skip ahead', %s)",
        (world.person("A1").id, status),
        "VS001",
    )


def test_new_session_inserted_analyzed_by_owner_is_refused(world_db: WorldDb) -> None:
    db, world = world_db
    assert_owner_refused(
        db,
        "insert into public.sessions (profile_id, title, status, ended_at)"
        " values (%s, 'skip ahead', 'analyzed', now())",
        (world.person("A1").id,),
        "VS001",
    )


def test_new_session_inserted_completed_gets_ended_at(world_db: WorldDb) -> None:
    db, world = world_db
    result = api_run(
        db,
        world,
        "A1",
        "insert into sessions (profile_id, title, status, started_at)"
        " values (%s, 'done already', 'completed', now() - interval '5 minutes')"
        " returning id, ended_at, duration_seconds, now() as now",
        (world.person("A1").id,),
    )
    row = result.rows[0]
    assert row["ended_at"] == row["now"]
    assert row["duration_seconds"] == 300


# -- completion, ended_at and duration --------------------------------------------------------


def test_completing_sets_ended_at_and_duration(world_db: WorldDb) -> None:
    db, world = world_db
    session_id = new_session(db, world, started_ago="90.7 seconds")
    assert session_row(db, session_id)["duration_seconds"] is None
    result = api_run(
        db,
        world,
        "A1",
        "update sessions set status = 'completed' where id = %s"
        " returning started_at, ended_at, duration_seconds, now() as now",
        (session_id,),
    )
    row = result.rows[0]
    assert row["ended_at"] == row["now"]  # stamped by the database, in this transaction
    elapsed = (row["ended_at"] - row["started_at"]).total_seconds()
    assert elapsed >= 90.7
    assert row["duration_seconds"] == math.floor(elapsed)
    stored = session_row(db, session_id)
    assert stored["ended_at"] == row["ended_at"]
    assert stored["duration_seconds"] == row["duration_seconds"]


@pytest.mark.parametrize(
    ("offset", "elapsed", "expected"),
    [
        ("90.999 seconds", timedelta(seconds=90.999), 90),
        ("0.5 seconds", timedelta(seconds=0.5), 0),
        ("0 seconds", timedelta(0), 0),
        ("1 hour 2 seconds", timedelta(hours=1, seconds=2), 3602),
        ("1 hour 30 minutes 0.25 seconds", timedelta(hours=1, minutes=30, seconds=0.25), 5400),
    ],
)
def test_duration_is_floor_of_whole_seconds(
    world_db: WorldDb, offset: str, elapsed: timedelta, expected: int
) -> None:
    db, world = world_db
    session_id = new_session(db, world, started_ago="2 hours")
    started = session_row(db, session_id)["started_at"]
    result = api_run(
        db,
        world,
        "A1",
        "update sessions set status = 'completed', ended_at = started_at + %s::interval"
        " where id = %s returning ended_at, duration_seconds",
        (offset, session_id),
    )
    row = result.rows[0]
    assert row["duration_seconds"] == expected
    # An ended_at given by the caller is kept, not replaced by now().
    assert row["ended_at"] - started == elapsed


@pytest.mark.parametrize(
    ("who", "query"),
    [
        ("A1", "update sessions set duration_seconds = 5 where id = %(active)s"),
        ("service_role", "update sessions set duration_seconds = 5 where id = %(completed)s"),
        (
            "A1",
            "insert into sessions (profile_id, title, duration_seconds) values (%(a1)s, 'x', 5)",
        ),
        ("owner", "update public.sessions set duration_seconds = 5 where id = %(completed)s"),
        (
            "owner",
            "insert into public.sessions (profile_id, title, duration_seconds)"
            " values (%(a1)s, 'x', 5)",
        ),
    ],
)
def test_duration_cannot_be_written(world_db: WorldDb, who: str, query: str) -> None:
    db, world = world_db
    params = {
        "active": world.active_session["A1"],
        "completed": world.completed_session["A1"],
        "a1": world.person("A1").id,
    }
    if who == "owner":
        assert_owner_refused(db, query, params, "428C9")
    else:
        assert_refused(db, world, who, query, params, "428C9")


def test_ended_at_before_started_at_is_refused(world_db: WorldDb) -> None:
    db, world = world_db
    session_id = new_session(db, world)
    assert_refused(
        db,
        world,
        "A1",
        "update sessions set status = 'completed', ended_at = started_at - interval '1 second'"
        " where id = %s",
        (session_id,),
        "23514",
    )
    assert_owner_refused(
        db,
        "insert into public.sessions (profile_id, title, status, started_at, ended_at)"
        " values (%s, 'backwards', 'completed', now(), now() - interval '1 minute')",
        (world.person("A1").id,),
        "23514",
    )
    assert session_row(db, session_id)["ended_at"] is None


def test_active_session_with_ended_at_is_refused(world_db: WorldDb) -> None:
    db, world = world_db
    session_id = world.active_session["A1"]
    exc = assert_refused(
        db,
        world,
        "A1",
        "update sessions set ended_at = now() where id = %s",
        (session_id,),
        "23514",
    )
    assert exc.diag.constraint_name == "sessions_active_has_no_end"
    assert_refused(
        db,
        world,
        "A1",
        "insert into sessions (profile_id, title, ended_at) values (%s, 'x', now())",
        (world.person("A1").id,),
        "23514",
    )


def test_ended_session_cannot_lose_its_end(world_db: WorldDb) -> None:
    db, world = world_db
    exc = assert_refused(
        db,
        world,
        "A1",
        "update sessions set ended_at = null where id = %s",
        (world.completed_session["A1"],),
        "42501",
    )
    assert "fixed since it ended" in str(exc)


# -- analytics ranges ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("overall_score", 101),
        ("overall_score", -1),
        ("opening_score", 101),
        ("questioning_score", -1),
        ("objection_handling_score", 101),
        ("closing_score", 101),
        ("talk_time_ratio", 1.5),
        ("talk_time_ratio", -0.1),
        ("sentiment_score", 1.5),
        ("sentiment_score", -1.5),
    ],
)
def test_analytics_out_of_range_is_refused(world_db: WorldDb, column: str, value: float) -> None:
    db, world = world_db
    session_id = world.completed_session["A1"]
    update = (
        sql.SQL("update session_analytics set {} = %s where session_id = %s")
        .format(sql.Identifier(column))
        .as_string(None)
    )
    assert_refused(db, world, "service_role", update, (value, session_id), "23514")
    insert = (
        sql.SQL("insert into session_analytics (session_id, {}) values (%s, %s)")
        .format(sql.Identifier(column))
        .as_string(None)
    )
    assert_refused(db, world, "service_role", insert, (world.active_session["A1"], value), "23514")


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("overall_score", 0),
        ("overall_score", 100),
        ("talk_time_ratio", 0),
        ("talk_time_ratio", 1),
        ("sentiment_score", -1),
        ("sentiment_score", 1),
    ],
)
def test_analytics_bounds_are_accepted(world_db: WorldDb, column: str, value: float) -> None:
    db, world = world_db
    session_id = world.completed_session["A1"]
    update = (
        sql.SQL("update session_analytics set {} = %s where session_id = %s")
        .format(sql.Identifier(column))
        .as_string(None)
    )
    assert api_run(db, world, "service_role", update, (value, session_id)).rowcount == 1
    stored = scalar(
        db,
        sql.SQL("select {} from public.session_analytics where session_id = %s")
        .format(sql.Identifier(column))
        .as_string(None),
        (session_id,),
    )
    assert stored == value


# -- ownership is always the database's ---------------------------------------------------


@pytest.mark.parametrize("who", ["A1", "service_role"])
def test_session_with_forged_company_is_refused(world_db: WorldDb, who: str) -> None:
    db, world = world_db
    sessions_before = scalar(db, "select count(*) from public.sessions")
    exc = assert_refused(
        db,
        world,
        who,
        "insert into sessions (profile_id, company_id, title) values (%s, %s, 'forged')",
        (world.person("A1").id, world.companies["B"]),
        "42501",
    )
    assert "company" in str(exc)
    assert scalar(db, "select count(*) from public.sessions") == sessions_before
    assert scalar(db, "select count(*) from public.sessions where title = 'forged'") == 0


@pytest.mark.parametrize("who", ["A1", "service_role"])
def test_session_company_is_filled_from_owner(world_db: WorldDb, who: str) -> None:
    db, world = world_db
    result = api_run(
        db,
        world,
        who,
        "insert into sessions (profile_id, title) values (%s, 'mine') returning id, company_id",
        (world.person("A1").id,),
    )
    row = result.rows[0]
    assert row["company_id"] == world.companies["A"]
    assert session_row(db, row["id"])["company_id"] == world.companies["A"]
    # Passing the right company explicitly is fine too.
    result = api_run(
        db,
        world,
        who,
        "insert into sessions (profile_id, company_id, title)"
        " values (%s, %s, 'explicit') returning company_id",
        (world.person("A1").id, world.companies["A"]),
    )
    assert result.rows == [{"company_id": world.companies["A"]}]


@pytest.mark.parametrize("who", ["A1", "service_role"])
@pytest.mark.parametrize(
    ("column", "forged_key"),
    [("company_id", "company:B"), ("profile_id", "person:A2"), ("profile_id", "person:B1")],
)
def test_segment_with_forged_owner_is_refused(
    world_db: WorldDb, who: str, column: str, forged_key: str
) -> None:
    db, world = world_db
    kind, key = forged_key.split(":")
    forged = world.companies[key] if kind == "company" else world.person(key).id
    query = (
        sql.SQL(
            "insert into transcript_segments (session_id, {}, seq, speaker, text, start_ms, end_ms)"
            " values (%s, %s, 50, 'trainee', 'forged', 0, 10)"
        )
        .format(sql.Identifier(column))
        .as_string(None)
    )
    assert_refused(db, world, who, query, (world.active_session["A1"], forged), "42501")


def test_segment_owner_is_filled_from_session(world_db: WorldDb) -> None:
    db, world = world_db
    result = api_run(
        db,
        world,
        "A1",
        "insert into transcript_segments (session_id, seq, speaker, text, start_ms, end_ms)"
        " values (%s, 50, 'trainee', 'fine', 0, 10) returning profile_id, company_id",
        (world.active_session["A1"],),
    )
    assert result.rows == [
        {"profile_id": world.person("A1").id, "company_id": world.companies["A"]}
    ]


@pytest.mark.parametrize("who", ["A1", "service_role", "owner"])
@pytest.mark.parametrize(("column", "target"), [("profile_id", "A2"), ("company_id", "B")])
def test_session_owner_and_company_never_change(
    world_db: WorldDb, who: str, column: str, target: str
) -> None:
    db, world = world_db
    value = world.person(target).id if column == "profile_id" else world.companies[target]
    session_id = world.active_session["A1"]
    if who == "owner":
        assert_owner_refused(
            db,
            sql.SQL("update public.sessions set {} = %s where id = %s")
            .format(sql.Identifier(column))
            .as_string(None),
            (value, session_id),
            "42501",
        )
    else:
        assert_refused(
            db,
            world,
            who,
            sql.SQL("update sessions set {} = %s where id = %s")
            .format(sql.Identifier(column))
            .as_string(None),
            (value, session_id),
            "42501",
        )


@pytest.mark.parametrize(
    "table", ["transcript_segments", "transcripts", "analysis_results", "session_analytics"]
)
@pytest.mark.parametrize("column", ["session_id", "profile_id", "company_id"])
def test_rows_hanging_off_a_session_never_change_owner(
    world_db: WorldDb, table: str, column: str
) -> None:
    db, world = world_db
    value = {
        "session_id": world.completed_session["B1"],
        "profile_id": world.person("B1").id,
        "company_id": world.companies["B"],
    }[column]
    own = (
        world.active_session["A1"]
        if table == "transcript_segments"
        else (world.completed_session["A1"])
    )
    query = (
        sql.SQL("update {} set {} = %s where session_id = %s")
        .format(sql.Identifier(table), sql.Identifier(column))
        .as_string(None)
    )
    assert_refused(db, world, "service_role", query, (value, own), "42501")


# -- transcript segments --------------------------------------------------------------------


def test_duplicate_segment_seq_is_refused(world_db: WorldDb) -> None:
    db, world = world_db
    exc = assert_refused(
        db,
        world,
        "A1",
        "insert into transcript_segments (session_id, seq, speaker, text, start_ms, end_ms)"
        " values (%s, 0, 'trainee', 'replayed', 0, 900)",
        (world.active_session["A1"],),
        "23505",
    )
    # The unique constraint, or (transcript_segments being partitioned) its index on the
    # partition the row went to.
    with owner(db) as conn:
        parent = conn.execute(
            "select coalesce((select p.inhparent::regclass::text from pg_inherits p"
            " join pg_class i on i.oid = p.inhrelid where i.relname = %s), %s)",
            (exc.diag.constraint_name, exc.diag.constraint_name),
        ).fetchone()
    assert parent is not None
    assert parent[0] in {
        "transcript_segments_session_seq_key",
        "public.transcript_segments_session_seq_key",
    }


def test_replayed_segment_on_conflict_is_a_no_op(world_db: WorldDb) -> None:
    db, world = world_db
    session_id = world.active_session["A1"]
    with unchanged(db):
        result = api_run(
            db,
            world,
            "A1",
            "insert into transcript_segments (session_id, seq, speaker, text, start_ms, end_ms)"
            " values (%s, 0, 'trainee', 'replayed', 0, 900)"
            " on conflict (session_id, seq) do nothing returning id",
            (session_id,),
        )
    assert result.rowcount == 0
    assert result.rows == []
    assert (
        scalar(
            db,
            "select text from public.transcript_segments where session_id = %s and seq = 0",
            (session_id,),
        )
        == "segment 0"
    )


@pytest.mark.parametrize("who", ["A1", "service_role"])
def test_segments_into_completed_session_are_refused(world_db: WorldDb, who: str) -> None:
    db, world = world_db
    assert_refused(
        db,
        world,
        who,
        "insert into transcript_segments (session_id, seq, speaker, text, start_ms, end_ms)"
        " values (%s, 0, 'trainee', 'too late', 0, 10)",
        (world.completed_session["A1"],),
        "VS002",
    )


def test_segment_ending_before_it_starts_is_refused(world_db: WorldDb) -> None:
    db, world = world_db
    exc = assert_refused(
        db,
        world,
        "A1",
        "insert into transcript_segments (session_id, seq, speaker, text, start_ms, end_ms)"
        " values (%s, 60, 'trainee', 'backwards', 1000, 999)",
        (world.active_session["A1"],),
        "23514",
    )
    assert exc.diag.constraint_name == "transcript_segments_end_after_start"


# -- profiles: roles and companies ---------------------------------------------------------


def profile_of(db: Database, world: World, key: str) -> tuple[str, uuid.UUID]:
    with owner(db) as conn:
        row = conn.execute(
            "select role::text, company_id from public.profiles where id = %s",
            (world.person(key).id,),
        ).fetchone()
    assert row is not None
    return str(row[0]), row[1]


@pytest.mark.parametrize("who", ["A1", "MA", "AA"])
def test_nobody_changes_their_own_role(world_db: WorldDb, who: str) -> None:
    db, world = world_db
    target = "trainee" if who != "A1" else "admin"
    exc = assert_refused(
        db,
        world,
        who,
        "update profiles set role = %s where id = %s",
        (target, world.person(who).id),
        "42501",
    )
    assert "own role" in str(exc)
    assert profile_of(db, world, who)[0] == world.person(who).role


@pytest.mark.parametrize("who", ["A1", "AA"])
def test_end_users_cannot_change_a_company_id(world_db: WorldDb, who: str) -> None:
    db, world = world_db
    assert_refused(
        db,
        world,
        who,
        "update profiles set company_id = %s where id = %s",
        (world.companies["B"], world.person("A1").id),
        "42501",
    )
    assert profile_of(db, world, "A1")[1] == world.companies["A"]


def test_admin_changes_another_members_role(world_db: WorldDb) -> None:
    db, world = world_db
    result = api_run(
        db,
        world,
        "AA",
        "update profiles set role = 'manager' where id = %s",
        (world.person("A1").id,),
    )
    assert result.rowcount == 1
    assert profile_of(db, world, "A1") == ("manager", world.companies["A"])


def test_admin_cannot_reach_another_companys_profiles(world_db: WorldDb) -> None:
    db, world = world_db
    with unchanged(db):
        result = api_run(
            db,
            world,
            "AA",
            "update profiles set role = 'admin' where id = %s",
            (world.person("B1").id,),
        )
    assert result.rowcount == 0


def test_manager_cannot_change_roles(world_db: WorldDb) -> None:
    db, world = world_db
    with unchanged(db):
        result = api_run(
            db,
            world,
            "MA",
            "update profiles set role = 'manager' where id = %s",
            (world.person("A1").id,),
        )
    assert result.rowcount == 0
    assert profile_of(db, world, "A1")[0] == "trainee"


def test_service_role_cannot_move_a_profile(world_db: WorldDb) -> None:
    db, world = world_db
    exc = assert_refused(
        db,
        world,
        "service_role",
        "update profiles set company_id = %s where id = %s",
        (world.companies["B"], world.person("A1").id),
        "42501",
    )
    assert "another company" in str(exc)
    assert_owner_refused(
        db,
        "update public.profiles set company_id = %s where id = %s",
        (world.companies["B"], world.person("A1").id),
        "42501",
    )


def test_service_role_may_change_roles(world_db: WorldDb) -> None:
    db, world = world_db
    result = api_run(
        db,
        world,
        "service_role",
        "update profiles set role = 'admin' where id = %s",
        (world.person("A1").id,),
    )
    assert result.rowcount == 1
    assert profile_of(db, world, "A1")[0] == "admin"


# -- audit log --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "update public.audit_log set action = 'rewritten'",
        "delete from public.audit_log",
        "truncate public.audit_log",
    ],
)
def test_audit_log_is_append_only_even_for_the_owner(world_db: WorldDb, query: str) -> None:
    db, _ = world_db
    assert scalar(db, "select count(*) from public.audit_log") > 0
    exc = assert_owner_refused(db, query, None, "42501")
    assert "append-only" in str(exc)


def test_audit_stores_a_subject_reference_not_the_id(world_db: WorldDb) -> None:
    db, world = world_db
    subject = world.person("A1").id
    with owner(db) as conn:
        row = conn.execute(
            "select private.audit('profile.erased', 'profile', null, %s, %s,"
            ' \'{"categories": ["sessions"]}\')',
            (world.companies["A"], subject),
        ).fetchone()
        assert row is not None
        entry = conn.execute(
            "select subject_ref, entity_id, actor_role, details::text, private.subject_ref(%s)"
            " from public.audit_log where id = %s",
            (subject, row[0]),
        ).fetchone()
    assert entry is not None
    subject_ref, entity_id, actor_role, details, expected_ref = entry
    assert re.fullmatch(r"[0-9a-f]{64}", subject_ref)
    assert subject_ref == expected_ref
    assert str(subject) not in subject_ref
    assert subject.hex not in subject_ref
    assert entity_id is None
    assert str(subject) not in details
    assert actor_role == "postgres"


def test_gdpr_request_completed_needs_completed_at(world_db: WorldDb) -> None:
    db, world = world_db
    exc = assert_owner_refused(
        db,
        "update public.gdpr_requests set status = 'completed' where company_id = %s",
        (world.companies["A"],),
        "23514",
    )
    assert exc.diag.constraint_name == "gdpr_requests_completed_when_done"


# -- participants ---------------------------------------------------------------------------


def test_coach_from_another_company_is_refused(world_db: WorldDb) -> None:
    db, world = world_db
    assert_refused(
        db,
        world,
        "A1",
        "insert into session_participants (session_id, profile_id, kind, speaker_label)"
        " values (%s, %s, 'coach', 'coach')",
        (world.active_session["A1"], world.person("B1").id),
        "42501",
    )


def test_same_company_coach_is_accepted(world_db: WorldDb) -> None:
    db, world = world_db
    result = api_run(
        db,
        world,
        "A1",
        "insert into session_participants (session_id, profile_id, kind, speaker_label)"
        " values (%s, %s, 'coach', 'coach')",
        (world.active_session["A1"], world.person("MA").id),
    )
    assert result.rowcount == 1


@pytest.mark.parametrize("who", ["A1", "service_role"])
def test_trainee_participant_must_be_the_owner(world_db: WorldDb, who: str) -> None:
    db, world = world_db
    assert_refused(
        db,
        world,
        who,
        "insert into session_participants (session_id, profile_id, kind, speaker_label)"
        " values (%s, %s, 'trainee', 'second_trainee')",
        (world.active_session["A1"], world.person("A2").id),
        "23514",
    )


def test_ai_buyer_with_a_profile_is_refused(world_db: WorldDb) -> None:
    db, world = world_db
    exc = assert_refused(
        db,
        world,
        "A1",
        "insert into session_participants (session_id, profile_id, kind, speaker_label)"
        " values (%s, %s, 'ai_buyer', 'buyer_2')",
        (world.active_session["A1"], world.person("A2").id),
        "23514",
    )
    assert exc.diag.constraint_name == "session_participants_profile_matches_kind"
    # And a human without a profile is refused by the same rule.
    assert_refused(
        db,
        world,
        "A1",
        "insert into session_participants (session_id, kind, speaker_label)"
        " values (%s, 'peer', 'nobody')",
        (world.active_session["A1"],),
        "23514",
    )


@pytest.mark.parametrize("who", ["A1", "service_role"])
def test_new_session_lists_its_owner_as_trainee(world_db: WorldDb, who: str) -> None:
    db, world = world_db
    result = api_run(
        db,
        world,
        who,
        "insert into sessions (profile_id, title) values (%s, 'new') returning id",
        (world.person("A1").id,),
    )
    session_id = result.rows[0]["id"]
    with owner(db) as conn:
        rows = conn.execute(
            "select profile_id, kind::text, speaker_label from public.session_participants"
            " where session_id = %s",
            (session_id,),
        ).fetchall()
    assert rows == [(world.person("A1").id, "trainee", "trainee")]


def test_failed_multi_row_insert_leaves_no_partial_rows(world_db: WorldDb) -> None:
    db, world = world_db
    # The first session passes every check (and queues its trainee participant); the second
    # fails the title check: neither session nor any participant may remain.
    query = "insert into {}sessions (profile_id, title) values (%s, 'fine'), (%s, '   ')"
    a1 = world.person("A1").id
    assert_refused(db, world, "A1", query.format(""), (a1, a1), "23514")
    assert_owner_refused(db, query.format("public."), (a1, a1), "23514")
    segments = (
        "insert into {}transcript_segments (session_id, seq, speaker, text, start_ms,"
        " end_ms) values (%s, 70, 'trainee', 'ok', 0, 10), (%s, 71, 'trainee', 'bad',"
        " 10, 5)"
    )
    active = world.active_session["A1"]
    assert_refused(db, world, "A1", segments.format(""), (active, active), "23514")
    assert_owner_refused(db, segments.format("public."), (active, active), "23514")


@pytest.mark.parametrize(
    ("column", "value_key", "sqlstate"),
    [
        ("profile_id", "person:B1", "42501"),  # a profile of another company
        ("session_id", "session:B1", "42501"),  # another session (of another company)
        ("session_id", "session:A2", "42501"),  # another session of the same company
        ("kind", "kind:trainee", "23514"),  # a non-owner as the trainee
        ("kind", "kind:ai_buyer", "23514"),  # an AI buyer with a profile
    ],
)
def test_participant_rules_hold_on_update(
    world_db: WorldDb, column: str, value_key: str, sqlstate: str
) -> None:
    """Checked on update too, for service_role (which may update every column)."""
    db, world = world_db
    kind, key = value_key.split(":")
    value: Any = (
        world.person(key).id
        if kind == "person"
        else world.active_session[key]
        if kind == "session"
        else key
    )
    with owner(db) as conn:
        conn.execute(
            "insert into public.session_participants (session_id, profile_id, kind,"
            " speaker_label) values (%s, %s, 'peer', 'peer')",
            (world.active_session["A1"], world.person("A2").id),
        )
    query = (
        sql.SQL(
            "update session_participants set {} = %s where session_id = %s"
            " and speaker_label = 'peer'"
        )
        .format(sql.Identifier(column))
        .as_string(None)
    )
    assert_refused(db, world, "service_role", query, (value, world.active_session["A1"]), sqlstate)


def test_participant_display_name_update_still_works(world_db: WorldDb) -> None:
    db, world = world_db
    result = api_run(
        db,
        world,
        "A1",
        "update session_participants set display_name = 'Me' where session_id = %s",
        (world.active_session["A1"],),
    )
    assert result.rowcount == 2  # the trainee and the AI buyer


# -- deleting a user ------------------------------------------------------------------------

SESSION_TABLES = (
    "session_participants",
    "transcript_segments",
    "transcripts",
    "analysis_results",
    "session_analytics",
)


def _rows_of(
    conn: psycopg.Connection[TupleRow], person: uuid.UUID, sessions: Sequence[uuid.UUID]
) -> dict[str, int]:
    counts: dict[str, int] = {}
    row = conn.execute("select count(*) from public.profiles where id = %s", (person,)).fetchone()
    assert row is not None
    counts["profiles"] = int(row[0])
    row = conn.execute(
        "select count(*) from public.sessions where profile_id = %s or id = any(%s)",
        (person, list(sessions)),
    ).fetchone()
    assert row is not None
    counts["sessions"] = int(row[0])
    for table in SESSION_TABLES:
        row = conn.execute(
            sql.SQL(
                "select count(*) from public.{} where profile_id = %s or session_id = any(%s)"
            ).format(sql.Identifier(table)),
            (person, list(sessions)),
        ).fetchone()
        assert row is not None
        counts[table] = int(row[0])
    return counts


def test_deleting_an_auth_user_cascades(world_db: WorldDb) -> None:
    db, world = world_db
    a1 = world.person("A1").id
    sessions = sorted(world.sessions_of("A1"))
    with owner(db) as conn:
        # A1 also takes part in A2's call, and is the subject of an audit entry.
        conn.execute(
            "insert into public.session_participants (session_id, profile_id, kind,"
            " speaker_label) values (%s, %s, 'peer', 'peer')",
            (world.active_session["A2"], a1),
        )
        conn.execute(
            "select private.audit('profile.note', 'profile', null, %s, %s)",
            (world.companies["A"], a1),
        )
        before = _rows_of(conn, a1, sessions)
        assert all(count > 0 for count in before.values()), before
        audit_before = conn.execute("select count(*) from public.audit_log").fetchone()
        gdpr_before = conn.execute("select count(*) from public.gdpr_requests").fetchone()
        a2_before = conn.execute(
            "select count(*) from public.sessions where profile_id = %s", (world.person("A2").id,)
        ).fetchone()
        others = fingerprint(db)

        deleted = conn.execute("delete from auth.users where id = %s", (a1,))
        assert deleted.rowcount == 1

        after = _rows_of(conn, a1, sessions)
        assert after == dict.fromkeys(before, 0)
        assert conn.execute("select count(*) from public.audit_log").fetchone() == audit_before
        assert conn.execute(
            "select count(*) from public.audit_log where subject_ref = private.subject_ref(%s)",
            (a1,),
        ).fetchone() == (1,)
        assert conn.execute("select count(*) from public.gdpr_requests").fetchone() == gdpr_before
        assert (
            conn.execute(
                "select count(*) from public.sessions where profile_id = %s",
                (world.person("A2").id,),
            ).fetchone()
            == a2_before
        )
        assert conn.execute(
            "select count(*) from public.session_participants where session_id = %s",
            (world.active_session["A2"],),
        ).fetchone() == (2,)  # A2 and the AI buyer; A1's peer row is gone
    # Company B was not touched at all.
    now = fingerprint(db)
    assert now["public.companies"] == others["public.companies"]
    assert now["public.audit_log"] == others["public.audit_log"]


# -- updated_at -----------------------------------------------------------------------------

UPDATED_AT_TABLES = (
    "companies",
    "profiles",
    "sessions",
    "transcripts",
    "session_analytics",
    "gdpr_requests",
)


def test_every_updated_at_column_has_its_trigger(world_db: WorldDb) -> None:
    db, _ = world_db
    with owner(db) as conn:
        with_column = {
            str(r[0])
            for r in conn.execute(
                "select c.relname from pg_attribute a join pg_class c on c.oid = a.attrelid"
                " join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'public'"
                " and c.relkind = 'r' and a.attname = 'updated_at' and not a.attisdropped"
            ).fetchall()
        }
        with_trigger = {
            str(r[0])
            for r in conn.execute(
                "select c.relname from pg_trigger t join pg_class c on c.oid = t.tgrelid"
                " join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'public'"
                " and t.tgfoid = 'private.set_updated_at()'::regprocedure"
                " and t.tgtype & 2 = 2 and t.tgtype & 16 = 16"  # BEFORE ... UPDATE
            ).fetchall()
        }
    assert with_column == set(UPDATED_AT_TABLES)
    assert with_trigger == with_column


@pytest.mark.parametrize("table", UPDATED_AT_TABLES)
def test_updated_at_changes_on_update(world_db: WorldDb, table: str) -> None:
    db, _ = world_db
    ident = sql.Identifier(table)
    rest = sql.SQL("to_jsonb(t) - 'updated_at'")
    with psycopg.connect(db.dsn) as conn:
        row = conn.execute(
            sql.SQL("select ctid, updated_at, {} from public.{} t limit 1").format(rest, ident)
        ).fetchone()
        assert row is not None
        ctid, old_updated, old_rest = row
        conn.commit()
        # Even an explicit value is replaced: updated_at is the database's.
        row = conn.execute(
            sql.SQL(
                "update public.{} t set updated_at = '2000-01-01T00:00:00Z' where ctid = %s"
                " returning updated_at, {}, now()"
            ).format(ident, rest),
            (ctid,),
        ).fetchone()
        conn.commit()
    assert row is not None
    new_updated, new_rest, now = row
    assert isinstance(new_updated, datetime)
    assert new_updated == now
    assert new_updated > old_updated
    assert new_rest == old_rest


def test_updated_at_changes_on_api_update(world_db: WorldDb) -> None:
    db, world = world_db
    session_id = world.active_session["A1"]
    before = session_row(db, session_id)["updated_at"]
    result = api_run(
        db,
        world,
        "A1",
        "update sessions set title = 'renamed' where id = %s returning updated_at",
        (session_id,),
    )
    assert result.rows[0]["updated_at"] > before
    assert session_row(db, session_id)["updated_at"] == result.rows[0]["updated_at"]


def test_started_at_in_the_future_is_refused(world_db: WorldDb) -> None:
    db, world = world_db
    assert_refused(
        db,
        world,
        "A1",
        "insert into sessions (profile_id, title, started_at)"
        " values (%s, 'From the future', now() + interval '1 hour')",
        (world.person("A1").id,),
        "22023",
    )


def test_completing_a_session_started_moments_ahead_still_ends_after_it(
    world_db: WorldDb,
) -> None:
    """A client clock a little ahead (within the 5-minute tolerance) cannot make a session
    impossible to complete: ended_at is never before started_at."""
    db, world = world_db
    session_id = api_run(
        db,
        world,
        "A1",
        "insert into sessions (profile_id, title, started_at)"
        " values (%s, 'Clock skew', now() + interval '2 minutes') returning id",
        (world.person("A1").id,),
    ).rows[0]["id"]
    row = api_run(
        db,
        world,
        "A1",
        "update sessions set status = 'completed' where id = %s"
        " returning ended_at >= started_at as ordered, duration_seconds",
        (session_id,),
    ).rows[0]
    assert row == {"ordered": True, "duration_seconds": 0}
