"""`voicesessions demo`: with no configuration it starts the local server and streams the
simulated call; with VOICESESSIONS_DSN it uses that database. Either way what it prints is
what the database holds. Repeated runs reuse one demo company; `demo --cleanup` erases all
of it through the GDPR erasure and says so, and finds nothing the second time."""

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
import pytest
from click.testing import CliRunner, Result

from tests.conftest import Database
from tests.support.api import Identity
from voicesessions import _demo
from voicesessions._demo import SCRIPT
from voicesessions._sync.client import VoiceSessions
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
    # Readable lines, not Python dicts; the numbers are the stored ones.
    shown = re.search(r"^  audio quality\s+(.+)$", out, re.M)
    assert shown
    assert shown.group(1) == (
        f"level {quality['rms_dbfs']} dBFS · peak {quality['peak_dbfs']} dBFS"
        f" · SNR {quality['snr_db']} dB"
    )
    events = re.search(r"^  events heard\s+(.+)$", out, re.M)
    assert events
    assert re.fullmatch(r"transcript \d+ · audio_metrics \d+ · status \d+", events.group(1))
    assert not re.search(r"[{}]", out.split("Numbers:")[1])
    # What to read next exists after a wheel install: no README.md; the clean-up erases all.
    assert "README.md" not in out
    assert "voicesessions --help" in out
    assert "voicesessions demo --cleanup" in out
    assert "gdpr erase" not in out


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

        cleanup = subprocess.run(
            [*CLI, "demo", "--cleanup"], env=env, capture_output=True, text=True
        )
        assert cleanup.returncode == 0, cleanup.stderr
        assert "Erased demo person" in cleanup.stdout
        assert "sessions 2" in cleanup.stdout
        assert "Removed the demo company" in cleanup.stdout
        stopped = subprocess.run([*CLI, "local", "stop"], env=env, capture_output=True)
        assert stopped.returncode == 0
        # On a stopped server: started for the clean-up, nothing found, stopped again.
        idle = subprocess.run([*CLI, "demo", "--cleanup"], env=env, capture_output=True, text=True)
        assert idle.returncode == 0, idle.stderr
        assert "stopped again after the clean-up" in idle.stdout
        assert "Nothing to clean up: no demo data is left" in idle.stdout
        status = subprocess.run(
            [*CLI, "local", "status", "--json"], env=env, capture_output=True, text=True
        )
        assert '"running": false' in status.stdout
    finally:
        subprocess.run([*CLI, "local", "stop"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


# -- repeated runs and the clean-up --------------------------------------------------------------


def demo_cli(db: Database, store: Path, *args: str) -> Result:
    env = {
        "VOICESESSIONS_DSN": db.dsn,
        "SUPABASE_URL": "",
        "VOICESESSIONS_STORAGE_ROOT": str(store),
    }
    result = CliRunner().invoke(cli, ["demo", *args], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def _count(db: Database, query: str, *params: object) -> int:
    with db.connect() as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


#: Every table that holds something of a person or a company, and the auth tables.
HELD = (
    "public.companies",
    "public.profiles",
    "public.sessions",
    "public.session_participants",
    "public.transcript_segments",
    "public.transcripts",
    "public.analysis_results",
    "public.session_analytics",
    "public.company_invitations",
    "auth.users",
    "auth.identities",
)


def _held(db: Database) -> dict[str, int]:
    return {table: _count(db, f"select count(*) from {table}") for table in HELD}


def _bystander(db: Database) -> uuid.UUID:
    """Someone else's company, named like the demo's, with a person and a session."""
    with VoiceSessions.from_postgres(db.dsn) as vs:
        company = vs.tenants.create_company("Demo Sales Academy")
        person = vs.tenants.create_user(f"someone-{uuid.uuid4().hex[:8]}@example.com")
        vs.tenants.create_profile(person, company.id, display_name="Dana Demo")
        vs.sessions.create(person, "A real call")
    return person


def _put_audio(db: Database, store: Path, session_id: uuid.UUID) -> Path:
    with db.connect() as conn:
        row = conn.execute(
            "update public.sessions set audio_path = company_id || '/' || profile_id || '/'"
            " || id || '.webm', audio_size_bytes = 5 where id = %s returning audio_path",
            (session_id,),
        ).fetchone()
    assert row is not None
    file = store / "session-audio" / str(row[0])  # type: ignore[index]
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(b"audio")
    return file


def test_repeated_demos_share_one_company_and_the_cleanup_erases_everything(
    fresh_db: Database, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    before = _held(fresh_db)
    bystander = _bystander(fresh_db)
    with_bystander = _held(fresh_db)

    first = demo_cli(fresh_db, store, "--speed", "5000")
    second = demo_cli(fresh_db, store, "--speed", "5000")
    assert "(created now)" in first.output
    assert "(reused" in second.output
    grown = _held(fresh_db)
    assert grown["public.companies"] == with_bystander["public.companies"] + 1
    assert grown["auth.users"] == with_bystander["auth.users"] + 1
    assert grown["public.sessions"] == with_bystander["public.sessions"] + 2
    audio = _put_audio(fresh_db, store, _session_id(first.output))
    trainee = _count(fresh_db, "select count(*) from public.profiles where id = %s", _TRAINEE)
    assert trainee == 1

    cleanup = demo_cli(fresh_db, store, "--cleanup")
    out = cleanup.output
    assert f"Erased demo person {_TRAINEE} with their account (GDPR request " in out
    assert "sessions 2" in out
    assert "audio files deleted: 1" in out
    assert "Removed the demo company" in out
    # Nothing of the demo is left, the audio included; the bystander is untouched.
    assert _held(fresh_db) == with_bystander
    assert not audio.exists()
    assert _count(fresh_db, "select count(*) from public.profiles where id = %s", bystander) == 1
    # The erasure is recorded as any erasure, with the account.
    rows = _count(
        fresh_db,
        "select count(*) from public.gdpr_requests where kind = 'erasure'"
        " and status = 'completed' and (details ->> 'include_account')::boolean",
    )
    assert rows == 1
    # What a GDPR export finds about the demo trainee now: no account, no identity.
    with VoiceSessions.from_postgres(fresh_db.dsn) as vs:
        document = vs.gdpr.export_user_data(_TRAINEE)
    assert document["identities"] == []
    assert document["sessions"] == []
    assert document.get("profile") is None

    requests = _count(fresh_db, "select count(*) from public.gdpr_requests")
    again = demo_cli(fresh_db, store, "--cleanup")
    assert "Nothing to clean up: no demo data is left in this database" in again.output
    assert _held(fresh_db) == with_bystander
    assert _count(fresh_db, "select count(*) from public.gdpr_requests") == requests  # no new row
    assert before["public.companies"] + 1 == with_bystander["public.companies"]


_TRAINEE = uuid.UUID("de300000-0000-4000-8000-000000000002")


def test_the_cleanup_also_removes_an_account_the_old_erase_hint_left(
    fresh_db: Database, tmp_path: Path
) -> None:
    """The hint of earlier versions (`gdpr erase --user X --yes`) kept the account and the
    company; the clean-up removes both, and the next demo starts from scratch."""
    store = tmp_path / "store"
    before = _held(fresh_db)
    demo_cli(fresh_db, store, "--speed", "5000")
    erase = CliRunner().invoke(
        cli,
        [
            "gdpr",
            "erase",
            "--user",
            str(_TRAINEE),
            "--yes",
            "--dsn",
            fresh_db.dsn,
            "--storage-root",
            str(store),
        ],
    )
    assert erase.exit_code == 0, erase.output
    assert _count(fresh_db, "select count(*) from auth.users where id = %s", _TRAINEE) == 1
    # The account outlived the erasure: the next demo reuses it.
    demo_cli(fresh_db, store, "--speed", "5000")

    cleanup = demo_cli(fresh_db, store, "--cleanup")
    assert "account 1" in cleanup.output
    assert _held(fresh_db) == before


def test_the_cleanup_of_an_empty_database_finds_nothing(fresh_db: Database, tmp_path: Path) -> None:
    result = demo_cli(fresh_db, tmp_path, "--cleanup")
    assert "Nothing to clean up" in result.output
    assert _count(fresh_db, "select count(*) from public.gdpr_requests") == 0


def test_the_demo_company_is_removed_only_once_nobody_is_left(fresh_db: Database) -> None:
    """public.demo_remove_company refuses while the company has a profile (its people go
    through the GDPR erasure first), and only the service role may call the demo's
    functions."""
    with VoiceSessions.from_postgres(fresh_db.dsn) as vs:
        ids = _demo._rpc(vs, "demo_company")
        company = uuid.UUID(ids["company_id"])
        person = vs.tenants.create_user("someone@example.com")
        vs.tenants.create_profile(person, company)
    with fresh_db.api() as api:
        service = Identity.service_role()
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="erase them first"):
            api.run(service, "select public.demo_remove_company()", commit=True)
        for who in (Identity.anon(), Identity.user(person)):
            for function in ("demo_company", "demo_data", "demo_remove_company"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    api.run(who, f"select public.{function}()")
        assert _count(fresh_db, "select count(*) from public.companies where id = %s", company)
        people = api.run(service, "select public.demo_data() as d").rows[0]["d"]["people"]
        assert people == [str(person)]
        with fresh_db.connect() as conn:
            conn.execute("delete from auth.users where id = %s", (person,))
        removed = api.run(service, "select public.demo_remove_company() as r", commit=True)
        assert removed.rows == [{"r": True}]
        again = api.run(service, "select public.demo_remove_company() as r", commit=True)
        assert again.rows == [{"r": False}]
    assert not _count(fresh_db, "select count(*) from public.companies where id = %s", company)


def test_the_documentation_link_is_the_distributions(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a wheel install the demo points at pyproject's Documentation URL (read from the
    installed metadata); from a source tree without metadata, at `voicesessions --help`."""
    import tomllib
    from email.message import Message

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    url = pyproject["project"]["urls"]["Documentation"]
    meta = Message()
    meta["Project-URL"] = "Homepage, https://example.org/home"
    meta["Project-URL"] = f"Documentation, {url}"
    monkeypatch.setattr(_demo.metadata, "metadata", lambda name: meta)
    assert _demo.documentation_url() == url

    def missing(name: str) -> Message:
        raise _demo.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(_demo.metadata, "metadata", missing)
    assert _demo.documentation_url() is None


def test_the_cleanup_without_a_local_server_creates_none(monkeypatch: pytest.MonkeyPatch) -> None:
    home = Path(tempfile.mkdtemp(prefix="voicesessions-demo-"))
    try:
        for name in ("VOICESESSIONS_DSN", "SUPABASE_URL"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("VOICESESSIONS_HOME", str(home))
        result = CliRunner().invoke(cli, ["demo", "--cleanup"])
        assert result.exit_code == 0, result.output
        assert "Nothing to clean up: the local PostgreSQL was never created" in result.output
        assert not (home / "local").exists()
    finally:
        shutil.rmtree(home, ignore_errors=True)
