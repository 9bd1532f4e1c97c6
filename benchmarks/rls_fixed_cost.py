"""What RLS adds to a statement, timed by the server: the current read policies of sessions
and transcript segments next to a candidate that looks the caller's profile up in the policy.

Current (20261128000700): the policies call plpgsql security definer helpers
(private.my_company_id / managed_company_id), an executor run of their own per call (the
`search_path = ''` save and restore, SPI, an index scan of profiles). Candidate
(:data:`CANDIDATE`): the policy reads the caller's profile row in a subquery, under the
profiles read policy, which lets everyone read their own row (same answers, nothing more
visible); PostgreSQL makes it an initplan, evaluated once, inside the statement. (Invoker
SQL helpers are not an option: every function carries `set search_path` (advisor 0011),
which stops PostgreSQL from inlining them.)

The rows of ``benchmarks.rls_scale`` are loaded once ("current": every migration), copied
("candidate") and given :data:`CANDIDATE`. Each of rls_scale's five questions is prepared
(as PostgREST prepares its statements) in both databases, as the user (*ours*) and as
service_role with the filter written out (*baseline*), and run under ``EXPLAIN (ANALYZE,
TIMING OFF, SUMMARY)``: the server's planning and execution times, without the network and
the client, which a loaded machine disturbs less than a wall clock. Rounds alternate
databases and sides; medians.

    python -m benchmarks.rls_fixed_cost [--quick] [--companies 60] [--sessions-per-company 300]
        [--rounds 60]
"""

from __future__ import annotations

import argparse
import random
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from benchmarks import rls_scale
from benchmarks._server import migrated_database
from voicesessions._request import request_context

#: The candidate read policies (the caller's profile looked up in the policy).
CANDIDATE = """
-- Sessions: the owner, or a manager or an admin of the session's company.
drop policy if exists "Owners and company managers and admins read sessions" on public.sessions;
create policy "Owners and company managers and admins read sessions"
  on public.sessions for select to authenticated
  using (
    profile_id = (select auth.uid())
    or company_id = (
      select p.company_id from public.profiles p
      where p.id = (select auth.uid()) and p.role in ('manager', 'admin')
    )
  );

-- Transcript segments: the caller's company (20261128000700 says why the company first),
-- and in it everything for a manager or an admin, only their own rows for anyone else.
drop policy if exists "Owners and company managers and admins read segments"
  on public.transcript_segments;
create policy "Owners and company managers and admins read segments"
  on public.transcript_segments for select to authenticated
  using (
    company_id = (select p.company_id from public.profiles p where p.id = (select auth.uid()))
    and (
      profile_id = (select auth.uid())
      or exists (
        select from public.profiles p
        where p.id = (select auth.uid()) and p.role in ('manager', 'admin')
      )
    )
  );
"""


def _server_us(
    conn: psycopg.Connection[Any], who: str | None, name: str, params: tuple[Any, ...]
) -> tuple[float, float]:
    """Planning and execution time (µs) of the prepared statement ``name``, as ``who``."""
    role, claims = rls_scale._as(who)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(*request_context(role, claims, method="GET"))
        args = sql.SQL("({})").format(sql.SQL(", ").join(map(sql.Literal, params)))
        cur.execute(
            sql.SQL("explain (analyze, timing off, summary, format json) execute {}{}").format(
                sql.Identifier(name), args if params else sql.SQL("")
            )
        )
        row = cur.fetchone()
        assert row is not None
        summary = row[0][0]
        return summary["Planning Time"] * 1000.0, summary["Execution Time"] * 1000.0


def _prepare(conn: psycopg.Connection[Any], name: str, query: str) -> None:
    numbered = query
    for k in range(1, query.count("%s") + 1):
        numbered = numbered.replace("%s", f"${k}", 1)
    conn.execute(sql.SQL("prepare {} as ").format(sql.Identifier(name)) + sql.SQL(numbered))
    conn.commit()


def helper_calls(dsn: str, who: str, transactions: int) -> str:
    """Server µs per call of the two helpers, first and second in a statement, one statement
    per transaction as PostgREST sends them (pg_stat_user_functions, track_functions=all)."""
    with psycopg.connect(dsn) as conn:
        role, claims = rls_scale._as(who)
        for n in range(20 + transactions):  # 20 first: compiling the functions is not a call
            if n == 20:
                conn.execute("select pg_stat_reset()")
                conn.execute("set track_functions = 'all'")
                conn.commit()
            with conn.transaction():
                conn.execute(*request_context(role, claims, method="GET"))
                conn.execute(
                    "select (select private.my_company_id()), (select private.managed_company_id())"
                )
        conn.execute("select pg_stat_force_next_flush()")
        conn.commit()
    with psycopg.connect(dsn) as conn:
        found = conn.execute(
            "select funcname, calls, total_time * 1000 / calls from pg_stat_user_functions"
            " where schemaname = 'private' and funcname in ('my_company_id', 'managed_company_id')"
            " order by funcname desc"
        ).fetchall()
    return "; ".join(f"{name}(): {us:.1f} µs/call ({calls} calls)" for name, calls, us in found)


def run(companies: int, per_company: int, rounds: int, warmup: int = 6) -> str:
    with migrated_database("current") as (info, dsn):
        world = rls_scale.World(start=datetime(2026, 11, 1, tzinfo=UTC), step=timedelta(minutes=7))
        with psycopg.connect(dsn, autocommit=True) as conn:
            rls_scale.load(
                conn, world, range(companies), companies, per_company, 3, random.Random(1)
            )
        with psycopg.connect(info.dsn, autocommit=True) as admin:
            admin.execute("create database candidate template current")
        dsns = {"current": dsn, "candidate": make_conninfo(info.dsn, dbname="candidate")}
        with psycopg.connect(dsns["candidate"], autocommit=True) as conn:
            conn.execute(sql.SQL(CANDIDATE))
        cases = rls_scale.cases(world)
        conns = {db: psycopg.connect(d) for db, d in dsns.items()}
        try:
            for conn in conns.values():
                for i, case in enumerate(cases):
                    _prepare(conn, f"ours{i}", case.ours)
                    _prepare(conn, f"base{i}", case.baseline)
            times: dict[tuple[int, str, str, str], list[float]] = {}
            for r in range(warmup + rounds):
                order = list(conns) if r % 2 == 0 else list(conns)[::-1]
                for i, case in enumerate(cases):
                    for db in order:
                        sides = [
                            ("ours", case.who, case.ours_params),
                            ("base", None, case.baseline_params),
                        ]
                        for side, who, params in sides if r % 2 == 0 else sides[::-1]:
                            plan, run = _server_us(conns[db], who, f"{side}{i}", params)
                            if r >= warmup:
                                for part, us in (("plan", plan), ("run", run)):
                                    times.setdefault((i, db, side, part), []).append(us)
                                times.setdefault((i, db, side, "sum"), []).append(plan + run)
        finally:
            for conn in conns.values():
                conn.close()
        helpers = helper_calls(dsn, cases[2].who, 10 * rounds)
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        f"{companies} companies x {per_company} sessions x 3 segments; medians of {rounds}"
        " alternated rounds; server µs of the prepared statement, planning + execution"
        " (planning, execution).",
        "",
        "| question | current: ours | baseline | ratio | candidate: ours | baseline | ratio"
        " | ours candidate / current |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(i: int, db: str, side: str) -> str:
        plan, run, total = (med[(i, db, side, part)] for part in ("plan", "run", "sum"))
        return f"{total:.0f} ({plan:.0f}, {run:.0f})"

    for i, case in enumerate(cases):
        c_o, c_b = med[(i, "current", "ours", "sum")], med[(i, "current", "base", "sum")]
        n_o, n_b = med[(i, "candidate", "ours", "sum")], med[(i, "candidate", "base", "sum")]
        lines.append(
            f"| {case.question} | {cell(i, 'current', 'ours')} | {cell(i, 'current', 'base')}"
            f" | {c_o / c_b:.2f}x | {cell(i, 'candidate', 'ours')}"
            f" | {cell(i, 'candidate', 'base')} | {n_o / n_b:.2f}x | {n_o / c_o:.2f}x |"
        )
    lines += [
        "",
        "The helpers as the current policies call them, a manager, one statement per"
        " transaction (`my_company_id()` first, `managed_company_id()` second): " + helpers,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--companies", type=int, default=60)
    parser.add_argument("--sessions-per-company", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args(argv)
    if args.quick:
        print(run(10, 100, 10))
    else:
        print(run(args.companies, args.sessions_per_company, args.rounds))


if __name__ == "__main__":
    main()
