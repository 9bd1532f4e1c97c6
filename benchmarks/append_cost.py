"""What does appending live transcript segments cost as a session grows?

For each size N, one active session of a trainee holds N final segments (bulk-loaded). Then
ROUNDS times, the trainee appends a batch of BATCH new segments with
``public.append_transcript_segments`` exactly as PostgREST would run the RPC (role
``authenticated`` and the user's JWT claims set locally in the request's transaction), and
once more replays a batch of BATCH segments the session already holds. Each append is rolled
back after it is timed, so the session holds exactly N segments for every round (each round
uses new seqs, so no round meets another's dead index entries). The table also holds
BACKGROUND segments of 100 other sessions, as a real one would. Time is the statement alone,
client-side; the table gives median and p95 per call and per segment, plus what the call read
from transcript_segments in its transaction (sequential scans, index entries returned):
flat numbers across sizes mean the cost does not grow with the session.

    python -m benchmarks.append_cost [--sizes 100,10000,100000] [--batch 50] [--rounds 40]
                                     [--background 100000]

Prints a Markdown section (with the command) to paste into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from benchmarks._server import migrated_database
from voicesessions._request import request_context

APPEND = "select public.append_transcript_segments(%s, %s)"
READS = (
    "select pg_stat_get_xact_numscans('public.transcript_segments'::regclass),"
    " (select coalesce(sum(pg_stat_get_xact_tuples_returned(i.indexrelid)), 0)"
    "  from pg_index i where i.indrelid = 'public.transcript_segments'::regclass)"
)

SETUP_SQL = """
insert into public.companies (id, name) values (%(company)s, 'Bench Co');
insert into auth.users (id, email) values (%(trainee)s, 'trainee@bench.test');
insert into public.profiles (id, company_id, role, display_name)
values (%(trainee)s, %(company)s, 'trainee', 'Bench Trainee');
-- Other calls of the same trainee, so that the table is not just the measured session.
set session_replication_role = replica;
insert into public.sessions (id, profile_id, company_id, title, status, started_at, ended_at)
select gen_random_uuid(), %(trainee)s, %(company)s, 'Earlier call ' || c, 'completed',
       now() - (c || ' hours')::interval, now() - (c || ' hours')::interval + interval '9 minutes'
from generate_series(1, 100) c;
insert into public.transcript_segments
  (session_id, profile_id, company_id, seq, speaker, text, start_ms, end_ms, confidence)
select s.id, s.profile_id, s.company_id, g, 'trainee', 'earlier words', g * 3000,
       g * 3000 + 2500, 0.9
from public.sessions s, generate_series(0, %(background)s / 100 - 1) g;
set session_replication_role = origin;
"""

# Bulk load without row triggers (they would only copy the owner, which is given here).
LOAD_SQL = """
set session_replication_role = replica;
insert into public.transcript_segments
  (session_id, profile_id, company_id, seq, speaker, text, start_ms, end_ms, confidence)
select %(session)s, %(trainee)s, %(company)s, g,
       case when g %% 2 = 0 then 'trainee' else 'buyer' end,
       'so what would it take to move this forward this quarter', g * 3000, g * 3000 + 2500,
       0.93
from generate_series(0, %(size)s - 1) g;
set session_replication_role = origin;
"""


def segments(first_seq: int, count: int) -> list[dict[str, Any]]:
    return [
        {
            "seq": seq,
            "speaker": "trainee" if seq % 2 == 0 else "buyer",
            "text": "and how are you handling re-planning after late pickups today",
            "start_ms": seq * 3000,
            "end_ms": seq * 3000 + 2500,
            "confidence": 0.91,
            "segment_id": f"seg-{seq}",
        }
        for seq in range(first_seq, first_seq + count)
    ]


def timed_append(
    conn: psycopg.Connection[Any],
    claims: dict[str, Any],
    session_id: uuid.UUID,
    batch: list[dict[str, Any]],
) -> tuple[float, dict[str, int], int, int]:
    """Milliseconds of one append as the trainee, its result and what it read; rolled back."""
    with conn.cursor() as cur:
        cur.execute(*request_context("authenticated", claims))
        # The backend's table counters accumulate until they are reported: use the difference.
        before = cur.execute(READS).fetchone()
        start = time.perf_counter()
        cur.execute(APPEND, (session_id, Jsonb(batch)))
        elapsed = (time.perf_counter() - start) * 1000
        row = cur.fetchone()
        assert row is not None
        result: dict[str, int] = row[0]
        after = cur.execute(READS).fetchone()
        assert before is not None
        assert after is not None
    conn.rollback()
    return elapsed, result, int(after[0] - before[0]), int(after[1] - before[1])


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def measure(
    dsn: str, ids: dict[str, Any], size: int, batch: int, rounds: int
) -> dict[str, tuple[float, float, int, int]]:
    """Per case ("new", "replay"): median ms, p95 ms, max seq scans, max index entries."""
    # Client-side binding: the load is several statements in one call.
    with psycopg.connect(dsn, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        session_id = conn.execute(
            "insert into public.sessions (profile_id, title) values (%s, 'Bench call')"
            " returning id",
            (ids["trainee"],),
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(LOAD_SQL.encode(), {**ids, "session": session_id, "size": size})
        conn.execute("analyze public.transcript_segments")
        stored = conn.execute(
            "select count(*) from public.transcript_segments where session_id = %s",
            (session_id,),
        ).fetchone()[0]  # type: ignore[index]
        assert stored == size, (stored, size)
    claims = {"sub": str(ids["trainee"]), "role": "authenticated", "aud": "authenticated"}
    results: dict[str, tuple[float, float, int, int]] = {}
    with psycopg.connect(dsn) as conn:
        # Warm up: plans and caches, as on a server that has been running.
        for r in range(3):
            timed_append(conn, claims, session_id, segments(size + (rounds + r) * batch, batch))
        for case in ("new", "replay"):
            times, scans, entries = [], [], []
            for r in range(rounds):
                if case == "new":
                    first = size + r * batch
                    expected = {"inserted": batch, "duplicates": 0}
                else:
                    first = (r * 7919) % max(1, size - batch)
                    expected = {"inserted": 0, "duplicates": batch}
                elapsed, result, seq_scans, index_entries = timed_append(
                    conn, claims, session_id, segments(first, batch)
                )
                assert result == expected, (case, result)
                times.append(elapsed)
                scans.append(seq_scans)
                entries.append(index_entries)
            results[case] = (statistics.median(times), p95(times), max(scans), max(entries))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,10000,100000")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument(
        "--background",
        type=int,
        default=100_000,
        help="segments of 100 other sessions already in the table",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.batch > 1000 or any(s < args.batch for s in sizes):
        parser.error("--batch must be at most 1000 and at most every size")

    rows: list[tuple[int, str, tuple[float, float, int, int]]] = []
    with migrated_database() as (info, dsn):
        ids = {"company": uuid.uuid4(), "trainee": uuid.uuid4()}
        with psycopg.connect(dsn, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
            conn.execute(SETUP_SQL.encode(), {**ids, "background": args.background})
        for size in sizes:
            t0 = time.perf_counter()
            measured = measure(dsn, ids, size, args.batch, args.rounds)
            print(f"  {size:>9,} stored: done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            for case, numbers in measured.items():
                rows.append((size, case, numbers))

    command = (
        f"python -m benchmarks.append_cost --sizes {args.sizes} --batch {args.batch}"
        f" --rounds {args.rounds} --background {args.background}"
    )
    lines = [
        "## Appending live transcript segments (`benchmarks/append_cost.py`)",
        "",
        f"Command: `{command}`",
        "",
        f"One call of `append_transcript_segments` with {args.batch} segments, as the session's"
        f" trainee through PostgREST's request context, {args.rounds} rounds per row (each"
        f" rolled back, so the session holds exactly the stated number of segments)."
        f" The table also holds {args.background:,} segments of 100 other sessions."
        f" PostgreSQL {info.major_version}. *new*: {args.batch} new segments; *replay*:"
        f" {args.batch} segments already stored (a retried batch). Reads: the most sequential"
        " scans and index entries of transcript_segments one call needed.",
        "",
        "| segments stored | batch | median ms/call | p95 ms/call | median µs/segment"
        " | seq scans | index entries read |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for size, case, (median, high, scans, entries) in rows:
        lines.append(
            f"| {size:,} | {case} | {median:.2f} | {high:.2f}"
            f" | {median * 1000 / args.batch:.0f} | {scans} | {entries} |"
        )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
