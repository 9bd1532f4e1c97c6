"""What does RLS cost? Each API query as a user, next to the same query as service_role.

Every question is asked twice in the same run, on the same data: *ours* is the query an end
user sends (as PostgREST runs it: role ``authenticated`` and the JWT claims set locally in
the transaction, so the RLS policies do the filtering); the *baseline* is the same query as
``service_role`` (no RLS) with the filter RLS stands for written out (``profile_id = me``
for a trainee, ``company_id = mine`` for a manager). Both must return the same rows (checked).
Rounds alternate ours/baseline; the ratio is median over median. EXPLAIN (ANALYZE, BUFFERS)
gives the buffers each touches, which do not depend on the machine's load.

Data: COMPANIES companies x 20 people (16 trainees, 2 managers, 2 admins), SESSIONS_PER
_COMPANY sessions per company spread over two years and inserted in time order (a tenant's
rows are scattered over the table as in production), SEGMENTS per session; loaded with COPY,
then VACUUM ANALYZE. "Tenant cost when the table grows 10x": the same tenant's queries on
that database and on a second one, on the same server, holding only the first tenth of the
companies (the same rows), alternated like the rest.

    python -m benchmarks.rls_scale [--quick] [--companies 1000] [--sessions-per-company 1000]
        [--segments-per-session 3] [--rounds 40] [--no-write]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from benchmarks._compare import Comparison, Goal, Report
from benchmarks._server import another_database, migrated_database
from voicesessions._request import request_context

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## RLS at scale"
TRAINEES, MANAGERS, ADMINS = 16, 2, 2
PEOPLE = TRAINEES + MANAGERS + ADMINS
HISTORY = timedelta(days=730)
TABLES = ("public.sessions", "public.transcript_segments")
RLS_GOAL = Goal("max", 1.25)
GROWTH_GOAL = Goal("max", 1.07)  # "keep": what the issue measured before (1.00-1.07x)


# -- data ---------------------------------------------------------------------------------


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass
class World:
    """Ids of the loaded data; companies[c] = (company id, [person ids]), person 0..15 are
    trainees, 16..17 managers, 18..19 admins."""

    start: datetime
    step: timedelta
    companies: list[tuple[str, list[str]]] = field(default_factory=list)
    sessions: dict[str, list[str]] = field(default_factory=dict)  # per trainee, latest first


def _copy(cur: psycopg.Cursor[Any], statement: str, lines: Iterator[str]) -> None:
    """COPY text lines, in chunks of about 1 MB."""
    with cur.copy(statement) as copy:
        buffer = io.StringIO()
        for line in lines:
            buffer.write(line)
            if buffer.tell() > 1 << 20:
                copy.write(buffer.getvalue())
                buffer = io.StringIO()
        copy.write(buffer.getvalue())


def load(
    conn: psycopg.Connection[Any],
    world: World,
    companies: range,
    total_companies: int,
    per_company: int,
    segments: int,
    rng: random.Random,
) -> float:
    """COPY the companies ``companies`` (their people, sessions and segments) with triggers
    off, every derived column given; then VACUUM ANALYZE. Returns the seconds it took."""
    t0 = time.perf_counter()
    new = []
    for c in companies:
        new.append((c, _uuid(rng), [_uuid(rng) for _ in range(PEOPLE)]))
    world.companies.extend((company, people) for _, company, people in new)
    roles = ["trainee"] * TRAINEES + ["manager"] * MANAGERS + ["admin"] * ADMINS
    # Session k of company c starts k * total + c steps before the start: one tenant's
    # sessions are spread over the whole history and interleaved with everyone else's.
    rows: list[tuple[str, str, str, int, datetime]] = []
    for k in range(per_company):
        for c, company, people in new:
            trainee = people[k % TRAINEES]
            started = world.start - world.step * (k * total_companies + c)
            rows.append((_uuid(rng), trainee, company, k, started))
    rows.sort(key=lambda r: r[4])  # inserted in time order
    for sid, trainee, _company, _k, _started in reversed(rows):
        world.sessions.setdefault(trainee, []).append(sid)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("set local session_replication_role = replica")
        # Committed synchronously, so that VACUUM can mark the pages all-visible at once
        # (it leaves pages of a not yet flushed asynchronous commit as they are).
        cur.execute("set local synchronous_commit = on")
        _copy(
            cur,
            "copy companies (id, name) from stdin",
            (f"{company}\tCompany {c}\n" for c, company, _ in new),
        )
        _copy(
            cur,
            "copy auth.users (id, email) from stdin",
            (f"{p}\tu{c}_{i}@bench.test\n" for c, _, people in new for i, p in enumerate(people)),
        )
        _copy(
            cur,
            "copy profiles (id, company_id, role, display_name) from stdin",
            (
                f"{p}\t{company}\t{roles[i]}\tPerson {c}/{i}\n"
                for c, company, people in new
                for i, p in enumerate(people)
            ),
        )
        _copy(
            cur,
            "copy sessions (id, profile_id, company_id, title, status, started_at, ended_at)"
            " from stdin",
            (
                f"{sid}\t{trainee}\t{company}\tCall {k}\tcompleted\t{started.isoformat()}"
                f"\t{(started + timedelta(minutes=5)).isoformat()}\n"
                for sid, trainee, company, k, started in rows
            ),
        )
        _copy(
            cur,
            "copy transcript_segments (session_id, profile_id, company_id, seq, speaker, text,"
            " start_ms, end_ms, confidence) from stdin",
            (
                f"{sid}\t{trainee}\t{company}\t{g}\t{'trainee' if g % 2 == 0 else 'buyer'}"
                f"\twords of segment {g}\t{g * 3000}\t{g * 3000 + 2500}\t0.9\n"
                for sid, trainee, company, _k, _started in rows
                for g in range(segments)
            ),
        )
    conn.execute("vacuum (analyze)")
    settle(conn)
    return time.perf_counter() - t0


def settle(conn: psycopg.Connection[Any], tables: Sequence[str] = TABLES) -> None:
    """VACUUM again until every page of ``tables`` is marked all-visible, as autovacuum
    leaves them in production: a VACUUM cannot mark the pages while another transaction
    (an autovacuum ANALYZE, say) still holds a snapshot older than the load."""
    query = (
        "select count(*) from pg_class where oid = any(%s::regclass[]) and relallvisible < relpages"
    )
    for _ in range(60):
        row = conn.execute(query, (list(tables),)).fetchone()
        if row is not None and row[0] == 0:
            return
        time.sleep(0.5)
        conn.execute(f"vacuum {', '.join(tables)}")
    raise RuntimeError(f"VACUUM could not mark every page of {tables} all-visible")


# -- the questions ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    question: str
    who: str  # person id whose claims run *ours*
    ours: str
    ours_params: tuple[Any, ...]
    baseline: str
    baseline_params: tuple[Any, ...]
    expect_rows: bool = True  # False: the answer must be empty (and the row exist)


def cases(world: World) -> list[Case]:
    """The issue's five questions, asked by a trainee and a manager of the first company."""
    company, people = world.companies[0]
    trainee, manager = people[0], people[TRAINEES]
    own_session = world.sessions[trainee][len(world.sessions[trainee]) // 2]
    foreign_session = world.sessions[world.companies[1][1][0]][0]
    week_ago = world.start - timedelta(days=7)
    return [
        Case(
            "latest 20 own sessions (trainee)",
            trainee,
            "select id, title, started_at from sessions order by started_at desc limit 20",
            (),
            "select id, title, started_at from sessions where profile_id = %s"
            " order by started_at desc limit 20",
            (trainee,),
        ),
        Case(
            "manager's last 7 days of sessions",
            manager,
            "select id, profile_id, status from sessions where started_at > %s",
            (week_ago,),
            "select id, profile_id, status from sessions where started_at > %s and company_id = %s",
            (week_ago, company),
        ),
        Case(
            "manager counts company segments",
            manager,
            "select count(*) from transcript_segments",
            (),
            "select count(*) from transcript_segments where company_id = %s",
            (company,),
        ),
        Case(
            "another company's session (trainee, 0 rows)",
            trainee,
            "select id, title from sessions where id = %s",
            (foreign_session,),
            "select id, title from sessions where id = %s and profile_id = %s",
            (foreign_session, trainee),
            expect_rows=False,
        ),
        Case(
            "one session's segments (trainee)",
            trainee,
            "select seq, speaker, text from transcript_segments where session_id = %s order by seq",
            (own_session,),
            "select seq, speaker, text from transcript_segments where session_id = %s"
            " and profile_id = %s order by seq",
            (own_session, trainee),
        ),
    ]


# -- measuring ----------------------------------------------------------------------------

SERVICE = ("service_role", {"role": "service_role"})


def _as(who: str | None) -> tuple[str, dict[str, Any]]:
    return SERVICE if who is None else ("authenticated", {"sub": who, "role": "authenticated"})


def _run(
    conn: psycopg.Connection[Any], who: str | None, query: str, params: Sequence[Any]
) -> tuple[float, list[tuple[Any, ...]]]:
    """Seconds the query alone took (in its request context) and its rows."""
    role, claims = _as(who)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(*request_context(role, claims, method="GET"))
        t0 = time.perf_counter()
        cur.execute(query, params)
        rows = cur.fetchall()
        return time.perf_counter() - t0, rows


def _explain(
    conn: psycopg.Connection[Any], who: str | None, query: str, params: Sequence[Any]
) -> tuple[int, str]:
    """Shared buffers (hit + read) the query touches, and its scans in one line."""
    role, claims = _as(who)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(*request_context(role, claims, method="GET"))
        cur.execute(f"explain (analyze, buffers, format json) {query}", params)
        plan = cur.fetchone()[0][0]["Plan"]  # type: ignore[index]
    scans: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        kind = node["Node Type"]
        if "Scan" in kind or kind in ("Sort", "Limit", "BitmapOr", "BitmapAnd"):
            where = node.get("Index Name") or node.get("Relation Name") or ""
            scans.append(f"{kind}{' ' + where if where else ''}")
        for child in node.get("Plans", []):
            walk(child)

    walk(plan)
    return plan["Shared Hit Blocks"] + plan["Shared Read Blocks"], "; ".join(scans)


@dataclass(frozen=True)
class Side:
    """One way of asking: on which database, as whom (None: service_role), what."""

    dsn: str
    who: str | None
    query: str
    params: tuple[Any, ...]


@dataclass(frozen=True)
class Pair:
    question: str
    ours: Side
    baseline: Side
    expect_rows: bool = True


@dataclass
class Measured:
    pair: Pair
    ours_s: float
    baseline_s: float
    ours_buffers: int
    baseline_buffers: int
    ours_plan: str
    baseline_plan: str
    rows: int
    ours_min_s: float
    baseline_min_s: float

    @property
    def ratio(self) -> float:
        return self.ours_s / self.baseline_s


def measure(pairs: list[Pair], rounds: int, warmup: int = 6) -> list[Measured]:
    """Each pair's two sides, alternated (ours first in even rounds, the baseline first in
    odd ones); medians of ``rounds`` after ``warmup`` rounds. Both sides must return the
    same rows, every round."""
    times: dict[tuple[int, str], list[float]] = {}
    rows: dict[int, int] = {}
    # One connection per database and role, so that each keeps its prepared plans (psycopg
    # prepares a statement on its 5th execution, as PostgREST prepares its statements).
    conns: dict[tuple[str, bool], psycopg.Connection[Any]] = {}

    def conn(side: Side) -> psycopg.Connection[Any]:
        key = (side.dsn, side.who is None)
        if key not in conns:
            conns[key] = psycopg.connect(side.dsn)
        return conns[key]

    try:
        for r in range(warmup + rounds):
            for i, pair in enumerate(pairs):
                sides = [("ours", pair.ours), ("baseline", pair.baseline)]
                got: dict[str, list[tuple[Any, ...]]] = {}
                for name, side in sides if r % 2 == 0 else sides[::-1]:
                    elapsed, got[name] = _run(conn(side), side.who, side.query, side.params)
                    if r >= warmup:
                        times.setdefault((i, name), []).append(elapsed)
                if sorted(got["ours"]) != sorted(got["baseline"]):
                    raise AssertionError(f"{pair.question}: the two sides disagree")
                if bool(got["ours"]) != pair.expect_rows:
                    raise AssertionError(f"{pair.question}: unexpected {len(got['ours'])} rows")
                rows[i] = len(got["ours"])
        results = []
        for i, pair in enumerate(pairs):
            o, b = pair.ours, pair.baseline
            ours_buffers, ours_plan = _explain(conn(o), o.who, o.query, o.params)
            base_buffers, base_plan = _explain(conn(b), b.who, b.query, b.params)
            if not pair.expect_rows:  # the empty answer is RLS at work: the row exists
                _, found = _run(conn(Side(o.dsn, None, o.query, ())), None, o.query, o.params)
                assert found, f"{pair.question}: the row should exist"
            results.append(
                Measured(
                    pair,
                    statistics.median(times[(i, "ours")]),
                    statistics.median(times[(i, "baseline")]),
                    ours_buffers,
                    base_buffers,
                    ours_plan,
                    base_plan,
                    rows[i],
                    min(times[(i, "ours")]),
                    min(times[(i, "baseline")]),
                )
            )
        return results
    finally:
        for c in conns.values():
            c.close()


# -- the run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    companies: int
    per_company: int
    segments: int
    rounds: int

    @property
    def command(self) -> str:
        return (
            f"python -m benchmarks.rls_scale --companies {self.companies}"
            f" --sessions-per-company {self.per_company} --segments-per-session"
            f" {self.segments} --rounds {self.rounds}"
        )


FULL = Scale(companies=1000, per_company=1000, segments=3, rounds=40)
QUICK = Scale(companies=20, per_company=100, segments=3, rounds=10)


def run(scale: Scale, *, verbose: bool = False) -> Report:
    """Load the world twice on one server: *big* (every company) and *small* (the first
    tenth, the same rows: the same seed), then measure RLS vs service_role on *big* and the
    same tenant's queries on *big* vs *small*, all interleaved."""
    first = max(2, scale.companies // 10)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    step = HISTORY / (scale.companies * scale.per_company)

    def fill(dsn: str, parts: list[range]) -> tuple[World, float]:
        rng = random.Random(13)
        world = World(start=start, step=step)
        seconds = 0.0
        with psycopg.connect(dsn, autocommit=True) as conn:
            for part in parts:
                seconds += load(
                    conn, world, part, scale.companies, scale.per_company, scale.segments, rng
                )
                if verbose:
                    print(f"loaded companies {part.start}-{part.stop - 1}", file=sys.stderr)
        return world, seconds

    with migrated_database() as (info, big_dsn):
        small_dsn = another_database(info.dsn, "bench_small")
        _, small_s = fill(small_dsn, [range(first)])
        world, load_s = fill(big_dsn, [range(first), range(first, scale.companies)])
        with psycopg.connect(big_dsn) as conn:
            counts = {
                t: conn.execute(f"select count(*) from {t}").fetchone()[0]  # type: ignore[index]
                for t in ("companies", "profiles", "sessions", "transcript_segments")
            }
        questions = cases(world)
        rls = [
            Pair(
                c.question,
                Side(big_dsn, c.who, c.ours, c.ours_params),
                Side(big_dsn, None, c.baseline, c.baseline_params),
                c.expect_rows,
            )
            for c in questions
        ]
        growth = [
            Pair(
                c.question,
                Side(big_dsn, c.who, c.ours, c.ours_params),
                Side(small_dsn, c.who, c.ours, c.ours_params),
                c.expect_rows,
            )
            for c in questions
        ]
        measured = measure(rls + growth, scale.rounds)
    big, grown = measured[: len(rls)], measured[len(rls) :]
    comparisons = [
        Comparison(
            question=f"RLS: {m.pair.question}",
            ours=m.ours_s * 1e6,
            baseline=m.baseline_s * 1e6,
            unit="µs",
            goal=RLS_GOAL,
            baseline_name="service_role + explicit filter",
            note=f"buffers {m.ours_buffers} vs {m.baseline_buffers}; {m.rows} rows",
        )
        for m in big
    ]
    worst = max(grown, key=lambda m: m.ratio)
    comparisons.append(
        Comparison(
            question="RLS: tenant cost when the table grows 10x (sum of the five)",
            ours=sum(m.ours_s for m in grown) * 1e6,
            baseline=sum(m.baseline_s for m in grown) * 1e6,
            unit="µs",
            goal=GROWTH_GOAL,
            baseline_name=f"the same queries, {first:,} companies",
            note=(
                f"each {min(m.ratio for m in grown):.2f}-{worst.ratio:.2f}x; buffers"
                f" {sum(m.ours_buffers for m in grown)}"
                f" vs {sum(m.baseline_buffers for m in grown)}"
            ),
        )
    )
    detail = [
        "| question | ours µs | baseline µs | ratio | fastest runs: ratio | buffers ours /"
        " baseline | ours: plan | baseline: plan | 10x growth: ratio, buffers |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for b, g in zip(big, grown, strict=True):
        detail.append(
            f"| {b.pair.question} | {b.ours_s * 1e6:.0f} | {b.baseline_s * 1e6:.0f}"
            f" | {b.ratio:.2f}x | {b.ours_min_s / b.baseline_min_s:.2f}x"
            f" | {b.ours_buffers} / {b.baseline_buffers} | {b.ours_plan}"
            f" | {b.baseline_plan} | {g.ratio:.2f}x, {g.ours_buffers} / {g.baseline_buffers} |"
        )
    return Report(
        title="RLS at scale (`benchmarks/rls_scale.py`)",
        command=scale.command,
        data=(
            f"{counts['companies']:,} companies, {counts['profiles']:,} profiles,"
            f" {counts['sessions']:,} sessions, {counts['transcript_segments']:,} transcript"
            f" segments, loaded with COPY in time order, then VACUUM ANALYZE ({load_s:.0f} s);"
            f" PostgreSQL {info.major_version}. *Ours*: the query as an end user sends it,"
            " run as PostgREST runs it (role and claims set locally), RLS filtering."
            " *Baseline*: the same query as service_role with the filter written out; same"
            f" rows (checked). Medians of {scale.rounds} alternated rounds, the query alone"
            " (below, also the ratio of the fastest run of each side, which a loaded machine"
            " disturbs less);"
            " buffers (shared hit + read) from EXPLAIN (ANALYZE, BUFFERS). Growth: the same"
            " tenant's queries on this database and on a second one on the same server"
            f" holding only the first {first:,} companies (the same rows; loaded in"
            f" {small_s:.0f} s), alternated too; the answers are the same (checked)."
        ),
        comparisons=comparisons,
        details="\n".join(detail) + "\n\n" + WHY,
    )


WHY = (
    "Reading the plans. Each policy asks the database who the caller is: `auth.uid()` and"
    " one or two helpers (`private.managed_company_id()`, `private.my_company_id()`: plpgsql"
    " since 20261128000700, a SQL function was parsed and planned again in every statement),"
    " about 3 buffers each: the fixed cost of RLS, which dominates the smallest queries."
    " Sessions are read through `profile_id = me or company_id = the company I manage`:"
    ' PostgreSQL 15 reads an OR of two columns through a BitmapOr, in no order, so "latest'
    " 20\" fetches and sorts all of the trainee's sessions (about 62 here) where the"
    " explicit query stops after 20 index entries; what would close it is an ordered plan"
    " for such an OR, which PostgreSQL does not have, or the owner named in the query"
    " (`profile_id=eq.<me>`, the SDK's `list(profile_id=...)`), which gets the baseline's"
    " plan. Transcript segments are read through `company_id = my company and (profile_id"
    " = me or I manage it)` (20261128000700): no OR of two indexed columns, so a manager's"
    " count over the company is an index-only scan like the explicit one (before: a heap"
    " page per session, about 1,000 buffers)."
    "\n\nWhat would close the fixed part (the rows where both sides read the same few"
    " buffers: another company's session, one session's segments, the manager's count):"
    " the policies learning the caller's company and role without a function call per"
    " statement. A plpgsql helper costs 8-18 µs per call (the first of a statement the"
    " most: it reads the caller's profile), and none can be inlined, since each carries its"
    " own `search_path` (Supabase's advisor 0011). The ways that remove the call were"
    " weighed and not taken: a per-transaction cache in a setting any role can SET is"
    " forgeable; company and role as signed JWT claims (a Supabase custom access token"
    " hook) would let a demoted manager keep reading the company until the token expires"
    " (up to an hour); a policy that looks the profile up itself measured no faster"
    " (`benchmarks/rls_fixed_cost.py`, section below). What remains is a fixed 40-80 µs"
    " per statement, which is 1.4-2x of a query that itself takes 70-200 µs, and a"
    " smaller share of anything larger (the growth row: the cost does not rise with the"
    " table)."
)


def comparisons(quick: bool) -> Report:
    """RLS vs service_role with explicit filters, for ``python -m benchmarks``."""
    return run(QUICK if quick else FULL)


def markdown(report: Report) -> str:
    lines = [
        f"## {report.title}",
        "",
        f"Command: `{report.command}`",
        "",
        report.data,
        "",
        "| question | ours | baseline | ratio | goal | met | note |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for c in report.comparisons:
        lines.append(
            f"| {c.question} | {c.ours:.0f} {c.unit} | {c.baseline:.0f} {c.unit}"
            f" ({c.baseline_name}) | {c.ratio:.2f}x | {c.goal} | {'yes' if c.met else 'no'}"
            f" | {c.note} |"
        )
    if report.details:
        lines += ["", report.details]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small world, a few rounds")
    parser.add_argument("--companies", type=int)
    parser.add_argument("--sessions-per-company", type=int)
    parser.add_argument("--segments-per-session", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--json", action="store_true", help="also print the ratios as JSON")
    args = parser.parse_args()
    base = QUICK if args.quick else FULL
    scale = Scale(
        companies=args.companies or base.companies,
        per_company=args.sessions_per_company or base.per_company,
        segments=args.segments_per_session or base.segments,
        rounds=args.rounds or base.rounds,
    )
    report = run(scale, verbose=True)
    section = markdown(report)
    print(section)
    if args.json:
        print(json.dumps({c.question: round(c.ratio, 3) for c in report.comparisons}))
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
    start = text.find(SECTION)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        rest = "" if end == -1 else "\n" + text[end + 1 :]
        text = text[:start] + section.rstrip("\n") + "\n" + rest
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
