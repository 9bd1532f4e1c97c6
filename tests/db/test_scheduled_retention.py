"""Scheduled retention (migration 20261128001100): pg_cron runs private.retention_tick, one
bounded batch per run; without pg_cron the operator functions say so and the CLI stays the way.

- On the suite's server (no pg_cron loaded): scheduling is refused with 0A000 naming the ways
  out, the other operator functions answer "nothing scheduled"; no API role may execute
  them; each tick is one batch of at most batch_size per category and a backlog drains over
  ticks; a failing company is rolled back alone, recorded in the audit log while others
  progress and raised (its SQLSTATE, named) once nothing else does; the audio a tick leaves
  pending is deleted by the next `gdpr retention`; the CLI's job options.
- On a server of its own with pg_cron preloaded (tests/support/cron.py): the job scheduled
  through the CLI runs by itself, its run is recorded as succeeded in cron.job_run_details
  and handled one batch; a database whose only work fails records a failed run naming the
  company; `gdpr retention --yes` then finishes the audio the scheduled run left pending.
  pg_cron 1.4 schedules by the minute: this test waits for the next minute (at most ~60 s,
  one test, so `pytest -n auto` runs the rest meanwhile).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from tests.conftest import Database
from tests.db.test_gdpr import new_session
from tests.support.cron import cron_cluster, wait_for
from tests.support.db import owner, owner_rows, scalar
from tests.support.world import World, seed_world
from tests.test_cli_gdpr import Env, assert_error
from voicesessions.cli import cli as voicesessions_cli

WorldDb = tuple[Database, World]

#: The operator functions of the migration: nobody but their owner may run them.
OPERATOR_FUNCTIONS = (
    "private.retention_job_name()",
    "private.retention_cron_schema()",
    "private.retention_has_pg_cron()",
    "private.retention_tick(integer)",
    "private.schedule_retention(text, integer)",
    "private.unschedule_retention()",
    "private.retention_schedule()",
    "private.retention_runs(integer)",
)

#: A trigger that makes retention fail for one company (a real failure inside the database).
BLOCK_COMPANY = """
create function public.test_block_retention() returns trigger language plpgsql as $$
begin
  raise exception 'retention blocked for company %%', old.company_id using errcode = '55000';
end;
$$;
create trigger test_block_retention before update or delete on public.sessions
  for each row when (old.company_id = '%s') execute function public.test_block_retention();
"""


def set_session_retention(db: Database, company: uuid.UUID, *, audio_only: bool = False) -> None:
    """Sessions kept 365 days (or, with ``audio_only``, only their audio kept 30 days)."""
    column = "audio_retention_days = 30" if audio_only else "session_retention_days = 365"
    with owner(db) as conn:
        conn.execute(
            f"update public.companies set {column} where id = %s",
            (company,),
        )


def old_sessions(env: Env, key: str, n: int) -> list[uuid.UUID]:
    """``n`` sessions of ``key`` that ended 400 days ago, each with an audio file in the
    local store (``env.root``)."""
    ids = [new_session(env.db, env.id(key), ended_days_ago=400 + i) for i in range(n)]
    for session_id in ids:
        env.put_audio(session_id)
    return ids


def count_sessions(db: Database, ids: list[uuid.UUID]) -> int:
    return int(scalar(db, "select count(*) from public.sessions where id = any(%s)", (ids,)))


def tick(db: Database, batch_size: int = 500) -> dict[str, Any]:
    report: dict[str, Any] = scalar(db, "select private.retention_tick(%s)", (batch_size,))
    return report


def retention_requests(db: Database, company: uuid.UUID) -> list[dict[str, Any]]:
    return owner_rows(
        db,
        "select id, status, requested_at, details from public.gdpr_requests"
        " where kind = 'retention' and company_id = %s order by requested_at, id",
        (company,),
    )


def block(db: Database, company: uuid.UUID) -> None:
    with owner(db) as conn:
        conn.execute(BLOCK_COMPANY % company)


def unblock(db: Database) -> None:
    with owner(db) as conn:
        conn.execute("drop trigger test_block_retention on public.sessions")


@pytest.fixture
def env(world_db: WorldDb, tmp_path: Path) -> Env:
    db, world = world_db
    return Env(db, world, tmp_path / "store")


# -- without pg_cron ----------------------------------------------------------------------------


def test_without_pg_cron_scheduling_is_refused_naming_the_ways_out(fresh_db: Database) -> None:
    with owner(fresh_db) as conn:
        assert conn.execute("select private.retention_has_pg_cron()").fetchone() == (False,)
        with pytest.raises(psycopg.errors.FeatureNotSupported) as caught:
            conn.execute("select private.schedule_retention()")
        assert "pg_cron is not installed" in str(caught.value.diag.message_primary)
        hint = str(caught.value.diag.message_hint)
        assert "Database > Extensions" in hint
        assert "voicesessions gdpr retention --yes" in hint
        assert conn.execute("select private.unschedule_retention()").fetchone() == (False,)
        assert conn.execute("select private.retention_schedule()").fetchone() == (None,)
        assert conn.execute("select private.retention_runs()").fetchone() == ([],)


@pytest.mark.parametrize(
    ("call", "params", "sqlstate"),
    [
        ("private.schedule_retention(%s, 500)", (None,), "22004"),
        ("private.schedule_retention('0 3 * * *', %s)", (None,), "22004"),
        ("private.schedule_retention('0 3 * * *', %s)", (0,), "22023"),
        ("private.schedule_retention('0 3 * * *', %s)", (10_001,), "22023"),
        ("private.schedule_retention(%s, 500)", ("  ",), "22023"),
        ("private.schedule_retention(%s, 500)", ("* " * 60,), "22023"),
        ("private.retention_tick(%s)", (None,), "22004"),
        ("private.retention_tick(%s)", (0,), "22023"),
        ("private.retention_tick(%s)", (10_001,), "22023"),
        ("private.retention_runs(%s)", (None,), "22004"),
        ("private.retention_runs(%s)", (0,), "22023"),
        ("private.retention_runs(%s)", (1001,), "22023"),
    ],
)
def test_bad_arguments_are_typed_errors(
    fresh_db: Database, call: str, params: tuple[Any, ...], sqlstate: str
) -> None:
    with owner(fresh_db) as conn, pytest.raises(psycopg.Error) as caught:
        conn.execute(f"select * from {call}", params)
    assert caught.value.sqlstate == sqlstate


def test_no_api_role_may_run_the_operator_functions(fresh_db: Database) -> None:
    with owner(fresh_db) as conn:
        for function in OPERATOR_FUNCTIONS:
            for role in ("anon", "authenticated", "service_role"):
                row = conn.execute(
                    "select has_function_privilege(%s, %s::regprocedure, 'execute')",
                    (role, function),
                ).fetchone()
                assert row == (False,), (role, function)
            row = conn.execute(
                "select coalesce(bool_or(a.grantee = 0), false) from pg_proc p,"
                " aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a"
                " where p.oid = %s::regprocedure",
                (function,),
            ).fetchone()
            assert row == (False,), f"PUBLIC may execute {function}"


def test_each_tick_is_one_bounded_batch_and_ticks_drain_the_backlog(env: Env) -> None:
    company = env.world.companies["A"]
    ids = old_sessions(env, "A1", 5)
    set_session_retention(env.db, company)

    reports = [tick(env.db, 2) for _ in range(4)]

    handled = [r["counts"]["sessions"] for r in reports]
    assert handled == [2, 2, 1, 0]
    assert [r["more"] for r in reports] == [True, True, False, False]
    assert [r["pending_storage_count"] for r in reports] == [2, 2, 1, 0]
    assert count_sessions(env.db, ids) == 0
    # One request per tick that changed something, each in its own transaction (its own
    # start time), waiting for its audio.
    requests = retention_requests(env.db, company)
    assert len(requests) == 3
    assert len({r["requested_at"] for r in requests}) == 3
    assert [r["status"] for r in requests] == ["in_progress"] * 3
    assert [len(r["details"]["pending_storage"]) for r in requests] == [2, 2, 1]
    assert [r["request_ids"] for r in reports[:3]] == [[str(r["id"])] for r in requests]


def test_the_next_cli_run_deletes_the_audio_ticks_left_pending(env: Env) -> None:
    company = env.world.companies["A"]
    ids = old_sessions(env, "A1", 3)
    files = [env.root / "session-audio" / str(p) for p in _audio_paths(env, ids)]
    assert all(f.exists() for f in files)
    set_session_retention(env.db, company)
    assert tick(env.db, 500)["counts"]["sessions"] == 3
    assert all(f.exists() for f in files)  # SQL cannot delete Storage objects

    shown = json.loads(env.run("retention", "--runs", "--json").stdout)
    assert shown == {"pg_cron": False, "job": None, "runs": [], "pending_storage": 3}

    result = env.run("retention", "--yes", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["storage_removed"] == 3
    assert report["pending_storage"] == []
    assert not any(f.exists() for f in files)
    assert [r["status"] for r in retention_requests(env.db, company)] == ["completed"]
    shown = json.loads(env.run("retention", "--runs", "--json").stdout)
    assert shown["pending_storage"] == 0


def _audio_paths(env: Env, ids: list[uuid.UUID]) -> list[str]:
    rows = owner_rows(
        env.db, "select audio_path from public.sessions where id = any(%s) order by 1", (ids,)
    )
    return [str(r["audio_path"]) for r in rows]


def test_a_failing_company_is_rolled_back_alone_and_reported(env: Env) -> None:
    a, b = env.world.companies["A"], env.world.companies["B"]
    a_ids = old_sessions(env, "A1", 2)
    b_ids = old_sessions(env, "B1", 2)
    set_session_retention(env.db, a)
    set_session_retention(env.db, b)
    block(env.db, b)

    first = tick(env.db)

    assert count_sessions(env.db, a_ids) == 0
    assert count_sessions(env.db, b_ids) == 2
    assert [f["company_id"] for f in first["failures"]] == [str(b)]
    assert first["failures"][0]["sqlstate"] == "55000"
    (entry,) = owner_rows(
        env.db,
        "select entity_id, company_id, details from public.audit_log"
        " where action = 'gdpr.retention_failed'",
    )
    assert (entry["entity_id"], entry["company_id"]) == (b, b)
    assert entry["details"]["sqlstate"] == "55000"
    assert "retention blocked" in entry["details"]["message"]
    assert retention_requests(env.db, b) == []

    # Nothing else to do: the run fails, with the company's SQLSTATE, naming it.
    audit_entries = scalar(env.db, "select count(*) from public.audit_log")
    with owner(env.db) as conn, pytest.raises(psycopg.Error) as caught:
        conn.execute("select private.retention_tick(500)")
    assert caught.value.sqlstate == "55000"
    assert str(b) in str(caught.value.diag.message_primary)
    assert "retention blocked" in str(caught.value.diag.message_primary)
    assert scalar(env.db, "select count(*) from public.audit_log") == audit_entries

    unblock(env.db)
    assert tick(env.db)["counts"]["sessions"] == 2
    assert count_sessions(env.db, b_ids) == 0


def test_the_cli_job_options_without_pg_cron(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    line = assert_error(env.run("retention", "--schedule", "0 3 * * *"), 1)
    assert "pg_cron is not installed" in line
    assert "voicesessions gdpr retention --yes" in line
    runs = env.run("retention", "--runs")
    assert runs.exit_code == 0, runs.output
    assert "pg_cron is not installed here" in runs.stdout
    assert "Audio files pending deletion: 0" in runs.stdout
    off = env.run("retention", "--unschedule", "--json")
    assert (off.exit_code, json.loads(off.stdout)) == (0, {"removed": False})
    for extra in (["--runs"], ["--unschedule"], ["--company", str(uuid.uuid4())], ["--dry-run"]):
        result = env.run("retention", "--schedule", "0 3 * * *", *extra)
        assert result.exit_code == 2, (extra, result.output)
    monkeypatch.setenv("SUPABASE_URL", "https://example.supabase.co")
    result = CliRunner().invoke(voicesessions_cli, ["gdpr", "retention", "--runs"])
    assert result.exit_code == 2
    assert "--dsn" in result.stderr


# -- with pg_cron -------------------------------------------------------------------------------


@pytest.fixture
def cron_dbs() -> Iterator[dict[str, Database]]:
    with cron_cluster("vs_cron", "vs_cron_failing") as dbs:
        yield dbs


def run_cli(db: Database, root: Path, *args: str) -> Result:
    argv = ["gdpr", "retention", *args, "--dsn", db.dsn, "--storage-root", str(root)]
    return CliRunner().invoke(voicesessions_cli, argv)


def test_pg_cron_runs_retention_by_itself(cron_dbs: dict[str, Database], tmp_path: Path) -> None:
    main, failing = cron_dbs["vs_cron"], cron_dbs["vs_cron_failing"]
    envs = {}
    for name, db in cron_dbs.items():
        with db.connect(autocommit=False) as conn:
            envs[name] = Env(db, seed_world(conn), tmp_path / name)
    env, failing_env = envs["vs_cron"], envs["vs_cron_failing"]
    a, b = env.world.companies["A"], env.world.companies["B"]
    a_ids = old_sessions(env, "A1", 3)
    b_ids = old_sessions(env, "B1", 1)
    set_session_retention(main, a)
    # The batch size is per category over all companies: B's work is audio, so that A's
    # sessions cannot use up B's share of the batch.
    set_session_retention(main, b, audio_only=True)
    block(main, b)
    # The other database: the only company with retention work fails.
    failing_b = failing_env.world.companies["B"]
    old_sessions(failing_env, "B1", 1)
    set_session_retention(failing, failing_b)
    block(failing, failing_b)

    scheduled = run_cli(main, env.root, "--schedule", "* * * * *", "--batch-size", "2", "--json")
    assert scheduled.exit_code == 0, scheduled.output
    job = json.loads(scheduled.stdout)
    assert (job["schedule"], job["command"], job["active"]) == (
        "* * * * *",
        "select private.retention_tick(2)",
        True,
    )
    with owner(main) as conn:
        conn.execute(
            "select cron.schedule_in_database('vs-failing', '* * * * *',"
            " 'select private.retention_tick(2)', 'vs_cron_failing')"
        )

        def finished() -> dict[str, tuple[str, str]] | None:
            rows = conn.execute(
                "select database, status, return_message from cron.job_run_details"
                " where status in ('succeeded', 'failed')"
            ).fetchall()
            done = {str(r[0]): (str(r[1]), str(r[2])) for r in rows}
            return done if len(done) == 2 else None

        # pg_cron 1.4 starts jobs on the minute.
        runs = wait_for(finished, 80, "the first run of both pg_cron jobs")
        conn.execute("select cron.unschedule('vs-failing')")

    # The run succeeded and did one batch: 2 of A's 3 old sessions, B rolled back alone.
    assert runs["vs_cron"] == ("succeeded", "SELECT 1")
    assert count_sessions(main, a_ids) == 1
    assert count_sessions(main, b_ids) == 1
    (request,) = retention_requests(main, a)
    assert request["status"] == "in_progress"
    assert request["details"]["more"] is True
    assert len(request["details"]["pending_storage"]) == 2
    assert (
        scalar(
            main,
            "select count(*) from public.audit_log where action = 'gdpr.retention_failed'"
            " and entity_id = %s",
            (b,),
        )
        == 1
    )
    # Where nothing else could progress, the run is recorded as failed, naming the company.
    status, message = runs["vs_cron_failing"]
    assert status == "failed"
    assert str(failing_b) in message
    assert "SQLSTATE 55000" in message
    assert "retention blocked" in message

    shown = run_cli(main, env.root, "--runs", "--json")
    assert shown.exit_code == 0, shown.output
    listing = json.loads(shown.stdout)
    assert listing["pg_cron"] is True
    assert listing["job"]["jobid"] == job["jobid"]
    assert [r["status"] for r in listing["runs"]] == ["succeeded"]
    assert listing["pending_storage"] == 2
    human = run_cli(main, env.root, "--runs")
    assert "succeeded" in human.stdout
    assert "Audio files pending deletion: 2" in human.stdout

    off = run_cli(main, env.root, "--unschedule", "--json")
    assert json.loads(off.stdout) == {"removed": True}
    assert json.loads(run_cli(main, env.root, "--runs", "--json").stdout)["job"] is None

    # The CLI finishes: the rest of the backlog, and the audio the scheduled run left.
    unblock(main)
    files = list((env.root / "session-audio").rglob("*.webm"))
    assert len(files) == 4
    done = run_cli(main, env.root, "--yes", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["storage_removed"] == 4
    assert not any(f.exists() for f in files)
    assert count_sessions(main, a_ids) == 0
    assert (
        scalar(main, "select count(audio_path) from public.sessions where id = any(%s)", (b_ids,))
        == 0
    )
    statuses = {r["status"] for company in (a, b) for r in retention_requests(main, company)}
    assert statuses == {"completed"}
