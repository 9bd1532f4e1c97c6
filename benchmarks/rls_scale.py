"""How fast is RLS at scale? Typical API queries, run as PostgREST would run them.

Loads 100 companies x 20 people (16 trainees, 2 managers, 2 admins), SESSIONS sessions and
SEGMENTS_PER_SESSION final segments per session (1,000,000 segments by default) into a fresh
local PostgreSQL, then times each query as a trainee, a manager and service_role: median and
p95 of REPEAT runs, plus whether the plan uses an index. Results go to BENCHMARKS.md.

    python -m benchmarks.rls_scale [--sessions 100000] [--segments-per-session 10] [--repeat 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from benchmarks._server import migrated_database
from voicesessions._request import request_context

ROOT = Path(__file__).resolve().parents[1]
COMPANIES = 100
PEOPLE_PER_COMPANY = 20  # 16 trainees, 2 managers, 2 admins

LOAD_SQL = """
set session_replication_role = replica;  -- bulk load: skip triggers, fill derived columns here
insert into companies (id, name)
select ('00000000-0000-4000-8000-' || lpad(c::text, 12, '0'))::uuid, 'Company ' || c
from generate_series(1, {companies}) c;

insert into auth.users (id, email)
select ('00000000-0000-4000-9000-' || lpad((c * 100 + p)::text, 12, '0'))::uuid,
       'u' || c || '_' || p || '@bench.test'
from generate_series(1, {companies}) c, generate_series(1, {people}) p;

insert into profiles (id, company_id, role, display_name)
select ('00000000-0000-4000-9000-' || lpad((c * 100 + p)::text, 12, '0'))::uuid,
       ('00000000-0000-4000-8000-' || lpad(c::text, 12, '0'))::uuid,
       (case when p <= 16 then 'trainee' when p <= 18 then 'manager' else 'admin' end)
         ::profile_role,
       'Person ' || c || '/' || p
from generate_series(1, {companies}) c, generate_series(1, {people}) p;

create temp table trainees as
select row_number() over (order by id) - 1 as n, id, company_id
from profiles where role = 'trainee';

insert into sessions (id, profile_id, company_id, title, status, started_at, ended_at)
select gen_random_uuid(), t.id, t.company_id, 'Call ' || s, 'completed',
       now() - (s || ' minutes')::interval,
       now() - (s || ' minutes')::interval + interval '5 minutes'
from generate_series(1, {sessions}) s
join trainees t on t.n = s % ({companies} * 16);

insert into transcript_segments
  (session_id, profile_id, company_id, seq, speaker, text, start_ms, end_ms, confidence)
select s.id, s.profile_id, s.company_id, g,
       case when g % 2 = 0 then 'trainee' else 'buyer' end,
       'words of segment ' || g, g * 3000, g * 3000 + 2500, 0.9
from sessions s, generate_series(0, {per_session} - 1) g;
set session_replication_role = origin;
analyze;
"""


def timed(
    conn: psycopg.Connection[Any],
    role: str,
    claims: dict[str, Any],
    query: str,
    params: tuple[Any, ...],
    repeat: int,
) -> tuple[float, float, int, bool]:
    """Median and p95 milliseconds, rows returned, and whether the plan uses an index."""
    durations = []
    rows = 0
    for _ in range(repeat):
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(*request_context(role, claims, method="GET"))
            start = time.perf_counter()
            cur.execute(query, params)
            rows = len(cur.fetchall())
            durations.append((time.perf_counter() - start) * 1000)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(*request_context(role, claims, method="GET"))
        cur.execute(f"explain (format json) {query}", params)
        plan = json.dumps(cur.fetchone()[0])  # type: ignore[index]
    durations.sort()
    p95 = durations[min(len(durations) - 1, int(len(durations) * 0.95))]
    return statistics.median(durations), p95, rows, "Index" in plan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--segments-per-session", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()

    with migrated_database() as (info, dsn):
        with psycopg.connect(dsn, autocommit=True) as conn:
            t0 = time.perf_counter()
            # Integers only, so plain formatting is safe; a multi-statement script cannot
            # take server-side parameters.
            load = LOAD_SQL.format(
                companies=int(COMPANIES),
                people=int(PEOPLE_PER_COMPANY),
                sessions=int(args.sessions),
                per_session=int(args.segments_per_session),
            )
            conn.execute(load.encode())
            load_s = time.perf_counter() - t0
            counts = {
                t: conn.execute(f"select count(*) from {t}").fetchone()[0]  # type: ignore[index]
                for t in ("companies", "profiles", "sessions", "transcript_segments")
            }
            trainee = conn.execute(
                "select id from profiles where role = 'trainee' order by id limit 1"
            ).fetchone()[0]  # type: ignore[index]
            manager = conn.execute(
                "select id from profiles where role = 'manager' and company_id ="
                " (select company_id from profiles where id = %s) limit 1",
                (trainee,),
            ).fetchone()[0]  # type: ignore[index]
            own_session = conn.execute(
                "select id from sessions where profile_id = %s limit 1", (trainee,)
            ).fetchone()[0]  # type: ignore[index]
            foreign_session = conn.execute(
                "select id from sessions where company_id <> (select company_id from profiles"
                " where id = %s) limit 1",
                (trainee,),
            ).fetchone()[0]  # type: ignore[index]

            def user(uid: Any) -> tuple[str, dict[str, Any]]:
                return "authenticated", {"sub": str(uid), "role": "authenticated"}

            service = ("service_role", {"role": "service_role"})
            cases = [
                (
                    "trainee: latest 20 own sessions",
                    user(trainee),
                    "select id, title, started_at from sessions order by started_at desc limit 20",
                    (),
                ),
                (
                    "trainee: one own session's segments",
                    user(trainee),
                    "select seq, speaker, text from transcript_segments where session_id = %s"
                    " order by seq",
                    (own_session,),
                ),
                (
                    "trainee: count all visible segments",
                    user(trainee),
                    "select count(*) from transcript_segments",
                    (),
                ),
                (
                    "trainee: another company's session (0 rows)",
                    user(trainee),
                    "select id from sessions where id = %s",
                    (foreign_session,),
                ),
                (
                    "manager: company's sessions this week",
                    user(manager),
                    "select id, profile_id, status from sessions"
                    " where started_at > now() - interval '7 days'",
                    (),
                ),
                (
                    "manager: count company segments",
                    user(manager),
                    "select count(*) from transcript_segments",
                    (),
                ),
                (
                    "service_role: one session's segments",
                    service,
                    "select seq, text from transcript_segments where session_id = %s order by seq",
                    (own_session,),
                ),
            ]
        results = []
        with psycopg.connect(make_conninfo(dsn)) as conn:
            for name, (role, claims), query, params in cases:
                median, p95, rows, indexed = timed(conn, role, claims, query, params, args.repeat)
                results.append((name, median, p95, rows, indexed))

    lines = [
        "## RLS at scale (`benchmarks/rls_scale.py`)",
        "",
        f"Command: `python -m benchmarks.rls_scale --sessions {args.sessions}"
        f" --segments-per-session {args.segments_per_session} --repeat {args.repeat}`",
        "",
        f"Data: {counts['companies']:,} companies, {counts['profiles']:,} profiles,"
        f" {counts['sessions']:,} sessions, {counts['transcript_segments']:,} transcript"
        f" segments (bulk load {load_s:.0f} s). PostgreSQL {info.major_version}, 2 cores;"
        " each query runs as PostgREST runs it (role + request.jwt.claims set locally in its"
        " transaction); time is the query alone, median and p95 of the runs.",
        "",
        "| query (as) | median ms | p95 ms | rows | index used |",
        "|---|---:|---:|---:|---|",
    ]
    for name, median, p95, rows, indexed in results:
        lines.append(
            f"| {name} | {median:.2f} | {p95:.2f} | {rows:,} | {'yes' if indexed else 'no'} |"
        )
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_write:
        write_section(section)
    return 0


def write_section(section: str) -> None:
    """Replace this benchmark's section of BENCHMARKS.md (or append it)."""
    path = ROOT / "BENCHMARKS.md"
    text = (
        path.read_text()
        if path.exists()
        else "# Benchmarks\n\nEach section names the command that reproduces it.\n\n"
    )
    start = text.find("## RLS at scale")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + ("" if end == -1 else text[end + 1 :])
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
