"""``voicesessions gdpr``, run in-process against a real PostgreSQL (a clone of the world)
with the audio in a scratch local store."""

from __future__ import annotations

import json
import re
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from tests.conftest import Database
from tests.support.world import World
from voicesessions import cli as cli_module
from voicesessions.cli import cli, gdpr

BUCKET = "session-audio"
#: The gdpr commands that touch no audio file (no --storage-root).
NO_AUDIO = {"requests"}
ANON_TITLE = "Anonymized session"


@dataclass
class Env:
    db: Database
    world: World
    root: Path

    def run(self, *args: str, input: str | None = None) -> Result:
        argv = ["gdpr", *args, "--dsn", self.db.dsn]
        if args[0] not in NO_AUDIO:
            argv += ["--storage-root", str(self.root)]
        return CliRunner().invoke(cli, argv, input=input)

    def id(self, key: str) -> uuid.UUID:
        return self.world.person(key).id

    def scalar(self, query: str, *params: Any) -> Any:
        with self.db.connect() as conn:
            row = conn.execute(query, params).fetchone()
        assert row is not None
        return row[0]  # type: ignore[index]

    def put_audio(self, session_id: uuid.UUID) -> Path:
        path = self.scalar(
            "update public.sessions set audio_path = company_id || '/' || profile_id || '/'"
            " || id || '.webm', audio_size_bytes = 5 where id = %s returning audio_path",
            session_id,
        )
        file = self.root / BUCKET / str(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(b"audio")
        return file

    def sessions_of(self, key: str) -> int:
        return int(
            self.scalar("select count(*) from public.sessions where profile_id = %s", self.id(key))
        )

    def requests(self) -> int:
        return int(self.scalar("select count(*) from public.gdpr_requests"))


@pytest.fixture
def env(world_db: tuple[Database, World], tmp_path: Path) -> Env:
    db, world = world_db
    return Env(db, world, tmp_path / "store")


@pytest.fixture
def tty(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend a person sits at the terminal (CliRunner's stdin is not a TTY)."""
    monkeypatch.setattr(cli_module, "_interactive", lambda: True)


def assert_error(result: Result, code: int) -> str:
    """Failed with ``code`` and one line on stderr, no traceback."""
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


# -- help -------------------------------------------------------------------------------------


def test_every_gdpr_command_and_option_has_help_text() -> None:
    assert gdpr.help
    names = {"erase", "anonymize", "export", "retention", "requests"}
    assert set(gdpr.commands) == names
    for name, command in gdpr.commands.items():
        assert command.help, name
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.help, f"{name} {param.opts}"
        result = CliRunner().invoke(cli, ["gdpr", name, "--help"])
        assert result.exit_code == 0
        assert "--json" in result.stdout
        assert "--dsn" in result.stdout
        assert ("--storage-root" in result.stdout) == (name not in NO_AUDIO), name
    assert CliRunner().invoke(cli, ["gdpr", "--help"]).exit_code == 0


# -- erase ------------------------------------------------------------------------------------


def test_erase_with_yes_erases_rows_and_audio(env: Env) -> None:
    files = [env.put_audio(env.world.completed_session["A1"])]
    result = env.run("erase", "--user", str(env.id("A1")), "--yes")
    assert result.exit_code == 0, result.output
    assert f"Erased user {env.id('A1')}" in result.stdout
    assert "sessions" in result.stdout
    assert "(completed)" in result.stdout
    assert "Stores: database, storage" in result.stdout
    assert "Storage objects deleted: 1" in result.stdout
    assert env.sessions_of("A1") == 0
    assert not files[0].exists()
    assert env.sessions_of("A2") == 2

    again = env.run("erase", "--user", str(env.id("A1")), "--yes", "--json")
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert report["already_erased"] is True


def _table(output: str) -> list[str]:
    """The names of the count table's rows, in the order printed."""
    return [m.group(1) for m in re.finditer(r"^  ([a-z_]+) +\d+$", output, re.M)]


def test_counts_are_listed_in_a_fixed_order_of_meaning(env: Env, tmp_path: Path) -> None:
    """The database hands counts back ordered by key length (jsonb): the CLI lists the
    person, then the sessions and what hangs off them, then audio and records."""
    rank = {name: i for i, name in enumerate(cli_module.COUNT_ORDER)}
    dry = env.run("erase", "--user", str(env.id("A1")), "--include-account", "--dry-run")
    export = env.run("export", "--user", str(env.id("A1")), "-o", str(tmp_path / "a1.json"))
    erase = env.run("erase", "--user", str(env.id("A1")), "--include-account", "--yes")
    for result in (dry, export, erase):
        assert result.exit_code == 0, result.output
        names = _table(result.stdout)
        assert len(names) >= 9, result.stdout
        assert set(names) <= rank.keys(), result.stdout
        assert names == sorted(names, key=rank.__getitem__), result.stdout
    assert _table(erase.stdout)[:5] == [
        "account",
        "identities",
        "auth_audit_entries",
        "profile",
        "sessions",
    ]
    assert cli_module._counts_text(
        json.loads(
            env.run(
                "erase", "--user", str(env.id("A2")), "--dry-run", "--json", "--include-account"
            ).stdout
        )["counts"]
    ).startswith("account 1, profile 1, sessions 2, participants")


def test_a_repeated_erase_says_plainly_that_nothing_was_left(env: Env) -> None:
    first = env.run("erase", "--user", str(env.id("A1")), "--yes")
    assert first.exit_code == 0, first.output
    request = re.search(r"^Request: ([0-9a-f-]{36}) \(completed\)$", first.stdout, re.M)
    assert request, first.stdout
    again = env.run("erase", "--user", str(env.id("A1")), "--yes")
    assert again.exit_code == 0, again.output
    assert again.stdout == (
        f"Nothing left to erase for user {env.id('A1')}: already erased by request "
        f"{request.group(1)}\n"
    )


def test_a_repeated_anonymization_says_plainly_that_nothing_was_left(env: Env) -> None:
    sid = env.world.completed_session["A1"]
    first = env.run("anonymize", "--session", str(sid), "--yes")
    assert first.exit_code == 0, first.output
    assert "Stores: database" in first.stdout
    again = env.run("anonymize", "--session", str(sid), "--yes")
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith(
        f"Nothing left to anonymize in session {sid}: already anonymized"
    )
    assert "(-)" not in again.stdout
    assert "Stores: -" not in again.stdout


def test_erase_json_report(env: Env) -> None:
    env.put_audio(env.world.completed_session["A1"])
    result = env.run("erase", "--user", str(env.id("A1")), "--include-account", "--yes", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["counts"]["sessions"] == 2
    assert report["counts"]["account"] == 1
    assert report["status"] == "completed"
    assert report["storage_removed"] == 1
    assert report["pending_storage"] == []
    uuid.UUID(report["request_id"])
    assert env.scalar("select count(*) from auth.users where id = %s", env.id("A1")) == 0


def test_erase_dry_run_changes_nothing(env: Env) -> None:
    audio = env.put_audio(env.world.completed_session["A1"])
    before = env.requests()
    result = env.run("erase", "--user", str(env.id("A1")), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Dry run: would erase" in result.stdout
    assert "Storage objects to delete: 1" in result.stdout
    as_json = env.run("erase", "--user", str(env.id("A1")), "--dry-run", "--json")
    assert json.loads(as_json.stdout)["dry_run"] is True
    assert env.sessions_of("A1") == 2
    assert audio.exists()
    assert env.requests() == before


@pytest.mark.usefixtures("tty")
def test_erase_prompt_answered_no_erases_nothing(env: Env) -> None:
    audio = env.put_audio(env.world.completed_session["A1"])
    result = env.run("erase", "--user", str(env.id("A1")), input="n\n")
    assert result.exit_code == 2, result.output
    assert "Erase user" in result.stderr
    assert "[y/N]" in result.stderr
    assert "Error: aborted: nothing was erased" in result.stderr
    assert "Traceback" not in result.stderr
    assert env.sessions_of("A1") == 2
    assert audio.exists()


@pytest.mark.usefixtures("tty")
def test_erase_prompt_answered_yes_erases(env: Env) -> None:
    result = env.run("erase", "--user", str(env.id("A1")), input="y\n")
    assert result.exit_code == 0, result.output
    assert "[y/N]" in result.stderr
    assert f"Erased user {env.id('A1')}" in result.stdout
    assert env.sessions_of("A1") == 0


def test_erase_without_tty_or_yes_refuses(env: Env) -> None:
    line = assert_error(env.run("erase", "--user", str(env.id("A1"))), 2)
    assert "--yes" in line
    assert env.sessions_of("A1") == 2


def test_erase_unknown_user_and_bad_uuid_exit_2(env: Env) -> None:
    assert_error(env.run("erase", "--user", str(uuid.uuid4()), "--yes"), 2)
    bad = env.run("erase", "--user", "not-a-uuid", "--yes")
    assert bad.exit_code == 2
    assert "not-a-uuid" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_erase_and_export_find_the_person_by_email(env: Env, tmp_path: Path) -> None:
    a1 = env.id("A1")
    # Addresses are compared trimmed and in lower case, as Supabase Auth stores them.
    plan = env.run("erase", "--email", "  A1@Example.TEST ", "--dry-run", "--json")
    assert plan.exit_code == 0, plan.output
    assert (
        json.loads(plan.stdout)["counts"]
        == json.loads(env.run("erase", "--user", str(a1), "--dry-run", "--json").stdout)["counts"]
    )
    out = tmp_path / "a1.json"
    exported = env.run("export", "--email", "a1@example.test", "-o", str(out))
    assert exported.exit_code == 0, exported.output
    assert json.loads(out.read_text())["subject"]["id"] == str(a1)
    erased = env.run("erase", "--email", "a1@example.test", "--yes")
    assert erased.exit_code == 0, erased.output
    assert f"Erased user {a1}" in erased.stdout
    assert env.sessions_of("A1") == 0
    assert env.sessions_of("A2") == 2


def test_a_person_given_twice_or_not_at_all_is_a_usage_error(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    requests = env.requests()
    for args in (
        ("erase", "--yes"),
        ("erase", "--user", str(env.id("A1")), "--email", "a1@example.test", "--yes"),
        ("export", "-o", str(out)),
        ("export", "--user", str(env.id("A1")), "--email", "a1@example.test", "-o", str(out)),
    ):
        result = env.run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "--user ID or --email ADDRESS" in result.stderr
    assert env.sessions_of("A1") == 2
    assert not out.exists()
    assert env.requests() == requests


def test_an_email_nobody_has_is_not_found(env: Env, tmp_path: Path) -> None:
    requests = env.requests()
    line = assert_error(env.run("erase", "--email", "nobody@example.test", "--yes"), 2)
    assert "nobody@example.test" in line
    out = tmp_path / "x.json"
    assert_error(env.run("export", "--email", "nobody@example.test", "-o", str(out)), 2)
    assert not out.exists()
    assert env.requests() == requests


# -- anonymize --------------------------------------------------------------------------------


def test_anonymize_with_keys(env: Env) -> None:
    sid = env.world.completed_session["A1"]
    audio = env.put_audio(sid)
    result = env.run("anonymize", "--session", str(sid), "--key", "secret", "--yes", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["session_id"] == str(sid)
    assert "secret" in report["personal_keys"]
    assert report["storage_removed"] == 1
    assert not audio.exists()
    assert env.scalar("select title from public.sessions where id = %s", sid) == ANON_TITLE

    again = env.run("anonymize", "--session", str(sid), "--yes")
    assert again.exit_code == 0, again.output
    assert "already anonymized" in again.stdout


@pytest.mark.usefixtures("tty")
def test_anonymize_prompt(env: Env) -> None:
    sid = env.world.completed_session["A1"]
    no = env.run("anonymize", "--session", str(sid), input="n\n")
    assert no.exit_code == 2
    assert env.scalar("select title from public.sessions where id = %s", sid) != ANON_TITLE
    yes = env.run("anonymize", "--session", str(sid), input="y\n")
    assert yes.exit_code == 0, yes.output
    assert f"Anonymized session {sid}" in yes.stdout
    assert env.scalar("select title from public.sessions where id = %s", sid) == ANON_TITLE


def test_anonymize_failures(env: Env) -> None:
    # An active session cannot be anonymized: the operation fails (1).
    line = assert_error(
        env.run("anonymize", "--session", str(env.world.active_session["A1"]), "--yes"), 1
    )
    assert "Error: " in line
    assert_error(env.run("anonymize", "--session", str(uuid.uuid4()), "--yes"), 2)
    assert_error(env.run("anonymize", "--session", str(env.world.completed_session["A1"])), 2)
    assert env.run("anonymize", "--session", "x", "--yes").exit_code == 2


# -- export -----------------------------------------------------------------------------------


def test_export_json_file(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "a1.json"
    result = env.run("export", "--user", str(env.id("A1")), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert f"Exported user {env.id('A1')} to {out}" in result.stdout
    document = json.loads(out.read_text())
    assert document["schema"] == "voicesessions.export"
    assert document["subject"]["id"] == str(env.id("A1"))
    assert len(document["sessions"]) == 2

    as_json = env.run("export", "--user", str(env.id("A1")), "-o", str(out), "--json")
    summary = json.loads(as_json.stdout)
    assert summary["counts"]["sessions"] == 2
    assert summary["file"] == str(out)
    uuid.UUID(summary["request_id"])


def test_export_zip_with_audio(env: Env, tmp_path: Path) -> None:
    audio = env.put_audio(env.world.completed_session["A1"])
    name = audio.relative_to(env.root).as_posix()
    out = tmp_path / "a1.zip"
    result = env.run(
        "export", "--user", str(env.id("A1")), "-o", str(out), "--with-audio", "--json"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["audio_files"] == [name]
    assert summary["missing_audio"] == []
    with zipfile.ZipFile(out) as archive:
        assert set(archive.namelist()) == {"export.json", f"audio/{name}"}
        assert archive.read(f"audio/{name}") == b"audio"
        document = json.loads(archive.read("export.json"))
    assert len(document["sessions"]) == 2


def test_export_errors(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    bad = env.run("export", "--user", str(env.id("A1")), "-o", str(out), "--with-audio")
    assert bad.exit_code == 2
    assert ".zip" in bad.stderr
    assert not out.exists()
    assert_error(env.run("export", "--user", str(uuid.uuid4()), "-o", str(out)), 2)
    assert not out.exists()
    assert env.run("export", "--user", str(env.id("A1"))).exit_code == 2  # no -o


# -- retention --------------------------------------------------------------------------------


def _old_audio(env: Env) -> list[Path]:
    company = env.world.companies["A"]
    files = []
    for key in ("A1", "A2"):
        sid = env.world.completed_session[key]
        files.append(env.put_audio(sid))
        with env.db.connect() as conn:
            conn.execute(
                "update public.sessions set started_at = now() - interval '40 days',"
                " ended_at = now() - interval '40 days' + interval '10 minutes' where id = %s",
                (sid,),
            )
    with env.db.connect() as conn:
        conn.execute(
            "update public.companies set audio_retention_days = 30 where id = %s", (company,)
        )
    return files


def test_retention_dry_run_then_run(env: Env) -> None:
    files = _old_audio(env)
    company = str(env.world.companies["A"])
    before = env.requests()
    dry = env.run("retention", "--company", company, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["counts"]["audio"] == 2
    human = env.run("retention", "--company", company, "--dry-run")
    assert human.stdout.startswith(
        f"Dry run: retention would change 1 company (company {company}; nothing changed)\n"
    )
    assert "audio" in human.stdout
    assert "Companies:" not in human.stdout
    assert all(f.exists() for f in files)
    assert env.requests() == before

    assert_error(env.run("retention", "--company", company), 2)  # no TTY, no --yes
    assert all(f.exists() for f in files)

    result = env.run("retention", "--company", company, "--yes")
    assert result.exit_code == 0, result.output
    assert f"Applied retention to company {company}" in result.stdout
    assert "Storage objects deleted: 2" in result.stdout
    assert not any(f.exists() for f in files)

    again = env.run("retention", "--yes", "--json")
    assert again.exit_code == 0, again.output
    assert sum(json.loads(again.stdout)["counts"].values()) == 0

    # Nothing older than the limits: one plain sentence, dry run or not.
    dry_again = env.run("retention", "--dry-run")
    assert dry_again.stdout == (
        "Dry run: retention would change nothing for every company (nothing changed)\n"
    )
    run_again = env.run("retention", "--yes")
    assert run_again.stdout == (
        "Retention changed nothing for every company: nothing is older than the limits\n"
    )


@pytest.mark.usefixtures("tty")
def test_retention_prompt(env: Env) -> None:
    files = _old_audio(env)
    no = env.run("retention", input="n\n")
    assert no.exit_code == 2
    assert all(f.exists() for f in files)
    yes = env.run("retention", input="y\n")
    assert yes.exit_code == 0, yes.output
    assert not any(f.exists() for f in files)


def test_retention_unknown_company(env: Env) -> None:
    assert_error(env.run("retention", "--company", str(uuid.uuid4()), "--dry-run"), 2)


# -- requests ---------------------------------------------------------------------------------


def test_requests_overdue_and_status(env: Env) -> None:
    none = env.run("requests", "--overdue")
    assert none.exit_code == 0, none.output
    assert "No overdue requests." in none.stdout
    overdue_id = env.scalar(
        "insert into public.gdpr_requests (kind, company_id, status, requested_at, due_at)"
        " values ('erasure', %s, 'pending', now() - interval '40 days',"
        " now() - interval '9 days') returning id",
        env.world.companies["A"],
    )
    result = env.run("requests", "--overdue")
    assert result.exit_code == 0, result.output
    assert str(overdue_id) in result.stdout
    assert "1 request(s)" in result.stdout
    rows = json.loads(env.run("requests", "--overdue", "--json").stdout)
    assert [r["id"] for r in rows] == [str(overdue_id)]
    assert rows[0]["kind"] == "erasure"
    assert rows[0]["status"] == "pending"

    everything = json.loads(env.run("requests", "--json").stdout)
    assert len(everything) == env.requests()
    pending = json.loads(env.run("requests", "--status", "pending", "--json").stdout)
    assert all(r["status"] == "pending" for r in pending)
    assert env.run("requests", "--status", "bogus").exit_code == 2
