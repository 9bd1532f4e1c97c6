"""How many transcript segments per second do `vs.updates.stream` writers store, with 16
live sessions streaming at once?

A throwaway PostgreSQL; one company, SESSIONS trainees with one active session each. Every
trainee (through ``as_user``, so RLS and the request context apply as behind PostgREST)
streams SEGMENTS final segments into its session as fast as it can produce them, all
sessions at once: on the async face as SESSIONS tasks of one event loop, on the sync face as
SESSIONS threads. The pool has POOL connections. Time is wall-clock from the first ``add`` to
the last stream closed (every segment stored); then the rows are counted, each session must
hold exactly SEGMENTS, in order.

    python -m benchmarks.stream_throughput [--sessions 16] [--segments 2000] [--batch 50]
                                           [--delay 0.2] [--pool 10] [--repeat 3]

Prints a Markdown section (with the command) to paste into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
import uuid
from typing import Any

import psycopg

from benchmarks._server import migrated_database
from voicesessions import AsyncVoiceSessions, VoiceSessions


def segment(seq: int) -> dict[str, Any]:
    return {
        "seq": seq,
        "speaker": "trainee" if seq % 2 == 0 else "buyer",
        "text": f"a sentence of about ten words said in segment number {seq}",
        "start_ms": seq * 2000,
        "end_ms": seq * 2000 + 1800,
        "confidence": 0.92,
        "segment_id": f"s{seq}",
    }


def setup(dsn: str, sessions: int, pool: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(trainee, new session) pairs for one run."""
    with VoiceSessions.from_postgres(dsn, max_size=pool) as vs:
        company = vs.tenants.create_company(f"Bench {uuid.uuid4().hex[:6]}")
        pairs = []
        for i in range(sessions):
            uid = vs.tenants.create_user(f"t{i}-{uuid.uuid4().hex[:6]}@bench.test")
            vs.tenants.create_profile(uid, company.id, display_name=f"Trainee {i}")
            pairs.append((uid, vs.as_user(uid).sessions.create(uid, f"call {i}").id))
        return pairs


async def run_async(dsn: str, pairs: list[tuple[uuid.UUID, uuid.UUID]], args: Any) -> float:
    async with AsyncVoiceSessions.from_postgres(dsn, max_size=args.pool) as vs:

        async def one(uid: uuid.UUID, sid: uuid.UUID) -> None:
            stream = vs.as_user(uid).updates.stream(
                sid, max_batch=args.batch, max_delay_s=args.delay
            )
            async with stream as s:
                for seq in range(args.segments):
                    await s.add(segment(seq))

        start = time.perf_counter()
        await asyncio.gather(*(one(uid, sid) for uid, sid in pairs))
        return time.perf_counter() - start


def run_sync(dsn: str, pairs: list[tuple[uuid.UUID, uuid.UUID]], args: Any) -> float:
    with VoiceSessions.from_postgres(dsn, max_size=args.pool) as vs:

        def one(uid: uuid.UUID, sid: uuid.UUID) -> None:
            with vs.as_user(uid).updates.stream(
                sid, max_batch=args.batch, max_delay_s=args.delay
            ) as s:
                for seq in range(args.segments):
                    s.add(segment(seq))

        threads = [threading.Thread(target=one, args=pair) for pair in pairs]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - start


def check(dsn: str, pairs: list[tuple[uuid.UUID, uuid.UUID]], segments: int) -> None:
    with psycopg.connect(dsn) as conn:
        for _, sid in pairs:
            seqs = [
                r[0]
                for r in conn.execute(
                    "select seq from public.transcript_segments where session_id = %s"
                    " order by start_ms",
                    (sid,),
                )
            ]
            if seqs != list(range(segments)):
                sys.exit(f"session {sid}: {len(seqs)} segments stored, expected {segments}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--segments", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--pool", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    results: dict[str, list[float]] = {"async": [], "sync": []}
    with migrated_database() as (info, dsn):
        version = f"{info.major_version}"
        for _ in range(args.repeat):
            for face in ("async", "sync"):
                pairs = setup(dsn, args.sessions, args.pool)
                if face == "async":
                    elapsed = asyncio.run(run_async(dsn, pairs, args))
                else:
                    elapsed = run_sync(dsn, pairs, args)
                check(dsn, pairs, args.segments)
                results[face].append(elapsed)

    total = args.sessions * args.segments
    print("## Streaming 16 live sessions (`benchmarks/stream_throughput.py`)\n")
    print(
        f"Command: `python -m benchmarks.stream_throughput --sessions {args.sessions}"
        f" --segments {args.segments} --batch {args.batch} --delay {args.delay}"
        f" --pool {args.pool} --repeat {args.repeat}`\n"
    )
    print(
        f"{args.sessions} sessions streaming at once, each {args.segments:,} final segments"
        f" ({total:,} in all) as fast as the producers can add them, batches of up to"
        f" {args.batch}, pool of {args.pool} connections; PostgreSQL {version.split()[0]},"
        f" the SDK and the server on the same 2 cores. Every run checked: each session holds"
        f" exactly its segments, in order. Median (and best) of {args.repeat} runs.\n"
    )
    print("| face | wall s | segments/s | sessions x segments |")
    print("|---|---:|---:|---|")
    for face, times in results.items():
        median = statistics.median(times)
        print(
            f"| {face} | {median:.2f} (best {min(times):.2f}) | {total / median:,.0f}"
            f" | {args.sessions} x {args.segments:,} |"
        )


if __name__ == "__main__":
    main()
