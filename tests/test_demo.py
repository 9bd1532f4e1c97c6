"""`voicesessions demo`: with no configuration it starts the local server and streams the
simulated call; with VOICESESSIONS_DSN it uses that database. Either way what it prints is
what the database holds."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
from click.testing import CliRunner

from tests.conftest import Database
from voicesessions._demo import SCRIPT
from voicesessions.cli import cli

CLI = [sys.executable, "-m", "voicesessions"]


def _session_id(output: str) -> uuid.UUID:
    match = re.search(r"^Session ([0-9a-f-]{36}):", output, re.M)
    assert match, output
    return uuid.UUID(match.group(1))


def test_demo_on_a_configured_database_stores_what_it_shows(fresh_db: Database) -> None:
    env = {"VOICESESSIONS_DSN": fresh_db.dsn, "SUPABASE_URL": ""}
    result = CliRunner().invoke(cli, ["demo", "--speed", "2000"], env=env)
    assert result.exit_code == 0, result.output
    out = result.output
    sid = _session_id(out)
    assert "Using the database of VOICESESSIONS_DSN" in out
    # Every line of the script was heard live and is in the stored transcript.
    for speaker, text in SCRIPT:
        assert re.search(rf"^\s+\d\d:\d\d  {speaker}\s+{re.escape(text)}$", out, re.M), text
        assert f"{speaker}: {text}" in out
    with psycopg.connect(fresh_db.dsn) as conn:
        status, words = conn.execute(
            "select s.status::text, t.word_count from public.sessions s"
            " join public.transcripts t on t.session_id = s.id where s.id = %s",
            (sid,),
        ).fetchone()  # type: ignore[misc]
        stored = conn.execute(
            "select speaker, text from public.transcript_segments where session_id = %s"
            " order by start_ms, seq",
            (sid,),
        ).fetchall()
        fillers, questions = conn.execute(
            "select filler_words_count, question_count from public.session_analytics"
            " where session_id = %s",
            (sid,),
        ).fetchone()  # type: ignore[misc]
        quality = conn.execute(
            "select audio_quality from public.sessions where id = %s", (sid,)
        ).fetchone()[0]  # type: ignore[index]
    assert status == "completed"
    assert [tuple(row) for row in stored] == list(SCRIPT)  # finals only, once each, in order
    assert f"words                 {words}" in out
    assert f"filler words          {fillers}" in out  # what completion recorded
    assert f"trainee questions     {questions}" in out
    assert fillers > 0
    assert set(quality) == {"rms_dbfs", "peak_dbfs", "snr_db"}
    assert "status                completed" in out
    heard = re.search(r"interim updates\s+(\d+) heard live, none stored", out)
    assert heard
    assert int(heard.group(1)) > 0


def test_demo_without_configuration_starts_the_local_server() -> None:
    home = Path(tempfile.mkdtemp(prefix="voicesessions-demo-"))
    home.chmod(0o711)  # reachable by the unprivileged server user when run as root
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "VOICESESSIONS_"))}
    env["VOICESESSIONS_HOME"] = str(home)
    try:
        done = subprocess.run(
            [*CLI, "demo", "--speed", "2000"], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert re.search(r"Local PostgreSQL \d+ started on 127\.0\.0\.1:\d+", done.stdout)
        assert f"Data: {home / 'local'}" in done.stdout
        assert re.search(r"^DSN: postgresql://postgres:\S+@127\.0\.0\.1:\d+/", done.stdout, re.M)
        assert "status                completed" in done.stdout
        again = subprocess.run(
            [*CLI, "demo", "--speed", "2000"], env=env, capture_output=True, text=True
        )
        assert again.returncode == 0, again.stderr
        assert "reused" in again.stdout
        assert "(0 migration(s) applied now" in again.stdout
    finally:
        subprocess.run([*CLI, "local", "stop"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
