"""Daily rollups behind company_metrics (supabase/migrations/20261128000900_perf_dashboards.sql).

The rollups must always equal what the sessions and analytics rows say, and company_metrics
must return exactly what the full scan it replaced returned (values, types and scales: the
rows are compared as text). Both are checked on generated histories: sessions created,
analysed and re-analysed, their cost and start moved, analytics rows and sessions deleted,
sessions anonymized, people erased, retention applied — with windows of every shape (open,
whole days, partial days, within one day, bounds on a session's start).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.conftest import Database
from tests.db.test_analytics import new_session
from tests.db.test_migrations import empty_conn, empty_dsn  # noqa: F401 (fixtures)
from tests.support.api import Identity
from tests.support.db import owner
from tests.support.world import World
from voicesessions.local import migrations

WorldDb = tuple[Database, World]
UTC = dt.UTC
MIGRATION = "20261128000900"
SKILLS = ("opening", "questioning", "closing", "rapport")

# The computation company_metrics did before the rollups (20261126001100_analytics.sql),
# over the base tables: the reference every result is compared with.
REFERENCE = """
with scoped as materialized (
  select s.profile_id, s.duration_seconds, s.minute_cost, a.overall_score,
         a.api_cost_usd, a.talk_time_ratio, a.skill_scores
  from public.sessions s
  left join public.session_analytics a on a.session_id = s.id
  where s.company_id = %(company)s
    and s.started_at >= coalesce(%(since)s::timestamptz, '-infinity')
    and s.started_at < coalesce(%(until)s::timestamptz, 'infinity')
)
select row(count(*),
       count(distinct x.profile_id),
       count(x.overall_score),
       round(avg(x.overall_score), 2),
       coalesce(round(sum(x.duration_seconds) / 60.0, 2), 0),
       coalesce(sum(x.minute_cost), 0),
       coalesce(sum(x.api_cost_usd), 0),
       round(avg(x.talk_time_ratio), 4),
       (select coalesce(jsonb_object_agg(k.key, k.average), '{}'::jsonb)
        from (select e.key, round(avg((e.value)::numeric), 2) as average
              from scoped y cross join lateral jsonb_each(y.skill_scores) e
              where jsonb_typeof(e.value) = 'number'
              group by e.key) k))::text
from scoped x
"""

ACTUAL = (
    "select m::text from public.company_metrics(%(company)s, %(since)s::timestamptz,"
    " %(until)s::timestamptz) m"
)

# What each rollup table must hold, recomputed from the base tables.
EXPECTED_ROLLUPS = {
    "dash_company_day": """
        select s.company_id, (s.started_at at time zone 'UTC')::date, count(*),
               count(a.overall_score), coalesce(sum(a.overall_score), 0),
               count(s.duration_seconds), coalesce(sum(s.duration_seconds), 0),
               count(s.minute_cost), coalesce(sum(s.minute_cost), 0), count(a.session_id),
               coalesce(sum(a.api_cost_usd), 0), count(a.talk_time_ratio),
               coalesce(sum(a.talk_time_ratio), 0)
        from public.sessions s left join public.session_analytics a on a.session_id = s.id
        group by 1, 2""",
    "dash_company_day_skill": """
        select s.company_id, (s.started_at at time zone 'UTC')::date, e.key, count(*),
               sum((e.value)::numeric)
        from public.sessions s join public.session_analytics a on a.session_id = s.id
        cross join lateral jsonb_each(a.skill_scores) e
        where jsonb_typeof(e.value) = 'number'
        group by 1, 2, 3""",
}
STORED_ROLLUPS = {
    "dash_company_day": """
        select company_id, day, sessions, scored, score_sum, timed, duration_sum, costed,
               minute_cost_sum, analyzed, api_cost_sum, talked, talk_sum
        from private.dash_company_day""",
    "dash_company_day_skill": (
        "select company_id, day, skill, n, total from private.dash_company_day_skill"
    ),
}


def assert_rollups_match(conn: psycopg.Connection[Any]) -> None:
    """Every rollup table holds exactly what the base tables say, no row more or less."""
    for table, expected in EXPECTED_ROLLUPS.items():
        want = sorted(conn.execute(expected).fetchall())
        have = sorted(conn.execute(STORED_ROLLUPS[table]).fetchall())
        assert have == want, table


def assert_metrics_match(
    conn: psycopg.Connection[Any],
    company: uuid.UUID,
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> None:
    params = {"company": company, "since": since, "until": until}
    want = conn.execute(REFERENCE, params).fetchone()
    have = conn.execute(ACTUAL, params).fetchone()
    assert have == want, (since, until)


def windows(
    rng: random.Random, starts: list[dt.datetime]
) -> list[tuple[dt.datetime | None, dt.datetime | None]]:
    """Windows of every shape around the given session starts."""
    now = dt.datetime.now(UTC)
    midnight = dt.datetime(now.year, now.month, now.day, tzinfo=UTC)
    found: list[tuple[dt.datetime | None, dt.datetime | None]] = [
        (None, None),
        (midnight - dt.timedelta(days=30), None),
        (None, midnight - dt.timedelta(days=200)),
    ]
    points = [*starts, midnight - dt.timedelta(days=rng.randint(0, 900))]
    for _ in range(6):
        a, b = sorted(rng.sample(points, 2)) if len(points) > 1 else (points[0], now)
        if a == b:
            b = a + dt.timedelta(microseconds=1)
        found.append((a, b))  # bounds on session starts: since inclusive, until exclusive
        day = dt.datetime(a.year, a.month, a.day, tzinfo=UTC)
        found.append((day, day + dt.timedelta(days=rng.randint(1, 40))))  # whole days
        found.append((a, a + dt.timedelta(hours=rng.randint(1, 30))))  # within a day or two
        found.append((a - dt.timedelta(seconds=rng.randint(1, 90_000)), None))
    return found


def new_person(conn: psycopg.Connection[Any], company: uuid.UUID) -> uuid.UUID:
    person = uuid.uuid4()
    conn.execute(
        "insert into auth.users (id, email) values (%s, %s)", (person, f"{person}@example.test")
    )
    conn.execute(
        "insert into public.profiles (id, company_id, role, display_name)"
        " values (%s, %s, 'trainee', 'Person')",
        (person, company),
    )
    return person


def analysis(rng: random.Random) -> dict[str, Any]:
    """Results of an analysis: each figure present, null or absent; skills with integer,
    decimal or null scores."""
    results: dict[str, Any] = {}
    if rng.random() < 0.8:
        results["overall_score"] = rng.choice([None, rng.randint(0, 100)])
    if rng.random() < 0.7:
        results["talk_time_ratio"] = rng.choice([None, round(rng.random(), rng.randint(0, 4))])
    if rng.random() < 0.8:
        results["skill_scores"] = {
            s: rng.choice([None, rng.randint(0, 100), round(rng.uniform(0, 100), 2)])
            for s in SKILLS
            if rng.random() < 0.6
        }
    return results


class History:
    """A generated history of writes on a world database, as the owner (the service role
    for the database functions: a superuser connected without claims)."""

    def __init__(self, db: Database, world: World, seed: int):
        self.db = db
        self.rng = random.Random(seed)
        self.conn = owner(db)
        self.companies = [world.companies["A"], world.companies["B"]]
        self.people: list[tuple[uuid.UUID, uuid.UUID]] = [
            (world.person(k).id, world.companies[world.person(k).company])
            for k in ("A1", "A2", "B1")
        ]
        for company in self.companies:
            for _ in range(2):
                self.people.append((new_person(self.conn, company), company))

    def sessions(self, *, ended: bool = False) -> list[tuple[uuid.UUID, dt.datetime]]:
        rows = self.conn.execute(
            "select id, started_at from public.sessions"
            + (" where status <> 'active'" if ended else "")
            + " order by started_at, id"
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def step(self) -> str:
        rng = self.rng
        op = rng.choices(
            [
                "create",
                "analyze",
                "cost",
                "move",
                "delete",
                "unanalyze",
                "anonymize",
                "erase",
                "retention",
            ],
            weights=[30, 30, 8, 6, 6, 4, 4, 2, 2],
        )[0]
        now = dt.datetime.now(UTC)
        ended = self.sessions(ended=True)
        if op == "create" or not ended:
            person, _ = rng.choice(self.people)
            start = now - dt.timedelta(days=rng.randint(1, 900), seconds=rng.randint(0, 86_399))
            if rng.random() < 0.2:  # exactly on a UTC midnight
                start = dt.datetime(start.year, start.month, start.day, tzinfo=UTC)
            new_session(
                self.db,
                person,
                started_at=start,
                duration_s=rng.randint(1, 4000),
                minute_cost=rng.choice([None, Decimal(rng.randint(0, 99_999)) / 10_000]),
                status=rng.choice(["completed", "completed", "active"]),
            )
            return "create"
        sid, _ = rng.choice(ended)
        if op == "analyze":
            self.conn.execute(
                "select public.record_analysis(session_id => %s, provider => 'p',"
                " analysis_type => %s, results => %s, version => %s, api_cost_usd => %s)",
                (
                    sid,
                    rng.choice(["sales_scoring", "coaching"]),
                    Jsonb(analysis(rng)),
                    str(uuid.uuid4()),
                    rng.choice([None, Decimal(rng.randint(0, 10**6)) / 10**6]),
                ),
            )
        elif op == "cost":
            self.conn.execute(
                "update public.sessions set minute_cost = %s where id = %s",
                (rng.choice([None, Decimal(rng.randint(0, 99_999)) / 10_000]), sid),
            )
        elif op == "move":
            # to another day (the lifecycle rules may refuse; then nothing changes)
            with contextlib.suppress(psycopg.Error):
                self.conn.execute(
                    "update public.sessions set started_at = started_at - %s * interval '1 hour'"
                    " where id = %s",
                    (rng.randint(1, 72), sid),
                )
        elif op == "delete":
            self.conn.execute("delete from public.sessions where id = %s", (sid,))
        elif op == "unanalyze":
            self.conn.execute("delete from public.session_analytics where session_id = %s", (sid,))
        elif op == "anonymize":
            self.conn.execute("select public.gdpr_anonymize_session(%s)", (sid,))
        elif op == "erase":
            person, _ = rng.choice(self.people)
            self.conn.execute("select public.gdpr_erase_user(%s)", (person,))
            self.people.remove(next(p for p in self.people if p[0] == person))
            assert_no_trace(self.conn, person)
        elif op == "retention":
            company = rng.choice(self.companies)
            self.conn.execute(
                "update public.companies set session_retention_days = %s,"
                " analysis_retention_days = %s where id = %s",
                (rng.randint(200, 800), rng.randint(100, 800), company),
            )
            while True:
                report = self.conn.execute(
                    "select public.gdpr_apply_retention(%s)", (company,)
                ).fetchone()
                assert report is not None
                if not report[0].get("more"):
                    break
        return op

    def check(self) -> None:
        assert_rollups_match(self.conn)
        starts = [s for _, s in self.sessions()]
        for company in self.companies:
            for since, until in windows(self.rng, starts):
                assert_metrics_match(self.conn, company, since, until)


def assert_no_trace(conn: psycopg.Connection[Any], person: uuid.UUID) -> None:
    """No rollup row names the person (their sessions' contributions are gone too: the
    rollups equal what the remaining sessions say, checked separately)."""
    for table in STORED_ROLLUPS:
        row = conn.execute(
            f"select count(*) from private.{table} t where t::text like %s",
            (f"%{person}%",),
        ).fetchone()
        assert row == (0,), table


@pytest.mark.parametrize("seed", range(4))
def test_generated_histories_keep_rollups_and_metrics_exact(world_db: WorldDb, seed: int) -> None:
    db, world = world_db
    history = History(db, world, seed)
    try:
        history.check()  # the world as the migration's backfill left it
        done: set[str] = set()
        for i in range(60):
            done.add(history.step())
            if i % 10 == 9:
                history.check()
        history.check()
        assert {"create", "analyze"} <= done  # the other kinds: the test below
    finally:
        history.conn.close()


def test_every_kind_of_write_is_followed(world_db: WorldDb) -> None:
    """One history long enough to hit every operation, erasure and retention included."""
    db, world = world_db
    history = History(db, world, 1234)
    try:
        done: set[str] = set()
        for _ in range(40):
            history.step()
        for op in ("erase", "retention", "anonymize", "unanalyze", "move", "cost"):
            while op not in done:
                done.add(history.step())
        history.check()
    finally:
        history.conn.close()


def test_erasure_leaves_no_trace_in_the_rollups(world_db: WorldDb) -> None:
    db, world = world_db
    a1, a2 = world.person("A1").id, world.person("A2").id
    day = dt.datetime.now(UTC).replace(hour=1, minute=0, second=0, microsecond=0) - dt.timedelta(
        days=3
    )
    for person in (a1, a2):  # both on the same day: a shared company row
        sid = new_session(db, person, started_at=day, duration_s=600, minute_cost=Decimal("2.5"))
        with owner(db) as conn:
            conn.execute(
                "select public.record_analysis(%s, 'p', 'sales_scoring',"
                ' \'{"overall_score": 70, "skill_scores": {"rapport": 61.5}}\'::jsonb)',
                (sid,),
            )
    with owner(db) as conn:
        keyed = conn.execute(
            "select table_name, column_name from information_schema.columns"
            " where table_schema = 'private' and table_name like 'dash\\_%%'"
            " and data_type = 'uuid'"
        ).fetchall()
        assert {c for _, c in keyed} == {"company_id"}  # no rollup is keyed by a person
        conn.execute("select public.gdpr_erase_user(%s)", (a1,))
        assert_no_trace(conn, a1)
        assert_rollups_match(conn)
        assert_metrics_match(conn, world.companies["A"], None, None)
        assert conn.execute(
            "select sessions, score_sum, minute_cost_sum from private.dash_company_day"
            " where company_id = %s and day = %s",
            (world.companies["A"], day.date()),
        ).fetchone() == (1, 70, Decimal("2.5000"))  # A2's session alone


def contend(
    db: Database,
    first: Callable[[psycopg.Connection[Any]], None],
    second: Callable[[psycopg.Connection[Any]], None],
) -> None:
    """``first`` runs in a transaction left open; ``second``, in another connection, runs
    until it waits for a lock of the first; then both commit."""
    with psycopg.connect(db.dsn) as one, psycopg.connect(db.dsn) as two:
        first(one)
        errors: list[BaseException] = []

        def other() -> None:
            try:
                second(two)
                two.commit()
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        def waiting() -> bool:
            with owner(db) as watcher:
                row = watcher.execute(
                    "select wait_event_type from pg_stat_activity where pid = %s",
                    (two.info.backend_pid,),
                ).fetchone()
            return row is not None and row[0] == "Lock"

        thread = threading.Thread(target=other)
        thread.start()
        deadline = time.monotonic() + 30
        while not waiting() and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        blocked = waiting()
        one.commit()
        thread.join(60)
        assert not errors, errors
        assert blocked, "the second writer did not wait for the first"


def test_concurrent_writes_to_the_same_day_lose_nothing(world_db: WorldDb) -> None:
    """Two transactions add sessions of one company on a day without a rollup row yet, then
    complete and analyse them, each time at once: the second waits for the first's row lock,
    and neither update is lost."""
    db, world = world_db
    a1, a2 = world.person("A1").id, world.person("A2").id
    start = dt.datetime(2024, 2, 29, 10, tzinfo=UTC)
    ids: list[uuid.UUID] = []

    def insert(person: uuid.UUID) -> Callable[[psycopg.Connection[Any]], None]:
        def run(conn: psycopg.Connection[Any]) -> None:
            row = conn.execute(
                "insert into public.sessions (profile_id, title, started_at, minute_cost)"
                " values (%s, 'call', %s, 1.5) returning id",
                (person, start),
            ).fetchone()
            assert row is not None
            ids.append(uuid.UUID(str(row[0])))

        return run

    def finish(index: int) -> Callable[[psycopg.Connection[Any]], None]:
        def run(conn: psycopg.Connection[Any]) -> None:
            conn.execute(
                "update public.sessions set status = 'completed', ended_at = started_at"
                " + interval '5 minutes' where id = %s",
                (ids[index],),
            )
            conn.execute(
                "select public.record_analysis(%s, 'p', 'sales_scoring',"
                ' \'{"overall_score": 80, "skill_scores": {"closing": 50}}\'::jsonb,'
                " api_cost_usd => 0.25)",
                (ids[index],),
            )

        return run

    contend(db, insert(a1), insert(a2))
    contend(db, finish(0), finish(1))

    with owner(db) as conn:
        row = conn.execute(
            "select sessions, scored, score_sum, timed, duration_sum, minute_cost_sum,"
            " api_cost_sum from private.dash_company_day where company_id = %s and day = %s",
            (world.companies["A"], start.date()),
        ).fetchone()
        assert row == (2, 2, 160, 2, 600, Decimal("3.0000"), Decimal("0.500000"))
        assert_rollups_match(conn)


@pytest.mark.parametrize("who", ["MA", "AA", "A1", "B1", "AB", "anon", "service_role"])
def test_the_rollups_are_not_readable_through_the_api(world_db: WorldDb, who: str) -> None:
    db, world = world_db
    with db.api() as api:
        for table in STORED_ROLLUPS:
            with pytest.raises(psycopg.Error) as excinfo:
                api.run(world.identity(who), f"select * from private.{table}", ())
            assert excinfo.value.sqlstate == "42501"


@pytest.mark.parametrize(
    ("who", "company", "allowed"),
    [
        ("MA", "A", True),
        ("AA", "A", True),
        ("service_role", "B", True),
        ("MA", "B", False),
        ("AB", "A", False),
        ("A1", "A", False),
        ("B1", "B", False),
        ("anon", "A", False),
    ],
)
def test_the_reading_function_authorizes_like_company_metrics(
    world_db: WorldDb, who: str, company: str, allowed: bool
) -> None:
    """private.dash_company_metrics bypasses RLS (security definer), so it checks the caller
    itself: managers and admins of the company and the service role only."""
    db, world = world_db
    identity: Identity = world.identity(who)
    query = "select m::text from private.dash_company_metrics(%s, null, null) m"
    with db.api() as api:
        if allowed:
            rows = api.run(identity, query, (world.companies[company],)).rows
            with owner(db) as conn:
                want = conn.execute(
                    REFERENCE, {"company": world.companies[company], "since": None, "until": None}
                ).fetchone()
            assert want is not None
            assert [r["m"] for r in rows] == [want[0]]
        else:
            with pytest.raises(psycopg.Error) as excinfo:
                api.run(identity, query, (world.companies[company],))
            assert excinfo.value.sqlstate == "42501"


def test_the_migration_backfills_existing_sessions(
    empty_conn: psycopg.Connection[Any],  # noqa: F811 (the fixture imported above)
) -> None:
    files = migrations.load_migrations()
    migrations.migrate(empty_conn, [m for m in files if m.version < MIGRATION])
    conn = empty_conn
    company = conn.execute("insert into companies (name) values ('Old') returning id").fetchone()
    assert company is not None
    people = [new_person(conn, company[0]) for _ in range(3)]
    rng = random.Random(7)
    for i in range(30):
        row = conn.execute(
            "insert into public.sessions (profile_id, title, started_at, minute_cost)"
            " values (%s, 'call', now() - %s * interval '1 hour', %s) returning id",
            (people[i % 3], rng.randint(2, 2000), Decimal(rng.randint(0, 999)) / 100),
        ).fetchone()
        assert row is not None
        conn.execute(
            "update public.sessions set status = 'completed', ended_at = started_at"
            " + %s * interval '1 second' where id = %s",
            (rng.randint(1, 3600), row[0]),
        )
        if i % 4:
            conn.execute(
                "select public.record_analysis(%s, 'p', 'sales_scoring', %s)",
                (row[0], Jsonb(analysis(rng))),
            )
    migrations.migrate(conn)
    assert conn.execute("select count(*) from private.dash_company_day").fetchone() != (0,)
    assert_rollups_match(conn)
    for since, until in windows(rng, []):
        assert_metrics_match(conn, company[0], since, until)
