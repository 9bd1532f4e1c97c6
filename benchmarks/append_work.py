"""The work of an append, counted in CPU instructions: flat as a session grows, no more than
when the performance issue was filed, and the same on a partitioned transcript_segments as
on one table?

``append_cost`` times appends in wall-clock and server CPU time, both of which move with
what else the machine runs and with how much of the data the CPU caches hold (a loaded
2-core machine moved them by 20-50%). This benchmark counts the instructions the server
runs instead: the same calls, run by a PostgreSQL backend under Valgrind's callgrind, which
counts the same whatever the load. It answers, in work, the questions ``append_cost``
answers in time: does an append do more as the session holds more segments; does it do more
than the code the performance issue measured (its "keep" rows); and does partitioning the
table by session (``append_cost.PARTITIONING``) make it do more?

One server holds a database per way, each with the data of ``append_cost`` (a trainee's
active sessions holding N segments each, among BACKGROUND segments of 100 other sessions):
*ours* (every migration), *then* (the migrations of ``append_cost.ISSUE_COMMIT``, read from
git; left out without git history) and *unpartitioned* (every migration but the
partitioning one). The server is then stopped, and for each case a script of appends, what
PostgREST runs for the RPC as the trainee (``begin``; the request context; ``select
public.append_transcript_segments(...)``; ``rollback``, each its own command), is run by
``postgres --single`` under ``valgrind --tool=callgrind`` twice, with FEW and with MANY
calls: (instructions of MANY - of FEW) / (MANY - FEW) is one call, without the backend's
start, and after PostgreSQL's plan cache has settled (it plans the first five calls of a
statement anew). Every call's answer is checked: each must have stored its whole batch (a
refused append runs another path, and is not what is measured).

Instructions are not time (cache misses are not counted), but equal instructions mean
equal work: what is left of a time difference is where the data sits.

    python -m benchmarks.append_work [--quick]

Needs ``valgrind`` (Debian: ``apt-get install valgrind``; ``.ci/run`` installs it); without
it the report says so and holds no comparison.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from benchmarks._compare import Comparison, Goal, Report
from benchmarks._server import another_database, migrations_at
from benchmarks.append_cost import (
    APPEND,
    ISSUE_COMMIT,
    PARTITIONING,
    SETUP_SQL,
    Database,
    load,
    segments,
)
from voicesessions._request import request_context
from voicesessions.local import migrations
from voicesessions.local.server import temporary_cluster

TITLE = "The work of an append, in instructions (`benchmarks/append_work.py`)"


@dataclass(frozen=True)
class Case:
    """One measured case: the database (way), the segments its session holds, the batch."""

    way: str
    size: int
    batch: int


#: The first seq the measured appends store: above every stored one (at most 100,000), and
#: low enough that every segment's start_ms (seq * 3000) is a valid integer.
FIRST_SEQ = 200_000


def _script(dsn: str, ids: dict[str, Any], batch: int, calls: int) -> str:
    """``calls`` appends of ``batch`` new segments each, as single-user mode reads them."""
    claims = {"sub": str(ids["trainee"]), "role": "authenticated", "aud": "authenticated"}
    parts = []
    with psycopg.connect(dsn) as conn, psycopg.ClientCursor(conn) as cur:
        context = cur.mogrify(*request_context("authenticated", claims))
        for n in range(calls):
            call = cur.mogrify(
                APPEND, (ids["session"], Jsonb(segments(FIRST_SEQ + n * batch, batch)))
            )
            # With -j, single-user mode ends a command at a semicolon followed by an empty
            # line: each statement its own command, as each is its own query from PostgREST.
            parts.append(f"begin;\n\n{context};\n\n{call};\n\nrollback;\n\n")
    return "".join(parts)


def _instructions(postgres: Path, pgdata: Path, database: str, script: str, stored: str) -> int:
    """Instructions one single-user backend runs for ``script`` on ``database``, as the owner
    of ``pgdata`` (PostgreSQL refuses to run as root). Every append of ``script`` must have
    answered ``stored`` (a failing append is not what is measured)."""
    owner = pgdata.stat()
    as_owner: dict[str, Any] = (
        {"user": owner.st_uid, "group": owner.st_gid} if os.geteuid() == 0 else {}
    )
    with tempfile.TemporaryDirectory(prefix="voicesessions-callgrind-") as tmp:
        os.chmod(tmp, 0o777)  # the server's user writes callgrind's output here
        out = Path(tmp) / "callgrind.out"
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                str(postgres),
                "--single",
                "-j",
                "-D",
                str(pgdata),
                "-c",
                "log_min_messages=error",
                database,
            ],
            input=script,
            capture_output=True,
            text=True,
            cwd=tmp,
            check=False,
            **as_owner,
        )
        output = done.stdout + done.stderr
        calls = script.count(APPEND.split("(")[0])
        if (
            done.returncode != 0
            or "ERROR" in output
            or done.stdout.count(stored) != calls
            or not out.is_file()
        ):
            raise RuntimeError(f"the appends failed under callgrind:\n{output[-2000:]}")
        for line in out.read_text(encoding="utf-8").splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError("callgrind wrote no instruction total")


def _migrations(way: str) -> list[migrations.Migration] | None:
    """The migrations of a way's database (None: every migration of this checkout)."""
    if way == "unpartitioned":
        return [m for m in migrations.load_migrations() if m.version != PARTITIONING]
    if way == "then":
        return migrations_at(ISSUE_COMMIT)
    return None


def run(cases: list[Case], background: int, few: int, many: int) -> tuple[dict[Case, float], int]:
    """Instructions per call of each case; and the server's major version."""
    scripts: dict[Case, tuple[str, str]] = {}
    with temporary_cluster("voicesessions-bench-") as server:
        info = server.status()
        assert info is not None
        for way in dict.fromkeys(case.way for case in cases):
            applied = _migrations(way)
            dsn = another_database(info.dsn, f"bench_{way}", applied)
            db = Database(dsn, {"company": uuid.uuid4(), "trainee": uuid.uuid4()})
            with psycopg.connect(dsn, autocommit=True, cursor_factory=psycopg.ClientCursor) as c:
                c.execute(SETUP_SQL.encode(), {**db.ids, "background": background})
            for size in sorted({case.size for case in cases if case.way == way}):
                ids = load(db, size)
                for case in cases:
                    if case.way == way and case.size == size:
                        scripts[case] = (
                            _script(dsn, ids, case.batch, few),
                            _script(dsn, ids, case.batch, many),
                        )
        server.stop()
        try:
            postgres = info.bindir / "postgres"
            per_call = {}
            for case, (short, long) in scripts.items():
                stored = f'{{"inserted": {case.batch}, "duplicates": 0}}'
                base = _instructions(postgres, server.pgdata, f"bench_{case.way}", short, stored)
                more = _instructions(postgres, server.pgdata, f"bench_{case.way}", long, stored)
                per_call[case] = (more - base) / (many - few)
        finally:
            server.start()
    return per_call, info.major_version


def comparisons(quick: bool) -> Report:
    if quick:
        small, big, middle, batches, background, few, many = 100, 10_000, 1_000, [1], 10_000, 10, 20
    else:
        small, big, middle, batches, background = 100, 100_000, 10_000, [1, 50], 100_000
        few, many = 20, 60
    command = "python -m benchmarks.append_work" + (" --quick" if quick else "")
    if shutil.which("valgrind") is None:
        return Report(TITLE, command, "Not measured: `valgrind` is not installed.")
    growth_batch = batches[-1]
    cases = [Case("ours", small, growth_batch), Case("ours", big, growth_batch)]
    try:
        migrations_at(ISSUE_COMMIT)
    except RuntimeError as exc:  # no git history: the comparison with the issue's code is left out
        then_note = f" The issue's code: not measured ({exc})."
        ways = ["ours", "unpartitioned"]
    else:
        then_note = f" The issue's code = the migrations of commit {ISSUE_COMMIT[:7]}."
        ways = ["ours", "unpartitioned", "then"]
    for batch in batches:
        cases += [Case(way, middle, batch) for way in ways]
    per_call, version = run(cases, background, few, many)
    report = Report(
        TITLE,
        command,
        f"Instructions the server runs per call of `append_transcript_segments` as the"
        f" trainee (callgrind, a single-user backend, ({many} calls - {few} calls) /"
        f" {many - few}); {background:,} segments of 100 other sessions in each table; ours ="
        f" every migration, unpartitioned = every migration but {PARTITIONING}.{then_note}"
        f" Each call's answer is checked (every segment stored). PostgreSQL {version}.",
    )

    def thousands(case: Case) -> float:
        return per_call[case] / 1000

    report.comparisons.append(
        Comparison(
            question=f"append work at {big:,} vs {small:,} stored, batch {growth_batch}",
            ours=thousands(Case("ours", big, growth_batch)),
            baseline=thousands(Case("ours", small, growth_batch)),
            unit="k instructions/call",
            goal=Goal("max", 1.1),
            baseline_name=f"ours at {small:,} stored",
            note="flat: an append does the same work however many segments the session holds",
        )
    )
    against = {
        "then": (
            " vs the issue's code",
            1.0,
            f"the migrations of commit {ISSUE_COMMIT[:7]}",
            "keep: an append does no more work than when the performance issue was filed",
        ),
        "unpartitioned": (
            ", partitioned vs one table",
            1.1,
            f"the migrations without {PARTITIONING}",
            "partitioning by session adds no work to an append",
        ),
    }
    for way, (versus, goal, baseline_name, note) in against.items():
        for batch in batches if way in ways else []:
            report.comparisons.append(
                Comparison(
                    question=f"append work{versus}, {middle:,} stored, batch {batch}",
                    ours=thousands(Case("ours", middle, batch)),
                    baseline=thousands(Case(way, middle, batch)),
                    unit="k instructions/call",
                    goal=Goal("max", goal),
                    baseline_name=baseline_name,
                    note=note,
                )
            )
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 1 only, smaller data")
    args = parser.parse_args()
    rep = comparisons(args.quick)
    print(f"## {rep.title}\n\nCommand: `{rep.command}`\n\n{rep.data}\n")
    for c in rep.comparisons:
        print(
            f"- {c.question}: {c.ours:,.0f} vs {c.baseline:,.0f} {c.unit}, ratio {c.ratio:.3f}"
            f" (goal {c.goal}: {'met' if c.met else 'missed'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
