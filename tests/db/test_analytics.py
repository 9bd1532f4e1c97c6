"""Analytics in the database (supabase/migrations/20261126001100_analytics.sql): recording
analyses, the dashboards and language-aware transcript search.

Dashboards are checked against numbers computed here, in Python, from the sessions and
scores the test itself seeds (never read back from session_analytics): several companies,
people and dates, sessions without a score, and a company without any session. Every call
runs as PostgREST runs it (tests/support/api.py).
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.conftest import Database
from tests.support.api import Identity
from tests.support.db import owner, owner_rows, scalar, unchanged
from tests.support.world import World

WorldDb = tuple[Database, World]
UTC = dt.UTC

RECORD = (
    "select * from public.record_analysis(session_id => %s, provider => %s,"
    " analysis_type => %s, results => %s, version => %s, api_cost_usd => %s)"
)


# -- helpers ----------------------------------------------------------------------------------


def run(db: Database, identity: Identity, query: str, params: Sequence[Any] = ()) -> list[Any]:
    """One committed request as ``identity``; its rows."""
    with db.api() as api:
        return api.run(identity, query, params, commit=True).rows


def who(world: World, key: str) -> Identity:
    return world.identity(key)


def refused(
    db: Database, identity: Identity, query: str, params: Sequence[Any], sqlstate: str
) -> str:
    """The request fails with ``sqlstate`` and leaves every table as it was; its message."""
    with unchanged(db), pytest.raises(psycopg.Error) as excinfo:
        run(db, identity, query, params)
    assert excinfo.value.sqlstate == sqlstate, str(excinfo.value)
    return str(excinfo.value)


def record(
    db: Database,
    identity: Identity,
    session_id: uuid.UUID,
    results: dict[str, Any],
    *,
    analysis_type: str = "sales_scoring",
    provider: str = "openai",
    version: str = "1",
    cost: Decimal | None = None,
) -> dict[str, Any]:
    rows = run(
        db, identity, RECORD, (session_id, provider, analysis_type, Jsonb(results), version, cost)
    )
    assert len(rows) == 1
    row: dict[str, Any] = rows[0]
    return row


def new_session(
    db: Database,
    profile_id: uuid.UUID,
    *,
    started_at: dt.datetime | None = None,
    duration_s: int | None = None,
    minute_cost: Decimal | None = None,
    segments: Sequence[tuple[str, str]] = (),
    language: str | None = None,
    status: str = "completed",
) -> uuid.UUID:
    """A session of ``profile_id`` (as the owner of the database), with final segments
    (speaker, text) appended while active, then moved to ``status``."""
    metadata = {"language": language} if language else {}
    with owner(db) as conn:
        row = conn.execute(
            "insert into public.sessions (profile_id, title, started_at, minute_cost, metadata)"
            " values (%s, 'call', coalesce(%s, now() - %s * interval '1 second'), %s, %s)"
            " returning id, started_at",
            # ended by now: an end may not lie in the future
            (profile_id, started_at, (duration_s or 60) + 60, minute_cost, Jsonb(metadata)),
        ).fetchone()
        assert row is not None
        sid, started = row
        for seq, (speaker, text) in enumerate(segments):
            conn.execute(
                "insert into public.transcript_segments (session_id, seq, speaker, text,"
                " start_ms, end_ms) values (%s, %s, %s, %s, %s, %s)",
                (sid, seq, speaker, text, seq * 2000, seq * 2000 + 1500),
            )
        if status != "active":
            ended = started + dt.timedelta(seconds=duration_s or 60)
            conn.execute(
                "update public.sessions set status = 'completed', ended_at = %s where id = %s",
                (ended, sid),
            )
        if status == "archived":
            conn.execute("update public.sessions set status = 'archived' where id = %s", (sid,))
    assert isinstance(sid, uuid.UUID)
    return sid


def analytics(db: Database, session_id: uuid.UUID) -> dict[str, Any]:
    rows = owner_rows(
        db, "select * from public.session_analytics where session_id = %s", (session_id,)
    )
    assert len(rows) == 1
    return rows[0]


def status_of(db: Database, session_id: uuid.UUID) -> str:
    return str(scalar(db, "select status from public.sessions where id = %s", (session_id,)))


# -- recording analyses ---------------------------------------------------------------------


def test_recording_an_analysis_fills_analytics_and_moves_the_session_to_analyzed(
    world_db: WorldDb,
) -> None:
    db, world = world_db
    sid = new_session(db, world.person("A1").id, duration_s=600)
    results = {
        "overall_score": 72.6,
        "skill_scores": {"opening": 80, "closing": 64.4, "rapport": 90},
        "talk_time_ratio": 0.45678,
        "sentiment_score": 0.25,
        "summary": "Good discovery, weak close.",
    }
    row = record(db, who(world, "service_role"), sid, results, cost=Decimal("0.0125"))
    assert row["session_id"] == sid
    assert row["results"] == results
    assert row["profile_id"] == world.person("A1").id  # copied from the session
    a = analytics(db, sid)
    assert a["overall_score"] == 73  # rounded to a whole point
    assert (a["opening_score"], a["closing_score"], a["questioning_score"]) == (80, 64, None)
    assert a["skill_scores"] == {"opening": 80, "closing": 64.4, "rapport": 90}
    assert a["talk_time_ratio"] == Decimal("0.4568")
    assert a["sentiment_score"] == Decimal("0.2500")
    assert a["api_cost_usd"] == Decimal("0.0125")
    assert status_of(db, sid) == "analyzed"


def test_recording_the_same_analysis_twice_changes_nothing(world_db: WorldDb) -> None:
    db, world = world_db
    sid = new_session(db, world.person("A1").id)
    first = record(db, who(world, "service_role"), sid, {"overall_score": 60}, cost=Decimal(1))
    with unchanged(db):
        again = record(db, who(world, "service_role"), sid, {"overall_score": 60}, cost=Decimal(1))
    assert again == first
    assert analytics(db, sid)["api_cost_usd"] == Decimal(1)  # counted once


def test_different_results_under_the_same_key_are_a_conflict(world_db: WorldDb) -> None:
    db, world = world_db
    sid = new_session(db, world.person("A1").id)
    record(db, who(world, "service_role"), sid, {"overall_score": 60})
    message = refused(
        db,
        who(world, "service_role"),
        RECORD,
        (sid, "openai", "sales_scoring", Jsonb({"overall_score": 61}), "1", None),
        "VS003",
    )
    assert "new version" in message or "different results" in message
    # a new version is a new analysis, and the newest one wins
    record(db, who(world, "service_role"), sid, {"overall_score": 61}, version="2")
    assert analytics(db, sid)["overall_score"] == 61


def test_the_newest_analysis_of_each_type_wins(world_db: WorldDb) -> None:
    db, world = world_db
    service = who(world, "service_role")
    sid = new_session(db, world.person("A2").id)
    record(
        db,
        service,
        sid,
        {"overall_score": 60, "skill_scores": {"opening": 50}},
        cost=Decimal("0.5"),
    )
    # a newer analysis of the same type replaces the older one entirely: no opening score
    record(db, service, sid, {"overall_score": 80}, version="2", cost=Decimal("0.25"))
    a = analytics(db, sid)
    assert (a["overall_score"], a["opening_score"], a["skill_scores"]) == (80, None, {})
    # another type complements it
    record(
        db,
        service,
        sid,
        {"skill_scores": {"closing": 70}, "question_count": 9},
        analysis_type="coaching",
        provider="anthropic",
    )
    a = analytics(db, sid)
    assert (a["overall_score"], a["closing_score"], a["question_count"]) == (80, 70, 9)
    # a field two types carry comes from the newest of them
    record(
        db,
        service,
        sid,
        {"question_count": 11, "talk_time_ratio": 0.4},
        analysis_type="conversation_metrics",
        provider="own-metrics",
    )
    a = analytics(db, sid)
    assert (a["question_count"], a["talk_time_ratio"]) == (11, Decimal("0.4000"))
    # null means "not measured": it does not erase what another analysis measured
    record(db, service, sid, {"question_count": None}, analysis_type="other")
    assert analytics(db, sid)["question_count"] == 11
    assert analytics(db, sid)["api_cost_usd"] == Decimal("0.75")  # every analysis' cost


def test_conversation_metrics_do_not_move_the_session_and_other_statuses_stay(
    world_db: WorldDb,
) -> None:
    db, world = world_db
    service = who(world, "service_role")
    sid = new_session(db, world.person("A1").id)
    record(
        db,
        service,
        sid,
        {"talk_time_ratio": 0.5},
        analysis_type="conversation_metrics",
        provider="own-metrics",
    )
    assert status_of(db, sid) == "completed"
    archived = new_session(db, world.person("A1").id, status="archived")
    record(db, service, archived, {"overall_score": 50})
    assert status_of(db, archived) == "archived"
    assert analytics(db, archived)["overall_score"] == 50


def test_an_active_session_cannot_be_analyzed(world_db: WorldDb) -> None:
    db, world = world_db
    refused(
        db,
        who(world, "service_role"),
        RECORD,
        (world.active_session["A1"], "openai", "sales_scoring", Jsonb({}), "1", None),
        "VS004",
    )


@pytest.mark.parametrize(
    ("analysis_type", "results", "names"),
    [
        ("sales_scoring", [], "must be a JSON object"),
        ("sales_scoring", {"overall_score": 101}, "results.overall_score"),
        ("sales_scoring", {"overall_score": "90"}, "results.overall_score"),
        ("sales_scoring", {"talk_time_ratio": 1.5}, "results.talk_time_ratio"),
        ("sales_scoring", {"filler_words_count": 2.5}, "results.filler_words_count"),
        ("sales_scoring", {"question_count": -1}, "results.question_count"),
        ("sales_scoring", {"speaking_pace_wpm": 5000}, "results.speaking_pace_wpm"),
        ("sales_scoring", {"sentiment_score": -2}, "results.sentiment_score"),
        ("sales_scoring", {"skill_scores": [1]}, "results.skill_scores"),
        ("sales_scoring", {"skill_scores": {"opening": "good"}}, "skill_scores.opening"),
        ("sales_scoring", {"skill_scores": {"Bad Name": 1}}, "skill_scores.Bad Name"),
        ("conversation_metrics", {"overall_score": 90}, "measured numbers only"),
        ("Bad-Type", {}, "analysis_type"),
    ],
)
def test_malformed_analyses_are_refused_and_nothing_is_stored(
    shared_world_db: WorldDb, analysis_type: str, results: Any, names: str
) -> None:
    db, world = shared_world_db
    message = refused(
        db,
        who(world, "service_role"),
        RECORD,
        (world.completed_session["A1"], "openai", analysis_type, Jsonb(results), "1", None),
        "22023",
    )
    assert names in message


@pytest.mark.parametrize(
    ("caller", "analysis_type", "provider", "sqlstate"),
    [
        # the owner never records: the database measures the call on completion
        ("A1", "conversation_metrics", "voicesessions", "42501"),
        ("A1", "sales_scoring", "openai", "42501"),  # never their own scores
        ("A1", "conversation_metrics", "openai", "42501"),
        ("MA", "conversation_metrics", "voicesessions", "42501"),  # can see, cannot record
        ("AA", "sales_scoring", "openai", "42501"),
        ("A2", "conversation_metrics", "voicesessions", "P0002"),  # cannot even see it
        ("B1", "conversation_metrics", "voicesessions", "P0002"),
        ("AB", "sales_scoring", "openai", "P0002"),
        ("anon", "conversation_metrics", "voicesessions", "42501"),  # no EXECUTE at all
        ("service_role", "sales_scoring", "openai", None),
        ("service_role", "conversation_metrics", "own-metrics", None),
        # the database's own provider: nobody may take its key first
        ("service_role", "conversation_metrics", "voicesessions", "42501"),
        ("service_role", "conversation_metrics", "VoiceSessions ", "42501"),
    ],
)
def test_who_may_record_analyses(
    world_db: WorldDb, caller: str, analysis_type: str, provider: str, sqlstate: str | None
) -> None:
    db, world = world_db
    sid = world.completed_session["A1"]
    params = (sid, provider, analysis_type, Jsonb({"question_count": 3}), "7", None)
    if sqlstate is None:
        assert run(db, who(world, caller), RECORD, params)[0]["analysis_type"] == analysis_type
        assert analytics(db, sid)["question_count"] == 3
    else:
        refused(db, who(world, caller), RECORD, params, sqlstate)


def test_an_unknown_session_is_not_found(shared_world_db: WorldDb) -> None:
    db, world = shared_world_db
    refused(
        db,
        who(world, "service_role"),
        RECORD,
        (uuid.uuid4(), "openai", "x", Jsonb({}), "1", None),
        "P0002",
    )


# -- dashboards -------------------------------------------------------------------------------

SINCE = dt.datetime(2025, 1, 20, tzinfo=UTC)
UNTIL = dt.datetime(2025, 2, 24, tzinfo=UTC)
SKILLS = ("opening", "closing", "rapport")


@dataclass
class Seeded:
    """What the test seeded, to compute the expected dashboards from."""

    company: dict[str, uuid.UUID]
    manager_c: uuid.UUID
    sessions: list[dict[str, Any]] = field(default_factory=list)

    def of(
        self, *, company: str | None = None, person: uuid.UUID | None = None, window: bool = True
    ) -> list[dict[str, Any]]:
        return sorted(
            (
                s
                for s in self.sessions
                if (company is None or s["company"] == company)
                and (person is None or s["profile_id"] == person)
                and (not window or SINCE <= s["started_at"] < UNTIL)
            ),
            key=lambda s: (s["started_at"], s["id"]),
        )


def q(value: float | Decimal | None, places: int) -> Decimal | None:
    if value is None:
        return None
    return Decimal(str(value)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def mean(values: list[Any]) -> float | None:
    return statistics.fmean(float(v) for v in values) if values else None


@pytest.fixture
def seeded(world_db: WorldDb) -> tuple[Database, World, Seeded]:
    """Sessions of A1, A2 and B1 every few days from early January to late March 2025, most
    scored by one analysis (score, skills, talk ratio, cost), some not; company C (with a
    manager) has none."""
    db, world = world_db
    rng = random.Random(20251126)
    with owner(db) as conn:
        row = conn.execute(
            "insert into public.companies (name) values ('Company C') returning id"
        ).fetchone()
        assert row is not None
        company_c = row[0]
        manager_c = uuid.uuid4()
        conn.execute(
            "insert into auth.users (id, email) values (%s, 'mc@example.test')", (manager_c,)
        )
        conn.execute(
            "insert into public.profiles (id, company_id, role, display_name)"
            " values (%s, %s, 'manager', 'Person MC')",
            (manager_c, company_c),
        )
    # (the World is shared by every test of the run: company C's manager stays out of it)
    seeded = Seeded(company={**world.companies, "C": company_c}, manager_c=manager_c)
    service = who(world, "service_role")
    for key, count in (("A1", 9), ("A2", 6), ("B1", 7)):
        person = world.person(key)
        for i in range(count):
            started = dt.datetime(2025, 1, 6, 9, tzinfo=UTC) + dt.timedelta(
                days=8 * i + rng.randint(0, 5), hours=rng.randint(0, 8)
            )
            duration = rng.randint(180, 1500)
            minute_cost = Decimal(rng.randint(1, 30))
            sid = new_session(
                db, person.id, started_at=started, duration_s=duration, minute_cost=minute_cost
            )
            entry: dict[str, Any] = {
                "id": sid,
                "profile_id": person.id,
                "company": person.company,
                "started_at": started,
                "duration": duration,
                "minute_cost": minute_cost,
                "score": None,
                "skills": {},
                "talk": None,
                "cost": Decimal(0),
            }
            if i % 4 != 3:  # every fourth session is never scored
                entry["score"] = rng.randint(40, 98)
                entry["skills"] = {s: rng.randint(30, 100) for s in SKILLS if rng.random() < 0.8}
                entry["talk"] = q(rng.uniform(0.2, 0.8), 4)
                entry["cost"] = Decimal(rng.randint(1, 500)) / 1000
                record(
                    db,
                    service,
                    sid,
                    {
                        "overall_score": entry["score"],
                        "skill_scores": entry["skills"],
                        "talk_time_ratio": float(entry["talk"]),
                    },
                    cost=entry["cost"],
                )
            seeded.sessions.append(entry)
    return db, world, seeded


def expected_company(sessions: list[dict[str, Any]]) -> dict[str, Any]:
    scored = [s for s in sessions if s["score"] is not None]
    skills: dict[str, list[int]] = defaultdict(list)
    for s in sessions:
        for k, v in s["skills"].items():
            skills[k].append(v)
    return {
        "sessions": len(sessions),
        "active_users": len({s["profile_id"] for s in sessions}),
        "scored_sessions": len(scored),
        "average_score": q(mean([s["score"] for s in scored]), 2),
        "total_minutes": q(sum(s["duration"] for s in sessions) / 60, 2) if sessions else 0,
        "minute_cost": sum((s["minute_cost"] for s in sessions), Decimal(0)),
        "api_cost_usd": sum((s["cost"] for s in sessions), Decimal(0)),
        "average_talk_ratio": q(mean([s["talk"] for s in scored]), 4),
        "skill_averages": {k: float(q(mean(v), 2)) for k, v in skills.items()},  # type: ignore[arg-type]
    }


def expected_progress(sessions: list[dict[str, Any]]) -> dict[str, Any]:
    scored = [s for s in sessions if s["score"] is not None]
    slope = None
    if len(scored) >= 2:
        xs = [s["started_at"].timestamp() / 604800 for s in scored]
        ys = [float(s["score"]) for s in scored]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mx) ** 2 for x in xs
        )
    skills: dict[str, list[int]] = defaultdict(list)
    for s in sessions:
        for k, v in s["skills"].items():
            skills[k].append(v)
    return {
        "sessions": len(sessions),
        "scored_sessions": len(scored),
        "first_score": scored[0]["score"] if scored else None,
        "latest_score": scored[-1]["score"] if scored else None,
        "average_score": q(mean([s["score"] for s in scored]), 2),
        "best_score": max((s["score"] for s in scored), default=None),
        "trend_per_week": slope,
        "average_talk_ratio": q(mean([s["talk"] for s in scored]), 4),
        "first_session_at": sessions[0]["started_at"] if sessions else None,
        "last_session_at": sessions[-1]["started_at"] if sessions else None,
        "skills": {
            k: {
                "first": v[0],
                "latest": v[-1],
                "average": float(q(mean(v), 2)),  # type: ignore[arg-type]
                "sessions": len(v),
            }
            for k, v in skills.items()
        },
    }


def assert_progress(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    trend = actual.pop("trend_per_week")
    wanted = expected.pop("trend_per_week")
    if wanted is None:
        assert trend is None
    else:
        assert float(trend) == pytest.approx(wanted, abs=1e-4)
    assert actual == expected


COMPANY_METRICS = "select * from public.company_metrics(%s, %s, %s)"
USER_PROGRESS = "select * from public.user_progress(%s, %s, %s)"
TEAM = "select * from public.team_overview(%s, %s, %s)"
SERIES = (
    "select * from public.metrics_timeseries(company_id => %s, profile_id => %s,"
    " bucket => %s, since => %s, until => %s)"
)


@pytest.mark.parametrize("viewer", ["MA", "AA", "service_role"])
def test_company_metrics_match_the_seeded_sessions(
    seeded: tuple[Database, World, Seeded], viewer: str
) -> None:
    db, world, data = seeded
    rows = run(db, who(world, viewer), COMPANY_METRICS, (data.company["A"], SINCE, UNTIL))
    assert rows == [expected_company(data.of(company="A"))]
    assert rows[0]["sessions"] >= 8
    assert rows[0]["active_users"] == 2


def test_company_metrics_without_a_window_count_everything(
    seeded: tuple[Database, World, Seeded],
) -> None:
    db, world, data = seeded
    [row] = run(db, who(world, "AB"), COMPANY_METRICS, (data.company["B"], None, None))
    # the world's own two sessions of B1 (one scored 70 without an analysis) come on top
    world_rows = owner_rows(
        db,
        "select s.duration_seconds, a.overall_score from public.sessions s left join"
        " public.session_analytics a on a.session_id = s.id where s.id = any(%s)",
        (list(world.sessions_of("B1")),),
    )
    mine = data.of(company="B", window=False)
    assert row["sessions"] == len(mine) + 2
    scores = [s["score"] for s in mine if s["score"] is not None] + [
        r["overall_score"] for r in world_rows if r["overall_score"] is not None
    ]
    assert row["average_score"] == q(mean(scores), 2)


def test_a_company_without_sessions_gets_zeros(seeded: tuple[Database, World, Seeded]) -> None:
    db, world, data = seeded
    zeros = {
        "sessions": 0,
        "active_users": 0,
        "scored_sessions": 0,
        "average_score": None,
        "total_minutes": 0,
        "minute_cost": 0,
        "api_cost_usd": 0,
        "average_talk_ratio": None,
        "skill_averages": {},
    }
    manager_c = Identity.user(data.manager_c)
    for viewer in (manager_c, who(world, "service_role")):
        assert run(db, viewer, COMPANY_METRICS, (data.company["C"], None, None)) == [zeros]
    # an empty window of a busy company, too
    assert run(
        db,
        who(world, "MA"),
        COMPANY_METRICS,
        (
            data.company["A"],
            dt.datetime(2020, 1, 1, tzinfo=UTC),
            dt.datetime(2020, 2, 1, tzinfo=UTC),
        ),
    ) == [zeros]
    assert run(db, manager_c, TEAM, (data.company["C"], None, None)) == []


@pytest.mark.parametrize("key", ["A1", "A2", "B1"])
def test_user_progress_matches_the_seeded_sessions(
    seeded: tuple[Database, World, Seeded], key: str
) -> None:
    db, world, data = seeded
    person = world.person(key)
    [row] = run(db, who(world, key), USER_PROGRESS, (person.id, SINCE, UNTIL))
    assert row["scored_sessions"] >= 2
    assert_progress(row, expected_progress(data.of(person=person.id)))


def test_user_progress_of_someone_without_sessions(
    seeded: tuple[Database, World, Seeded],
) -> None:
    db, world, _ = seeded
    [row] = run(db, who(world, "MA"), USER_PROGRESS, (world.person("MA").id, None, None))
    assert_progress(row, expected_progress([]))


def test_team_overview_has_one_row_per_trainee(seeded: tuple[Database, World, Seeded]) -> None:
    db, world, data = seeded
    rows = run(db, who(world, "MA"), TEAM, (data.company["A"], SINCE, UNTIL))
    assert [r["display_name"] for r in rows] == ["Person A1", "Person A2"]
    for r in rows:
        assert r.pop("display_name").endswith(("A1", "A2"))
        person = r.pop("profile_id")
        assert_progress(r, expected_progress(data.of(person=person)))


@pytest.mark.parametrize("bucket", ["day", "week", "month"])
def test_metrics_timeseries_fills_every_bucket(
    seeded: tuple[Database, World, Seeded], bucket: str
) -> None:
    db, world, data = seeded

    def start_of(t: dt.datetime) -> dt.date:
        d = t.astimezone(UTC).date()
        if bucket == "week":
            return d - dt.timedelta(days=d.weekday())
        return d.replace(day=1) if bucket == "month" else d

    def following(d: dt.date) -> dt.date:
        if bucket == "month":
            return (d.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        return d + dt.timedelta(days=7 if bucket == "week" else 1)

    sessions = data.of(company="A")
    groups: dict[dt.date, list[dict[str, Any]]] = defaultdict(list)
    for s in sessions:
        groups[start_of(s["started_at"])].append(s)
    expected = []
    day, last = start_of(SINCE), start_of(UNTIL - dt.timedelta(microseconds=1))
    while day <= last:
        e = expected_company(groups.get(day, []))
        expected.append(
            {
                "bucket_start": day,
                "sessions": e["sessions"],
                "active_users": e["active_users"],
                "scored_sessions": e["scored_sessions"],
                "average_score": e["average_score"],
                "total_minutes": e["total_minutes"],
                "api_cost_usd": e["api_cost_usd"],
                "average_talk_ratio": e["average_talk_ratio"],
            }
        )
        day = following(day)
    rows = run(db, who(world, "AA"), SERIES, (data.company["A"], None, bucket, SINCE, UNTIL))
    assert rows == expected
    assert any(r["sessions"] == 0 for r in rows) or bucket != "day"  # gaps are filled


def test_metrics_timeseries_of_a_person_spans_their_sessions(
    seeded: tuple[Database, World, Seeded],
) -> None:
    db, world, data = seeded
    a2 = world.person("A2")
    rows = run(db, who(world, "A2"), SERIES, (None, a2.id, "month", None, None))
    mine = data.of(person=a2.id, window=False)
    started = [s["started_at"] for s in mine] + [
        r["started_at"]
        for r in owner_rows(
            db,
            "select started_at from public.sessions where id = any(%s)",
            (list(world.sessions_of("A2")),),
        )
    ]
    months = {(t.year, t.month) for t in started}
    assert sum(r["sessions"] for r in rows) == len(started)
    assert {
        (r["bucket_start"].year, r["bucket_start"].month) for r in rows if r["sessions"]
    } == months
    assert rows[0]["bucket_start"] == min(started).date().replace(day=1)


@pytest.mark.parametrize(
    ("query", "args", "sqlstate"),
    [
        (SERIES, (None, None, "week", None, None), "22023"),  # neither company nor person
        (SERIES, ("A", "A1", "week", None, None), "22023"),  # both
        (SERIES, ("A", None, "year", None, None), "22023"),
        (SERIES, (None, "A1", "day", dt.datetime(2000, 1, 1, tzinfo=UTC), None), "22023"),
        (COMPANY_METRICS, ("A", UNTIL, SINCE), "22023"),  # since after until
        (COMPANY_METRICS, (None, None, None), "22004"),
    ],
)
def test_dashboard_arguments_are_checked(
    shared_world_db: WorldDb, query: str, args: tuple[Any, ...], sqlstate: str
) -> None:
    db, world = shared_world_db
    ids = {"A": world.companies["A"], "A1": world.person("A1").id}
    params = [ids.get(a, a) if isinstance(a, str) else a for a in args]
    refused(db, who(world, "service_role"), query, params, sqlstate)


@pytest.mark.parametrize(
    ("viewer", "query", "subject", "allowed"),
    [
        ("MA", COMPANY_METRICS, "B", False),  # a manager of A sees nothing of B
        ("AA", COMPANY_METRICS, "B", False),
        ("AB", COMPANY_METRICS, "A", False),
        ("A1", COMPANY_METRICS, "A", False),  # trainees do not read company numbers
        ("MA", TEAM, "B", False),
        ("A1", TEAM, "A", False),
        ("MA", USER_PROGRESS, "B1", False),
        ("A1", USER_PROGRESS, "A2", False),  # a trainee sees only their own progress
        ("B1", USER_PROGRESS, "A1", False),
        ("anon", USER_PROGRESS, "A1", False),
        ("A1", USER_PROGRESS, "A1", True),
        ("MA", USER_PROGRESS, "A1", True),
        ("AB", USER_PROGRESS, "B1", True),
        ("AB", TEAM, "B", True),
    ],
)
def test_who_may_read_which_dashboard(
    shared_world_db: WorldDb, viewer: str, query: str, subject: str, allowed: bool
) -> None:
    db, world = shared_world_db
    target = world.companies[subject] if len(subject) == 1 else world.person(subject).id
    if allowed:
        assert run(db, who(world, viewer), query, (target, None, None))
    else:
        refused(db, who(world, viewer), query, (target, None, None), "42501")


@pytest.mark.parametrize("viewer", ["MA", "A2"])
def test_timeseries_of_someone_else_is_refused(shared_world_db: WorldDb, viewer: str) -> None:
    db, world = shared_world_db
    target = world.person("B1").id if viewer == "MA" else world.person("A1").id
    refused(db, who(world, viewer), SERIES, (None, target, "week", None, None), "42501")
    if viewer == "MA":
        refused(
            db,
            who(world, viewer),
            SERIES,
            (world.companies["B"], None, "week", None, None),
            "42501",
        )


def test_unknown_company_or_person_is_not_found_for_the_service_role(
    shared_world_db: WorldDb,
) -> None:
    db, world = shared_world_db
    refused(db, who(world, "service_role"), COMPANY_METRICS, (uuid.uuid4(), None, None), "P0002")
    refused(db, who(world, "service_role"), USER_PROGRESS, (uuid.uuid4(), None, None), "P0002")


# -- transcript search ------------------------------------------------------------------------

SEARCH = "select * from public.search_transcripts(%s, %s)"


@pytest.fixture
def transcripts(world_db: WorldDb) -> tuple[Database, World, dict[str, uuid.UUID]]:
    db, world = world_db
    a1, b1 = world.person("A1").id, world.person("B1").id
    found = {
        "de": new_session(
            db,
            a1,
            language="de",
            segments=[
                ("trainee", "Guten Tag, ich rufe wegen Ihrer Verträge an."),
                ("buyer", "Wir haben schon einen Vertrag mit einem Anbieter."),
            ],
        ),
        "en": new_session(
            db,
            a1,
            language="en-GB",
            segments=[
                ("trainee", "We reviewed the contracts and the pricing."),
                ("buyer", "The contract renews in March, pricing matters."),
            ],
        ),
        "en_once": new_session(
            db,
            a1,
            language="en",
            segments=[
                ("trainee", "Let us talk about pricing later."),
            ],
        ),
        "xx": new_session(
            db,
            a1,
            language="xx",
            segments=[
                ("trainee", "contracts contracts"),
            ],
        ),
        "b_de": new_session(
            db,
            b1,
            language="de",
            segments=[
                ("trainee", "Die Verträge von Firma B sind vertraulich."),
            ],
        ),
    }
    return db, world, found


def test_a_german_query_finds_a_german_inflection(
    transcripts: tuple[Database, World, dict[str, uuid.UUID]],
) -> None:
    db, world, ids = transcripts
    hits = run(db, who(world, "A1"), SEARCH, ("Vertrag", 20))
    assert [h["session_id"] for h in hits] == [ids["de"]]  # never B's German transcript
    assert hits[0]["language"] == "de"
    assert "**Verträge**" in hits[0]["snippet"]
    assert "**Vertrag**" in hits[0]["snippet"]
    assert [h["session_id"] for h in run(db, who(world, "B1"), SEARCH, ("Vertrag", 20))] == [
        ids["b_de"]
    ]


def test_english_stemming_ranking_and_unknown_languages(
    transcripts: tuple[Database, World, dict[str, uuid.UUID]],
) -> None:
    db, world, ids = transcripts
    # "contract" stems to what "contracts" does in English; the 'xx' transcript uses the
    # simple configuration, where only the exact word matches
    hits = run(db, who(world, "A1"), SEARCH, ("contract", 20))
    assert [h["session_id"] for h in hits] == [ids["en"]]
    assert {h["session_id"] for h in run(db, who(world, "A1"), SEARCH, ("contracts", 20))} == {
        ids["en"],
        ids["xx"],
    }
    ranked = run(db, who(world, "A1"), SEARCH, ("pricing", 20))
    assert [h["session_id"] for h in ranked] == [ids["en"], ids["en_once"]]  # two matches first
    assert ranked[0]["rank"] > ranked[1]["rank"]
    assert run(db, who(world, "A1"), SEARCH, ("pricing", 1)) == ranked[:1]


def test_search_follows_rls(transcripts: tuple[Database, World, dict[str, uuid.UUID]]) -> None:
    db, world, ids = transcripts
    assert {h["session_id"] for h in run(db, who(world, "MA"), SEARCH, ("Vertrag", 20))} == {
        ids["de"]
    }
    assert run(db, who(world, "A2"), SEARCH, ("Vertrag", 20)) == []
    assert run(db, who(world, "AB"), SEARCH, ("pricing", 20)) == []
    service = {
        h["session_id"] for h in run(db, who(world, "service_role"), SEARCH, ("Vertrag", 20))
    }
    assert service == {ids["de"], ids["b_de"]}
