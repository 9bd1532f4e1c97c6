"""What one live call costs the database: the per-operation figures of docs/capacity.md.

A throwaway PostgreSQL with the migrations; one trainee's session. For each batch size B the
session receives SEGMENTS final segments through ``append_transcript_segments`` (as the
trainee, in PostgREST's request context, each call committed), as a live call sends them:

- server CPU per call and per segment (the backend's own CPU time, Linux schedstat);
- WAL bytes per segment (``pg_current_wal_lsn`` before and after, no checkpoint in between:
  full-page images after a checkpoint come on top, see docs/capacity.md);
- bytes on disk per stored segment (the table, or its partitions, with indexes and TOAST, after
  ``VACUUM``), for segments of TEXT_CHARS characters of text.

Then the dashboards a manager opens: ``company_metrics`` (whole history, last 30 days) for a
company of COMPANY_SESSIONS sessions, median server time per call.

    python -m benchmarks.capacity [--segments 2000] [--text-chars 80]

Prints a Markdown section; docs/capacity.md turns the figures into capacity.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from typing import Any

import psycopg

from benchmarks._server import migrated_database
from voicesessions._request import request_context

BATCHES = (1, 5, 50)
COMPANY_SESSIONS = 10_000


def _cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def _segments(first: int, count: int, chars: int) -> list[dict[str, Any]]:
    text = ("so what would it take to move this forward this quarter " * 10)[:chars]
    return [
        {
            "seq": seq,
            "speaker": "trainee" if seq % 2 == 0 else "buyer",
            "text": text,
            "start_ms": seq * 3000,
            "end_ms": seq * 3000 + 2500,
            "confidence": 0.91,
            "segment_id": f"seg-{seq}",
        }
        for seq in range(first, first + count)
    ]


def _setup(conn: psycopg.Connection[Any]) -> tuple[uuid.UUID, uuid.UUID]:
    company, trainee = uuid.uuid4(), uuid.uuid4()
    conn.execute("insert into public.companies (id, name) values (%s, 'Capacity Co')", (company,))
    conn.execute(
        "insert into auth.users (id, email) values (%s, 'trainee@capacity.test')", (trainee,)
    )
    conn.execute(
        "insert into public.profiles (id, company_id, role, display_name)"
        " values (%s, %s, 'trainee', 'Trainee')",
        (trainee, company),
    )
    return company, trainee


def appends(dsn: str, segments: int, chars: int) -> list[dict[str, float]]:
    """Per batch size: server CPU µs per call and per segment, WAL bytes per segment."""
    out = []
    with psycopg.connect(dsn, autocommit=True) as admin:
        _, trainee = _setup(admin)
        claims = {"sub": str(trainee), "role": "authenticated", "aud": "authenticated"}
        for batch in BATCHES:
            sid = admin.execute(
                "insert into public.sessions (profile_id, title) values (%s, 'call') returning id",
                (trainee,),
            ).fetchone()[0]  # type: ignore[index]
            with psycopg.connect(dsn) as conn:
                pid = conn.info.backend_pid
                calls = max(1, segments // batch)
                # warm up: plans, caches
                for i in range(5):
                    with conn.cursor() as cur:
                        cur.execute(*request_context("authenticated", claims))
                        cur.execute(
                            "select public.append_transcript_segments(%s, %s::jsonb)",
                            (sid, json.dumps(_segments(100_000 + i * batch, batch, chars))),
                        )
                    conn.commit()
                lsn0 = admin.execute("select pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
                cpu: list[float] = []
                for i in range(calls):
                    rows = json.dumps(_segments(i * batch, batch, chars))
                    with conn.cursor() as cur:
                        cur.execute(*request_context("authenticated", claims))
                        before = _cpu_ns(pid)
                        cur.execute(
                            "select public.append_transcript_segments(%s, %s::jsonb)",
                            (sid, rows),
                        )
                        conn.commit()
                        cpu.append((_cpu_ns(pid) - before) / 1000)
                wal = admin.execute(
                    "select pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn0,)
                ).fetchone()[0]  # type: ignore[index]
            per_call = statistics.median(cpu)
            out.append(
                {
                    "batch": batch,
                    "cpu_us_per_call": per_call,
                    "cpu_us_per_segment": per_call / batch,
                    "wal_bytes_per_segment": float(wal) / (calls * batch),
                }
            )
    return out


def storage(dsn: str, chars: int, count: int = 100_000) -> float:
    """Bytes on disk per segment (heap, TOAST and indexes of every partition)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        _, trainee = _setup(conn)
        conn.execute("set session_replication_role = replica")
        conn.execute(
            "insert into public.sessions (id, profile_id, company_id, title)"
            " select gen_random_uuid(), p.id, p.company_id, 'call ' || g"
            " from public.profiles p, generate_series(1, 100) g where p.id = %s",
            (trainee,),
        )
        text = ("so what would it take to move this forward this quarter " * 10)[:chars]
        conn.execute(
            "insert into public.transcript_segments (session_id, profile_id, company_id, seq,"
            " speaker, text, start_ms, end_ms, confidence, segment_id)"
            " select s.id, s.profile_id, s.company_id, g, 'trainee', %s, g * 3000,"
            " g * 3000 + 2500, 0.9, 'seg-' || g"
            " from public.sessions s, generate_series(1, %s) g where s.profile_id = %s",
            (text, count // 100, trainee),
        )
        conn.execute("set session_replication_role = origin")
        conn.execute("vacuum analyze public.transcript_segments")
        # A partitioned table's own size is 0: sum over its partitions, if it has any.
        row = conn.execute(
            "select coalesce((select sum(pg_total_relation_size(relid))"
            " from pg_partition_tree('public.transcript_segments'::regclass) where isleaf),"
            " pg_total_relation_size('public.transcript_segments'))"
        ).fetchone()
        assert row is not None
        total = conn.execute("select count(*) from public.transcript_segments").fetchone()
        assert total is not None
        return float(row[0]) / int(total[0])


def dashboards(dsn: str) -> dict[str, float]:
    """Median server ms of a manager's company_metrics over COMPANY_SESSIONS sessions."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        company, _ = _setup(conn)
        manager = uuid.uuid4()
        conn.execute(
            "insert into auth.users (id, email) values (%s, 'm@capacity.test')", (manager,)
        )
        conn.execute(
            "insert into public.profiles (id, company_id, role, display_name)"
            " values (%s, %s, 'manager', 'Manager')",
            (manager, company),
        )
        conn.execute(
            "insert into public.sessions (profile_id, title, started_at)"
            " select p.id, 'call', now() - (g || ' hours')::interval"
            " from public.profiles p, generate_series(1, %s) g"
            " where p.company_id = %s and p.role = 'trainee'",
            (COMPANY_SESSIONS, company),
        )
        claims = {"sub": str(manager), "role": "authenticated", "aud": "authenticated"}
        out: dict[str, float] = {}
        for name, call in (
            ("company_metrics, whole history", "select * from public.company_metrics(%s)"),
            (
                "company_metrics, last 30 days",
                "select * from public.company_metrics(%s, now() - interval '30 days', now())",
            ),
        ):
            times = []
            for _ in range(30):
                with conn.transaction():
                    conn.execute(*request_context("authenticated", claims))
                    start = time.perf_counter()
                    conn.execute(call, (company,)).fetchall()
                    times.append((time.perf_counter() - start) * 1000)
            out[name] = statistics.median(times[5:])
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=2000)
    parser.add_argument("--text-chars", type=int, default=80)
    args = parser.parse_args()
    with migrated_database() as (info, dsn):
        measured = appends(dsn, args.segments, args.text_chars)
        per_segment = storage(dsn, args.text_chars)
        dash = dashboards(dsn)
        version = info.major_version
    print("## What one live call costs the database (`benchmarks/capacity.py`)\n")
    print(
        f"Command: `python -m benchmarks.capacity --segments {args.segments}"
        f" --text-chars {args.text_chars}`\n"
    )
    print(f"PostgreSQL {version}; segments of {args.text_chars} characters of text.\n")
    print("| batch | server CPU µs/call | server CPU µs/segment | WAL bytes/segment |")
    print("|---:|---:|---:|---:|")
    for m in measured:
        print(
            f"| {m['batch']:.0f} | {m['cpu_us_per_call']:.0f} | {m['cpu_us_per_segment']:.0f}"
            f" | {m['wal_bytes_per_segment']:.0f} |"
        )
    print(f"\nOn disk: {per_segment:.0f} bytes per stored segment (heap, TOAST, indexes).\n")
    for name, ms in dash.items():
        print(f"- {name}, {COMPANY_SESSIONS:,} sessions: {ms:.2f} ms per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
