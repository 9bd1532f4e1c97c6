"""How many transcript segments per second do `vs.updates.stream` writers store, next to a
`COPY` of the same rows?

A throwaway PostgreSQL; one company, SESSIONS trainees with one active session each. Every
round, interleaved in the same run:

- *ours*: every trainee (through ``as_user``, so RLS and the request context apply as behind
  PostgREST) streams SEGMENTS final segments into its session as fast as it can produce
  them, all sessions at once, as SESSIONS tasks of one event loop (the async face) with a
  pool of POOL connections. Time is wall-clock from the first ``add`` to the last stream
  closed (every segment stored).
- *COPY*: the same rows into fresh sessions with one ``COPY transcript_segments FROM STDIN``
  per session, SESSIONS at once on as many connections (capped at POOL), each committed;
  the table's triggers, constraints and FK fire as for any insert.

and the same with one session. Then the rows are counted: each session must hold exactly
SEGMENTS, in order. ``--face sync`` streams on the sync face (SESSIONS threads) instead.

    python -m benchmarks.stream_throughput [--quick] [--sessions 16] [--segments 2000]
                                           [--batch 50] [--pool 10] [--rounds 3]

Prints a Markdown section (with the command) to paste into BENCHMARKS.md;
``comparisons(quick)`` returns it as a :class:`benchmarks._compare.Report`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from benchmarks._compare import Comparison, Goal, Report
from benchmarks._server import migrated_database
from voicesessions import AsyncVoiceSessions, VoiceSessions


@dataclass(frozen=True)
class Settings:
    sessions: int
    segments: int
    batch: int
    pool: int
    rounds: int
    face: str = "async"


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


def setup(dsn: str, sessions: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(trainee, new active session) pairs for one run."""
    with VoiceSessions.from_postgres(dsn, max_size=2) as vs:
        company = vs.tenants.create_company(f"Bench {uuid.uuid4().hex[:6]}")
        pairs = []
        for i in range(sessions):
            uid = vs.tenants.create_user(f"t{i}-{uuid.uuid4().hex[:6]}@bench.test")
            vs.tenants.create_profile(uid, company.id, display_name=f"Trainee {i}")
            pairs.append((uid, vs.as_user(uid).sessions.create(uid, f"call {i}").id))
        return pairs


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _cpu_ns(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


class Cpu:
    """CPU time used by this process (all threads) and by the PostgreSQL server (postmaster
    and every child: backends, writers), read from Linux's /proc: what a round costs in
    CPU whatever else the machine runs. ``None`` where /proc cannot tell."""

    def __init__(self, dsn: str) -> None:
        with psycopg.connect(dsn) as conn:
            backend = conn.info.backend_pid
            self.postmaster = _ppid(backend)

    def server_ns(self) -> int | None:
        if self.postmaster is None:
            return None
        total = _cpu_ns(self.postmaster)
        for entry in os.listdir("/proc"):
            if entry.isdigit() and _ppid(int(entry)) == self.postmaster:
                total += _cpu_ns(int(entry))
        return total

    def now(self) -> tuple[float, int | None]:
        return time.process_time(), self.server_ns()

    @staticmethod
    def used(
        before: tuple[float, int | None], after: tuple[float, int | None]
    ) -> tuple[float, float] | None:
        """Seconds of client and of server CPU between two readings."""
        if before[1] is None or after[1] is None:
            return None
        return after[0] - before[0], (after[1] - before[1]) / 1e9


CPU: Cpu | None = None


async def stream_async(
    dsn: str, pairs: list[tuple[uuid.UUID, uuid.UUID]], s: Settings
) -> tuple[float, tuple[float, float] | None]:
    async with AsyncVoiceSessions.from_postgres(dsn, max_size=s.pool) as vs:
        # Open the pool's connections first: the COPY side gets its connections untimed too.
        await asyncio.gather(*(vs.as_user(uid).sessions.get(sid) for uid, sid in pairs))

        async def one(uid: uuid.UUID, sid: uuid.UUID) -> None:
            stream = vs.as_user(uid).updates.stream(sid, max_batch=s.batch, max_delay_s=0.2)
            async with stream as writer:
                for seq in range(s.segments):
                    await writer.add(segment(seq))

        assert CPU is not None
        cpu, start = CPU.now(), time.perf_counter()
        await asyncio.gather(*(one(uid, sid) for uid, sid in pairs))
        return time.perf_counter() - start, Cpu.used(cpu, CPU.now())


def stream_sync(
    dsn: str, pairs: list[tuple[uuid.UUID, uuid.UUID]], s: Settings
) -> tuple[float, tuple[float, float] | None]:
    with VoiceSessions.from_postgres(dsn, max_size=s.pool) as vs:
        warm = [
            threading.Thread(target=vs.as_user(uid).sessions.get, args=(sid,)) for uid, sid in pairs
        ]
        for thread in warm:
            thread.start()
        for thread in warm:
            thread.join()

        def one(uid: uuid.UUID, sid: uuid.UUID) -> None:
            with vs.as_user(uid).updates.stream(sid, max_batch=s.batch, max_delay_s=0.2) as w:
                for seq in range(s.segments):
                    w.add(segment(seq))

        threads = [threading.Thread(target=one, args=pair) for pair in pairs]
        assert CPU is not None
        cpu, start = CPU.now(), time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - start, Cpu.used(cpu, CPU.now())


COPY = (
    "copy public.transcript_segments"
    " (session_id, seq, speaker, text, start_ms, end_ms, confidence, segment_id) from stdin"
)


def copy_rows(
    dsn: str, pairs: list[tuple[uuid.UUID, uuid.UUID]], s: Settings
) -> tuple[float, tuple[float, float] | None]:
    """Seconds to COPY every session's rows, sessions in parallel (connections opened
    beforehand, not timed)."""
    conns = [psycopg.connect(dsn) for _ in range(min(len(pairs), s.pool))]
    try:
        work = list(pairs)
        lock = threading.Lock()

        def worker(conn: psycopg.Connection[Any]) -> None:
            while True:
                with lock:
                    if not work:
                        return
                    _, sid = work.pop()
                with conn.cursor() as cur, cur.copy(COPY) as copy:
                    for seq in range(s.segments):
                        row = segment(seq)
                        copy.write_row(
                            (
                                sid,
                                seq,
                                row["speaker"],
                                row["text"],
                                row["start_ms"],
                                row["end_ms"],
                                row["confidence"],
                                row["segment_id"],
                            )
                        )
                conn.commit()

        threads = [threading.Thread(target=worker, args=(c,)) for c in conns]
        assert CPU is not None
        cpu, start = CPU.now(), time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - start, Cpu.used(cpu, CPU.now())
    finally:
        for conn in conns:
            conn.close()


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


def one_round(
    dsn: str, way: str, sessions: int, s: Settings
) -> tuple[float, tuple[float, float] | None]:
    """Segments per second of one round of ``way`` ("ours" or "copy") with ``sessions``,
    and its CPU in µs per segment (client, server)."""
    pairs = setup(dsn, sessions)
    if way == "copy":
        elapsed, cpu = copy_rows(dsn, pairs, s)
    elif s.face == "sync":
        elapsed, cpu = stream_sync(dsn, pairs, s)
    else:
        elapsed, cpu = asyncio.run(stream_async(dsn, pairs, s))
    check(dsn, pairs, s.segments)
    total = sessions * s.segments
    return total / elapsed, None if cpu is None else (cpu[0] * 1e6 / total, cpu[1] * 1e6 / total)


Rates = dict[tuple[str, int], list[float]]
#: CPU µs per segment of every round, (client, server), by (way, sessions).
Cpus = dict[tuple[str, int], list[tuple[float, float]]]


def run(s: Settings) -> tuple[Rates, Cpus, str]:
    """Segments/s and CPU µs/segment of every round, by (way, sessions)."""
    global CPU
    rates: Rates = {}
    cpus: Cpus = {}
    with migrated_database() as (info, dsn):
        CPU = Cpu(dsn)
        for warm in ("ours", "copy"):  # plans, caches and the pool's first connections
            one_round(dsn, warm, 1, Settings(1, min(200, s.segments), s.batch, s.pool, 1, s.face))
        for r in range(s.rounds):
            for sessions in (s.sessions, 1):
                order = ("ours", "copy") if r % 2 == 0 else ("copy", "ours")
                for way in order:
                    rate, cpu = one_round(dsn, way, sessions, s)
                    rates.setdefault((way, sessions), []).append(rate)
                    if cpu is not None:
                        cpus.setdefault((way, sessions), []).append(cpu)
            print(f"  round {r + 1}/{s.rounds} done", file=sys.stderr)
        return rates, cpus, str(info.major_version)


#: The profile behind the ratios (hand-written: the numbers are per segment, batches of 50).
WHERE_THE_TIME_GOES = """\
Where a streamed segment's CPU goes, and what would close the gap to COPY. COPY is the floor
of the server's per-row work (insert, four indexes, CHECKs, the foreign key, the row
trigger that copies the owner) with almost nothing on the client. On top of it, ours pays:

- on the client (Python), about 30 µs: validating each segment into a typed `SegmentInput`
  (about 13 µs: pydantic, plus our value policy for three text fields, the confidence and
  `end_ms >= start_ms`), the stored form of each segment (`model_dump`, about 4 µs), the
  batch's size pre-check (one `json.dumps`, about 4 µs) and the request (the JSON body
  again, about 4 µs, psycopg binding it); `add` used to check its argument twice (once as
  `add`, once as `add_many`), about 15% of this, and no longer does;
- on the server, per segment: the validation pass over the JSON batch (about 6 µs), the
  foreign key check (about 9 µs: PostgreSQL 15 checks a foreign key row by row, and the
  constraint is kept because PostgREST embeds segments in sessions through it); since
  20261128001000 the owner, visibility and status checks run once per statement instead of
  per row (13 µs less per segment);
- with one session, the writer's own work (stored form, JSON, sending) does not overlap
  with the server's: one batch is in flight at a time, so that the `transcript` events
  leave in order.

What would close it: validating segments without Python-level validators (pydantic-core
constraints only, or validating only in the database, which checks everything anyway, at
the price of errors after I/O), serializing the batch once, and for one session two
batches in flight (events could then be reordered, which the stream promises not to do).
"""


def report(rates: Rates, cpus: Cpus, version: str, s: Settings, command: str) -> Report:
    med = {k: statistics.median(v) for k, v in rates.items()}
    cpu = {k: statistics.median(c + v for c, v in pairs) for k, pairs in cpus.items()}
    client = {k: statistics.median(c for c, _ in pairs) for k, pairs in cpus.items()}
    server = {k: statistics.median(v for _, v in pairs) for k, pairs in cpus.items()}

    def cpu_note(n: int) -> str:
        ours, copy = ("ours", n), ("copy", n)
        if ours not in cpu or copy not in cpu:
            return ""
        return (
            f"CPU per segment, client + server: ours {client[ours]:.0f} + {server[ours]:.0f}"
            f" µs, COPY {client[copy]:.0f} + {server[copy]:.0f} µs: COPY / ours"
            f" {cpu[copy] / cpu[ours]:.2f}"
        )

    comparisons = [
        Comparison(
            question=f"ingest: `vs.updates.stream` {n} session{'s' if n > 1 else ''}"
            f" / `COPY` of the same rows (triggers firing)",
            ours=med[("ours", n)],
            baseline=med[("copy", n)],
            unit="segments/s",
            goal=Goal("min", 0.5 if n > 1 else 0.4),
            baseline_name="COPY into transcript_segments",
            note=cpu_note(n),
        )
        for n in (s.sessions, 1)
    ]
    lines = [
        "| way | sessions | median segments/s | every round | median CPU µs/segment"
        " (client + server) |",
        "|---|---:|---:|---|---:|",
    ]
    for (way, n), values in sorted(rates.items()):
        used = (
            f"{cpu[(way, n)]:.0f} ({client[(way, n)]:.0f} + {server[(way, n)]:.0f})"
            if (way, n) in cpu
            else "n/a"
        )
        lines.append(
            f"| {way} | {n} | {med[(way, n)]:,.0f} | {', '.join(f'{v:,.0f}' for v in values)}"
            f" | {used} |"
        )
    return Report(
        title="Ingest: streaming sessions vs COPY (`benchmarks/stream_throughput.py`)",
        command=command,
        data=(
            f"{s.sessions} sessions (and 1) each storing {s.segments:,} final segments as fast as"
            f" the producer adds them: ours = `vs.updates.stream` ({s.face} face, batches of"
            f" {s.batch}, pool of {s.pool}) as each trainee; COPY = one `COPY` per session of"
            f" the same rows, up to {s.pool} at once, triggers firing. {s.rounds} interleaved"
            f" rounds, medians; every round checked (each session holds exactly its"
            f" segments, in order). PostgreSQL {version}, SDK and server on the same machine."
        ),
        comparisons=comparisons,
        details="\n".join(lines) + "\n\n" + WHERE_THE_TIME_GOES,
    )


def comparisons(quick: bool) -> Report:
    s = Settings(16, 200, 50, 10, 1, "async") if quick else Settings(16, 2000, 50, 10, 3, "async")
    rates, cpus, version = run(s)
    command = "python -m benchmarks.stream_throughput" + (" --quick" if quick else "")
    return report(rates, cpus, version, s, command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 segments, 1 round")
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--segments", type=int, default=None)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--pool", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--face", choices=("async", "sync"), default="async")
    args = parser.parse_args()
    s = Settings(
        args.sessions,
        args.segments or (200 if args.quick else 2000),
        args.batch,
        args.pool,
        args.rounds or (1 if args.quick else 3),
        args.face,
    )
    rates, cpus, version = run(s)
    command = (
        f"python -m benchmarks.stream_throughput --sessions {s.sessions} --segments {s.segments}"
        f" --batch {s.batch} --pool {s.pool} --rounds {s.rounds} --face {s.face}"
    )
    rep = report(rates, cpus, version, s, command)
    print(f"## {rep.title}\n\nCommand: `{rep.command}`\n\n{rep.data}\n")
    print("| question | ours | baseline | ratio | goal | met | note |")
    print("|---|---:|---:|---:|---|---|---|")
    for c in rep.comparisons:
        print(
            f"| {c.question} | {c.ours:,.0f} {c.unit} | {c.baseline:,.0f} {c.unit} | {c.ratio:.2f}"
            f" | {c.goal} | {'yes' if c.met else 'no'} | {c.note} |"
        )
    print(f"\n{rep.details}")


if __name__ == "__main__":
    main()
