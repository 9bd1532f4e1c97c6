"""What RLS adds to a statement, timed by the server: the read policies of
20261128001100 (the caller's profile looked up in the policy) next to the ones before it
(plpgsql security definer helpers), on the same data and server.

The rows of ``benchmarks.rls_scale`` are loaded once into a database ("after": every
migration), which is then copied ("before") and given the previous sessions and segments
read policies back. Each of rls_scale's five questions is prepared (as PostgREST prepares
its statements) in both databases, as the user (*ours*) and as service_role with the filter
written out (*baseline*), and run under ``EXPLAIN (ANALYZE, TIMING OFF, SUMMARY)``: the
server's planning + execution time, without the network and the client, which a loaded
machine disturbs less than a wall clock. Rounds alternate databases and sides; medians.

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

#: The sessions and segments read policies as 20261128000700 left them.
BEFORE = """
drop policy "Owners and company managers and admins read sessions" on public.sessions;
create policy "Owners and company managers and admins read sessions"
  on public.sessions for select to authenticated
  using (
    profile_id = (select auth.uid())
    or company_id = (select private.managed_company_id())
  );
drop policy "Owners and company managers and admins read segments"
  on public.transcript_segments;
create policy "Owners and company managers and admins read segments"
  on public.transcript_segments for select to authenticated
  using (
    company_id = (select private.my_company_id())
    and (profile_id = (select auth.uid()) or (select private.managed_company_id()) is not null)
  );
"""


def _server_us(
    conn: psycopg.Connection[Any], who: str | None, name: str, params: tuple[Any, ...]
) -> float:
    """Planning + execution time (µs) of the prepared statement ``name``, as ``who``."""
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
        return float(summary["Planning Time"] + summary["Execution Time"]) * 1000


def _prepare(conn: psycopg.Connection[Any], name: str, query: str) -> None:
    numbered = query
    for k in range(1, query.count("%s") + 1):
        numbered = numbered.replace("%s", f"${k}", 1)
    conn.execute(sql.SQL("prepare {} as ").format(sql.Identifier(name)) + sql.SQL(numbered))
    conn.commit()


def run(companies: int, per_company: int, rounds: int, warmup: int = 6) -> str:
    with migrated_database("after") as (info, dsn):
        world = rls_scale.World(start=datetime(2026, 11, 1, tzinfo=UTC), step=timedelta(minutes=7))
        with psycopg.connect(dsn, autocommit=True) as conn:
            rls_scale.load(
                conn, world, range(companies), companies, per_company, 3, random.Random(1)
            )
        with psycopg.connect(info.dsn, autocommit=True) as admin:
            admin.execute("create database before template after")
        dsns = {"before": make_conninfo(info.dsn, dbname="before"), "after": dsn}
        with psycopg.connect(dsns["before"], autocommit=True) as conn:
            conn.execute(sql.SQL(BEFORE))
        cases = rls_scale.cases(world)
        conns = {db: psycopg.connect(d) for db, d in dsns.items()}
        try:
            for conn in conns.values():
                for i, case in enumerate(cases):
                    _prepare(conn, f"ours{i}", case.ours)
                    _prepare(conn, f"base{i}", case.baseline)
            times: dict[tuple[int, str, str], list[float]] = {}
            for r in range(warmup + rounds):
                order = list(conns) if r % 2 == 0 else list(conns)[::-1]
                for i, case in enumerate(cases):
                    for db in order:
                        sides = [
                            ("ours", case.who, case.ours_params),
                            ("base", None, case.baseline_params),
                        ]
                        for side, who, params in sides if r % 2 == 0 else sides[::-1]:
                            us = _server_us(conns[db], who, f"{side}{i}", params)
                            if r >= warmup:
                                times.setdefault((i, db, side), []).append(us)
        finally:
            for conn in conns.values():
                conn.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        f"{companies} companies x {per_company} sessions x 3 segments; medians of {rounds}"
        " alternated rounds; server µs (planning + execution of the prepared statement).",
        "",
        "| question | before: ours / baseline µs | ratio | after: ours / baseline µs | ratio"
        " | ours after / before |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for i, case in enumerate(cases):
        b_o, b_b = med[(i, "before", "ours")], med[(i, "before", "base")]
        a_o, a_b = med[(i, "after", "ours")], med[(i, "after", "base")]
        lines.append(
            f"| {case.question} | {b_o:.0f} / {b_b:.0f} | {b_o / b_b:.2f}x"
            f" | {a_o:.0f} / {a_b:.0f} | {a_o / a_b:.2f}x | {a_o / b_o:.2f}x |"
        )
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
