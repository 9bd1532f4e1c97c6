"""Do the dashboards use the indexes? Plans and run times of company_metrics and user_progress.

Loads one company with SESSIONS sessions (10,000 by default, 50 trainees, each session with
an analytics row: score, three skills, talk ratio, cost) next to OTHER_COMPANIES companies of
OTHER_SESSIONS sessions each, into a fresh local PostgreSQL. Then, as a manager of the big
company and as PostgREST would run the call, times public.company_metrics (whole history and
the last 30 days), public.user_progress (one trainee), public.team_overview and
public.metrics_timeseries: median and p95 of REPEAT runs. The plans of the queries *inside*
the functions come from auto_explain (log_nested_statements, ANALYZE, BUFFERS), printed in
full and summarised in BENCHMARKS.md (which scans, index or sequential).

    python -m benchmarks.analytics_plans [--sessions 10000] [--repeat 30] [--no-write]

`comparisons(quick)` (also `--compare`, or `--quick` for 10,000 vs 1,000 sessions) is issue
13's row: company_metrics over a company's whole history at 100,000 sessions against the same
call at 10,000, both companies in one database and measured in alternating rounds, plus the
other dashboards' times and buffers at both sizes. Bulk loads skip triggers, so the daily
rollups are rebuilt (private.dash_rebuild) after loading.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from benchmarks._compare import Comparison, Goal, Report
from benchmarks._server import migrated_database
from voicesessions._request import request_context

ROOT = Path(__file__).resolve().parents[1]
TRAINEES = 50
OTHER_COMPANIES = 20
OTHER_SESSIONS = 2_000

LOAD_SQL = """
set session_replication_role = replica;  -- bulk load: skip triggers, fill derived columns here
insert into companies (id, name)
select ('00000000-0000-4000-8000-' || lpad(c::text, 12, '0'))::uuid, 'Company ' || c
from generate_series(0, {others}) c;

insert into auth.users (id, email)
select ('00000000-0000-4000-9000-' || lpad((c * 1000 + p)::text, 12, '0'))::uuid,
       'u' || c || '_' || p || '@bench.test'
from generate_series(0, {others}) c, generate_series(0, {trainees}) p;

-- person 0 of each company is its manager, the others are trainees
insert into profiles (id, company_id, role, display_name)
select ('00000000-0000-4000-9000-' || lpad((c * 1000 + p)::text, 12, '0'))::uuid,
       ('00000000-0000-4000-8000-' || lpad(c::text, 12, '0'))::uuid,
       (case when p = 0 then 'manager' else 'trainee' end)::profile_role,
       'Person ' || c || '/' || p
from generate_series(0, {others}) c, generate_series(0, {trainees}) p;

-- company 0 has {sessions} sessions, the others {other_sessions} each, over the last year
insert into sessions (id, profile_id, company_id, title, status, started_at, ended_at,
                      minute_cost)
select gen_random_uuid(),
       ('00000000-0000-4000-9000-' || lpad((c * 1000 + 1 + s % {trainees})::text, 12, '0'))::uuid,
       ('00000000-0000-4000-8000-' || lpad(c::text, 12, '0'))::uuid,
       'Call ' || s, 'analyzed',
       now() - (s * 365.0 / n || ' days')::interval,
       now() - (s * 365.0 / n || ' days')::interval + ((300 + s % 900) || ' seconds')::interval,
       1 + s % 15
from (select 0 as c, {sessions} as n
      union all select c, case when c = 1 and {second} > 0 then {second} else {other_sessions} end
      from generate_series(1, {others}) c) co,
     lateral generate_series(1, co.n) s;

insert into session_analytics (session_id, profile_id, company_id, overall_score,
  opening_score, closing_score, skill_scores, talk_time_ratio, question_count, api_cost_usd,
  session_date, session_hour)
select s.id, s.profile_id, s.company_id, 40 + (h % 60), 30 + (h % 70), 50 + (h % 50),
       jsonb_build_object('opening', 30 + (h % 70), 'closing', 50 + (h % 50),
                          'rapport', 20 + (h % 80)),
       0.2 + (h % 60) / 100.0, h % 15, (h % 100) / 1000.0,
       (s.started_at at time zone 'UTC')::date,
       extract(hour from s.started_at at time zone 'UTC')::smallint
from (select s.*, abs(hashtext(s.id::text)) as h from sessions s) s;
set session_replication_role = origin;
-- the dashboards' daily rollups (when this schema has them) are derived too: rebuild them
do $$ begin
  if to_regprocedure('private.dash_rebuild()') is not null then
    perform private.dash_rebuild();
  end if;
end $$;
analyze;
"""

COMPANY = "00000000-0000-4000-8000-000000000000"
MANAGER = "00000000-0000-4000-9000-000000000000"
TRAINEE = "00000000-0000-4000-9000-000000000001"
READING = (
    "Reading: no statement scans a table sequentially; sessions are reached through `"
    "sessions_company_id_started_at_idx` / `sessions_profile_id_started_at_idx` (the "
    "RLS policy's `profile_id = uid or company_id = managed company` becomes a Bitmap"
    "Or of the two) and analytics through their primary key or company/profile indexe"
    "s. The whole-history company numbers aggregate all 10,000 rows, most of it the p"
    "er-skill jsonb averages; a window (last 30 days) costs what the window holds. te"
    "am_overview runs the user_progress query once per trainee (50 index scans). Time"
    "s vary about 2x between runs on this shared 2-core machine."
)


def timed(
    conn: psycopg.Connection[Any],
    query: str,
    params: tuple[Any, ...],
    repeat: int,
    manager: str = MANAGER,
) -> tuple[float, float, int]:
    """Median and p95 milliseconds, and rows returned, as the manager through PostgREST."""
    claims = {"sub": manager, "role": "authenticated"}
    durations = []
    rows = 0
    for _ in range(repeat):
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(*request_context("authenticated", claims, method="POST"))
            start = time.perf_counter()
            cur.execute(query, params)
            rows = len(cur.fetchall())
            durations.append((time.perf_counter() - start) * 1000)
    durations.sort()
    p95 = durations[min(len(durations) - 1, int(len(durations) * 0.95))]
    return statistics.median(durations), p95, rows


def nested_plans(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...]) -> list[str]:
    """The EXPLAIN (ANALYZE, BUFFERS) text of every statement the call runs, from
    auto_explain (loaded into this superuser session, then the request runs as the manager)."""
    plans: list[str] = []
    conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
    claims = {"sub": MANAGER, "role": "authenticated"}
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(*request_context("authenticated", claims, method="POST"))
        cur.execute(query, params)
        cur.fetchall()
    conn._notice_handlers.clear()  # type: ignore[attr-defined]
    return [p for p in plans if "Query Text" in p or "duration" in p]


def scans(plans: list[str]) -> str:
    """The scans of sessions, session_analytics and profiles (and their indexes) in the
    plans, deduplicated, in order of appearance."""
    found: list[str] = []
    pattern = re.compile(
        r"((?:Parallel )?(?:Index Only Scan|Index Scan|Bitmap Heap Scan|Bitmap Index Scan"
        r"|Seq Scan)(?: Backward)?)(?: using (\w+))? on (\w+)"
    )
    for plan in plans:
        for kind, index, name in pattern.findall(plan):
            if not name.startswith(("sessions", "session_analytics", "profiles")):
                continue
            item = f"{kind} on {name}" + (f" using {index}" if index else "")
            if item not in found:
                found.append(item)
    return "; ".join(found)


SMALL_COMPANY = "00000000-0000-4000-8000-000000000001"
SMALL_MANAGER = "00000000-0000-4000-9000-000000001000"
GOAL_RATIO = 1.2  # issue 13: company_metrics at 100k sessions / at 10k
GOAL_MS = 20.0  # issue 13: company_metrics at 100k sessions, whole history


def buffers(
    conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...], manager: str
) -> int:
    """Shared buffers (hit + read) the call touches, the statements inside the function
    included (the Function Scan node counts them): a measure that does not depend on load."""
    claims = {"sub": manager, "role": "authenticated"}
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(*request_context("authenticated", claims, method="POST"))
        cur.execute(("explain (analyze, buffers, format json) " + query).encode(), params)
        row = cur.fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])


def comparisons(quick: bool) -> Report:
    """company_metrics over a company's whole history: the big company's time over the time
    of a company ten times smaller, both loaded in the same database and measured in
    alternating rounds (medians), and the big company's time against the issue's 20 ms.
    Quick mode: 10,000 vs 1,000 sessions and few rounds (seconds; reported, not asserted)."""
    big, small = (10_000, 1_000) if quick else (100_000, 10_000)
    others, other_sessions = (3, 200) if quick else (OTHER_COMPANIES, OTHER_SESSIONS)
    repeat = 5 if quick else 30
    cases = [
        ("company_metrics, whole history", "select * from company_metrics(%s)"),
        (
            "company_metrics, last 30 days",
            "select * from company_metrics(%s, now() - interval '30 days')",
        ),
        ("team_overview", "select * from team_overview(%s)"),
        (
            "metrics_timeseries, company by week",
            "select * from metrics_timeseries(company_id => %s, bucket => 'week')",
        ),
    ]
    with migrated_database() as (info, dsn), psycopg.connect(dsn, autocommit=True) as conn:
        load = LOAD_SQL.format(  # integers only: plain formatting is safe
            others=int(others),
            trainees=int(TRAINEES),
            sessions=int(big),
            other_sessions=int(other_sessions),
            second=int(small),
        )
        conn.execute(load.encode())
        rows: list[tuple[str, float, float, int, int]] = []
        for name, query in cases:
            big_ms: list[float] = []
            small_ms: list[float] = []
            for _ in range(repeat):  # alternate, so that load hits both alike
                big_ms.append(timed(conn, query, (COMPANY,), 1, MANAGER)[0])
                small_ms.append(timed(conn, query, (SMALL_COMPANY,), 1, SMALL_MANAGER)[0])
            rows.append(
                (
                    name,
                    statistics.median(big_ms),
                    statistics.median(small_ms),
                    buffers(conn, query, (COMPANY,), MANAGER),
                    buffers(conn, query, (SMALL_COMPANY,), SMALL_MANAGER),
                )
            )
        version = info.major_version
    whole = rows[0]
    detail = [
        f"| call | {big:,} sessions ms | {small:,} sessions ms | ratio |"
        f" buffers {big:,} | buffers {small:,} |",
        "|---|---:|---:|---:|---:|---:|",
    ] + [
        f"| {n} | {b:.2f} | {s:.2f} | {b / s:.2f}x | {bb:,} | {sb:,} |" for n, b, s, bb, sb in rows
    ]
    return Report(
        title="Dashboards independent of history (`benchmarks/analytics_plans.py`)",
        command="python -m benchmarks.analytics_plans" + (" --quick" if quick else ""),
        data=(
            f"One company of {big:,} sessions and one of {small:,} ({TRAINEES} trainees each,"
            f" over the last year, every session analyzed with three skills) among"
            f" {others + 1} companies of {other_sessions:,} sessions, PostgreSQL {version};"
            f" each call as PostgREST runs it for a manager, median of {repeat} alternating"
            " rounds; buffers (shared hit + read, the function's statements included) from"
            " EXPLAIN (ANALYZE, BUFFERS)."
        ),
        comparisons=[
            Comparison(
                question=f"company_metrics, whole history: {big:,} vs {small:,} sessions",
                ours=whole[1],
                baseline=whole[2],
                unit="ms",
                goal=Goal("max", GOAL_RATIO),
                baseline_name=f"the same call on {small:,} sessions",
                note=f"buffers {whole[3]:,} vs {whole[4]:,}",
            ),
            Comparison(
                question=f"company_metrics, whole history of {big:,} sessions",
                ours=whole[1],
                baseline=GOAL_MS,
                unit="ms",
                goal=Goal("max", 1.0),
                baseline_name=f"the issue's {GOAL_MS:g} ms",
                note="absolute time: compare on a quiet machine",
            ),
        ],
        details="\n".join(detail),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="only the issue-13 comparison (100k vs 10k sessions), printed",
    )
    parser.add_argument("--quick", action="store_true", help="with --compare: 10k vs 1k, fast")
    args = parser.parse_args()
    if args.compare or args.quick:
        report = comparisons(args.quick)
        print(f"## {report.title}\n\nCommand: `{report.command}`\n\n{report.data}\n")
        for c in report.comparisons:
            print(
                f"- {c.question}: {c.ours:.2f} {c.unit} / {c.baseline:.2f} {c.unit}"
                f" ({c.baseline_name}) = {c.ratio:.2f}, goal {c.goal}:"
                f" {'met' if c.met else 'MISSED'}; {c.note}"
            )
        print("\n" + report.details)
        return 0

    with migrated_database() as (info, dsn):
        with psycopg.connect(dsn, autocommit=True) as conn:
            t0 = time.perf_counter()
            load = LOAD_SQL.format(  # integers only: plain formatting is safe
                others=int(OTHER_COMPANIES),
                trainees=int(TRAINEES),
                sessions=int(args.sessions),
                other_sessions=int(OTHER_SESSIONS),
                second=0,
            )
            conn.execute(load.encode())
            load_s = time.perf_counter() - t0
            total = conn.execute("select count(*) from sessions").fetchone()[0]  # type: ignore[index]
            own = conn.execute(
                "select count(*) from sessions where company_id = %s", (COMPANY,)
            ).fetchone()[0]  # type: ignore[index]

        cases = [
            ("company_metrics, whole history", "select * from company_metrics(%s)", (COMPANY,)),
            (
                "company_metrics, last 30 days",
                "select * from company_metrics(%s, now() - interval '30 days')",
                (COMPANY,),
            ),
            ("user_progress, one trainee", "select * from user_progress(%s)", (TRAINEE,)),
            (
                f"team_overview, {TRAINEES} trainees",
                "select * from team_overview(%s)",
                (COMPANY,),
            ),
            (
                "metrics_timeseries, company by week",
                "select * from metrics_timeseries(company_id => %s, bucket => 'week')",
                (COMPANY,),
            ),
        ]
        results = []
        full_plans: list[str] = []
        with psycopg.connect(dsn, autocommit=True) as conn:
            try:
                conn.execute("load 'auto_explain'")
                for setting, value in (
                    ("auto_explain.log_min_duration", "0"),
                    ("auto_explain.log_analyze", "on"),
                    ("auto_explain.log_buffers", "on"),
                    ("auto_explain.log_nested_statements", "on"),
                    ("auto_explain.log_level", "notice"),
                ):
                    conn.execute(f"set {setting} = {value}")
                explain = True
            except psycopg.Error:
                explain = False  # no auto_explain in this PostgreSQL build
            for name, query, params in cases:
                plans = nested_plans(conn, query, params) if explain else []
                full_plans += [f"-- {name}", *plans]
                if explain:
                    conn.execute("set auto_explain.log_min_duration = -1")
                median, p95, rows = timed(conn, query, params, args.repeat)
                if explain:
                    conn.execute("set auto_explain.log_min_duration = 0")
                results.append((name, median, p95, rows, scans(plans) or "(no plan)"))

    print("\n\n".join(full_plans))
    lines = [
        "## Dashboards on a company of 10,000 sessions (`benchmarks/analytics_plans.py`)",
        "",
        f"Command: `python -m benchmarks.analytics_plans --sessions {args.sessions}"
        f" --repeat {args.repeat}`",
        "",
        f"Data: one company with {own:,} sessions ({TRAINEES} trainees) among"
        f" {OTHER_COMPANIES + 1} companies, {total:,} sessions in all, each with an analytics"
        f" row (bulk load {load_s:.0f} s). PostgreSQL {info.major_version}, 2 cores. Each call"
        " runs as PostgREST runs it, as a manager of the big company; time is the call alone,"
        " median and p95 of the runs. Scans are those of the statements inside the functions,"
        " from auto_explain (ANALYZE, BUFFERS; the script prints the full plans).",
        "",
        "| call | median ms | p95 ms | rows | scans inside |",
        "|---|---:|---:|---:|---|",
    ]
    for name, median, p95, rows, scan in results:
        lines.append(f"| {name} | {median:.2f} | {p95:.2f} | {rows:,} | {scan} |")
    lines += ["", READING]
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_write:
        write_section(section)
    return 0


def write_section(section: str) -> None:
    """Replace this benchmark's section of BENCHMARKS.md (or append it)."""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text()
    start = text.find("## Dashboards on a company")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + ("" if end == -1 else text[end + 1 :])
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
