"""Figures other people rely on, and the states that produce them, against hostile callers.

Nothing a user's own client sends feeds a dashboard figure (scores, costs, conversation
metrics), unless the database derived it from stored data or the service role wrote it; times
and durations are bounded by the server's clock; `analyzed` needs an analysis; recordings fit
the bucket; analyses per session are capped; retention is bounded, isolated per company,
leaves live calls alone and keeps what the documentation says survives.

Requests run as PostgREST runs them (tests/support/api.py), committed, so a write wrongly
accepted would persist: every refusal is also checked to leave every table unchanged.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.conftest import Database
from tests.support.db import owner, owner_rows, scalar, unchanged
from tests.support.world import World

WorldDb = tuple[Database, World]
Params = Sequence[Any] | Mapping[str, Any]

USERS = ("A1", "A2", "MA", "AA", "B1", "AB", "anon")
MAX_AUDIO_BYTES = 200 * 1024 * 1024


def run(db: Database, world: World, who: str, query: str, params: Params | None = None) -> Any:
    """One committed API request as ``who``; its rows."""
    with db.api() as api:
        return api.run(world.identity(who), query, params, commit=True).rows


def refused(
    db: Database, world: World, who: str, query: str, params: Params | None, sqlstate: str
) -> str:
    """Refused with ``sqlstate``, every table as it was; the message."""
    with unchanged(db), pytest.raises(psycopg.Error) as excinfo:
        run(db, world, who, query, params)
    assert excinfo.value.sqlstate == sqlstate, (
        f"{who}: expected {sqlstate}, got {excinfo.value.sqlstate}: {excinfo.value}"
    )
    return str(excinfo.value)


def owner_session(
    db: Database,
    world: World,
    key: str = "A1",
    *,
    started_ago: str = "10 minutes",
    segments: Sequence[tuple[str, str, int, int]] = (),
    status: str = "active",
) -> uuid.UUID:
    """A session of ``key`` set up by the migration owner (trusted), with segments."""
    with owner(db) as conn:
        row = conn.execute(
            "insert into public.sessions (profile_id, title, started_at)"
            " values (%s, 'setup', now() - %s::interval) returning id",
            (world.person(key).id, started_ago),
        ).fetchone()
        assert row is not None
        sid: uuid.UUID = row[0]
        for seq, (speaker, text, start, end) in enumerate(segments):
            conn.execute(
                "insert into public.transcript_segments (session_id, seq, speaker, text,"
                " start_ms, end_ms) values (%s, %s, %s, %s, %s, %s)",
                (sid, seq, speaker, text, start, end),
            )
        if status != "active":
            conn.execute("update public.sessions set status = 'completed' where id = %s", (sid,))
        if status == "analyzed":
            conn.execute(
                "insert into public.analysis_results (session_id, provider, analysis_type,"
                " results) values (%s, 'test', 'overall', '{}')",
                (sid,),
            )
        if status in ("analyzed", "archived"):
            conn.execute("update public.sessions set status = %s where id = %s", (status, sid))
    return sid


# -- 1. figures a user's client sends --------------------------------------------------------

RECORD = "select * from public.record_analysis(%s, %s, %s, %s, %s, null, null, %s)"
# Every way a client could try to feed a figure through record_analysis.
FORGED_ANALYSES = [
    (analysis_type, provider, results, cost)
    for analysis_type, provider in [
        ("conversation_metrics", "voicesessions"),
        ("conversation_metrics", "VoiceSessions"),
        ("conversation_metrics", "my-client"),
        ("sales_scoring", "openai"),
    ]
    for results, cost in [
        ({"talk_time_ratio": 1, "question_count": 999, "speaking_pace_wpm": 999}, None),
        ({}, Decimal("999999.99")),
        ({"overall_score": 100}, Decimal("0.01")),
    ]
]
# What each user gets: the owner and the company's managers and admins see the session
# (42501); the others do not (P0002: nothing revealed); anon has no EXECUTE (42501).
RECORD_REFUSAL = {"A1": "42501", "MA": "42501", "AA": "42501", "anon": "42501"}


@pytest.mark.parametrize("who", USERS)
def test_no_user_records_a_figure_through_record_analysis(
    shared_world_db: WorldDb, who: str
) -> None:
    db, world = shared_world_db
    for session in (world.completed_session["A1"], world.active_session["A1"]):
        for analysis_type, provider, results, cost in FORGED_ANALYSES:
            refused(
                db,
                world,
                who,
                RECORD,
                (session, provider, analysis_type, Jsonb(results), "1", cost),
                RECORD_REFUSAL.get(who, "P0002"),
            )


@pytest.mark.parametrize(
    "provider", ["voicesessions", "VOICESESSIONS", " voicesessions", "voicesessions  "]
)
def test_the_databases_own_provider_is_refused_to_the_service_role_too(
    shared_world_db: WorldDb, provider: str
) -> None:
    db, world = shared_world_db
    message = refused(
        db,
        world,
        "service_role",
        RECORD,
        (
            world.completed_session["B1"],
            provider,
            "conversation_metrics",
            Jsonb({}),
            "voicesessions.metrics/2",
            None,
        ),
        "42501",
    )
    assert "database's own" in message


DIRECT_WRITES = [
    "insert into analysis_results (session_id, provider, analysis_type, results, api_cost_usd)"
    " values (%(completed)s, 'x', 'sales_scoring', '{\"overall_score\": 100}', 999999)",
    "update analysis_results set api_cost_usd = 999999, results = '{\"overall_score\": 100}'"
    " where session_id = %(completed)s",
    "insert into session_analytics (session_id, overall_score, api_cost_usd)"
    " values (%(active)s, 100, 999999)",
    "update session_analytics set overall_score = 100, api_cost_usd = 999999,"
    " talk_time_ratio = 1 where session_id = %(completed)s",
    "delete from session_analytics where session_id = %(completed)s",
    "update sessions set minute_cost = 999 where id = %(completed)s",
    "insert into sessions (profile_id, title, minute_cost) values (%(me)s, 'x', 999)",
    "update sessions set started_at = now() - interval '11 hours' where id = %(completed)s",
]


@pytest.mark.parametrize(("who", "query"), list(itertools.product(USERS, DIRECT_WRITES)))
def test_no_user_writes_a_figure_directly(shared_world_db: WorldDb, who: str, query: str) -> None:
    db, world = shared_world_db
    me = world.people[who].id if who != "anon" else uuid.uuid4()
    params = {
        "completed": world.completed_session["A1"],
        "active": world.active_session["A1"],
        "me": me,
    }
    refused(db, world, who, query, params, "42501")


def test_completion_measures_the_call_and_bounds_what_it_records(world_db: WorldDb) -> None:
    # 3,001 speakers, as a trainee's client may write them: completing records a bounded
    # breakdown, in the same transaction as the status change.
    db, world = world_db
    sid = owner_session(db, world)
    with owner(db) as conn, conn.cursor() as cur:
        cur.executemany(
            "insert into public.transcript_segments (session_id, seq, speaker, text, start_ms,"
            " end_ms) values (%s, %s, %s, %s, %s, %s)",
            [(sid, i, f"{'s' * 60}{i:04d}", "word " * 50, i * 10, i * 10 + 5) for i in range(3001)],
        )
    run(db, world, "A1", "update sessions set status = 'completed' where id = %s", (sid,))
    rows = owner_rows(
        db,
        "select provider, analysis_type, api_cost_usd, octet_length(results::text) as size,"
        " results -> 'conversation' ->> 'speakers_omitted' as omitted,"
        " results -> 'conversation' ->> 'segments' as segments"
        " from public.analysis_results where session_id = %s",
        (sid,),
    )
    assert len(rows) == 1
    row = rows[0]
    assert (row["provider"], row["analysis_type"], row["api_cost_usd"]) == (
        "voicesessions",
        "conversation_metrics",
        None,
    )
    assert row["size"] < 100_000
    assert (row["omitted"], row["segments"]) == ("2951", "3001")
    assert scalar(db, "select status::text from public.sessions where id = %s", (sid,)) == (
        "completed"
    )
    assert scalar(
        db, "select api_cost_usd from public.session_analytics where session_id = %s", (sid,)
    ) == Decimal(0)


# -- 2. time from the server's clock --------------------------------------------------------

COMPLETE = "update sessions set status = 'completed', ended_at = {} where id = %s"
BAD_ENDS = [
    "now() + interval '50 years'",
    "now() + interval '6 minutes'",
    "started_at + interval '12 hours 1 second'",
    "'infinity'",
]


@pytest.mark.parametrize(("who", "end"), list(itertools.product(["A1", "service_role"], BAD_ENDS)))
def test_completion_time_is_bounded_by_the_clock(world_db: WorldDb, who: str, end: str) -> None:
    db, world = world_db
    sid = owner_session(db, world, started_ago="13 hours")  # so that +12 h is in the past
    refused(db, world, who, COMPLETE.format(end), (sid,), "22023")


@pytest.mark.parametrize("status", ["completed", "analyzed", "archived"])
@pytest.mark.parametrize(
    "end",
    [
        "ended_at + interval '1 hour'",
        "ended_at - interval '1 second'",
        "started_at",
        "now() + interval '50 years'",
    ],
)
def test_an_ended_sessions_end_is_fixed_for_users(world_db: WorldDb, status: str, end: str) -> None:
    db, world = world_db
    sid = owner_session(db, world, started_ago="2 hours", status=status)
    query = f"update sessions set ended_at = {end} where id = %s"
    assert "fixed since it ended" in refused(db, world, "A1", query, (sid,), "42501")


@pytest.mark.parametrize(
    ("change", "sqlstate"),
    [
        ("ended_at = ended_at + interval '1 hour'", "22023"),  # in the future
        ("ended_at = started_at + interval '12 hours 1 second'", "22023"),
        ("started_at = started_at - interval '11 hours'", "22023"),  # 13 hours long
        ("started_at = now() + interval '1 hour'", "22023"),
        ("ended_at = started_at + interval '30 minutes'", None),
        ("started_at = started_at - interval '1 hour'", None),
    ],
)
def test_the_service_role_corrects_times_only_within_the_bounds(
    world_db: WorldDb, change: str, sqlstate: str | None
) -> None:
    db, world = world_db
    sid = owner_session(db, world, started_ago="2 hours", status="completed")
    query = f"update sessions set {change} where id = %s returning duration_seconds"
    if sqlstate is None:
        [row] = run(db, world, "service_role", query, (sid,))
        assert 0 <= row["duration_seconds"] <= 12 * 3600
    else:
        refused(db, world, "service_role", query, (sid,), sqlstate)


def test_a_forgotten_session_ends_at_most_12_hours_after_its_start(world_db: WorldDb) -> None:
    db, world = world_db
    sid = owner_session(db, world, started_ago="7 days")
    rows = run(
        db,
        world,
        "A1",
        "update sessions set status = 'completed' where id = %s returning duration_seconds",
        (sid,),
    )
    assert rows == [{"duration_seconds": 12 * 3600}]


INSERTS = [
    # (status, started_at, ended_at): refused for users
    ("completed", "now() - interval '7 days'", "now()"),
    ("completed", "now() - interval '7 days'", "null"),
    ("completed", "now() - interval '1 hour'", "now() + interval '1 day'"),
    ("active", "now() - interval '12 hours 1 minute'", "null"),
    ("active", "now() + interval '6 minutes'", "null"),
    ("active", "'-infinity'", "null"),
    ("active", "'2000-01-01'", "null"),
]


@pytest.mark.parametrize(("status", "started", "ended"), INSERTS)
def test_a_user_creates_sessions_only_within_the_clocks_bounds(
    shared_world_db: WorldDb, status: str, started: str, ended: str
) -> None:
    db, world = shared_world_db
    refused(
        db,
        world,
        "A1",
        "insert into sessions (profile_id, title, status, started_at, ended_at)"
        f" values (%s, 'x', %s, {started}, {ended})",
        (world.person("A1").id, status),
        "22023",
    )


def test_the_service_role_may_backfill_but_not_beyond_the_bounds(world_db: WorldDb) -> None:
    db, world = world_db
    insert = (
        "insert into sessions (profile_id, title, status, started_at, ended_at)"
        " values (%s, 'import', 'completed', now() - interval '30 days', {})"
        " returning duration_seconds"
    )
    a1 = world.person("A1").id
    assert run(db, world, "service_role", insert.format("null"), (a1,)) == [
        {"duration_seconds": 12 * 3600}
    ]
    ok = "now() - interval '30 days' + interval '1 hour'"
    assert run(db, world, "service_role", insert.format(ok), (a1,)) == [{"duration_seconds": 3600}]
    too_long = "now() - interval '30 days' + interval '13 hours'"
    refused(db, world, "service_role", insert.format(too_long), (a1,), "22023")


@pytest.mark.parametrize("who", ["A1", "service_role"])
def test_minutes_on_dashboards_come_from_bounded_durations(world_db: WorldDb, who: str) -> None:
    db, world = world_db
    before = scalar(
        db, "select total_minutes from public.company_metrics(%s)", (world.companies["A"],)
    )
    sid = owner_session(db, world, started_ago="1 hour")
    for end in BAD_ENDS:
        with pytest.raises(psycopg.Error):
            run(db, world, who, COMPLETE.format(end), (sid,))
    run(db, world, who, COMPLETE.format("now()"), (sid,))
    after = scalar(
        db, "select total_minutes from public.company_metrics(%s)", (world.companies["A"],)
    )
    assert 59 <= after - before <= 61


# -- 3. analyzed means an analysis exists ------------------------------------------------------


@pytest.mark.parametrize("who", ["A1", "service_role"])
def test_analyzed_is_reached_only_by_recording_an_analysis(world_db: WorldDb, who: str) -> None:
    db, world = world_db
    sid = owner_session(
        db, world, segments=[("trainee", "hello um", 0, 1000)], status="completed"
    )  # its conversation metrics exist: they do not count
    message = refused(
        db, world, who, "update sessions set status = 'analyzed' where id = %s", (sid,), "VS001"
    )
    assert "no analysis" in message
    run(
        db,
        world,
        "service_role",
        RECORD,
        (sid, "scorer", "sales_scoring", Jsonb({"overall_score": 70}), "1", None),
    )
    assert scalar(db, "select status::text from public.sessions where id = %s", (sid,)) == (
        "analyzed"
    )


# -- 4. recordings within the bucket ----------------------------------------------------------

AUDIO = "select public.record_session_audio(%s, %s, %s, '{}'::jsonb)"


@pytest.mark.parametrize("who", ["A1", "service_role"])
@pytest.mark.parametrize("size", [MAX_AUDIO_BYTES + 1, 10**15, 2**63 - 1, -1])
def test_recorded_audio_size_is_within_the_buckets_limit(
    shared_world_db: WorldDb, who: str, size: int
) -> None:
    db, world = shared_world_db
    sid = world.completed_session["A1"]
    path = f"{world.companies['A']}/{world.person('A1').id}/{sid}.webm"
    message = refused(db, world, who, AUDIO, (sid, path, size), "22023")
    assert "size_bytes" in message
    with db.api() as api:  # the limit itself is accepted (rolled back)
        api.run(world.identity(who), AUDIO, (sid, path, MAX_AUDIO_BYTES))


# -- 5. analyses per session are capped ---------------------------------------------------------


def test_a_session_holds_at_most_100_analyses(world_db: WorldDb) -> None:
    db, world = world_db
    sid = world.completed_session["B1"]  # holds the world's one analysis
    with owner(db) as conn:
        conn.execute(
            "insert into public.analysis_results (session_id, provider, analysis_type, version,"
            " results) select %s, 'bulk', 'sales_scoring', g::text, '{}' from"
            " generate_series(1, 99) g",
            (sid,),
        )
    message = refused(
        db,
        world,
        "service_role",
        RECORD,
        (sid, "scorer", "sales_scoring", Jsonb({}), "new", None),
        "22023",
    )
    assert "at most 100" in message


def test_a_session_holds_at_most_5_mb_of_analyses(world_db: WorldDb) -> None:
    db, world = world_db
    sid = world.completed_session["B1"]
    big = {"summary": "x" * 900_000}
    for version in range(5):
        run(
            db,
            world,
            "service_role",
            RECORD,
            (sid, "scorer", "sales_scoring", Jsonb(big), str(version), None),
        )
    message = refused(
        db,
        world,
        "service_role",
        RECORD,
        (sid, "scorer", "sales_scoring", Jsonb(big), "6", None),
        "22023",
    )
    assert "5000000" in message


# -- 6. retention -------------------------------------------------------------------------------

RETENTION_COLUMNS = (
    "audio_retention_days",
    "transcript_retention_days",
    "analysis_retention_days",
    "session_retention_days",
)


@pytest.mark.parametrize(
    ("column", "days"),
    list(itertools.product(RETENTION_COLUMNS, [0, -1, 36501, 3_000_000, 2**31 - 1])),
)
def test_retention_settings_are_bounded(shared_world_db: WorldDb, column: str, days: int) -> None:
    db, world = shared_world_db
    refused(
        db,
        world,
        "AA",
        f"update companies set {column} = %s where id = %s",
        (days, world.companies["A"]),
        "23514",
    )
    with db.api() as api:  # the bounds themselves are accepted (rolled back)
        for ok in (1, 36500):
            api.run(
                world.identity("AA"),
                f"update companies set {column} = %s where id = %s",
                (ok, world.companies["A"]),
            )


def set_retention(db: Database, world: World, company: str, **days: int) -> None:
    with owner(db) as conn:
        for column, value in days.items():
            conn.execute(
                f"update public.companies set {column}_retention_days = %s where id = %s",
                (value, world.companies[company]),
            )


def test_one_companys_failure_does_not_stop_the_others(world_db: WorldDb) -> None:
    db, world = world_db
    set_retention(db, world, "A", session=1)
    set_retention(db, world, "B", session=1)
    old_a = owner_session(db, world, "A1", started_ago="3 days", status="completed")
    old_b = owner_session(db, world, "B1", started_ago="3 days", status="completed")
    with owner(db) as conn:
        # company B's data makes its retention fail, whatever the reason
        conn.execute(
            "create function public.refuse_b() returns trigger language plpgsql as"
            " $$ begin raise exception 'broken row' using errcode = 'XX001'; end $$"
        )
        conn.execute(
            "create trigger refuse_b before delete on public.sessions for each row"
            f" when (old.company_id = '{world.companies['B']}') execute function public.refuse_b()"
        )
    result = run(db, world, "service_role", "select public.gdpr_apply_retention() as r")[0]["r"]
    assert [f["company_id"] for f in result["failures"]] == [str(world.companies["B"])]
    assert result["failures"][0]["sqlstate"] == "XX001"
    assert [c["company_id"] for c in result["companies"]] == [str(world.companies["A"])]
    assert result["counts"]["sessions"] >= 1
    exists = "select count(*) from public.sessions where id = %s"
    assert (scalar(db, exists, (old_a,)), scalar(db, exists, (old_b,))) == (0, 1)
    # B's failed run left no request and no audit entry behind
    assert (
        scalar(
            db,
            "select count(*) from public.gdpr_requests where kind = 'retention'"
            " and company_id = %s",
            (world.companies["B"],),
        )
        == 0
    )
    # for one company, its error is the caller's
    with pytest.raises(psycopg.Error) as excinfo:
        run(
            db,
            world,
            "service_role",
            "select public.gdpr_apply_retention(%s)",
            (world.companies["B"],),
        )
    assert excinfo.value.sqlstate == "XX001"


def test_retention_leaves_live_calls_alone(world_db: WorldDb) -> None:
    db, world = world_db
    set_retention(db, world, "A", transcript=1, audio=1, session=2)
    live = owner_session(
        db, world, "A1", started_ago="3 days", segments=[("trainee", "my secret plan", 0, 900)]
    )
    with owner(db) as conn:
        conn.execute(
            "update public.sessions set audio_path = company_id || '/' || profile_id || '/' ||"
            " id || '.webm' where id = %s",
            (live,),
        )
    with unchanged(db):
        dry = run(
            db,
            world,
            "service_role",
            "select private.gdpr_apply_retention(%s, true, 500) as r",
            (world.companies["A"],),
        )
    assert dry[0]["r"]["dry_run"] is True
    before = owner_rows(
        db, "select * from public.transcript_segments where session_id = %s", (live,)
    )
    run(db, world, "service_role", "select public.gdpr_apply_retention()")
    after = owner_rows(
        db, "select * from public.transcript_segments where session_id = %s", (live,)
    )
    assert after == before
    assert scalar(db, "select audio_path is not null from public.sessions where id = %s", (live,))
    # the call goes on, ends, and its transcript is assembled in plain text
    run(
        db,
        world,
        "A1",
        "insert into transcript_segments (session_id, seq, speaker, text, start_ms, end_ms)"
        " values (%s, 1, 'buyer', 'tell me more', 1000, 2000)",
        (live,),
    )
    run(db, world, "A1", "update sessions set status = 'completed' where id = %s", (live,))
    rows = owner_rows(
        db,
        "select is_anonymized, content from public.transcripts where session_id = %s",
        (live,),
    )
    assert rows == [
        {"is_anonymized": False, "content": "trainee: my secret plan\nbuyer: tell me more"}
    ]


def test_scores_kept_after_analysis_retention_survive_later_analyses(world_db: WorldDb) -> None:
    db, world = world_db
    sid = owner_session(
        db, world, "A2", segments=[("trainee", "hello?", 0, 1000)], status="completed"
    )
    run(
        db,
        world,
        "service_role",
        RECORD,
        (
            sid,
            "scorer",
            "sales_scoring",
            Jsonb({"overall_score": 81, "skill_scores": {"opening": 75}}),
            "1",
            Decimal("0.5"),
        ),
    )
    with owner(db) as conn:
        conn.execute(
            "update public.analysis_results set created_at = now() - interval '10 days'"
            " where session_id = %s",
            (sid,),
        )
    set_retention(db, world, "A", analysis=1)
    run(db, world, "service_role", "select public.gdpr_apply_retention()")
    assert (
        scalar(db, "select count(*) from public.analysis_results where session_id = %s", (sid,))
        == 0
    )
    kept = (
        "select overall_score, opening_score, api_cost_usd, question_count"
        " from public.session_analytics where session_id = %s"
    )
    assert owner_rows(db, kept, (sid,)) == [
        {
            "overall_score": 81,
            "opening_score": 75,
            "api_cost_usd": Decimal("0.5"),
            "question_count": 1,
        }
    ]
    # a later analysis that does not carry them leaves them in place
    run(
        db,
        world,
        "service_role",
        RECORD,
        (sid, "metrics-v9", "conversation_metrics", Jsonb({"question_count": 4}), "9", None),
    )
    assert owner_rows(db, kept, (sid,)) == [
        {
            "overall_score": 81,
            "opening_score": 75,
            "api_cost_usd": Decimal("0.5"),
            "question_count": 4,
        }
    ]
    # one that carries a figure replaces it
    run(
        db,
        world,
        "service_role",
        RECORD,
        (sid, "scorer", "sales_scoring", Jsonb({"overall_score": 60}), "2", None),
    )
    assert owner_rows(db, kept, (sid,))[0]["overall_score"] == 60
